using LoRI.Backend;
using LoRI.Cuda.Driver;
using LoRI.Tensors;

namespace LoRI.Cuda.Backend;

/// <summary>How the decode linear (at most <see cref="CudaBackend.GemvMaxTokens"/> tokens, bf16 W) folds in its first adapter.</summary>
public enum LoraDecodeVariant
{
    /// <summary>The GEMV, then lora_apply (shrink and expand: two more launches, or one with LoraFusedDecodeBlocks).</summary>
    Unfused,
    /// <summary>The shrink (lora_shrink), then the GEMV with the expand in its epilogue (gemv_lora_bf16): two launches.</summary>
    GemvEpilogue,
    /// <summary>
    /// One GEMV over [W; A] whose first blocks compute the shrink (gemv_shrink_bf16), then the expand
    /// (lora_expand_dense / _compact): two launches, the default.
    /// </summary>
    ShrinkRows,
}

/// <summary>How the tensor-core linear (at least <see cref="CudaBackend.TensorCoreMinTokens"/> tokens, bf16 W, bf16 activations) folds in its first adapter.</summary>
public enum LoraPrefillVariant
{
    /// <summary>The GEMM, then lora_apply (fp32 GEMMs for the shrink and a dense expand, the sparse kernel for a compact one).</summary>
    Unfused,
    /// <summary>The shrink alone (gemm_tc_shrink_bf16 with no W), then one GEMM over [x | u] [W | B]^T (gemm_tc_lora_bf16).</summary>
    KConcat,
    /// <summary>One GEMM over [W; A] writing y and u (gemm_tc_shrink_bf16), then y += u B^T (gemm_tc_bf16, K = rank): the default.</summary>
    ShrinkRows,
}

/// <summary>
/// The op `linear_lora`: y = x W^T + sum_i s_i B_i (A_i x) with the first adapter folded into the base product's
/// passes; the others follow it (decode: lora_apply; tensor cores: the shrink alone, then y += u B^T, both on tensor
/// cores from the same bf16 x). Chosen by shape as MatMul is:
///  - bf16 W, at most <see cref="GemvMaxTokens"/> rows (decode): <see cref="LinearLoraDecode"/>, fp32 throughout
///    (the same arithmetic as MatMul + lora_apply);
///  - bf16 W, at least <see cref="TensorCoreMinTokens"/> rows with <see cref="Bf16Activations"/>:
///    <see cref="LinearLoraPrefill"/> on tensor cores: x, A, u = s x A^T and B are rounded to bf16 (sums in fp32);
///    A and a dense B are converted to bf16 once per adapter (kept with the factors);
///  - otherwise MatMul, then lora_apply per adapter.
/// The defaults come from counting launches and bytes (docs/cuda.md, "Linear with adapters"); `bench-gpu` times
/// every variant.
/// </summary>
public sealed unsafe partial class CudaBackend : ILinearAdapterOps
{
    /// <summary>The decode variant of <see cref="LinearWithAdapters"/> (default <see cref="LoraDecodeVariant.ShrinkRows"/>).</summary>
    public LoraDecodeVariant LinearLoraDecode { get; set; } = LoraDecodeVariant.ShrinkRows;

    /// <summary>The tensor-core variant of <see cref="LinearWithAdapters"/> (default <see cref="LoraPrefillVariant.ShrinkRows"/>).</summary>
    public LoraPrefillVariant LinearLoraPrefill { get; set; } = LoraPrefillVariant.ShrinkRows;

