using System.Numerics.Tensors;
using LoRI.Tensors;
using LoRI.Training;

namespace LoRI.Backend.Cpu;

/// <summary>
/// The training ops on the CPU: thin tensor wrappers around the span kernels of CpuOps (CpuOps.Backward.cs), which
/// are checked against finite differences in double. Scratch for the transposes of the weight gradient and the
/// lm_head chunk grows once to the largest batch and is then reused (no allocation per step).
/// </summary>
public sealed unsafe partial class CpuBackend : ITrainingOps
{
    /// <summary>Floats of lm_head scratch at most (the vocabulary chunk shrinks for long batches).</summary>
    public const int CrossEntropyScratchFloats = 16 << 20;

    private float[] _dyT = [], _xT = [], _ceScratch = [], _gradB = [];

    /// <summary>dx = dy W runs as the tiled MatMul against a transposed copy: several times faster than the axpy form.</summary>
    public bool PrefersTransposedWeights => true;

    /// <summary>The CPU backward reads F32 weights only (the graph keeps F32 copies of others).</summary>
    public bool TrainsWith(DType weight) => weight == DType.F32;

    public void Cast(Tensor src, Tensor dst)
    {
        if (src.Length != dst.Length) throw Bad("Cast", $"{src} to {dst}: element counts differ");
        if (src.DType == dst.DType)
        {
            Buffer.MemoryCopy((void*)src.Pointer, (void*)dst.Pointer, dst.ByteSize, src.ByteSize);
            return;
        }
        if (dst.DType != DType.F32) throw new UnsupportedException($"Cast: {src.DType} to {dst.DType} on the CPU (only to F32)");
        CpuOps.ToFloat(src.DType, src.Pointer, 0, dst.Span<float>());
    }

    public void Transpose(Tensor src, Tensor dst)
    {
        ExpectF32("Transpose", src, dst);
        if (src.Rank != 2 || dst.Rank != 2 || dst.Rows != src.Cols || dst.Cols != src.Rows)
            throw Bad("Transpose", $"{src} to {dst}: expected [{src.Cols}, {src.Rows}]");
        TransposeSpan(src.Span<float>(), src.Rows, src.Cols, dst.Span<float>());
    }

    /// <summary>dst [cols, rows] = src [rows, cols]^T, in 32 x 32 tiles.</summary>
    private static void TransposeSpan(ReadOnlySpan<float> src, int rows, int cols, Span<float> dst)
    {
        const int tile = 32;
        for (int r0 = 0; r0 < rows; r0 += tile)
            for (int c0 = 0; c0 < cols; c0 += tile)
            {
                int r1 = Math.Min(rows, r0 + tile), c1 = Math.Min(cols, c0 + tile);
                for (int r = r0; r < r1; r++)
                    for (int c = c0; c < c1; c++)
                        dst[c * rows + r] = src[r * cols + c];
            }
    }

    public void Zero(Tensor t) => new Span<byte>((void*)t.Pointer, checked((int)t.ByteSize)).Clear();

    public void RmsNormBackward(Tensor x, Tensor weight, Tensor dy, float eps, Tensor dx, Tensor? dweight, bool accumulate)
    {
        ExpectF32("RmsNormBackward", x, weight, dy, dx);
        if (dweight is not null) ExpectF32("RmsNormBackward", dweight);
        CpuOps.RmsNormBackward(x.Span<float>(), weight.Span<float>(), dy.Span<float>(), checked((int)weight.Length), eps, dx.Span<float>(),
            dweight is null ? [] : dweight.Span<float>(), accumulate);
    }

    public void RopeBackward(Tensor dx, int heads, int headDim, Tensor positions, Tensor invFreq)
    {
        ExpectF32("RopeBackward", dx, invFreq);
        CpuOps.RopeBackward(dx.Span<float>(), heads, headDim, positions.Span<int>(), invFreq.Span<float>());
    }

