// gemv: the MatMul op for decode (a few tokens), memory-bound on the weight:
//   y = alpha * x W^T (+ y when accumulate != 0), x f32 [n, K] with n <= GEMV_MAX_TOKENS, W bf16 [M, K],
//   y f32 [n, M]. x stays fp32 (no rounding of activations), W is read once for all n tokens.
//
// A block has 8 warps. With `ksplit` in {1, 2, 4, 8}, warp w works on row blockIdx.x * (8 / ksplit) +
// w / ksplit of W over part w % ksplit of K; each lane reads 16 bytes (8 weights) at a time, so a warp
// reads 512 contiguous bytes per step. Partial sums meet through a warp shuffle reduction, then shared
// memory across the K parts. Split-K keeps enough warps busy when M is small (e.g. a LoRA shrink, M = rank).
// gemv_bf16 needs K % 8 == 0 and 16-byte aligned x and W; gemv_bf16_ragged reads one element at a time.
// Grid ceil(M / (8 / ksplit)), block 256.
#include "../include/lori_cuda.cuh"

#define GEMV_MAX_TOKENS 4

struct __align__(16) gemv_u32x4 { u32 x, y, z, w; };
struct __align__(16) gemv_f32x4 { float x, y, z, w; };

template <bool VEC>
__device__ __forceinline__ void gemv_impl(const float* x, const bf16* w, float* y, int n, int m, int k, float alpha, int accumulate, int ksplit)
{
    __shared__ float part[8][GEMV_MAX_TOKENS];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int row = blockIdx.x * (8 / ksplit) + warp / ksplit;
    const int piece = warp % ksplit;
    float acc[GEMV_MAX_TOKENS];
    for (int t = 0; t < GEMV_MAX_TOKENS; t++) acc[t] = 0.f;

    if (row < m)
    {
        const bf16* wr = w + (long long)row * k;
        if (VEC)
        {
            const int chunks = k / 8, per = (chunks + ksplit - 1) / ksplit;
            const int c0 = piece * per, c1 = min(chunks, c0 + per);
            for (int c = c0 + lane; c < c1; c += 32)
            {
                const gemv_u32x4 q = *reinterpret_cast<const gemv_u32x4*>(wr + c * 8);
                float wf[8];
                wf[0] = __uint_as_float(q.x << 16); wf[1] = __uint_as_float(q.x & 0xffff0000u);
                wf[2] = __uint_as_float(q.y << 16); wf[3] = __uint_as_float(q.y & 0xffff0000u);
                wf[4] = __uint_as_float(q.z << 16); wf[5] = __uint_as_float(q.z & 0xffff0000u);
                wf[6] = __uint_as_float(q.w << 16); wf[7] = __uint_as_float(q.w & 0xffff0000u);
                for (int t = 0; t < GEMV_MAX_TOKENS; t++)
                {
                    if (t >= n) break;
                    const gemv_f32x4* xr = reinterpret_cast<const gemv_f32x4*>(x + (long long)t * k + c * 8);
                    const gemv_f32x4 a = xr[0], b = xr[1];
                    acc[t] += wf[0] * a.x + wf[1] * a.y + wf[2] * a.z + wf[3] * a.w
                            + wf[4] * b.x + wf[5] * b.y + wf[6] * b.z + wf[7] * b.w;
                }
            }
        }
        else
        {
            const int per = (k + ksplit - 1) / ksplit;
            const int k0 = piece * per, k1 = min(k, k0 + per);
            for (int kk = k0 + lane; kk < k1; kk += 32)
            {
                const float wf = bf16_to_float(wr[kk]);
                for (int t = 0; t < GEMV_MAX_TOKENS; t++)
                {
                    if (t >= n) break;
                    acc[t] += wf * x[(long long)t * k + kk];
                }
            }
        }
    }
    for (int t = 0; t < GEMV_MAX_TOKENS; t++) acc[t] = warp_sum(acc[t]);
    if (lane == 0)
        for (int t = 0; t < GEMV_MAX_TOKENS; t++) part[warp][t] = acc[t];
    __syncthreads();
    if (piece == 0 && lane < n && row < m)
    {
        float s = 0.f;
        for (int p = 0; p < ksplit; p++) s += part[warp + p][lane];
        float* out = y + (long long)lane * m + row;
        *out = accumulate ? *out + alpha * s : alpha * s;
    }
}

extern "C" __global__ void gemv_bf16(const float* x, const bf16* w, float* y, int n, int m, int k, float alpha, int accumulate, int ksplit)
{
    gemv_impl<true>(x, w, y, n, m, k, alpha, accumulate, ksplit);
}
LORI_KERNEL(gemv_bf16)

extern "C" __global__ void gemv_bf16_ragged(const float* x, const bf16* w, float* y, int n, int m, int k, float alpha, int accumulate, int ksplit)
{
    gemv_impl<false>(x, w, y, n, m, k, alpha, accumulate, ksplit);
}
LORI_KERNEL(gemv_bf16_ragged)
