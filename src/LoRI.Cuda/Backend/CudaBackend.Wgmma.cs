using LoRI.Backend;
using LoRI.Cuda.Checks;
using LoRI.Cuda.Driver;
using LoRI.Cuda.Emulator;
using LoRI.Tensors;

namespace LoRI.Cuda.Backend;

/// <summary>
/// The Hopper GEMM (native/kernels/gemm_wgmma.cu: wgmma.mma_async on sm_90a) for MatMul's bf16 tensor-core
/// path. Chosen at the first such MatMul on a compute-capability-9.0 device when the family's loaded code is
/// the sm_90a build (its probe kernel says so: a prebuilt .sm_90a.ptx or NVRTC 12+) and, because the kernel
/// and its emulator twins share one reading of the PTX ISA, only after it matched the mma.sync GEMM
/// (gemm_tc.cu) on the device (its three kernels, small ragged shapes); otherwise MatMul keeps gemm_tc, with one warning
/// line saying why. <see cref="UseWgmma"/> overrides the choice (the emulator runs the kernel on its twins).
/// Kernels: with K % 8 == 0 and 16-byte aligned operands the TMA producer/consumer kernel (tensor maps from
/// cuTensorMapEncodeTiled), or the cp.async-staged one while the emulator records a graph (its recorded launches
/// keep only scalar arguments; a device's stream capture copies the maps and keeps TMA) or with
/// <see cref="WgmmaTma"/> off; the register-staged kernel otherwise.
/// </summary>
public sealed unsafe partial class CudaBackend
{
    private const int GemmWgmmaTile = 128;
    /// <summary>4 stages x (128 + 128 rows) x 128 bytes (64 bf16 of K), plus 1 KiB to align the tiles to 1024 bytes.</summary>
    private const int GemmWgmmaSmemBytes = 4 * 2 * GemmWgmmaTile * 128 + 1024;
    /// <summary>The same plus 8 mbarriers (full and empty per stage).</summary>
    private const int GemmWgmmaTmaSmemBytes = GemmWgmmaSmemBytes + 8 * 8;

    private enum WgmmaKernel { Tma, CpAsync, Ragged }

    /// <summary>Whether aligned operands go through the TMA kernel (default) or the cp.async-staged one.</summary>
    public bool WgmmaTma { get; set; } = true;

    private bool? _useWgmma;
    private bool? _wgmmaChosen;
    private bool? _wgmmaCode;
    private string _wgmmaStatus = "not decided yet (decided at the first bf16 tensor-core MatMul)";

    /// <summary>
    /// Whether MatMul's bf16 tensor-core path runs the wgmma GEMM: null (default) decides once per backend as
    /// described on the class; true forces it (throws at use where the loaded code is not the sm_90a build);
    /// false keeps gemm_tc.
    /// </summary>
    public bool? UseWgmma
    {
        get => _useWgmma;
        set => _useWgmma = value;
    }

    /// <summary>Why the wgmma GEMM is or is not in use (after the decision).</summary>
    public string WgmmaStatus => _useWgmma is bool forced ? (forced ? "forced on (UseWgmma = true)" : "off (UseWgmma = false)") : _wgmmaStatus;

    /// <summary>Where the automatic choice reports a fallback (one line); stderr by default.</summary>
    public Action<string> Warning { get; set; } = line => Console.Error.WriteLine(line);

    /// <summary>True when the loaded gemm_wgmma family holds the sm_90a kernels (always on the emulator).</summary>
    public bool WgmmaCodeAvailable => _wgmmaCode ??= ProbeWgmma();

    /// <summary>Whether MatMul's bf16 tensor-core path uses the wgmma GEMM now (deciding first if needed).</summary>
    public bool WgmmaActive
    {
        get
        {
            if (_useWgmma is bool forced) return forced;
            if (_wgmmaChosen is bool chosen) return chosen;
            // the decision launches and downloads: not inside a capture (gemm_tc serves until it is made)
            if (_capturing) return false;
            _wgmmaChosen = DecideWgmma(out _wgmmaStatus);
            return _wgmmaChosen.Value;
        }
    }

