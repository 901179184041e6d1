using LoRI.Backend;
using LoRI.Cuda.Driver;
using LoRI.Tensors;

namespace LoRI.Cuda.Backend;

/// <summary>
/// The training ops (ITrainingOps) on CUDA: what the other partials do not already offer with the interface's
/// signature: the deterministic gradient norm and AdamW (native/kernels/adamw.cu, the CPU backend's arithmetic),
/// the embedding gradient, the transpose, zeroing, and the lm_head cross-entropy at its default chunk.
/// </summary>
public sealed unsafe partial class CudaBackend : ITrainingOps
{
    private const int GradNormMaxBlocks = 256;

    /// <summary>The strided backward GEMM reads W as stored: no transposed copies.</summary>
    public bool PrefersTransposedWeights => false;

    /// <summary>MatMul, MatMulBackwardInput and the cross-entropy read F32 and BF16 weights as stored.</summary>
    public bool TrainsWith(DType weight) => weight is DType.F32 or DType.BF16;

    public void Transpose(Tensor src, Tensor dst)
    {
        Expect("transpose", "src", src, DType.F32);
        Expect("transpose", "dst", dst, DType.F32);
        if (src.Rank != 2 || dst.Rank != 2 || dst.Rows != src.Cols || dst.Cols != src.Rows)
            throw new ShapeMismatchException($"transpose: {src} to {dst}: expected [{src.Cols}, {src.Rows}]");
        if (src.Length == 0) return;
        var a = new KernelArgs();
        a.Add(src); a.Add(dst); a.Add(src.Rows); a.Add(src.Cols);
        Launch("cast", "transpose_f32", new Dim3((uint)((src.Cols + 31) / 32), (uint)((src.Rows + 31) / 32)), new Dim3(32, 8), 0, ref a);
    }

    public void Zero(Tensor t)
    {
        Own(t, "t");
        if (t.ByteSize == 0) return;
        NotCapturing("a memset");
        Driver.Memset((ulong)t.Pointer, 0, t.ByteSize, Stream);
    }

    void ITrainingOps.RmsNormBackward(Tensor x, Tensor weight, Tensor dy, float eps, Tensor dx, Tensor? dweight, bool accumulate) =>
        RmsNormBackward(x, weight, dy, eps, dx, dweight, accumulate);

    double ITrainingOps.LmHeadCrossEntropy(Tensor h, Tensor w, Tensor targets, Tensor weights, Tensor loss, Tensor? dh, Tensor? dW) =>
        LmHeadCrossEntropy(h, w, targets, weights, loss, dh, dW);

    /// <summary>dTable[ids[i], :] += dy[i, :], tokens in order per column (deterministic). ids outside the table are skipped.</summary>
    public void EmbeddingBackward(Tensor ids, Tensor dy, Tensor dTable)
    {
        Expect("embedding_backward", "ids", ids, DType.I32);
        Expect("embedding_backward", "dy", dy, DType.F32);
        Expect("embedding_backward", "dTable", dTable, DType.F32);
        int d = dTable.Cols, n = checked((int)ids.Length);
        ExpectLength("embedding_backward", "dy", dy, (long)n * d);
        if (n == 0 || d == 0) return;
        var a = new KernelArgs();
        a.Add(ids); a.Add(dy); a.Add(dTable); a.Add(n); a.Add(d); a.Add(RowsOf(dTable, d));
        Launch("embedding", "embedding_backward", StrideGrid(d), _blockSize, 0, ref a);
    }

    public void GradNorm(Tensor grad, Tensor? mask, Tensor norms, int index)
    {
        Expect("grad_norm", "grad", grad, DType.F32);
        Expect("grad_norm", "norms", norms, DType.F32);
        if ((uint)index >= (ulong)norms.Length) throw new ArgumentOutOfRangeException(nameof(index), index, $"norms has {norms.Length} entries");
        CheckMask("grad_norm", mask, grad.Length);
        int blocks = (int)Math.Clamp((grad.Length + _blockSize - 1) / _blockSize, 1, GradNormMaxBlocks);
        var partial = Scratch("grad_norm_partial", DType.F64, GradNormMaxBlocks);
        var a = new KernelArgs();
        a.Add(grad); a.Add(mask is null ? 0UL : (ulong)mask.Pointer); a.Add(grad.Length); a.Add(partial);
        Launch("adamw", "grad_norm_partial", blocks, _blockSize, 0, ref a);
        var f = new KernelArgs();
        f.Add(partial); f.Add(blocks); f.Add(norms); f.Add(index);
        Launch("adamw", "grad_norm_finish", 1, 32, 0, ref f);
    }

    public void AdamWStep(Tensor param, Tensor grad, Tensor m, Tensor v, Tensor? live, Tensor? mask, Tensor? coef, int coefIndex, in AdamWScalars s)
    {
        const string op = "adamw_step";
        Expect(op, "param", param, DType.F32);
        Expect(op, "grad", grad, DType.F32);
        Expect(op, "m", m, DType.F32);
        Expect(op, "v", v, DType.F32);
        ExpectLength(op, "grad", grad, param.Length);
        long count = param.Length;
        if (live is not null)
        {
            Expect(op, "live", live, DType.I32);
            count = live.Length;
        }
        ExpectLength(op, "m", m, count);
        ExpectLength(op, "v", v, count);
        CheckMask(op, mask, param.Length);
        if (coef is not null)
        {
            Expect(op, "coef", coef, DType.F32);
            if ((uint)coefIndex >= (ulong)coef.Length) throw new ArgumentOutOfRangeException(nameof(coefIndex), coefIndex, $"coef has {coef.Length} entries");
        }
        if (count == 0) return;
        var a = new KernelArgs();
        a.Add(param); a.Add(grad); a.Add(m); a.Add(v);
        a.Add(live is null ? 0UL : (ulong)live.Pointer); a.Add(mask is null ? 0UL : (ulong)mask.Pointer); a.Add(coef is null ? 0UL : (ulong)coef.Pointer);
        a.Add(coefIndex); a.Add(count); a.Add(s.ApplyDecay ? s.Decay : 1f);
        a.Add(s.OneMinusBeta1); a.Add(s.Beta2); a.Add(s.OneMinusBeta2); a.Add(s.Bc2Sqrt); a.Add(s.Eps); a.Add(s.NegStepSize);
        Launch("adamw", op, StrideGrid(count), _blockSize, 0, ref a);
    }
}
