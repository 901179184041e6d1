using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using LoRI.Cuda.Driver;

namespace LoRI.Cuda.Emulator;

/// <summary>
/// <see cref="ICudaDriver"/> over the host emulator: device memory is host memory behind device
/// pointers, modules are the kernel families compiled into libloriemu.so, and every call completes
/// before it returns. Launches run the grid's blocks in parallel on the CPU's cores.
/// </summary>
public sealed unsafe class EmulatorDriver : ICudaDriver
{
    /// <param name="threads">OS threads that run blocks (0: LORI_EMU_THREADS or the core count).</param>
    /// <param name="computeCapability">What the emulator reports: 80 (default), or 90 to take the paths a Hopper
    /// device takes (the sm_90a kernels run on their host twins: wgmma, mbarrier, the bulk tensor copy).</param>
    public EmulatorDriver(int threads = 0, int computeCapability = 80)
    {
        if (computeCapability is not (80 or 90))
            throw new ArgumentOutOfRangeException(nameof(computeCapability), computeCapability, "80 or 90");
        ComputeCapability = computeCapability;
        ThrowIfFailed(EmuApi.lemu_init());
        if (threads > 0) ThrowIfFailed(EmuApi.lemu_set_threads(threads));
    }

    public string DeviceName => $"LoRI CUDA emulator ({EmuApi.lemu_thread_count()} threads{(IsAddressSanitized ? ", AddressSanitizer" : "")})";
    public bool IsEmulator => true;
    /// <summary>
    /// 80 unless asked for 90. The emulator implements sm_80's instructions (mma.sync, ldmatrix, cp.async) and
    /// the sm_90a ones our kernels use (lori_sm90.cuh), not all of sm_90a.
    /// </summary>
    public int ComputeCapability { get; }
    public int MultiprocessorCount => EmuApi.lemu_thread_count();
    public int MaxDynamicSharedMemoryPerBlock => 227 * 1024;
    /// <summary>True when the loaded library is the AddressSanitizer build.</summary>
    public bool IsAddressSanitized => EmuApi.lemu_is_asan() != 0;

    /// <summary>Throws with the call's text, the status and the emulator's own message.</summary>
    public static void ThrowIfFailed(CuResult result, [CallerArgumentExpression(nameof(result))] string call = "")
    {
        if (result == CuResult.Success) return;
        var detail = Marshal.PtrToStringUTF8(EmuApi.lemu_last_error()) ?? "";
        throw new CudaException(result, call, $"{result} ({(int)result}): {detail}");
    }

    public ulong Alloc(long bytes)
    {
        ThrowIfFailed(EmuApi.lemu_mem_alloc(out var p, checked((nuint)bytes)));
        return p;
    }

    public void Free(ulong ptr) => ThrowIfFailed(EmuApi.lemu_mem_free(ptr));
    public void Memset(ulong dst, byte value, long bytes, nint stream) => ThrowIfFailed(EmuApi.lemu_memset_d8(dst, value, (nuint)bytes, stream));
    public void CopyHtoD(ulong dst, nint src, long bytes, nint stream) => ThrowIfFailed(EmuApi.lemu_memcpy_htod(dst, src, (nuint)bytes, stream));
    public void CopyDtoH(nint dst, ulong src, long bytes, nint stream) => ThrowIfFailed(EmuApi.lemu_memcpy_dtoh(dst, src, (nuint)bytes, stream));
    public void CopyDtoD(ulong dst, ulong src, long bytes, nint stream) => ThrowIfFailed(EmuApi.lemu_memcpy_dtod(dst, src, (nuint)bytes, stream));

    public nint AllocHost(long bytes)
    {
        ThrowIfFailed(EmuApi.lemu_mem_alloc_host(out var p, checked((nuint)bytes)));
        return p;
    }

    public void FreeHost(nint ptr) => ThrowIfFailed(EmuApi.lemu_mem_free_host(ptr));

    public CudaModule LoadModule(string name)
    {
        ThrowIfFailed(EmuApi.lemu_module_load(out var m, name));
        return new CudaModule(this, m, name);
    }

    public nint GetFunction(CudaModule module, string name)
    {
        ThrowIfFailed(EmuApi.lemu_module_get_function(out var f, module.DangerousGetHandle(), name));
        return f;
    }

    /// <summary>The number of parameters the kernel was compiled with (emulator only: a check on argument packing).</summary>
    public int ParameterCount(nint function) => EmuApi.lemu_func_param_count(function);

    public void SetMaxDynamicSharedMemory(nint function, int bytes) => ThrowIfFailed(EmuApi.lemu_func_set_max_dynamic_smem(function, bytes));

    public void Launch(nint function, Dim3 grid, Dim3 block, int dynamicSharedBytes, nint stream, void** args) =>
        ThrowIfFailed(EmuApi.lemu_launch(function, grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z, (uint)dynamicSharedBytes, stream, args));

    public CudaStream CreateStream()
    {
        ThrowIfFailed(EmuApi.lemu_stream_create(out var s));
        return new CudaStream(this, s);
    }

    public void SynchronizeStream(nint stream) => ThrowIfFailed(EmuApi.lemu_stream_synchronize(stream));

    public CudaEvent CreateEvent()
    {
        ThrowIfFailed(EmuApi.lemu_event_create(out var e));
        return new CudaEvent(this, e);
    }

    public void RecordEvent(CudaEvent e, nint stream) => ThrowIfFailed(EmuApi.lemu_event_record(e.DangerousGetHandle(), stream));
    public void SynchronizeEvent(CudaEvent e) => ThrowIfFailed(EmuApi.lemu_event_synchronize(e.DangerousGetHandle()));

    public float ElapsedMilliseconds(CudaEvent start, CudaEvent end)
    {
        ThrowIfFailed(EmuApi.lemu_event_elapsed_time(out var ms, start.DangerousGetHandle(), end.DangerousGetHandle()));
        return ms;
    }

    public void Synchronize() => ThrowIfFailed(EmuApi.lemu_ctx_synchronize());

    public TensorMap EncodeTensorMapTiled(TensorMapDataType dataType, ulong globalAddress, ReadOnlySpan<ulong> globalDims, ReadOnlySpan<ulong> globalStrides,
                                          ReadOnlySpan<uint> boxDims, ReadOnlySpan<uint> elementStrides, TensorMapSwizzle swizzle,
                                          TensorMapL2Promotion l2Promotion, TensorMapOobFill oobFill)
    {
        TensorMap.CheckRank(globalDims.Length, globalStrides.Length, boxDims.Length, elementStrides.Length);
        // the map must be written to 64-byte aligned memory
        var raw = stackalloc byte[128 + 64];
        var map = (TensorMap*)(((nint)raw + 63) & ~(nint)63);
        fixed (ulong* dims = globalDims, strides = globalStrides)
        fixed (uint* box = boxDims, es = elementStrides)
        {
            ulong none = 0;
            ThrowIfFailed(EmuApi.lemu_tensor_map_encode_tiled(map, dataType, (uint)globalDims.Length, globalAddress, dims, globalStrides.Length > 0 ? strides : &none,
                                                              box, es, 0, swizzle, l2Promotion, oobFill));
        }
        return *map;
    }

    CuResult ICudaDriver.ReleaseModule(nint module) => EmuApi.lemu_module_unload(module);
    CuResult ICudaDriver.ReleaseStream(nint stream) => EmuApi.lemu_stream_destroy(stream);
    CuResult ICudaDriver.ReleaseEvent(nint e) => EmuApi.lemu_event_destroy(e);

    public void Dispose() { }
}
