using LoRI.Backend;
using LoRI.Cuda.Driver;
using LoRI.Tensors;

namespace LoRI.Cuda.Backend;

/// <summary>
/// The adapter op `lora_apply` on CUDA (native/kernels/lori_adapter.cu) and the LoRI training kernels: the
/// masked gradient of B (AdamW over the live entries of a sparse B is ITrainingOps.AdamWStep with an index).
/// y += scale * B (A x): the shrink t = scale * x A^T [N, Rank] goes to backend scratch, then the expand adds
/// t B^T. For at most <see cref="LoraWarpMaxTokens"/> tokens (decode) both are warp-per-row kernels reading
/// A, B (dense or compact: only B's live entries) once for all tokens; above that the shrink and a dense
/// expand are GEMMs (MatMul) and a compact expand stays the sparse kernel.
/// </summary>
public sealed unsafe partial class CudaBackend : IAdapterOps
{
    /// <summary>The most tokens the warp-per-row adapter kernels take in one call.</summary>
    public const int LoraWarpMaxTokens = 8;

    /// <summary>
    /// Decode variant of lora_apply: 0 runs the shrink and the expand as two kernels; G &gt; 0 runs one kernel of G
    /// blocks (lora_apply_fused), each recomputing the whole shrink (A read G times, from L2) before its share of the
    /// expand. Which wins depends on the device and the shapes: `bench-gpu` measures both.
    /// </summary>
    public int LoraFusedDecodeBlocks
    {
        get => _loraFusedBlocks;
        set
        {
            if (value is < 0 or > 65535) throw new ArgumentOutOfRangeException(nameof(LoraFusedDecodeBlocks), value, "0 (two kernels) or a block count");
            _loraFusedBlocks = value;
        }
    }
    private int _loraFusedBlocks;

    public void LoraApply(Tensor x, LoraFactors f, float scale, Tensor y)
    {
        Expect("lora_apply", "x", x, DType.F32);
        Expect("lora_apply", "y", y, DType.F32);
        Expect("lora_apply", "A", f.A, DType.F32);
        if (x.Cols != f.In || y.Cols != f.Out)
            throw new ShapeMismatchException($"lora_apply: x {x} and y {y} do not fit factors A [{f.Rank}, {f.In}], B [{f.Out}, {f.Rank}]");
        int n = RowsOf(x, f.In), r = f.Rank;
        ExpectLength("lora_apply", "y", y, (long)n * f.Out);
        if (n == 0) return;
        bool warpKernels = n <= LoraWarpMaxTokens;
        bool vec = f.In % 4 == 0 && x.Pointer % 16 == 0 && f.A.Pointer % 16 == 0;
        if (warpKernels && _loraFusedBlocks > 0)
        {
            bool dense = f.Form == LoraBForm.Dense;
            var fa = new KernelArgs();
            fa.Add(x); fa.Add(f.A);
            fa.Add(dense ? (ulong)f.B!.Pointer : 0UL);
            fa.Add(dense ? 0UL : (ulong)f.RowStart!.Pointer); fa.Add(dense ? 0UL : (ulong)f.Cols!.Pointer); fa.Add(dense ? 0UL : (ulong)f.Values!.Pointer);
            fa.Add(y); fa.Add(n); fa.Add(f.In); fa.Add(f.Out); fa.Add(r); fa.Add(scale); fa.Add(vec ? 1 : 0); fa.Add(dense ? 0 : 1);
            int blocks = Math.Min(_loraFusedBlocks, (f.Out + 7) / 8);
            Launch("lori_adapter", "lora_apply_fused", blocks, 256, LoraWarpMaxTokens * r * sizeof(float), ref fa);
            return;
        }
        var t = Scratch("lora_t", DType.F32, (long)n * r).Reshape(n, r);
        if (warpKernels) LoraShrinkWarp(x, f, scale, t, n);
        else MatMul(x.Reshape(n, f.In), f.A, t, scale);

        if (f.Form == LoraBForm.Dense && !warpKernels)
        {
            Expect("lora_apply", "B", f.B!, DType.F32);
            MatMul(t, f.B!, y.Reshape(n, f.Out), 1f, accumulate: true);
            return;
        }
        LoraExpand(t, f, y, n);
    }