    public void LinearWithAdapters(Tensor x, Tensor w, ReadOnlySpan<LoraTerm> terms, Tensor y)
    {
        if (terms.Length == 0)
        {
            MatMul(x, w, y);
            return;
        }
        Expect("linear_lora", "x", x, DType.F32);
        Expect("linear_lora", "y", y, DType.F32);
        ExpectFloat("linear_lora", "w", w);
        if (w.Rank != 2) throw new ShapeMismatchException($"linear_lora: w is {w}, expected [out, in]");
        int m = w.Rows, k = w.Cols;
        if (x.Cols != k) throw new ShapeMismatchException($"linear_lora: x is {x} but w is {w}: x's rows must have {k} elements");
        int n = RowsOf(x, k);
        ExpectLength("linear_lora", "y", y, (long)n * m);
        for (int i = 0; i < terms.Length; i++)
        {
            var f = terms[i].Factors;
            if (f.In != k || f.Out != m)
                throw new ShapeMismatchException($"linear_lora: adapter {i} has A [{f.Rank}, {f.In}], B [{f.Out}, {f.Rank}]; the weight is {w}");
        }
        if (n == 0 || m == 0) return;

        var first = terms[0];
        if (w.DType == DType.BF16 && n <= GemvMaxTokens && LinearLoraDecode != LoraDecodeVariant.Unfused)
        {
            LinearLoraGemv(x, w, first.Factors, first.Scale, y, n, m, k, LinearLoraDecode);
            for (int i = 1; i < terms.Length; i++)
                if (terms[i].Scale != 0) LoraApply(x, terms[i].Factors, terms[i].Scale, y);
            return;
        }
        if (w.DType == DType.BF16 && n >= TensorCoreMinTokens && Bf16Activations && LinearLoraPrefill != LoraPrefillVariant.Unfused)
        {
            var xb = LinearLoraTensorCore(x, w, first.Factors, first.Scale, y, n, m, k, LinearLoraPrefill);
            // further adapters on tensor cores too, from the same bf16 x: the shrink alone, then y += u B^T
            for (int i = 1; i < terms.Length; i++)
                if (terms[i].Scale != 0) LoraTensorCore(xb, terms[i].Factors, terms[i].Scale, y, n, m, k);
            return;
        }
        MatMul(x, w, y);
        foreach (var t in terms)
            if (t.Scale != 0) LoraApply(x, t.Factors, t.Scale, y);
    }

    private void LinearLoraGemv(Tensor x, Tensor w, LoraFactors f, float scale, Tensor y, int n, int m, int k, LoraDecodeVariant variant)
    {
        Expect("linear_lora", "A", f.A, DType.F32);
        int r = f.Rank, split = GemvSplit(m, k), rowsPerBlock = 8 / split;
        bool dense = f.Form == LoraBForm.Dense;
        var t = Scratch("lora_t", DType.F32, (long)n * r).Reshape(n, r);
        if (variant == LoraDecodeVariant.ShrinkRows)
        {
            bool vec = k % 8 == 0 && x.Pointer % 16 == 0 && w.Pointer % 16 == 0 && f.A.Pointer % 16 == 0;
            var a = new KernelArgs();
            a.Add(x); a.Add(w); a.Add(f.A); a.Add(y); a.Add(t); a.Add(n); a.Add(m); a.Add(k); a.Add(1f); a.Add(0); a.Add(split); a.Add(r); a.Add(scale);
            int blocks = (r + 7) / 8 + (m + rowsPerBlock - 1) / rowsPerBlock;
            Launch("gemv", vec ? "gemv_shrink_bf16" : "gemv_shrink_bf16_ragged", blocks, 256, 0, ref a);
            LoraExpand(t, f, y, n);
            return;
        }
        LoraShrinkWarp(x, f, scale, t, n);
        bool gvec = k % 8 == 0 && x.Pointer % 16 == 0 && w.Pointer % 16 == 0;
        var g = new KernelArgs();
        g.Add(x); g.Add(w); g.Add(t);
        g.Add(dense ? (ulong)f.B!.Pointer : 0UL);
        g.Add(dense ? 0UL : (ulong)f.RowStart!.Pointer); g.Add(dense ? 0UL : (ulong)f.Cols!.Pointer); g.Add(dense ? 0UL : (ulong)f.Values!.Pointer);
        g.Add(y); g.Add(n); g.Add(m); g.Add(k); g.Add(r); g.Add(1f); g.Add(0); g.Add(split); g.Add(dense ? 0 : 1);
        Launch("gemv", gvec ? "gemv_lora_bf16" : "gemv_lora_bf16_ragged", (m + rowsPerBlock - 1) / rowsPerBlock, 256, 0, ref g);
    }

