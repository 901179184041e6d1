using System.Buffers;
using System.Numerics.Tensors;
using static LoRI.Backend.Cpu.BackwardSupport;

namespace LoRI.Backend.Cpu;

/// <summary>
/// Backward kernels of the Llama graph on host spans, F32, row-major, one row per token ([N, features]).
/// Each one is the exact derivative of the forward op as IBackend documents it. Conventions:
///  - parameter gradients (dWeight, dW, dA, dB, dTable) accumulate (`+=`), so a step's gradients sum over
///    micro-batches; activation gradients (dx, dq, ...) are written (`=`) unless `accumulate` says `+=`;
///  - an empty span for an optional gradient means "not trained, do not compute".
/// The double-precision references these are checked against live in tests/LoRI.Tests/Training.
/// </summary>
public static partial class CpuOps
{
    /// <summary>
    /// RMSNorm backward. Forward: y = x * r * w with r = 1/sqrt(mean(x^2) + eps), per row of length dim.
    /// dx_j = r * w_j dy_j - x_j * r^3 / dim * sum_k w_k dy_k x_k; dWeight_j += sum_rows dy_j x_j r.
    /// </summary>
    public static unsafe void RmsNormBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> weight, ReadOnlySpan<float> dy,
                                              int dim, float eps, Span<float> dx, Span<float> dWeight, bool accumulate = false)
    {
        int rows = CheckRows(x.Length, dim, nameof(x));
        CheckLength(weight.Length, dim, nameof(weight));
        CheckLength(dy.Length, x.Length, nameof(dy));
        CheckLength(dx.Length, x.Length, nameof(dx));
        if (!dWeight.IsEmpty) CheckLength(dWeight.Length, dim, nameof(dWeight));
        fixed (float* px = x, pw = weight, pdy = dy, pdx = dx)
        {
            float* cx = px, cw = pw, cdy = pdy, cdx = pdx;
            For(rows, (long)rows * dim >= ParallelThreshold, r =>
            {
                var xr = new ReadOnlySpan<float>(cx + (long)r * dim, dim);
                var dyr = new ReadOnlySpan<float>(cdy + (long)r * dim, dim);
                var wv = new ReadOnlySpan<float>(cw, dim);
                var dxr = new Span<float>(cdx + (long)r * dim, dim);
                float ms = TensorPrimitives.SumOfSquares(xr) / dim;
                float inv = 1f / MathF.Sqrt(ms + eps);
                // sum_k w_k dy_k x_k, in double: it is a long dot product whose error would show in dx.
                double dot = 0;
                for (int k = 0; k < dim; k++) dot += (double)wv[k] * dyr[k] * xr[k];
                float c = (float)(dot * inv * inv * inv / dim);
                for (int j = 0; j < dim; j++)
                {
                    float g = inv * wv[j] * dyr[j] - c * xr[j];
                    dxr[j] = accumulate ? dxr[j] + g : g;
                }
            });
        }
        if (dWeight.IsEmpty) return;
        for (int r = 0; r < rows; r++)
        {
            var xr = x.Slice(r * dim, dim);
            float inv = 1f / MathF.Sqrt(TensorPrimitives.SumOfSquares(xr) / dim + eps);
            var dyr = dy.Slice(r * dim, dim);
            for (int j = 0; j < dim; j++) dWeight[j] += dyr[j] * xr[j] * inv;
        }
    }

    /// <summary>
    /// RoPE backward, in place on the gradient: the forward rotates each pair (i, i + d/2) of every head by
    /// angle pos * invFreq[i] (HF rotate-half); its transpose rotates the gradient pair by -angle.
    /// grad [N, heads * headDim]; positions [N]; invFreq [headDim / 2].
    /// </summary>
    public static void RopeBackward(Span<float> grad, int heads, int headDim, ReadOnlySpan<int> positions, ReadOnlySpan<float> invFreq)
    {
        int width = heads * headDim, half = headDim / 2;
        int rows = CheckRows(grad.Length, width, nameof(grad));
        CheckLength(positions.Length, rows, nameof(positions));
        CheckLength(invFreq.Length, half, nameof(invFreq));
        for (int n = 0; n < rows; n++)
        {
            int pos = positions[n];
            for (int i = 0; i < half; i++)
            {
                // The forward's angle and SinCos, so the backward rotates by exactly the negated angle.
                var (s, c) = MathF.SinCos(pos * invFreq[i]);
                for (int h = 0; h < heads; h++)
                {
                    int o = n * width + h * headDim + i;
                    float g1 = grad[o], g2 = grad[o + half];
                    grad[o] = g1 * c + g2 * s;
                    grad[o + half] = g2 * c - g1 * s;
                }
            }
        }
    }

    /// <summary>
    /// Causal grouped-query attention for training, where the keys and values of a batch are its own
    /// activations: `batch` sequences of `seqLen` tokens each, token (b, t) at row b * seqLen + t attends
    /// to rows b * seqLen + 0..t. Same maths as IBackend.Attention (scale 1/sqrt(headDim), query head h reads
    /// KV head h / (heads / kvHeads)), and it also writes the log-sum-exp of every (row, head)'s scaled
    /// scores, which is all AttentionBackward needs to rebuild the probabilities.
    /// q, y [N, heads * headDim]; k, v [N, kvHeads * headDim]; lse [N, heads].
    /// </summary>
    public static unsafe void AttentionForwardWithLse(ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v,
                                                      int batch, int seqLen, int heads, int kvHeads, int headDim,
                                                      Span<float> y, Span<float> lse)
    {
        var s = AttentionShape.Check(q.Length, k.Length, v.Length, batch, seqLen, heads, kvHeads, headDim);
        CheckLength(y.Length, q.Length, nameof(y));
        CheckLength(lse.Length, s.N * heads, nameof(lse));
        fixed (float* pq = q, pk = k, pv = v, py = y, pl = lse)
        {
            float* cq = pq, ck = pk, cv = pv, cy = py, cl = pl;
            For(batch * heads, (long)s.N * seqLen * s.QWidth >= ParallelThreshold, task =>
            {
                int b = task / heads, h = task % heads, kvh = h / s.Group;
                float[]? rented = null;
                Span<float> p = seqLen <= 2048 ? stackalloc float[seqLen] : (rented = ArrayPool<float>.Shared.Rent(seqLen)).AsSpan(0, seqLen);
                for (int t = 0; t < seqLen; t++)
                {
                    long row = (long)b * seqLen + t;
                    var qv = new ReadOnlySpan<float>(cq + row * s.QWidth + h * headDim, headDim);
                    var yv = new Span<float>(cy + row * s.QWidth + h * headDim, headDim);
                    float max = float.NegativeInfinity;
                    for (int j = 0; j <= t; j++)
                    {
                        var kv = new ReadOnlySpan<float>(ck + ((long)b * seqLen + j) * s.KvWidth + kvh * headDim, headDim);
                        p[j] = TensorPrimitives.Dot(qv, kv) * s.Scale;
                        if (p[j] > max) max = p[j];
                    }
                    float sum = 0;
                    for (int j = 0; j <= t; j++) { p[j] = MathF.Exp(p[j] - max); sum += p[j]; }
                    yv.Clear();
                    float invSum = 1f / sum;
                    for (int j = 0; j <= t; j++)
                    {
                        var vv = new ReadOnlySpan<float>(cv + ((long)b * seqLen + j) * s.KvWidth + kvh * headDim, headDim);
                        TensorPrimitives.MultiplyAdd(vv, p[j] * invSum, yv, yv);
                    }
                    cl[row * heads + h] = max + MathF.Log(sum);
                }
                if (rented is not null) ArrayPool<float>.Shared.Return(rented);
            });
        }
    }

    /// <summary>
    /// Backward of AttentionForwardWithLse. With P_j = exp(scale q.k_j - lse) (j &lt;= t), dP_j = dy.v_j,
    /// D = sum_j P_j dP_j and dS_j = P_j (dP_j - D): dq = scale sum_j dS_j k_j, dk_j += scale dS_j q,
    /// dv_j += P_j dy, summed over every query head of the group and every later query. dq, dk, dv are
    /// written (=). Work is split by (sequence, KV head), so no two threads touch the same dk/dv row.
    /// </summary>
    public static unsafe void AttentionBackward(ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v,
                                                ReadOnlySpan<float> lse, ReadOnlySpan<float> dy,
                                                int batch, int seqLen, int heads, int kvHeads, int headDim,
                                                Span<float> dq, Span<float> dk, Span<float> dv)
    {
        var s = AttentionShape.Check(q.Length, k.Length, v.Length, batch, seqLen, heads, kvHeads, headDim);
        CheckLength(lse.Length, s.N * heads, nameof(lse));
        CheckLength(dy.Length, q.Length, nameof(dy));
        CheckLength(dq.Length, q.Length, nameof(dq));
        CheckLength(dk.Length, k.Length, nameof(dk));
        CheckLength(dv.Length, v.Length, nameof(dv));
        fixed (float* pq = q, pk = k, pv = v, pl = lse, pdy = dy, pdq = dq, pdk = dk, pdv = dv)
        {
            float* cq = pq, ck = pk, cv = pv, cl = pl, cdy = pdy, cdq = pdq, cdk = pdk, cdv = pdv;
            For(batch * kvHeads, (long)s.N * seqLen * s.QWidth >= ParallelThreshold, task =>
            {
                int b = task / kvHeads, kvh = task % kvHeads;
                for (int t = 0; t < seqLen; t++)
                {
                    long row = (long)b * seqLen + t;
                    new Span<float>(cdk + row * s.KvWidth + kvh * headDim, headDim).Clear();
                    new Span<float>(cdv + row * s.KvWidth + kvh * headDim, headDim).Clear();
                }
                float[]? rented = null;
                Span<float> p = seqLen <= 2048 ? stackalloc float[seqLen] : (rented = ArrayPool<float>.Shared.Rent(seqLen)).AsSpan(0, seqLen);
                for (int h = kvh * s.Group; h < (kvh + 1) * s.Group; h++)
                    for (int t = 0; t < seqLen; t++)
                    {
                        long row = (long)b * seqLen + t;
                        var qv = new ReadOnlySpan<float>(cq + row * s.QWidth + h * headDim, headDim);
                        var dyv = new ReadOnlySpan<float>(cdy + row * s.QWidth + h * headDim, headDim);
                        var dqv = new Span<float>(cdq + row * s.QWidth + h * headDim, headDim);
                        float l = cl[row * heads + h];
                        double d = 0;
                        for (int j = 0; j <= t; j++)
                        {
                            long kr = ((long)b * seqLen + j) * s.KvWidth + kvh * headDim;
                            float pj = MathF.Exp(TensorPrimitives.Dot(qv, new ReadOnlySpan<float>(ck + kr, headDim)) * s.Scale - l);
                            float dpj = TensorPrimitives.Dot(dyv, new ReadOnlySpan<float>(cv + kr, headDim));
                            p[j] = pj;
                            d += (double)pj * dpj;
                            var dvv = new Span<float>(cdv + kr, headDim);
                            TensorPrimitives.MultiplyAdd(dyv, pj, dvv, dvv);
                        }
                        dqv.Clear();
                        for (int j = 0; j <= t; j++)
                        {
                            long kr = ((long)b * seqLen + j) * s.KvWidth + kvh * headDim;
                            float dpj = TensorPrimitives.Dot(dyv, new ReadOnlySpan<float>(cv + kr, headDim));
                            float ds = p[j] * (dpj - (float)d) * s.Scale;
                            TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(ck + kr, headDim), ds, dqv, dqv);
                            var dkv = new Span<float>(cdk + kr, headDim);
                            TensorPrimitives.MultiplyAdd(qv, ds, dkv, dkv);
                        }
                    }
                if (rented is not null) ArrayPool<float>.Shared.Return(rented);
            });
        }
    }

    /// <summary>
    /// SwiGLU backward. Forward y = silu(g) * u with silu(g) = g sigmoid(g):
    /// dGate = dy u sigmoid(g) (1 + g (1 - sigmoid(g))), dUp = dy silu(g). Both written (=).
    /// </summary>
    public static void SwiGluBackward(ReadOnlySpan<float> gate, ReadOnlySpan<float> up, ReadOnlySpan<float> dy,
                                      Span<float> dGate, Span<float> dUp)
    {
        CheckLength(up.Length, gate.Length, nameof(up));
        CheckLength(dy.Length, gate.Length, nameof(dy));
        CheckLength(dGate.Length, gate.Length, nameof(dGate));
        CheckLength(dUp.Length, gate.Length, nameof(dUp));
        for (int i = 0; i < gate.Length; i++)
        {
            float g = gate[i];
            float sg = 1f / (1f + MathF.Exp(-g));
            float silu = g * sg;
            float d = dy[i];
            dGate[i] = d * up[i] * sg * (1f + g * (1f - sg));
            dUp[i] = d * silu;
        }
    }

    /// <summary>
    /// Input gradient of y = x W^T: dx = dy W. dy [N, M]; w [M, K]; dx [N, K], written or accumulated.
    /// </summary>
    public static void LinearBackwardInput(ReadOnlySpan<float> dy, ReadOnlySpan<float> w, int m, int k, Span<float> dx,
                                           bool accumulate = false)
    {
        int n = CheckRows(dy.Length, m, nameof(dy));
        CheckLength(w.Length, (long)m * k, nameof(w));
        CheckLength(dx.Length, (long)n * k, nameof(dx));
        BackwardGemm.NN(dy, w, dx, n, m, k, 1f, accumulate);
    }

    /// <summary>Weight gradient of y = x W^T: dW += dy^T x. dy [N, M]; x [N, K]; dW [M, K].</summary>
    public static void LinearBackwardWeight(ReadOnlySpan<float> dy, ReadOnlySpan<float> x, int m, int k, Span<float> dW)
    {
        int n = CheckRows(dy.Length, m, nameof(dy));
        CheckLength(x.Length, (long)n * k, nameof(x));
        CheckLength(dW.Length, (long)m * k, nameof(dW));
        BackwardGemm.TN(dy, x, dW, n, m, k, 1f);
    }

    /// <summary>
    /// Backward of the adapter term of y = W x + s B (A x). Forward saved x [N, in] and u = A x [N, r].
    ///   dB [out, r] += s dy^T u
    ///   du = s dy B                      (scratch [N, r], written)
    ///   dA [r, in]  += du^T x            (LoRA only: pass an empty dA for LoRI, where A is frozen)
    ///   dx [N, in]  += du A              (the base term's dy W is LinearBackwardInput's job)
    /// dx may be empty when x's gradient is not needed (nothing trainable below it).
    /// </summary>
    public static void LoraBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> u, ReadOnlySpan<float> dy,
                                    ReadOnlySpan<float> a, ReadOnlySpan<float> b, int inFeatures, int outFeatures, int rank,
                                    float scale, Span<float> dA, Span<float> dB, Span<float> dx, Span<float> du)
    {
        int n = CheckRows(x.Length, inFeatures, nameof(x));
        CheckLength(u.Length, (long)n * rank, nameof(u));
        CheckLength(dy.Length, (long)n * outFeatures, nameof(dy));
        CheckLength(a.Length, (long)rank * inFeatures, nameof(a));
        CheckLength(b.Length, (long)outFeatures * rank, nameof(b));
        CheckLength(du.Length, (long)n * rank, nameof(du));
        if (!dB.IsEmpty) { CheckLength(dB.Length, b.Length, nameof(dB)); BackwardGemm.TN(dy, u, dB, n, outFeatures, rank, scale); }
        if (dA.IsEmpty && dx.IsEmpty) return;
        BackwardGemm.NN(dy, b, du, n, outFeatures, rank, scale, accumulate: false);
        if (!dA.IsEmpty) { CheckLength(dA.Length, a.Length, nameof(dA)); BackwardGemm.TN(du, x, dA, n, rank, inFeatures, 1f); }
        if (!dx.IsEmpty) { CheckLength(dx.Length, x.Length, nameof(dx)); BackwardGemm.NN(du, a, dx, n, rank, inFeatures, 1f, accumulate: true); }
    }

    /// <summary>Embedding backward: dTable[ids[i], :] += dy[i, :] (scatter-add; repeated ids add up).</summary>
    public static void EmbeddingBackward(ReadOnlySpan<int> ids, ReadOnlySpan<float> dy, int dim, Span<float> dTable)
    {
        int n = CheckRows(dy.Length, dim, nameof(dy));
        CheckLength(ids.Length, n, nameof(ids));
        int vocab = CheckRows(dTable.Length, dim, nameof(dTable));
        for (int i = 0; i < n; i++)
        {
            int id = ids[i];
            if ((uint)id >= (uint)vocab) throw new ArgumentOutOfRangeException(nameof(ids), $"token id {id} at row {i} is outside the vocabulary [0, {vocab})");
            var row = dTable.Slice(id * dim, dim);
            TensorPrimitives.Add(row, dy.Slice(i * dim, dim), row);
        }
    }

    /// <summary>Rows of the lm_head processed at once by LmHeadCrossEntropy unless scratch says fewer.</summary>
    public const int CrossEntropyVocabChunk = 8192;

    /// <summary>Scratch floats LmHeadCrossEntropy needs for <paramref name="rows"/> tokens and the given chunk.</summary>
    public static long CrossEntropyScratchLength(int rows, int vocab, int chunk = CrossEntropyVocabChunk) =>
        (long)rows * Math.Min(vocab, chunk);

    /// <summary>
    /// lm_head fused with softmax cross-entropy, over vocabulary chunks with an online log-sum-exp so the
    /// logits [N, V] never exist at once (only [N, chunk] in <paramref name="scratch"/>; the chunk is
    /// scratch.Length / N rows of W, at most V).
    ///   logits = h W^T (h [N, D], w [V, D]); loss[i] = lse_i - logits[i, targets[i]], 0 where targets[i] &lt; 0.
    /// With weights g_i (the reduction: 1/batch for sum-over-tokens-mean-over-sequences, 1/tokens for a
    /// token mean; 0 where there is no label), G = g_i (softmax_i - onehot(targets[i])) and
    ///   dh = G W (written, when dh is not empty), dW += G^T h (when dW is not empty: full fine-tuning).
    /// Returns sum_i g_i loss[i] in double.
    /// </summary>
    public static double LmHeadCrossEntropy(ReadOnlySpan<float> h, ReadOnlySpan<float> w, int dim, ReadOnlySpan<int> targets,
                                            ReadOnlySpan<float> weights, Span<float> loss, Span<float> dh, Span<float> dW,
                                            Span<float> scratch)
    {
        int n = CheckRows(h.Length, dim, nameof(h));
        int vocab = CheckRows(w.Length, dim, nameof(w));
        CheckLength(targets.Length, n, nameof(targets));
        CheckLength(weights.Length, n, nameof(weights));
        CheckLength(loss.Length, n, nameof(loss));
        if (!dh.IsEmpty) CheckLength(dh.Length, h.Length, nameof(dh));
        if (!dW.IsEmpty) CheckLength(dW.Length, w.Length, nameof(dW));
        if (n == 0) return 0;
        int chunk = (int)Math.Min(vocab, scratch.Length / n);
        if (chunk < 1) throw new ArgumentException($"scratch of {scratch.Length} floats is too small for {n} rows (needs at least {n})", nameof(scratch));
        for (int i = 0; i < n; i++)
            if (targets[i] >= vocab) throw new ArgumentOutOfRangeException(nameof(targets), $"target {targets[i]} at row {i} is outside the vocabulary [0, {vocab})");

        // Pass 1: running max and sum of exp per row, and the target's logit; loss holds the max meanwhile.
        float[] sumRented = ArrayPool<float>.Shared.Rent(n);
        var runMax = loss;
        var runSum = sumRented.AsSpan(0, n);
        float[] tgtRented = ArrayPool<float>.Shared.Rent(n);
        var tgtLogit = tgtRented.AsSpan(0, n);
        runMax.Fill(float.NegativeInfinity);
        runSum.Clear();
        for (int v0 = 0; v0 < vocab; v0 += chunk)
        {
            int c = Math.Min(chunk, vocab - v0);
            var logits = scratch[..(n * c)];
            BackwardGemm.NT(h, w.Slice(v0 * dim, c * dim), logits, n, dim, c, targets);
            for (int i = 0; i < n; i++)
            {
                if (targets[i] < 0) continue;
                var row = logits.Slice(i * c, c);
                float m = TensorPrimitives.Max(row);
                float newMax = MathF.Max(m, runMax[i]);
                float sum = 0;
                for (int j = 0; j < c; j++) sum += MathF.Exp(row[j] - newMax);
                runSum[i] = runSum[i] * MathF.Exp(runMax[i] - newMax) + sum;
                runMax[i] = newMax;
                int t = targets[i] - v0;
                if ((uint)t < (uint)c) tgtLogit[i] = row[t];
            }
        }
        double total = 0;
        for (int i = 0; i < n; i++)
        {
            if (targets[i] < 0) { loss[i] = 0; continue; }
            float lse = runMax[i] + MathF.Log(runSum[i]);
            runSum[i] = lse;
            loss[i] = lse - tgtLogit[i];
            total += (double)weights[i] * loss[i];
        }

        // Pass 2: G per chunk, then dh = G W and dW += G^T h.
        if (!dh.IsEmpty || !dW.IsEmpty)
        {
            if (!dh.IsEmpty) dh.Clear();
            for (int v0 = 0; v0 < vocab; v0 += chunk)
            {
                int c = Math.Min(chunk, vocab - v0);
                var g = scratch[..(n * c)];
                var wc = w.Slice(v0 * dim, c * dim);
                BackwardGemm.NT(h, wc, g, n, dim, c, targets);
                for (int i = 0; i < n; i++)
                {
                    var row = g.Slice(i * c, c);
                    if (targets[i] < 0) { row.Clear(); continue; }
                    float gi = weights[i];
                    TensorPrimitives.Subtract(row, runSum[i], row);
                    TensorPrimitives.Exp(row, row);
                    TensorPrimitives.Multiply(row, gi, row);
                    int t = targets[i] - v0;
                    if ((uint)t < (uint)c) row[t] -= gi;
                }
                if (!dh.IsEmpty) BackwardGemm.NN(g, wc, dh, n, c, dim, 1f, accumulate: true);
                if (!dW.IsEmpty) BackwardGemm.TN(g, h, dW.Slice(v0 * dim, c * dim), n, c, dim, 1f);
            }
        }
        ArrayPool<float>.Shared.Return(sumRented);
        ArrayPool<float>.Shared.Return(tgtRented);
        return total;
    }
}

