// lori_adapter: the LoRA / LoRI adapter op `lora_apply` (y += scale * B (A x)) and its training kernels.
//
// lora_shrink:   t[n, j] = scale * sum_k x[n, k] A[j, k].  x f32 [N, In], A f32 [R, In], t f32 [N, R].
//                One warp per (token, rank row), 16-byte loads when In % 4 == 0 (`vec`). Grid (ceil(R/8), N), 256 threads.
// lora_expand_dense:   y[n, o] += sum_j t[n, j] B[o, j].  B f32 [Out, R] (LoraBForm.Dense).
// lora_expand_compact: the same with B in the compact form (row_start i32 [Out + 1], cols u8 [nnz],
//                values f32 [nnz]): only the live entries of B are read (the decode form of a LoRI-S B).
//                Both: one warp per output row for up to 8 tokens at once, t staged in shared memory.
//                Grid (ceil(Out/8), ceil(N/8)), 256 threads, dynamic shared memory 8 * R floats.
// lora_apply_fused: shrink and expand in one launch for decode (see the kernel).
// lora_grad_b:   dB[o, j] += scale * sum_n dy[n, o] u[n, j], only where mask[o * R + j] != 0 (mask optional,
//                u8): the LoRI-S B gradient with its mask applied. Grid-stride over Out * R entries.
//                (AdamW over the live entries only is adamw.cu's adamw_step with an index.)
// lora_b_dense_bf16: a compact B as dense bf16, for the tensor-core linear with adapters (see the kernel).
// The linear op with the adapter folded into the base product's passes (`linear_lora`) lives with the base kernels:
// gemv.cu (decode: gemv_shrink_bf16, gemv_lora_bf16) and gemm_tc.cu (prefill: gemm_tc_shrink_bf16, gemm_tc_lora_bf16).
#include "../include/lori_cuda.cuh"

#define LA_TOKENS 8

struct __align__(16) la_f32x4 { float x, y, z, w; };

// sum_k xr[k] ar[k] over one warp (every lane gets the sum); vec: In % 4 == 0 and both rows 16-byte aligned.
__device__ __forceinline__ float la_warp_row_dot(const float* xr, const float* ar, int in, int vec, int lane)
{
    float s = 0.f;
    if (vec)
    {
        for (int c = lane; c < in / 4; c += 32)
        {
            const la_f32x4 p = reinterpret_cast<const la_f32x4*>(xr)[c];
            const la_f32x4 q = reinterpret_cast<const la_f32x4*>(ar)[c];
            s += p.x * q.x + p.y * q.y + p.z * q.z + p.w * q.w;
        }
    }
    else
    {
        for (int k = lane; k < in; k += 32) s += xr[k] * ar[k];
    }
    return warp_sum(s);
}

extern "C" __global__ void lora_shrink(const float* x, const float* a, float* t, int n, int in, int rank, float scale, int vec)
{
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int j = blockIdx.x * 8 + warp, i = blockIdx.y;
    if (j >= rank) return;
    const float s = la_warp_row_dot(x + (long long)i * in, a + (long long)j * in, in, vec, lane);
    if (lane == 0) t[(long long)i * rank + j] = scale * s;
}
LORI_KERNEL(lora_shrink)

// t rows n0 .. n0 + 7 into shared memory (zero past n)
__device__ __forceinline__ int la_stage_t(const float* t, float* ts, int n, int rank)
{
    const int n0 = blockIdx.y * LA_TOKENS;
    const int cnt = min(LA_TOKENS, n - n0);
    for (int e = threadIdx.x; e < LA_TOKENS * rank; e += blockDim.x)
        ts[e] = e / rank < cnt ? t[(long long)n0 * rank + e] : 0.f;
    __syncthreads();
    return cnt;
}

// One warp's expansion of output row o for the LA_TOKENS staged rows of t (ts [8][R]): acc[q] += B[o, j] ts[q, j]
// over the lane's share of row o, B dense [Out, R] or compact (only the live entries).
__device__ __forceinline__ void la_expand_row_dense(float acc[LA_TOKENS], const float* b, const float* ts, int o, int rank, int lane)
{
    for (int j = lane; j < rank; j += 32)
    {
        const float bv = b[(long long)o * rank + j];
        for (int q = 0; q < LA_TOKENS; q++) acc[q] += bv * ts[q * rank + j];
    }
}

__device__ __forceinline__ void la_expand_row_compact(float acc[LA_TOKENS], const int* row_start, const unsigned char* cols, const float* values,
                                                      const float* ts, int o, int rank, int lane)
{
    for (int e = row_start[o] + lane; e < row_start[o + 1]; e += 32)
    {
        const float bv = values[e];
        const int j = cols[e];
        for (int q = 0; q < LA_TOKENS; q++) acc[q] += bv * ts[q * rank + j];
    }
}

