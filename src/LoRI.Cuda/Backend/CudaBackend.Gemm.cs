using LoRI.Backend;
using LoRI.Cuda.Driver;
using LoRI.Tensors;

namespace LoRI.Cuda.Backend;

/// <summary>
/// The MatMul kernels beyond the plain tiled baseline, chosen per call by shape and weight dtype:
///  - bf16 weights, at most <see cref="GemvMaxTokens"/> rows of x (decode): gemv (native/kernels/gemv.cu),
///    fp32 activations, 16-byte weight loads, split-K when the weight has few rows;
///  - bf16 weights, at least <see cref="TensorCoreMinTokens"/> rows and <see cref="Bf16Activations"/> on:
///    x cast to bf16 into scratch, then the tensor-core GEMM (native/kernels/gemm_tc.cu, or gemm_wgmma.cu on a
///    Hopper device that passed its first-use check: see CudaBackend.Wgmma.cs);
///  - otherwise the tiled GEMM (native/kernels/matmul.cu).
/// </summary>
public sealed unsafe partial class CudaBackend
{
    /// <summary>The most rows of x the decode GEMV takes.</summary>
    public const int GemvMaxTokens = 4;
    /// <summary>The fewest rows of x for which MatMul uses the tensor-core GEMM (when <see cref="Bf16Activations"/>).</summary>
    public const int TensorCoreMinTokens = 16;
    private const int GemmTcTile = 128;
    /// <summary>3 stages x (128 + 128 rows) x 40 bf16 (32 + 8 of padding).</summary>
    private const int GemmTcSmemBytes = 3 * (GemmTcTile + GemmTcTile) * 40 * 2;

    private readonly Dictionary<string, Tensor> _scratch = new();
    private bool? _bf16Activations;

    /// <summary>
    /// Whether MatMul may round F32 activations to bf16 so that bf16 weights run on tensor cores (fp32 sums
    /// either way), and MatMulBackwardInput / MatMulBackwardWeight likewise dy and x (CudaBackend.GemmBackward.cs).
    /// Default: on for a real device of compute capability 8.0 or newer; off on the emulator, whose MatMul then
    /// matches the CPU backend's fp32 activations (the tensor-core kernels are checked there directly, through
    /// <see cref="MatMulBf16"/> and with this set).
    /// </summary>
    public bool Bf16Activations
    {
        get => _bf16Activations ?? (!Driver.IsEmulator && Driver.ComputeCapability >= 80);
        set => _bf16Activations = value;
    }

    /// <summary>K split of the decode GEMV: 1, 2, 4 or 8; 0 chooses from the shape and the device.</summary>
    public int GemvSplitK
    {
        get => _gemvSplitK;
        set
        {
            if (value is not (0 or 1 or 2 or 4 or 8)) throw new ArgumentOutOfRangeException(nameof(GemvSplitK), value, "0 (automatic), 1, 2, 4 or 8");
            _gemvSplitK = value;
        }
    }
    private int _gemvSplitK;

    private bool TryFastMatMul(Tensor x, Tensor w, Tensor y, int n, int m, int k, float alpha, bool accumulate)
    {
        if (w.DType != DType.BF16) return false;
        if (n <= GemvMaxTokens)
        {
            GemvLaunch(x, w, y, n, m, k, alpha, accumulate);
            return true;
        }
        if (n >= TensorCoreMinTokens && Bf16Activations)
        {
            var xb = Scratch("matmul_x_bf16", DType.BF16, (long)n * k).Reshape(n, k);
            Cast(x.Reshape(n, k), xb);
            GemmBf16Launch(xb, w, y, n, m, k, alpha, accumulate);
            return true;
        }
        return false;
    }

    /// <summary>
    /// y = alpha * x W^T (+ y) on tensor cores with the activations already in bf16: x BF16 [N, K], w BF16 [M, K],
    /// y F32 [N, M]. Any shape; K % 8 == 0 with 16-byte aligned operands takes the cp.async path.
    /// </summary>
    public void MatMulBf16(Tensor x, Tensor w, Tensor y, float alpha = 1f, bool accumulate = false)
    {
        Expect("matmul_bf16", "x", x, DType.BF16);
        Expect("matmul_bf16", "w", w, DType.BF16);
        Expect("matmul_bf16", "y", y, DType.F32);
        if (w.Rank != 2) throw new ShapeMismatchException($"matmul_bf16: w is {w}, expected [out, in]");
        int m = w.Rows, k = w.Cols;
        if (x.Cols != k) throw new ShapeMismatchException($"matmul_bf16: x is {x} but w is {w}: x's rows must have {k} elements");
        int n = RowsOf(x, k);
        ExpectLength("matmul_bf16", "y", y, (long)n * m);
        if (n == 0 || m == 0) return;
        GemmTcLaunch(x, w, y, n, m, k, alpha, accumulate);
    }