/// <summary>Shared checks and the threading rule of the backward kernels.</summary>
internal static class BackwardSupport
{
    // Below this many multiply-adds an op runs on the calling thread: Parallel.For costs more than it saves.
    internal const long ParallelThreshold = 1 << 16;

    /// <summary>
    /// body(0..count) on the shared WorkerPool (the forward ops' fork-join pool: no Parallel.For task objects per
    /// call). Bodies write disjoint outputs, so the result does not depend on how the indices are split.
    /// </summary>
    internal static void For(int count, bool parallel, Action<int> body)
    {
        if (!parallel || count <= 1 || WorkerPool.Shared.Workers == 1)
        {
            for (int i = 0; i < count; i++) body(i);
            return;
        }
        var job = t_forJob ??= new ForJob();
        job.Body = body;
        try { WorkerPool.Shared.Run(job, count); }
        finally { job.Body = null; }
    }

    [ThreadStatic] private static ForJob? t_forJob;

    private sealed class ForJob : ParallelJob
    {
        public Action<int>? Body;

        public override void Execute(int begin, int end, int worker)
        {
            var body = Body!;
            for (int i = begin; i < end; i++) body(i);
        }
    }

    internal static int CheckRows(long length, int width, string name)
    {
        if (width <= 0) throw new ArgumentOutOfRangeException(name, $"{name}: row width must be positive, found {width}");
        if (length % width != 0) throw new ArgumentException($"{name}: {length} elements is not a whole number of rows of {width}", name);
        return checked((int)(length / width));
    }

