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
// At the end of the file: the same GEMV with a LoRA adapter folded in (gemv_shrink_bf16: A's rows as extra output
// rows; gemv_lora_bf16: the expand in the epilogue), the decode half of the op `linear_lora` (CudaBackend.LinearLora.cs).
#include "../include/lori_cuda.cuh"

#define GEMV_MAX_TOKENS 4

struct __align__(16) gemv_u32x4 { u32 x, y, z, w; };
struct __align__(16) gemv_f32x4 { float x, y, z, w; };

// An adapter's expand folded into the GEMV's epilogue (the gemv_lora kernels): y[q, row] += sum_j t[q, j] B[row, j],
// t f32 [n, r] (the shrink, scale included), B dense f32 [M, r] or compact (row_start, cols u8, values).
struct gemv_lora_b
{
    const float* t;
    const float* b;
    const int* row_start;
    const unsigned char* cols;
    const float* values;
    int r;
};

// LORA: 0 none, 1 dense B, 2 compact B. bx: this block's index among the GEMV's blocks.
template <bool VEC, int LORA>
__device__ __forceinline__ void gemv_impl(const float* x, const bf16* w, float* y, int n, int m, int k, float alpha, int accumulate, int ksplit,
                                          int bx, const gemv_lora_b& lb)
{
    __shared__ float part[8][GEMV_MAX_TOKENS];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int row = bx * (8 / ksplit) + warp / ksplit;
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
    // the expand of this row (piece 0's warp only), by the warp's lanes over B's row (dense) or its live entries (compact)
    float lacc[GEMV_MAX_TOKENS];
    for (int t = 0; t < GEMV_MAX_TOKENS; t++) lacc[t] = 0.f;
    if (LORA != 0 && piece == 0 && row < m)
    {
        if (LORA == 1)
            for (int j = lane; j < lb.r; j += 32)
            {
                const float bv = lb.b[(long long)row * lb.r + j];
                for (int t = 0; t < GEMV_MAX_TOKENS; t++)
                {
                    if (t >= n) break;
                    lacc[t] += bv * lb.t[t * lb.r + j];
                }
            }
        else
            for (int e = lb.row_start[row] + lane; e < lb.row_start[row + 1]; e += 32)
            {
                const float bv = lb.values[e];
                const int j = lb.cols[e];
                for (int t = 0; t < GEMV_MAX_TOKENS; t++)
                {
                    if (t >= n) break;
                    lacc[t] += bv * lb.t[t * lb.r + j];
                }
            }
        for (int t = 0; t < GEMV_MAX_TOKENS; t++) lacc[t] = warp_sum(lacc[t]);
    }
    for (int t = 0; t < GEMV_MAX_TOKENS; t++) acc[t] = warp_sum(acc[t]);
    if (lane == 0)
        for (int t = 0; t < GEMV_MAX_TOKENS; t++) part[warp][t] = acc[t];
    __syncthreads();
    if (piece == 0 && lane < n && row < m)
    {
        float s = 0.f;
        for (int p = 0; p < ksplit; p++) s += part[warp + p][lane];
        float v = alpha * s;
        if (LORA != 0)
            for (int t = 0; t < GEMV_MAX_TOKENS; t++) v += t == lane ? lacc[t] : 0.f;
        float* out = y + (long long)lane * m + row;
        *out = accumulate ? *out + v : v;
    }
}

__device__ __forceinline__ gemv_lora_b gemv_no_lora()
{
    gemv_lora_b lb;
    lb.t = 0; lb.b = 0; lb.row_start = 0; lb.cols = 0; lb.values = 0; lb.r = 0;
    return lb;
}

extern "C" __global__ void gemv_bf16(const float* x, const bf16* w, float* y, int n, int m, int k, float alpha, int accumulate, int ksplit)
{
    gemv_impl<true, 0>(x, w, y, n, m, k, alpha, accumulate, ksplit, blockIdx.x, gemv_no_lora());
}
LORI_KERNEL(gemv_bf16)

extern "C" __global__ void gemv_bf16_ragged(const float* x, const bf16* w, float* y, int n, int m, int k, float alpha, int accumulate, int ksplit)
{
    gemv_impl<false, 0>(x, w, y, n, m, k, alpha, accumulate, ksplit, blockIdx.x, gemv_no_lora());
}
LORI_KERNEL(gemv_bf16_ragged)

// ---- the linear op with a LoRA adapter, for decode (`linear_lora`, CudaBackend.LinearLora.cs) ----
// gemv_lora_bf16: y = alpha * x W^T + t B^T (+ y): the GEMV above with the adapter's expand in its epilogue;
//   t = scale * x A^T f32 [n, r] comes first (lora_shrink). B dense f32 [M, r] (form 0) or compact (form 1:
//   row_start i32 [M + 1], cols u8, values f32). Grid and block as gemv_bf16. (variant "GEMV epilogue")
// gemv_shrink_bf16: the weight [W; A]: blocks 0 .. ceil(r / 8) - 1 compute the shrink t = scale * x A^T
//   (A f32 [r, K], t f32 [n, r]; one warp per rank row for all n tokens, A read once), the blocks after them
//   are gemv_bf16's blocks for y = alpha * x W^T (+ y). The expand (lora_expand_dense / _compact) follows.
//   Grid ceil(r / 8) + ceil(M / (8 / ksplit)), block 256. (variant "shrink rows")
// The _ragged twins read one element at a time; the others need K % 8 == 0 and 16-byte aligned x, W, A.

