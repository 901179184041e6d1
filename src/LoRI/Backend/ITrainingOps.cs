namespace LoRI.Backend;

/// <summary>
/// The ops training needs beyond <see cref="IBackend"/>: the backward of every forward op, the fused lm_head
/// cross-entropy, and the optimizer step. A backend that implements it can run LoRI.Training.TrainingGraph;
/// the graph is written once against these ops (the CPU backend and the CUDA backend both implement them).
///
/// Conventions as IBackend's: F32 activations and gradients, row-major, one row per token; an op writes (=)
/// unless it says it accumulates (+=). Gradients of weights always accumulate, so micro-batches add up.
/// </summary>
public interface ITrainingOps
{
    /// <summary>
    /// True when dx = dy W runs faster as the backend's MatMul(dy, W^T) on a transposed copy of W than as
    /// <see cref="MatMulBackwardInput"/>: the graph then keeps W^T (and refreshes it when W trains).
    /// </summary>
    bool PrefersTransposedWeights { get; }

    /// <summary>
    /// True when weights of this dtype can be used as stored by MatMul, MatMulBackwardInput and
    /// LmHeadCrossEntropy (frozen weights then need no F32 copy).
    /// </summary>
    bool TrainsWith(LoRI.Tensors.DType weight);

    /// <summary>dst = src converted to dst's dtype (a copy when the dtypes are equal). Equal element counts.</summary>
    void Cast(Tensor src, Tensor dst);

    /// <summary>dst [cols, rows] = src [rows, cols]^T, both F32.</summary>
    void Transpose(Tensor src, Tensor dst);

    /// <summary>t = 0.</summary>
    void Zero(Tensor t);

    /// <summary>
    /// Backward of RmsNorm: dx (=, or += when accumulate) from the forward's input x and dy; dweight (F32 [D],
    /// optional) += the weight gradient.
    /// </summary>
    void RmsNormBackward(Tensor x, Tensor weight, Tensor dy, float eps, Tensor dx, Tensor? dweight, bool accumulate);

    /// <summary>Backward of Rope, in place on the gradient (rotation by the negated angle).</summary>
    void RopeBackward(Tensor dx, int heads, int headDim, Tensor positions, Tensor invFreq);

    /// <summary>Backward of SwiGlu: dgate and dup (=) from the forward inputs and dy.</summary>
    void SwiGluBackward(Tensor gate, Tensor up, Tensor dy, Tensor dgate, Tensor dup);

    /// <summary>
    /// Causal attention of a training batch over its own keys: `batch` sequences of `seqLen` rows; q, y
    /// [N, heads * headDim]; k, v [N, kvHeads * headDim]; lse [N, heads] gets each row's log-sum-exp of scaled scores.
    /// </summary>
    void AttentionForwardWithLse(Tensor q, Tensor k, Tensor v, int batch, int seqLen, int heads, int kvHeads, int headDim, Tensor y, Tensor lse);

    /// <summary>Backward of AttentionForwardWithLse: dq, dk, dv (=) from the forward's q, k, v, y, lse and dy.</summary>
    void AttentionBackward(Tensor q, Tensor k, Tensor v, Tensor y, Tensor lse, Tensor dy, int batch, int seqLen, int heads, int kvHeads,
                           int headDim, Tensor dq, Tensor dk, Tensor dv);

    /// <summary>Input gradient of y = x W^T: dx = alpha * dy W (+ dx when accumulate). dy [N, M]; w [M, K]; dx [N, K].</summary>
    void MatMulBackwardInput(Tensor dy, Tensor w, Tensor dx, float alpha, bool accumulate);

    /// <summary>Weight gradient of y = x W^T: dW = alpha * dy^T x (+ dW when accumulate). dy [N, M]; x [N, K]; dW [M, K].</summary>
    void MatMulBackwardWeight(Tensor dy, Tensor x, Tensor dW, float alpha, bool accumulate);

    /// <summary>
    /// The lm_head fused with softmax cross-entropy over vocabulary chunks: h [N, D]; w [V, D]; targets I32 [N]
    /// (&lt; 0: no label); weights F32 [N]; loss F32 [N] written. dh (optional) [N, D] written with G W, dW
    /// (optional) [V, D] += G^T h, G = weights_i (softmax_i - onehot). Returns sum_i weights_i loss_i (waits for the backend).
    /// </summary>
    double LmHeadCrossEntropy(Tensor h, Tensor w, Tensor targets, Tensor weights, Tensor loss, Tensor? dh, Tensor? dW);

    /// <summary>dTable[ids[i], :] += dy[i, :]. ids I32 [N]; dy [N, D]; dTable F32 [V, D].</summary>
    void EmbeddingBackward(Tensor ids, Tensor dy, Tensor dTable);

    /// <summary>dB [Out, Rank] += scale * dy^T u, only where mask (U8/Bool [Out * Rank], optional) is non-zero.</summary>
    void LoraGradB(Tensor dy, Tensor u, Tensor? mask, float scale, Tensor dB);

    /// <summary>
    /// norms[index] = the L2 norm of grad over the entries where mask (U8/Bool, optional) is non-zero, summed
    /// in double and rounded to float. norms F32 [count]. Deterministic (no order depends on scheduling).
    /// </summary>
    void GradNorm(Tensor grad, Tensor? mask, Tensor norms, int index);

    /// <summary>
    /// One AdamW step with <paramref name="s"/>'s scalars (LoRI.Training.AdamW's arithmetic): the gradient is
    /// multiplied by coef[coefIndex] (F32, optional: clipping) and taken as 0 where mask is 0. Without
    /// <paramref name="live"/>, m and v are as long as param; with it (I32 [L], ascending), entry e of m and v
    /// belongs to param[live[e]] and only those entries change. grad's contents are unspecified afterwards (the
    /// caller zeroes it for the next step).
    /// </summary>
    void AdamWStep(Tensor param, Tensor grad, Tensor m, Tensor v, Tensor? live, Tensor? mask, Tensor? coef, int coefIndex, in AdamWScalars s);
}

/// <summary>
/// The per-step scalars of AdamW in fp32, formed in double from the options and the step number as
/// torch forms them (LoRI.Training.AdamW.Scalars): p *= Decay (when ApplyDecay); m += OneMinusBeta1 (g - m);
/// v = v Beta2 + (OneMinusBeta2 g) g; p += (NegStepSize m) / (sqrt(v) / Bc2Sqrt + Eps).
/// </summary>
public readonly record struct AdamWScalars(float Decay, bool ApplyDecay, float OneMinusBeta1, float Beta2,
                                           float OneMinusBeta2, float Bc2Sqrt, float Eps, float NegStepSize);