    /// <summary>
    /// The decode GEMV directly (what MatMul runs for bf16 weights and at most <see cref="GemvMaxTokens"/> rows):
    /// x F32 [n, K], w BF16 [M, K], y F32 [n, M].
    /// </summary>
    public void MatMulGemv(Tensor x, Tensor w, Tensor y, float alpha = 1f, bool accumulate = false)
    {
        Expect("gemv", "x", x, DType.F32);
        Expect("gemv", "w", w, DType.BF16);
        Expect("gemv", "y", y, DType.F32);
        if (w.Rank != 2) throw new ShapeMismatchException($"gemv: w is {w}, expected [out, in]");
        int m = w.Rows, k = w.Cols;
        if (x.Cols != k) throw new ShapeMismatchException($"gemv: x is {x} but w is {w}: x's rows must have {k} elements");
        int n = RowsOf(x, k);
        if (n > GemvMaxTokens) throw new ShapeMismatchException($"gemv: x has {n} rows; the GEMV takes at most {GemvMaxTokens}");
        ExpectLength("gemv", "y", y, (long)n * m);
        if (n == 0 || m == 0) return;
        GemvLaunch(x, w, y, n, m, k, alpha, accumulate);
    }

    private void GemmTcLaunch(Tensor x, Tensor w, Tensor y, int n, int m, int k, float alpha, bool accumulate)
    {
        bool aligned = k % 8 == 0 && x.Pointer % 16 == 0 && w.Pointer % 16 == 0;
        var a = new KernelArgs();
        a.Add(x); a.Add(w); a.Add(y); a.Add(n); a.Add(m); a.Add(k); a.Add(alpha); a.Add(accumulate ? 1 : 0);
        var grid = new Dim3((uint)((m + GemmTcTile - 1) / GemmTcTile), (uint)((n + GemmTcTile - 1) / GemmTcTile));
        Launch("gemm_tc", aligned ? "gemm_tc_bf16" : "gemm_tc_bf16_ragged", grid, 256, GemmTcSmemBytes, ref a);
    }

    private void GemvLaunch(Tensor x, Tensor w, Tensor y, int n, int m, int k, float alpha, bool accumulate)
    {
        int split = GemvSplit(m, k);
        bool vec = k % 8 == 0 && x.Pointer % 16 == 0 && w.Pointer % 16 == 0;
        int rowsPerBlock = 8 / split;
        var a = new KernelArgs();
        a.Add(x); a.Add(w); a.Add(y); a.Add(n); a.Add(m); a.Add(k); a.Add(alpha); a.Add(accumulate ? 1 : 0); a.Add(split);
        Launch("gemv", vec ? "gemv_bf16" : "gemv_bf16_ragged", (m + rowsPerBlock - 1) / rowsPerBlock, 256, 0, ref a);
    }

    /// <summary>The GEMV's K split: <see cref="GemvSplitK"/>, or when 0 enough blocks for two per multiprocessor with K parts of at least 256 weights.</summary>
    private int GemvSplit(int m, int k)
    {
        int split = _gemvSplitK;
        if (split != 0) return split;
        split = 1;
        while (split < 8 && (m * split + 7) / 8 < 2 * Driver.MultiprocessorCount && k / (split * 2) >= 256) split *= 2;
        return split;
    }

    /// <summary>
    /// A backend-owned scratch buffer of at least <paramref name="length"/> elements, grown (never shrunk) on
    /// demand, so repeated ops at one shape allocate nothing. Ops on the stream use it in order.
    /// </summary>
    internal Tensor Scratch(string name, DType dtype, long length)
    {
        if (_scratch.TryGetValue(name, out var t) && t.DType == dtype && t.Length >= length)
            return t.View(0, checked((int)length));
        NotCapturing($"growing scratch '{name}' (run the step once before capturing it)");
        t?.Dispose();
        t = AllocateUninitialized(dtype, [checked((int)Math.Max(1, length))]);
        _scratch[name] = t;
        return t.View(0, checked((int)length));
    }

    /// <summary>
    /// Returns the scratch buffers to the arena (they grow again on demand). A graph captured while they were in
    /// use must not be launched afterwards.
    /// </summary>
    public void ReleaseScratch()
    {
        NotCapturing("releasing scratch");
        DisposeScratch();
    }

    private void DisposeScratch()
    {
        foreach (var t in _scratch.Values) t.Dispose();
        _scratch.Clear();
    }
}