    public void SwiGluBackward(Tensor gate, Tensor up, Tensor dy, Tensor dgate, Tensor dup)
    {
        ExpectF32("SwiGluBackward", gate, up, dy, dgate);
        ExpectF32("SwiGluBackward", dup);
        CpuOps.SwiGluBackward(gate.Span<float>(), up.Span<float>(), dy.Span<float>(), dgate.Span<float>(), dup.Span<float>());
    }

    public void AttentionForwardWithLse(Tensor q, Tensor k, Tensor v, int batch, int seqLen, int heads, int kvHeads, int headDim, Tensor y, Tensor lse)
    {
        ExpectF32("AttentionForwardWithLse", q, k, v, y);
        ExpectF32("AttentionForwardWithLse", lse);
        CpuOps.AttentionForwardWithLse(q.Span<float>(), k.Span<float>(), v.Span<float>(), batch, seqLen, heads, kvHeads, headDim,
            y.Span<float>(), lse.Span<float>());
    }

    public void AttentionBackward(Tensor q, Tensor k, Tensor v, Tensor y, Tensor lse, Tensor dy, int batch, int seqLen, int heads, int kvHeads,
                                  int headDim, Tensor dq, Tensor dk, Tensor dv)
    {
        ExpectF32("AttentionBackward", q, k, v, lse);
        ExpectF32("AttentionBackward", dy, dq, dk, dv);
        CpuOps.AttentionBackward(q.Span<float>(), k.Span<float>(), v.Span<float>(), lse.Span<float>(), dy.Span<float>(),
            batch, seqLen, heads, kvHeads, headDim, dq.Span<float>(), dk.Span<float>(), dv.Span<float>());
    }

    public void MatMulBackwardInput(Tensor dy, Tensor w, Tensor dx, float alpha, bool accumulate)
    {
        ExpectF32("MatMulBackwardInput", dy, w, dx);
        if (w.Rank != 2 || dy.Cols != w.Rows || dx.Cols != w.Cols || dx.Rows != dy.Rows)
            throw Bad("MatMulBackwardInput", $"dy {dy} times w {w} does not give dx {dx}");
        BackwardGemm.NN(dy.Span<float>(), w.Span<float>(), dx.Span<float>(), dy.Rows, w.Rows, w.Cols, alpha, accumulate);
    }

    /// <summary>dW (+)= alpha dy^T x as the tiled MatMul of the two transposes (dy^T [M, N] times (x^T [K, N])^T).</summary>
    public void MatMulBackwardWeight(Tensor dy, Tensor x, Tensor dW, float alpha, bool accumulate)
    {
        ExpectF32("MatMulBackwardWeight", dy, x, dW);
        int n = dy.Rows, m = dW.Rows, k = dW.Cols;
        if (dW.Rank != 2 || dy.Cols != m || x.Cols != k || x.Rows != n)
            throw Bad("MatMulBackwardWeight", $"dy {dy}^T times x {x} does not give dW {dW}");
        Grow(ref _dyT, (long)n * m);
        Grow(ref _xT, (long)n * k);
        TransposeSpan(dy.Span<float>(), n, m, _dyT);
        TransposeSpan(x.Span<float>(), n, k, _xT);
        fixed (float* pdy = _dyT, px = _xT)
            MatMul(new Tensor(this, DType.F32, [m, n], (nint)pdy, null), new Tensor(this, DType.F32, [k, n], (nint)px, null), dW, alpha, accumulate);
    }

    public double LmHeadCrossEntropy(Tensor h, Tensor w, Tensor targets, Tensor weights, Tensor loss, Tensor? dh, Tensor? dW)
    {
        ExpectF32("LmHeadCrossEntropy", h, w, weights, loss);
        int n = h.Rows;
        Grow(ref _ceScratch, Math.Min(CpuOps.CrossEntropyScratchLength(n, w.Rows), Math.Max(n, CrossEntropyScratchFloats)));
        return CpuOps.LmHeadCrossEntropy(h.Span<float>(), w.Span<float>(), w.Cols, targets.Span<int>(), weights.Span<float>(), loss.Span<float>(),
            dh is null ? [] : dh.Span<float>(), dW is null ? [] : dW.Span<float>(), _ceScratch);
    }

