using System.Runtime.InteropServices;

namespace LoRI.Cuda.Bench;

/// <summary>
/// cuBLAS (libcublas, which runs cuBLASLt's kernels underneath) bound at run time for one purpose: the GEMM
/// baseline of the GPU benchmark. Absent library: <see cref="TryLoad"/> returns null with the reason.
/// Only cublasCreate / cublasSetStream / cublasGemmEx / cublasDestroy are used, through function pointers.
/// </summary>
internal sealed unsafe class Cublas : IDisposable
{
    private const int OpN = 0, OpT = 1, R32F = 0, R16BF = 14, Compute32F = 68, GemmDefault = -1;
    private readonly nint _lib, _handle;
    private readonly delegate* unmanaged<nint, int, int, int, int, int, float*, void*, int, int, void*, int, int, float*, void*, int, int, int, int, int> _gemmEx;
    private readonly delegate* unmanaged<nint, int> _destroy;
    public string LibraryName { get; }

    private Cublas(nint lib, string name, nint handle, nint gemmEx, nint destroy)
    {
        _lib = lib;
        LibraryName = name;
        _handle = handle;
        _gemmEx = (delegate* unmanaged<nint, int, int, int, int, int, float*, void*, int, int, void*, int, int, float*, void*, int, int, int, int, int>)gemmEx;
        _destroy = (delegate* unmanaged<nint, int>)destroy;
    }

    public static Cublas? TryLoad(nint stream, out string reason)
    {
        foreach (var name in new[] { "libcublas.so", "libcublas.so.13", "libcublas.so.12", "libcublas.so.11" })
        {
            if (!NativeLibrary.TryLoad(name, out var lib)) continue;
            if (!NativeLibrary.TryGetExport(lib, "cublasCreate_v2", out var create) || !NativeLibrary.TryGetExport(lib, "cublasGemmEx", out var gemm)
                || !NativeLibrary.TryGetExport(lib, "cublasSetStream_v2", out var setStream) || !NativeLibrary.TryGetExport(lib, "cublasDestroy_v2", out var destroy))
            {
                reason = $"{name} lacks cublasCreate_v2 / cublasGemmEx / cublasSetStream_v2";
                return null;
            }
            nint handle;
            int status = ((delegate* unmanaged<nint*, int>)create)(&handle);
            if (status != 0) { reason = $"cublasCreate_v2 returned {status}"; return null; }
            status = ((delegate* unmanaged<nint, nint, int>)setStream)(handle, stream);
            if (status != 0) { reason = $"cublasSetStream_v2 returned {status}"; return null; }
            reason = "";
            return new Cublas(lib, name, handle, gemm, destroy);
        }
        reason = "libcublas is not installed";
        return null;
    }

    /// <summary>y [n, m] f32 (row-major) = x [n, k] bf16 W [m, k]^T bf16, fp32 compute: in column-major terms C = W^T' x.</summary>
    public void GemmBf16(ulong x, ulong w, ulong y, int n, int m, int k)
    {
        float alpha = 1f, beta = 0f;
        int status = _gemmEx(_handle, OpT, OpN, m, n, k, &alpha, (void*)w, R16BF, k, (void*)x, R16BF, k, &beta, (void*)y, R32F, m, Compute32F, GemmDefault);
        if (status != 0) throw new LoRIException($"cublasGemmEx ({n} x {m} x {k}, bf16 in, f32 out) returned status {status}");
    }

    public void Dispose() => _destroy(_handle);
}