template <bool VEC>
__device__ __forceinline__ void gemv_lora_kernel(const float* x, const bf16* w, const float* t, const float* b, const int* row_start,
                                                 const unsigned char* cols, const float* values, float* y, int n, int m, int k, int r,
                                                 float alpha, int accumulate, int ksplit, int form)
{
    gemv_lora_b lb;
    lb.t = t; lb.b = b; lb.row_start = row_start; lb.cols = cols; lb.values = values; lb.r = r;
    if (form == 0) gemv_impl<VEC, 1>(x, w, y, n, m, k, alpha, accumulate, ksplit, blockIdx.x, lb);
    else gemv_impl<VEC, 2>(x, w, y, n, m, k, alpha, accumulate, ksplit, blockIdx.x, lb);
}

extern "C" __global__ void gemv_lora_bf16(const float* x, const bf16* w, const float* t, const float* b, const int* row_start,
                                          const unsigned char* cols, const float* values, float* y, int n, int m, int k, int r,
                                          float alpha, int accumulate, int ksplit, int form)
{
    gemv_lora_kernel<true>(x, w, t, b, row_start, cols, values, y, n, m, k, r, alpha, accumulate, ksplit, form);
}
LORI_KERNEL(gemv_lora_bf16)

extern "C" __global__ void gemv_lora_bf16_ragged(const float* x, const bf16* w, const float* t, const float* b, const int* row_start,
                                                 const unsigned char* cols, const float* values, float* y, int n, int m, int k, int r,
                                                 float alpha, int accumulate, int ksplit, int form)
{
    gemv_lora_kernel<false>(x, w, t, b, row_start, cols, values, y, n, m, k, r, alpha, accumulate, ksplit, form);
}
LORI_KERNEL(gemv_lora_bf16_ragged)

template <bool VEC>
__device__ __forceinline__ void gemv_shrink_kernel(const float* x, const bf16* w, const float* a, float* y, float* t, int n, int m, int k,
                                                   float alpha, int accumulate, int ksplit, int r, float scale)
{
    const int shrink_blocks = (r + 7) / 8;
    if ((int)blockIdx.x >= shrink_blocks)
    {
        gemv_impl<VEC, 0>(x, w, y, n, m, k, alpha, accumulate, ksplit, blockIdx.x - shrink_blocks, gemv_no_lora());
        return;
    }
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int j = blockIdx.x * 8 + warp;
    if (j >= r) return;
    const float* ar = a + (long long)j * k;
    float acc[GEMV_MAX_TOKENS];
    for (int q = 0; q < GEMV_MAX_TOKENS; q++) acc[q] = 0.f;
    if (VEC)
        for (int c = lane; c < k / 4; c += 32)
        {
            const gemv_f32x4 av = reinterpret_cast<const gemv_f32x4*>(ar)[c];
            for (int q = 0; q < GEMV_MAX_TOKENS; q++)
            {
                if (q >= n) break;
                const gemv_f32x4 xv = reinterpret_cast<const gemv_f32x4*>(x + (long long)q * k)[c];
                acc[q] += av.x * xv.x + av.y * xv.y + av.z * xv.z + av.w * xv.w;
            }
        }
    else
        for (int c = lane; c < k; c += 32)
        {
            const float av = ar[c];
            for (int q = 0; q < GEMV_MAX_TOKENS; q++)
            {
                if (q >= n) break;
                acc[q] += av * x[(long long)q * k + c];
            }
        }
    for (int q = 0; q < GEMV_MAX_TOKENS; q++) acc[q] = warp_sum(acc[q]);
    if (lane < n)
    {
        float v = 0.f;
        for (int q = 0; q < GEMV_MAX_TOKENS; q++) v = q == lane ? acc[q] : v;
        t[(long long)lane * r + j] = scale * v;
    }
}

extern "C" __global__ void gemv_shrink_bf16(const float* x, const bf16* w, const float* a, float* y, float* t, int n, int m, int k,
                                            float alpha, int accumulate, int ksplit, int r, float scale)
{
    gemv_shrink_kernel<true>(x, w, a, y, t, n, m, k, alpha, accumulate, ksplit, r, scale);
}
LORI_KERNEL(gemv_shrink_bf16)

extern "C" __global__ void gemv_shrink_bf16_ragged(const float* x, const bf16* w, const float* a, float* y, float* t, int n, int m, int k,
                                                   float alpha, int accumulate, int ksplit, int r, float scale)
{
    gemv_shrink_kernel<false>(x, w, a, y, t, n, m, k, alpha, accumulate, ksplit, r, scale);
}
LORI_KERNEL(gemv_shrink_bf16_ragged)