    /// <summary>The first adapter folded into the tensor-core GEMM; returns x in bf16 (scratch) for further adapters.</summary>
    private Tensor LinearLoraTensorCore(Tensor x, Tensor w, LoraFactors f, float scale, Tensor y, int n, int m, int k, LoraPrefillVariant variant)
    {
        int r = f.Rank;
        var ab = Bf16A(f);
        var bb = Bf16B(f);
        var xb = Scratch("matmul_x_bf16", DType.BF16, (long)n * k).Reshape(n, k);
        Cast(x.Reshape(n, k), xb);
        // ShrinkRows: y and u from one GEMM over [W; A]; KConcat: u alone (no W columns), then [x | u] [W | B]^T
        var u = ShrinkTensorCore(xb, w, ab, y, variant == LoraPrefillVariant.ShrinkRows ? m : 0, scale, n, r, k);
        if (variant == LoraPrefillVariant.ShrinkRows)
        {
            GemmTcLaunch(u, bb, y, n, m, r, 1f, accumulate: true);
            return xb;
        }
        bool aligned = k % 8 == 0 && r % 8 == 0 && xb.Pointer % 16 == 0 && w.Pointer % 16 == 0 && u.Pointer % 16 == 0 && bb.Pointer % 16 == 0;
        var a = new KernelArgs();
        a.Add(xb); a.Add(w); a.Add(u); a.Add(bb); a.Add(y); a.Add(n); a.Add(m); a.Add(k); a.Add(r); a.Add(1f); a.Add(0);
        var grid = new Dim3((uint)((m + GemmTcTile - 1) / GemmTcTile), (uint)((n + GemmTcTile - 1) / GemmTcTile));
        Launch("gemm_tc", aligned ? "gemm_tc_lora_bf16" : "gemm_tc_lora_bf16_ragged", grid, 256, GemmTcSmemBytes, ref a);
        return xb;
    }

    /// <summary>y += scale * B (A x) on tensor cores from x already in bf16: the shrink alone, then y += u B^T (K = rank).</summary>
    private void LoraTensorCore(Tensor xb, LoraFactors f, float scale, Tensor y, int n, int m, int k)
    {
        var u = ShrinkTensorCore(xb, f.A, Bf16A(f), y, 0, scale, n, f.Rank, k);
        GemmTcLaunch(u, Bf16B(f), y, n, m, f.Rank, 1f, accumulate: true);
    }

    /// <summary>
    /// gemm_tc_shrink_bf16: y = x W^T over the first <paramref name="baseCols"/> columns (0: none, W unused) and
    /// u = bf16(scale * x A^T) into scratch, which it returns ([n, rank] BF16).
    /// </summary>
    private Tensor ShrinkTensorCore(Tensor xb, Tensor w, Tensor ab, Tensor y, int baseCols, float scale, int n, int r, int k)
    {
        var u = Scratch("lora_u_bf16", DType.BF16, (long)n * r).Reshape(n, r);
        bool aligned = k % 8 == 0 && r % 8 == 0 && xb.Pointer % 16 == 0 && (baseCols == 0 || w.Pointer % 16 == 0) && ab.Pointer % 16 == 0
                       && u.Pointer % 16 == 0;
        var s = new KernelArgs();
        s.Add(xb); s.Add(w); s.Add(ab); s.Add(y); s.Add(u); s.Add(n); s.Add(baseCols); s.Add(r); s.Add(k); s.Add(1f); s.Add(scale); s.Add(0);
        var grid = new Dim3((uint)((baseCols + r + GemmTcTile - 1) / GemmTcTile), (uint)((n + GemmTcTile - 1) / GemmTcTile));
        Launch("gemm_tc", aligned ? "gemm_tc_shrink_bf16" : "gemm_tc_shrink_bf16_ragged", grid, 256, GemmTcSmemBytes, ref s);
        return u;
    }

    /// <summary>A as bf16 [Rank, In], converted once and kept with the factors.</summary>
    private Tensor Bf16A(LoraFactors f)
    {
        if (f.Bf16A is { } done) return done;
        Expect("linear_lora", "A", f.A, DType.F32);
        NotCapturing("converting an adapter's A to bf16 (run the step once before capturing it)");
        var t = Allocate(DType.BF16, f.Rank, f.In);
        Cast(f.A, t);
        f.SetBf16Copies(t, null);
        return t;
    }

    /// <summary>B as a dense bf16 [Out, Rank] matrix (from either form), converted once and kept with the factors.</summary>
    private Tensor Bf16B(LoraFactors f)
    {
        if (f.Bf16B is { } done) return done;
        NotCapturing("converting an adapter's B to bf16 (run the step once before capturing it)");
        var t = Allocate(DType.BF16, f.Out, f.Rank);
        if (f.Form == LoraBForm.Dense)
        {
            Expect("linear_lora", "B", f.B!, DType.F32);
            Cast(f.B!, t);
        }
        else
        {
            Expect("linear_lora", "RowStart", f.RowStart!, DType.I32);
            Expect("linear_lora", "Values", f.Values!, DType.F32);
            var a = new KernelArgs();
            a.Add(f.RowStart!); a.Add(f.Cols!); a.Add(f.Values!); a.Add(t); a.Add(f.Out); a.Add(f.Rank);
            Launch("lori_adapter", "lora_b_dense_bf16", StrideGrid(f.Out), _blockSize, 0, ref a);
        }
        f.SetBf16Copies(null, t);
        return t;
    }
}