    /// <summary>The warp-per-row shrink t = scale * x A^T (lora_shrink): x F32 [n, In], t F32 [n, Rank].</summary>
    private void LoraShrinkWarp(Tensor x, LoraFactors f, float scale, Tensor t, int n)
    {
        int r = f.Rank;
        bool vec = f.In % 4 == 0 && x.Pointer % 16 == 0 && f.A.Pointer % 16 == 0;
        var a = new KernelArgs();
        a.Add(x); a.Add(f.A); a.Add(t); a.Add(n); a.Add(f.In); a.Add(r); a.Add(scale); a.Add(vec ? 1 : 0);
        Launch("lori_adapter", "lora_shrink", new Dim3((uint)((r + 7) / 8), (uint)n), 256, 0, ref a);
    }

    /// <summary>The expand y += t B^T by the warp kernels (8 tokens per block row), B dense or compact: t F32 [n, Rank], y F32 [n, Out].</summary>
    private void LoraExpand(Tensor t, LoraFactors f, Tensor y, int n)
    {
        int r = f.Rank;
        var grid = new Dim3((uint)((f.Out + 7) / 8), (uint)((n + LoraWarpMaxTokens - 1) / LoraWarpMaxTokens));
        int smem = LoraWarpMaxTokens * r * sizeof(float);
        if (f.Form == LoraBForm.Dense)
        {
            Expect("lora_apply", "B", f.B!, DType.F32);
            var e = new KernelArgs();
            e.Add(t); e.Add(f.B!); e.Add(y); e.Add(n); e.Add(f.Out); e.Add(r);
            Launch("lori_adapter", "lora_expand_dense", grid, 256, smem, ref e);
        }
        else
        {
            Expect("lora_apply", "RowStart", f.RowStart!, DType.I32);
            Expect("lora_apply", "Values", f.Values!, DType.F32);
            var e = new KernelArgs();
            e.Add(t); e.Add(f.RowStart!); e.Add(f.Cols!); e.Add(f.Values!); e.Add(y); e.Add(n); e.Add(f.Out); e.Add(r);
            Launch("lori_adapter", "lora_expand_compact", grid, 256, smem, ref e);
        }
    }

    /// <summary>
    /// The gradient of B with LoRI-S's mask applied: dB [Out, Rank] += scale * dy^T u where mask (U8/Bool
    /// [Out * Rank], optional) is non-zero; masked entries are left as they are. dy F32 [N, Out]; u = x A^T F32 [N, Rank]
    /// (CpuOps.LoraBackward's dB term).
    /// </summary>
    public void LoraGradB(Tensor dy, Tensor u, Tensor? mask, float scale, Tensor dB)
    {
        Expect("lora_grad_b", "dy", dy, DType.F32);
        Expect("lora_grad_b", "u", u, DType.F32);
        Expect("lora_grad_b", "dB", dB, DType.F32);
        if (dB.Rank != 2) throw new ShapeMismatchException($"lora_grad_b: dB is {dB}, expected [out, rank]");
        int outDim = dB.Rows, r = dB.Cols;
        int n = RowsOf(dy, outDim);
        if (dy.Cols != outDim) throw new ShapeMismatchException($"lora_grad_b: dy is {dy}, expected rows of {outDim}");
        ExpectLength("lora_grad_b", "u", u, (long)n * r);
        CheckMask("lora_grad_b", mask, dB.Length);
        if (dB.Length == 0) return;
        var a = new KernelArgs();
        a.Add(dy); a.Add(u); a.Add(mask is null ? 0UL : (ulong)mask.Pointer); a.Add(dB); a.Add(n); a.Add(outDim); a.Add(r); a.Add(scale);
        Launch("lori_adapter", "lora_grad_b", StrideGrid(dB.Length), _blockSize, 0, ref a);
    }
}
