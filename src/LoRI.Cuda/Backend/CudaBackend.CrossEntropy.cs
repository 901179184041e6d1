using LoRI.Backend;
using LoRI.Cuda.Driver;
using LoRI.Tensors;

namespace LoRI.Cuda.Backend;

/// <summary>
/// The backward products (native/kernels/matmul_backward.cu, or on tensor cores through CudaBackend.GemmBackward.cs
/// when <see cref="Bf16Activations"/> is on) and the lm_head fused with the cross-entropy
/// over vocabulary chunks (native/kernels/cross_entropy.cu), with CpuOps.LmHeadCrossEntropy's conventions.
/// </summary>
public sealed unsafe partial class CudaBackend
{
    /// <summary>
    /// Input gradient of y = x W^T: dx = alpha * dy W (+ dx when accumulate). dy F32 [N, M]; w [M, K] F32 or BF16; dx F32 [N, K].
    /// A BF16 w with <see cref="Bf16Activations"/> on and at least <see cref="TensorCoreMinTokens"/> rows runs on tensor cores (dy rounded to bf16).
    /// </summary>
    public void MatMulBackwardInput(Tensor dy, Tensor w, Tensor dx, float alpha = 1f, bool accumulate = false)
    {
        Expect("matmul_backward_input", "dy", dy, DType.F32);
        Own(w, "w");
        Expect("matmul_backward_input", "dx", dx, DType.F32);
        if (w.Rank != 2 || w.DType is not (DType.F32 or DType.BF16)) throw new ShapeMismatchException($"matmul_backward_input: w is {w}, expected F32 or BF16 [out, in]");
        int m = w.Rows, k = w.Cols;
        if (dy.Cols != m) throw new ShapeMismatchException($"matmul_backward_input: dy is {dy} but w is {w}: dy's rows must have {m} elements");
        int n = RowsOf(dy, m);
        ExpectLength("matmul_backward_input", "dx", dx, (long)n * k);
        if (n == 0 || k == 0) return;
        if (TryTensorCoreBackwardInput(dy, w, dx, n, m, k, alpha, accumulate)) return;
        // A = dy [n, m] (sar = m, sak = 1), B(kk, c) = W[kk, c] (sbk = k, sbc = 1): inner dimension m
        Strided(dy, w, dx, n, k, m, m, 1, k, 1, alpha, accumulate);
    }

    /// <summary>
    /// Weight gradient of y = x W^T: dW = alpha * dy^T x (+ dW when accumulate). dy F32 [N, M]; x F32 [N, K]; dW F32 [M, K].
    /// With <see cref="Bf16Activations"/> on and at least <see cref="TensorCoreMinTokens"/> rows it runs on tensor cores (dy and x rounded to bf16).
    /// </summary>
    public void MatMulBackwardWeight(Tensor dy, Tensor x, Tensor dW, float alpha = 1f, bool accumulate = true)
    {
        Expect("matmul_backward_weight", "dy", dy, DType.F32);
        Expect("matmul_backward_weight", "x", x, DType.F32);
        Expect("matmul_backward_weight", "dW", dW, DType.F32);
        if (dW.Rank != 2) throw new ShapeMismatchException($"matmul_backward_weight: dW is {dW}, expected [out, in]");
        int m = dW.Rows, k = dW.Cols;
        int n = RowsOf(dy, m);
        if (dy.Cols != m || x.Cols != k) throw new ShapeMismatchException($"matmul_backward_weight: dy {dy}, x {x}, dW {dW}");
        ExpectLength("matmul_backward_weight", "x", x, (long)n * k);
        if (m == 0 || k == 0) return;
        if (TryTensorCoreBackwardWeight(dy, x, dW, n, m, k, alpha, accumulate)) return;
        // A(r, kk) = dy[kk, r] (sar = 1, sak = m), B(kk, c) = x[kk, c] (sbk = k, sbc = 1): inner dimension n
        Strided(dy, x, dW, m, k, n, 1, m, k, 1, alpha, accumulate);
    }

    private void Strided(Tensor a, Tensor b, Tensor y, int n, int m, int k, long sar, long sak, long sbk, long sbc, float alpha, bool accumulate)
    {
        var args = new KernelArgs();
        args.Add(a); args.Add(b); args.Add(y); args.Add(n); args.Add(m); args.Add(k);
        args.Add(sar); args.Add(sak); args.Add(sbk); args.Add(sbc); args.Add(alpha); args.Add(accumulate ? 1 : 0);
        Launch("matmul_backward", "matmul_strided_" + Suffix(b.DType), new Dim3((uint)((m + 63) / 64), (uint)((n + 63) / 64)), new Dim3(16, 16), 0, ref args);
    }