// Sums acc over the warp and adds token q's sum to yr[q, o] (yr: y's row of the first staged token), lane q
// writing it, for q < cnt and o < out. Every lane of the warp calls it.
__device__ __forceinline__ void la_expand_store(float acc[LA_TOKENS], float* yr, int o, int out, int cnt, int lane)
{
    for (int q = 0; q < LA_TOKENS; q++) acc[q] = warp_sum(acc[q]);
    if (o < out && lane < cnt)
    {
        float v = 0.f;
        for (int q = 0; q < LA_TOKENS; q++) v = q == lane ? acc[q] : v;
        yr[(long long)lane * out + o] += v;
    }
}

extern "C" __global__ void lora_expand_dense(const float* t, const float* b, float* y, int n, int out, int rank)
{
    LORI_DYNAMIC_SHARED(float, ts);
    const int cnt = la_stage_t(t, ts, n, rank);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int o = blockIdx.x * 8 + warp, n0 = blockIdx.y * LA_TOKENS;
    float acc[LA_TOKENS];
    for (int q = 0; q < LA_TOKENS; q++) acc[q] = 0.f;
    if (o < out) la_expand_row_dense(acc, b, ts, o, rank, lane);
    la_expand_store(acc, y + (long long)n0 * out, o, out, cnt, lane);
}
LORI_KERNEL(lora_expand_dense)

extern "C" __global__ void lora_expand_compact(const float* t, const int* row_start, const unsigned char* cols, const float* values,
                                               float* y, int n, int out, int rank)
{
    LORI_DYNAMIC_SHARED(float, ts);
    const int cnt = la_stage_t(t, ts, n, rank);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int o = blockIdx.x * 8 + warp, n0 = blockIdx.y * LA_TOKENS;
    float acc[LA_TOKENS];
    for (int q = 0; q < LA_TOKENS; q++) acc[q] = 0.f;
    if (o < out) la_expand_row_compact(acc, row_start, cols, values, ts, o, rank, lane);
    la_expand_store(acc, y + (long long)n0 * out, o, out, cnt, lane);
}
LORI_KERNEL(lora_expand_compact)

// The one-launch decode variant: every block first computes all of t = scale * x A^T (N <= 8 tokens) into
// shared memory (one warp per rank row, so A is read once per block: gridDim.x times in all, from L2),
// then expands rows blockIdx.x * 8 + warp, stepping by gridDim.x * 8, with B dense (form 0) or compact
// (form 1). Trades redundant reads of A for one launch instead of two; the grid size sets the balance.
// Grid (G), 256 threads, dynamic shared memory 8 * R floats.
extern "C" __global__ void lora_apply_fused(const float* x, const float* a, const float* b, const int* row_start, const unsigned char* cols,
                                            const float* values, float* y, int n, int in, int out, int rank, float scale, int vec, int form)
{
    LORI_DYNAMIC_SHARED(float, ts);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    for (int j = warp; j < rank; j += 8)
    {
        const float* ar = a + (long long)j * in;
        for (int q = 0; q < LA_TOKENS; q++)
        {
            if (q >= n) { if (lane == 0) ts[q * rank + j] = 0.f; continue; }
            const float s = la_warp_row_dot(x + (long long)q * in, ar, in, vec, lane);
            if (lane == 0) ts[q * rank + j] = scale * s;
        }
    }
    __syncthreads();
    for (int o0 = blockIdx.x * 8; o0 < out; o0 += gridDim.x * 8)
    {
        const int o = o0 + warp;
        float acc[LA_TOKENS];
        for (int q = 0; q < LA_TOKENS; q++) acc[q] = 0.f;
        if (o < out)
        {
            if (form == 0) la_expand_row_dense(acc, b, ts, o, rank, lane);
            else la_expand_row_compact(acc, row_start, cols, values, ts, o, rank, lane);
        }
        la_expand_store(acc, y, o, out, n, lane);
    }
}
LORI_KERNEL(lora_apply_fused)

extern "C" __global__ void lora_grad_b(const float* dy, const float* u, const unsigned char* mask, float* db, int n, int out, int rank, float scale)
{
    const long long total = (long long)out * rank;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (long long)gridDim.x * blockDim.x)
    {
        if (mask && !mask[e]) continue;
        const int o = (int)(e / rank), j = (int)(e % rank);
        float s = 0.f;
        for (int i = 0; i < n; i++) s += dy[(long long)i * out + o] * u[(long long)i * rank + j];
        db[e] += scale * s;
    }
}
LORI_KERNEL(lora_grad_b)

// lora_b_dense_bf16: a compact B (row_start, cols, values) written out as a dense bf16 [Out, R] matrix, once per
// adapter, for the tensor-core linear-with-adapter kernels (gemm_tc.cu), which read B dense. One thread per row.
extern "C" __global__ void lora_b_dense_bf16(const int* row_start, const unsigned char* cols, const float* values, bf16* b, int out, int rank)
{
    for (int o = blockIdx.x * blockDim.x + threadIdx.x; o < out; o += gridDim.x * blockDim.x)
    {
        bf16* row = b + (long long)o * rank;
        for (int j = 0; j < rank; j++) row[j] = 0;
        for (int e = row_start[o]; e < row_start[o + 1]; e++) row[cols[e]] = float_to_bf16(values[e]);
    }
}
LORI_KERNEL(lora_b_dense_bf16)
