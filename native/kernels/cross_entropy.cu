// cross_entropy: softmax cross-entropy fused with the lm_head over vocabulary chunks (CpuOps.LmHeadCrossEntropy):
// the logits of one chunk [N, c] (columns v0 .. v0 + c - 1 of the vocabulary) are made by a MatMul into
// scratch, then folded into per-row running statistics, so the [N, V] logits never exist at once.
//
// ce_init:        run_max = -inf, run_sum = 0, tgt = 0 for N rows (grid-stride).
// ce_chunk_stats: one block per row: run_max / run_sum updated with the chunk (online log-sum-exp), the
//                 target's logit taken when it falls in the chunk. Rows with target < 0 are skipped.
// ce_finalize:    lse = run_max + log(run_sum) (kept in run_sum); loss = lse - target logit, 0 without a
//                 target; loss may alias run_max.
// ce_chunk_grad:  one block per row, in place on the chunk's logits: G = w_i (exp(logit - lse) - onehot),
//                 0 for rows without a target. Then dh += G W_chunk and dW_chunk += G^T h (matmul_backward.cu).
#include "../include/lori_cuda.cuh"

extern "C" __global__ void ce_init(float* run_max, float* run_sum, float* tgt, int n)
{
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    {
        run_max[i] = -__int_as_float(0x7f800000);
        run_sum[i] = 0.f;
        tgt[i] = 0.f;
    }
}
LORI_KERNEL(ce_init)

extern "C" __global__ void ce_chunk_stats(const float* logits, const int* targets, int c, int v0, float* run_max, float* run_sum, float* tgt)
{
    __shared__ float scratch[32];
    const int i = blockIdx.x;
    const int target = targets[i];
    if (target < 0) return;
    const float* row = logits + (long long)i * c;
    float m = -__int_as_float(0x7f800000);
    for (int j = threadIdx.x; j < c; j += blockDim.x) m = fmaxf(m, row[j]);
    m = block_max(m, scratch);
    const float old = run_max[i];
    const float mnew = fmaxf(m, old);
    float s = 0.f;
    for (int j = threadIdx.x; j < c; j += blockDim.x) s += expf(row[j] - mnew);
    s = block_sum(s, scratch);
    if (threadIdx.x == 0)
    {
        run_sum[i] = run_sum[i] * expf(old - mnew) + s;
        run_max[i] = mnew;
        const int t = target - v0;
        if (t >= 0 && t < c) tgt[i] = row[t];
    }
}
LORI_KERNEL(ce_chunk_stats)

extern "C" __global__ void ce_finalize(const int* targets, float* run_max, float* run_sum, const float* tgt, float* loss, int n)
{
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    {
        if (targets[i] < 0) { loss[i] = 0.f; continue; }
        const float lse = run_max[i] + logf(run_sum[i]);
        run_sum[i] = lse;
        loss[i] = lse - tgt[i];
    }
}
LORI_KERNEL(ce_finalize)

extern "C" __global__ void ce_chunk_grad(float* logits, const int* targets, const float* weights, const float* lse, int c, int v0)
{
    const int i = blockIdx.x;
    const int target = targets[i];
    float* row = logits + (long long)i * c;
    const float g = weights[i], l = target >= 0 ? lse[i] : 0.f;
    for (int j = threadIdx.x; j < c; j += blockDim.x)
        row[j] = target < 0 ? 0.f : g * (expf(row[j] - l) - (j + v0 == target ? 1.f : 0.f));
}
LORI_KERNEL(ce_chunk_grad)