    /// <summary>
    /// y = alpha * x W^T (+ y) with the wgmma GEMM: x BF16 [N, K], w BF16 [M, K], y F32 [N, M]. Any shape;
    /// K % 8 == 0 with 16-byte aligned operands takes the TMA kernel (the cp.async one with <see cref="WgmmaTma"/>
    /// off or while the emulator records a graph), anything else the register-staged one. Throws <see cref="UnsupportedException"/>
    /// where the loaded code is not the sm_90a build.
    /// </summary>
    public void MatMulWgmma(Tensor x, Tensor w, Tensor y, float alpha = 1f, bool accumulate = false)
    {
        Expect("matmul_wgmma", "x", x, DType.BF16);
        Expect("matmul_wgmma", "w", w, DType.BF16);
        Expect("matmul_wgmma", "y", y, DType.F32);
        if (w.Rank != 2) throw new ShapeMismatchException($"matmul_wgmma: w is {w}, expected [out, in]");
        int m = w.Rows, k = w.Cols;
        if (x.Cols != k) throw new ShapeMismatchException($"matmul_wgmma: x is {x} but w is {w}: x's rows must have {k} elements");
        int n = RowsOf(x, k);
        ExpectLength("matmul_wgmma", "y", y, (long)n * m);
        if (!WgmmaCodeAvailable)
            throw new UnsupportedException($"matmul_wgmma: the gemm_wgmma kernels on {Driver.DeviceName} are not the sm_90a build " +
                                           "(a compute-capability-9.0 device and a prebuilt .sm_90a.ptx or NVRTC 12+ are needed)");
        if (n == 0 || m == 0) return;
        GemmWgmmaLaunch(x, w, y, n, m, k, alpha, accumulate);
    }

    /// <summary>MatMul's bf16 tensor-core step: the wgmma GEMM when chosen, else gemm_tc.</summary>
    private void GemmBf16Launch(Tensor x, Tensor w, Tensor y, int n, int m, int k, float alpha, bool accumulate)
    {
        if (WgmmaActive) GemmWgmmaLaunch(x, w, y, n, m, k, alpha, accumulate);
        else GemmTcLaunch(x, w, y, n, m, k, alpha, accumulate);
    }

    private void GemmWgmmaLaunch(Tensor x, Tensor w, Tensor y, int n, int m, int k, float alpha, bool accumulate)
    {
        bool aligned = k % 8 == 0 && k > 0 && x.Pointer % 16 == 0 && w.Pointer % 16 == 0;
        var kind = !aligned ? WgmmaKernel.Ragged : WgmmaTma && _recording is null ? WgmmaKernel.Tma : WgmmaKernel.CpAsync;
        GemmWgmmaLaunch(x, w, y, n, m, k, alpha, accumulate, kind);
    }

    private void GemmWgmmaLaunch(Tensor x, Tensor w, Tensor y, int n, int m, int k, float alpha, bool accumulate, WgmmaKernel kind)
    {
        if (!WgmmaCodeAvailable) throw new UnsupportedException($"matmul_wgmma: the gemm_wgmma kernels on {Driver.DeviceName} are not the sm_90a build");
        var grid = new Dim3((uint)((m + GemmWgmmaTile - 1) / GemmWgmmaTile), (uint)((n + GemmWgmmaTile - 1) / GemmWgmmaTile));
        var a = new KernelArgs();
        if (kind == WgmmaKernel.Tma)
        {
            var mx = Bf16RowsMap(x, n, k);
            var mw = Bf16RowsMap(w, m, k);
            a.Add(y); a.Add(n); a.Add(m); a.Add(k); a.Add(alpha); a.Add(accumulate ? 1 : 0);
            LaunchWithTensorMaps("gemm_wgmma", "gemm_wgmma_tma_bf16", grid, 384, GemmWgmmaTmaSmemBytes, [mx, mw], ref a);
            return;
        }
        a.Add(x); a.Add(w); a.Add(y); a.Add(n); a.Add(m); a.Add(k); a.Add(alpha); a.Add(accumulate ? 1 : 0);
        Launch("gemm_wgmma", kind == WgmmaKernel.CpAsync ? "gemm_wgmma_bf16" : "gemm_wgmma_bf16_ragged", grid, 256, GemmWgmmaSmemBytes, ref a);
    }