    /// <summary>
    /// The lm_head fused with softmax cross-entropy over vocabulary chunks of <paramref name="chunk"/> rows of W
    /// (CpuOps.LmHeadCrossEntropy): h F32 [N, D]; w [V, D] F32 or BF16; targets I32 [N] (&lt; 0: no label);
    /// weights F32 [N] (the reduction); loss F32 [N] written. When given, dh F32 [N, D] is written with G W and
    /// dW F32 [V, D] accumulates G^T h, G = weights_i (softmax_i - onehot). Returns sum_i weights_i loss_i
    /// (downloads the losses: it waits for the stream).
    /// </summary>
    public double LmHeadCrossEntropy(Tensor h, Tensor w, Tensor targets, Tensor weights, Tensor loss, Tensor? dh, Tensor? dW,
                                     int chunk = LoRI.Backend.Cpu.CpuOps.CrossEntropyVocabChunk)
    {
        const string op = "lm_head_cross_entropy";
        Expect(op, "h", h, DType.F32);
        ExpectFloat(op, "w", w);
        Expect(op, "targets", targets, DType.I32);
        Expect(op, "weights", weights, DType.F32);
        Expect(op, "loss", loss, DType.F32);
        if (w.Rank != 2) throw new ShapeMismatchException($"{op}: w is {w}, expected [vocab, dim]");
        int vocab = w.Rows, dim = w.Cols;
        if (h.Cols != dim) throw new ShapeMismatchException($"{op}: h is {h} but w is {w}: rows of {dim} expected");
        int n = RowsOf(h, dim);
        ExpectLength(op, "targets", targets, n);
        ExpectLength(op, "weights", weights, n);
        ExpectLength(op, "loss", loss, n);
        if (dh is not null) { Expect(op, "dh", dh, DType.F32); ExpectLength(op, "dh", dh, h.Length); }
        if (dW is not null) { Expect(op, "dW", dW, DType.F32); ExpectLength(op, "dW", dW, w.Length); }
        if (chunk < 1) throw new ArgumentOutOfRangeException(nameof(chunk), chunk, "a vocabulary chunk of at least one row");
        if (n == 0) return 0;
        chunk = Math.Min(chunk, vocab);
        var hm = h.Reshape(n, dim);
        var runSum = Scratch("ce_sum", DType.F32, n);
        var tgt = Scratch("ce_target_logit", DType.F32, n);
        var init = new KernelArgs();
        init.Add(loss); init.Add(runSum); init.Add(tgt); init.Add(n);
        Launch("cross_entropy", "ce_init", StrideGrid(n), _blockSize, 0, ref init);
        for (int v0 = 0; v0 < vocab; v0 += chunk)
        {
            int c = Math.Min(chunk, vocab - v0);
            var logits = Scratch("ce_logits", DType.F32, (long)n * chunk).View(0, n, c);
            MatMul(hm, w.Slice(v0, c), logits);
            var a = new KernelArgs();
            a.Add(logits); a.Add(targets); a.Add(c); a.Add(v0); a.Add(loss); a.Add(runSum); a.Add(tgt);
            Launch("cross_entropy", "ce_chunk_stats", n, _blockSize, 0, ref a);
        }
        var fin = new KernelArgs();
        fin.Add(targets); fin.Add(loss); fin.Add(runSum); fin.Add(tgt); fin.Add(loss); fin.Add(n);
        Launch("cross_entropy", "ce_finalize", StrideGrid(n), _blockSize, 0, ref fin);

        if (dh is not null || dW is not null)
        {
            for (int v0 = 0; v0 < vocab; v0 += chunk)
            {
                int c = Math.Min(chunk, vocab - v0);
                var g = Scratch("ce_logits", DType.F32, (long)n * chunk).View(0, n, c);
                var wc = w.Slice(v0, c);
                MatMul(hm, wc, g);
                var a = new KernelArgs();
                a.Add(g); a.Add(targets); a.Add(weights); a.Add(runSum); a.Add(c); a.Add(v0);
                Launch("cross_entropy", "ce_chunk_grad", n, _blockSize, 0, ref a);
                if (dh is not null) MatMulBackwardInput(g, wc, dh.Reshape(n, dim), 1f, accumulate: v0 > 0);
                if (dW is not null) MatMulBackwardWeight(g, hm, dW.Slice(v0, c), 1f, accumulate: true);
            }
        }
        var lossHost = new float[n];
        var weightHost = new float[n];
        Download<float>(loss, lossHost);
        Download<float>(weights, weightHost);
        double total = 0;
        for (int i = 0; i < n; i++) total += (double)weightHost[i] * lossHost[i];
        return total;
    }
}