    public void EmbeddingBackward(Tensor ids, Tensor dy, Tensor dTable)
    {
        ExpectF32("EmbeddingBackward", dy, dTable);
        CpuOps.EmbeddingBackward(ids.Span<int>(), dy.Span<float>(), dTable.Cols, dTable.Span<float>());
    }

    /// <summary>Unmasked: dB += scale dy^T u directly. Masked: into scratch first, then only the kept entries are added.</summary>
    public void LoraGradB(Tensor dy, Tensor u, Tensor? mask, float scale, Tensor dB)
    {
        ExpectF32("LoraGradB", dy, u, dB);
        int n = dy.Rows, outDim = dB.Rows, r = dB.Cols;
        if (dB.Rank != 2 || dy.Cols != outDim || u.Cols != r || u.Rows != n)
            throw Bad("LoraGradB", $"dy {dy}, u {u}, dB {dB}");
        if (mask is null)
        {
            BackwardGemm.TN(dy.Span<float>(), u.Span<float>(), dB.Span<float>(), n, outDim, r, scale);
            return;
        }
        if (mask.Length != dB.Length) throw Bad("LoraGradB", $"mask {mask} for dB {dB}");
        Grow(ref _gradB, dB.Length);
        var g = _gradB.AsSpan(0, (int)dB.Length);
        g.Clear();
        BackwardGemm.TN(dy.Span<float>(), u.Span<float>(), g, n, outDim, r, scale);
        var keep = new ReadOnlySpan<byte>((void*)mask.Pointer, g.Length);
        var d = dB.Span<float>();
        for (int i = 0; i < g.Length; i++)
            if (keep[i] != 0) d[i] += g[i];
    }

    /// <summary>As GradClip.Norm: float sums of 4096-element blocks added in double.</summary>
    public void GradNorm(Tensor grad, Tensor? mask, Tensor norms, int index)
    {
        ExpectF32("GradNorm", grad, norms);
        var g = grad.Span<float>();
        if (mask is not null)
        {
            if (mask.Length != grad.Length) throw Bad("GradNorm", $"mask {mask} for gradient {grad}");
            var keep = new ReadOnlySpan<byte>((void*)mask.Pointer, g.Length);
            for (int i = 0; i < g.Length; i++)
                if (keep[i] == 0) g[i] = 0;
        }
        norms.Span<float>()[index] = GradClip.Norm(g);
    }

    /// <summary>Overwrites grad with the masked, clipped gradient (as the reference does in place), then steps.</summary>
    public void AdamWStep(Tensor param, Tensor grad, Tensor m, Tensor v, Tensor? live, Tensor? mask, Tensor? coef, int coefIndex, in AdamWScalars s)
    {
        ExpectF32("AdamWStep", param, grad, m, v);
        var g = grad.Span<float>();
        if (mask is not null)
        {
            var keep = new ReadOnlySpan<byte>((void*)mask.Pointer, g.Length);
            for (int i = 0; i < g.Length; i++)
                if (keep[i] == 0) g[i] = 0;
        }
        if (coef is not null)
        {
            float c = coef.Span<float>()[coefIndex];
            if (c != 1f) TensorPrimitives.Multiply(g, c, g);
        }
        AdamW.Update(param.Span<float>(), g, m.Span<float>(), v.Span<float>(), live is null ? [] : live.Span<int>(), live is not null, s);
    }

    private static void Grow(ref float[] a, long length)
    {
        if (a.Length < length) a = GC.AllocateArray<float>(checked((int)length), pinned: true);
    }
}