    internal static void CheckLength(long found, long expected, string name)
    {
        if (found != expected) throw new ArgumentException($"{name}: expected {expected} elements, found {found}", name);
    }

    internal readonly record struct AttentionShape(int N, int QWidth, int KvWidth, int Group, float Scale)
    {
        public static AttentionShape Check(long q, long k, long v, int batch, int seqLen, int heads, int kvHeads, int headDim)
        {
            if (heads <= 0 || kvHeads <= 0 || headDim <= 0 || heads % kvHeads != 0)
                throw new ArgumentException($"attention: {heads} heads cannot share {kvHeads} KV heads of dim {headDim}");
            int n = checked(batch * seqLen);
            CheckLength(q, (long)n * heads * headDim, nameof(q));
            CheckLength(k, (long)n * kvHeads * headDim, nameof(k));
            CheckLength(v, (long)n * kvHeads * headDim, nameof(v));
            return new AttentionShape(n, heads * headDim, kvHeads * headDim, heads / kvHeads, 1f / MathF.Sqrt(headDim));
        }
    }
}

/// <summary>
/// The three matrix products the backward needs, F32 row-major, SIMD on the inner dimension and
/// Parallel.For over independent output rows.
/// </summary>
internal static class BackwardGemm
{
    /// <summary>c [n, k] (+)= alpha * a [n, m] b [m, k].</summary>
    public static unsafe void NN(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> c, int n, int m, int k, float alpha, bool accumulate)
    {
        fixed (float* pa = a, pb = b, pc = c)
        {
            float* ca = pa, cb = pb, cc = pc;
            BackwardSupport.For(n, (long)n * m * k >= BackwardSupport.ParallelThreshold, i =>
            {
                var ci = new Span<float>(cc + (long)i * k, k);
                if (!accumulate) ci.Clear();
                for (int j = 0; j < m; j++)
                {
                    float s = alpha * ca[(long)i * m + j];
                    if (s == 0) continue;
                    TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(cb + (long)j * k, k), s, ci, ci);
                }
            });
        }
    }

    /// <summary>c [m, k] += alpha * a [n, m]^T b [n, k].</summary>
    public static unsafe void TN(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> c, int n, int m, int k, float alpha)
    {
        fixed (float* pa = a, pb = b, pc = c)
        {
            float* ca = pa, cb = pb, cc = pc;
            BackwardSupport.For(m, (long)n * m * k >= BackwardSupport.ParallelThreshold, j =>
            {
                var cj = new Span<float>(cc + (long)j * k, k);
                for (int i = 0; i < n; i++)
                {
                    float s = alpha * ca[(long)i * m + j];
                    if (s == 0) continue;
                    TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(cb + (long)i * k, k), s, cj, cj);
                }
            });
        }
    }

    /// <summary>c [n, m] = a [n, k] b [m, k]^T; rows i with skip[i] &lt; 0 are left as they are.</summary>
    public static unsafe void NT(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> c, int n, int k, int m, ReadOnlySpan<int> skip)
    {
        fixed (float* pa = a, pb = b, pc = c)
        fixed (int* ps = skip)
        {
            float* ca = pa, cb = pb, cc = pc;
            int* cs = ps;
            bool useSkip = !skip.IsEmpty;
            BackwardSupport.For(n, (long)n * m * k >= BackwardSupport.ParallelThreshold, i =>
            {
                if (useSkip && cs[i] < 0) return;
                var ai = new ReadOnlySpan<float>(ca + (long)i * k, k);
                for (int j = 0; j < m; j++)
                    cc[(long)i * m + j] = TensorPrimitives.Dot(ai, new ReadOnlySpan<float>(cb + (long)j * k, k));
            });
        }
    }
}