    /// <summary>
    /// The tensor map of a row-major bf16 [rows, k] operand as gemm_wgmma_tma_bf16 reads it: boxes of 64 (K) x 128
    /// (rows), 128-byte swizzle, out-of-bound elements zero.
    /// </summary>
    internal TensorMap Bf16RowsMap(Tensor t, int rows, int k)
    {
        Span<ulong> dims = [(ulong)k, (ulong)rows];
        Span<ulong> strides = [(ulong)k * 2];
        Span<uint> box = [64, GemmWgmmaTile];
        Span<uint> one = [1, 1];
        return Driver.EncodeTensorMapTiled(TensorMapDataType.BFloat16, (ulong)t.Pointer, dims, strides, box, one,
                                           TensorMapSwizzle.Bytes128, TensorMapL2Promotion.Bytes256, TensorMapOobFill.None);
    }

    /// <summary>
    /// Launches a kernel whose first parameters are `const __grid_constant__` tensor maps (at most 2), then
    /// <paramref name="rest"/>. The maps are copied to 64-byte aligned stack memory for the launch (the driver
    /// copies parameters at launch time). Not recordable into a CUDA graph (callers take another kernel then).
    /// Also how <see cref="Checks.KernelChecks"/> runs the sm90_checks programs on a device.
    /// </summary>
    internal void LaunchWithTensorMaps(string family, string name, Dim3 grid, Dim3 block, int smem, ReadOnlySpan<TensorMap> tensorMaps, ref KernelArgs rest)
    {
        if (tensorMaps.Length > 2) throw new ArgumentException($"{name}: at most 2 tensor maps, got {tensorMaps.Length}");
        if (_recording is not null) throw new InvalidOperationException($"{name} takes tensor maps and cannot be recorded into a CUDA graph");
        var fn = Function(family, name);
        int count = tensorMaps.Length + rest.Count;
        if (Driver is EmulatorDriver emu && emu.ParameterCount(fn) != count)
            throw new InvalidOperationException($"{name} takes {emu.ParameterCount(fn)} parameters, the launcher passed {count}");
        if (smem > 48 * 1024 && (!_dynamicSmemLimit.TryGetValue(fn, out var limit) || limit < smem))
        {
            if (smem > Driver.MaxDynamicSharedMemoryPerBlock)
                throw new UnsupportedException($"{name} needs {smem} bytes of shared memory; the device allows {Driver.MaxDynamicSharedMemoryPerBlock}");
            Driver.SetMaxDynamicSharedMemory(fn, smem);
            _dynamicSmemLimit[fn] = smem;
        }
        var raw = stackalloc byte[2 * 128 + 64];
        var maps = (TensorMap*)(((nint)raw + 63) & ~(nint)63);
        var pointers = stackalloc void*[KernelArgs.Capacity + 2];
        for (int i = 0; i < tensorMaps.Length; i++)
        {
            maps[i] = tensorMaps[i];
            pointers[i] = maps + i;
        }
        fixed (ulong* v = rest.Values)
        {
            for (int i = 0; i < rest.Count; i++) pointers[tensorMaps.Length + i] = v + i;
            Driver.Launch(fn, grid, block, smem, Stream, pointers);
        }
    }

    /// <summary>
    /// Runs gemm_wgmma_probe: 1 from the sm_90a build (and the emulator), 0 from a compute_80/90 build. A family
    /// that fails to compile or load counts as unavailable, with the reason in <see cref="WgmmaStatus"/>.
    /// </summary>
    private bool ProbeWgmma()
    {
        NotCapturing("probing the wgmma kernels");
        try
        {
            return RunWgmmaProbe();
        }
        catch (LoRIException e)
        {
            _wgmmaStatus = $"not used: the gemm_wgmma family did not load: {e.Message}";
            return false;
        }
    }

    private bool RunWgmmaProbe()
    {
        using var flag = Allocate(DType.I32, 1);
        var a = new KernelArgs();
        a.Add(flag);
        Launch("gemm_wgmma", "gemm_wgmma_probe", 1, 1, 0, ref a);
        Span<int> v = stackalloc int[1];
        Download<int>(flag, v);
        return v[0] == 1;
    }

