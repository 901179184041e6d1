// adamw: the optimizer step of training, with the arithmetic of the CPU backend (LoRI.Training.AdamW, which
// is torch.optim.AdamW's single-tensor code) so that both backends take the same step from the same gradient:
//   g  = grad * coef[coef_index]  (clipping; coef optional), g = 0 where mask[i] == 0 (mask optional)
//   p *= decay                    (decay = 1 - lr * weight_decay: exactly 1 without decay, and p * 1 is p)
//   m  = m + (1 - b1) (g - m)
//   v  = v b2 + ((1 - b2) g) g
//   p += (neg_step m) / (sqrt(v) / bc2_sqrt + eps)         neg_step = -lr / (1 - b1^t), bc2_sqrt = sqrt(1 - b2^t)
// The scalars come from the host, formed in double as Python forms them. Every operation is an IEEE
// single operation rounded to nearest (the _rn intrinsics: no FMA contraction, exact sqrt and division
// even under --use_fast_math). With `index`, entry e of m and v belongs to parameter entry index[e] (the
// compact state of a LoRI-S B: only live entries are touched); without, m and v are as long as param.
//
// grad_norm_partial / grad_norm_finish: the L2 norm of a (masked) gradient, deterministically: each block
// writes the double sum of squares of its fixed grid-stride share, then one thread adds the partials in
// block order and writes norms[index] = (float)sqrt(sum). No atomics, so a step's clipping coefficient does
// not depend on scheduling (a resumed run repeats the uninterrupted one bit for bit).
#include "../include/lori_cuda.cuh"

#define GN_MAX_BLOCKS 256

__device__ __forceinline__ double warp_sum_double(double v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(LORI_FULL_MASK, v, o);
    return v;
}

extern "C" __global__ void grad_norm_partial(const float* grad, const unsigned char* mask, long long n, double* partial)
{
    __shared__ double scratch[32];
    double s = 0.0;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    {
        const double g = (mask && !mask[i]) ? 0.0 : (double)grad[i];
        s += g * g;
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    s = warp_sum_double(s);
    if (lane == 0) scratch[warp] = s;
    __syncthreads();
    if (warp == 0)
    {
        s = lane < warps ? scratch[lane] : 0.0;
        s = warp_sum_double(s);
        if (lane == 0) partial[blockIdx.x] = s;
    }
}
LORI_KERNEL(grad_norm_partial)

extern "C" __global__ void grad_norm_finish(const double* partial, int blocks, float* norms, int index)
{
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    double s = 0.0;
    for (int b = 0; b < blocks; b++) s += partial[b];
    norms[index] = (float)sqrt(s);
}
LORI_KERNEL(grad_norm_finish)

extern "C" __global__ void adamw_step(float* param, const float* grad, float* m, float* v, const int* index, const unsigned char* mask,
                                      const float* coef, int coef_index, long long count, float decay,
                                      float one_minus_b1, float beta2, float one_minus_b2, float bc2_sqrt, float eps, float neg_step)
{
    const float scale = coef ? coef[coef_index] : 1.0f;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < count; e += (long long)gridDim.x * blockDim.x)
    {
        const long long i = index ? (long long)index[e] : e;
        float g = grad[i];
        if (mask && !mask[i]) g = 0.0f;
        else if (coef) g = __fmul_rn(g, scale);
        float p = param[i];
        p = __fmul_rn(p, decay);
        const float mi = __fadd_rn(m[e], __fmul_rn(one_minus_b1, __fsub_rn(g, m[e])));
        const float vi = __fadd_rn(__fmul_rn(v[e], beta2), __fmul_rn(__fmul_rn(one_minus_b2, g), g));
        const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), bc2_sqrt), eps);
        m[e] = mi;
        v[e] = vi;
        param[i] = __fadd_rn(p, __fdiv_rn(__fmul_rn(neg_step, mi), denom));
    }
}
LORI_KERNEL(adamw_step)