    private bool DecideWgmma(out string status)
    {
        if (Driver.ComputeCapability != 90)
        {
            status = $"not used: compute capability {Driver.ComputeCapability / 10}.{Driver.ComputeCapability % 10} (wgmma needs 9.0, sm_90a)";
            return false;
        }
        try
        {
            if (!WgmmaCodeAvailable)
            {
                status = _wgmmaStatus.StartsWith("not used: the gemm_wgmma family did not load", StringComparison.Ordinal) ? _wgmmaStatus
                    : "not used: the gemm_wgmma kernels were not built for sm_90a (no prebuilt .sm_90a.ptx and no NVRTC 12+)";
                Warning($"warning: {Driver.DeviceName}: wgmma GEMM {status}; MatMul uses the mma.sync GEMM");
                return false;
            }
            var mismatch = WgmmaSelfCheck(out var summary);
            if (mismatch is not null)
            {
                status = $"not used: differs from the mma.sync GEMM: {mismatch}";
                Warning($"warning: {Driver.DeviceName}: wgmma GEMM {status}; MatMul uses the mma.sync GEMM");
                return false;
            }
            status = $"in use: matched the mma.sync GEMM on this device ({summary})";
            return true;
        }
        catch (LoRIException e)
        {
            status = $"not used: {e.Message}";
            Warning($"warning: {Driver.DeviceName}: wgmma GEMM failed its first-use check ({e.Message}); MatMul uses the mma.sync GEMM");
            return false;
        }
    }

    /// <summary>
    /// The wgmma GEMM against gemm_tc on the device: its three kernels (TMA, cp.async, register-staged) at ragged
    /// shapes whose K walks the 4-stage ring more than once, two with accumulate. Both sum exact bf16 products in fp32, so only the order of the sums may
    /// differ. Returns null when they match, else the worst element.
    /// </summary>
    private string? WgmmaSelfCheck(out string summary)
    {
        summary = "";
        (int N, int M, int K, float Alpha, bool Accumulate, WgmmaKernel Kind)[] shapes =
            [(150, 200, 520, 1f, false, WgmmaKernel.Tma), (150, 200, 520, 0.5f, true, WgmmaKernel.CpAsync), (37, 70, 301, -0.5f, true, WgmmaKernel.Ragged)];
        var rng = new Random(90);
        foreach (var (n, m, k, alpha, accumulate, kind) in shapes)
        {
            var xv = new ushort[n * k];
            var wv = new ushort[m * k];
            var y0 = new float[n * m];
            for (int i = 0; i < xv.Length; i++) xv[i] = Bf16.FromFloat((float)(rng.NextDouble() * 2 - 1));
            for (int i = 0; i < wv.Length; i++) wv[i] = Bf16.FromFloat((float)(rng.NextDouble() * 2 - 1));
            for (int i = 0; i < y0.Length; i++) y0[i] = (float)(rng.NextDouble() * 2 - 1);
            using var x = AllocateUninitialized(DType.BF16, [n, k]);
            using var w = AllocateUninitialized(DType.BF16, [m, k]);
            using var yTc = AllocateUninitialized(DType.F32, [n, m]);
            using var yWg = AllocateUninitialized(DType.F32, [n, m]);
            Upload<ushort>(xv, x);
            Upload<ushort>(wv, w);
            Upload<float>(y0, yTc);
            Upload<float>(y0, yWg);
            GemmTcLaunch(x, w, yTc, n, m, k, alpha, accumulate);
            GemmWgmmaLaunch(x, w, yWg, n, m, k, alpha, accumulate, kind);
            var reference = new float[n * m];
            var got = new float[n * m];
            Download<float>(yTc, reference);
            Download<float>(yWg, got);
            var cmp = Tolerance.Compare(got, reference, 2e-5f * MathF.Sqrt(k), 1e-5f);
            if (!cmp.Passed) return $"{kind} kernel at {n} x {m} x {k}: {cmp}";
            summary += (summary.Length > 0 ? ", " : "") + $"{kind} {n} x {m} x {k} max |diff| {cmp.MaxError:G3}";
        }
        return null;
    }
}
