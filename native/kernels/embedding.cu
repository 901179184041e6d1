// embedding: y[i, :] = float(table[ids[i], :]). table [V, D] in f32/f16/bf16, ids int32 [N], y f32 [N, D].
// Grid: one block per token (grid.x = N); threads stride over D. An id outside [0, V) writes a row of
// NaN, so a bad token id shows in every later value instead of reading out of bounds.
#include "../include/lori_dtypes.cuh"

template <int DT>
__device__ __forceinline__ void embedding_impl(const void* table, const int* ids, float* y, int d, int vocab)
{
    const int i = blockIdx.x;
    const int id = ids[i];
    float* out = y + (long long)i * d;
    if (id < 0 || id >= vocab)
    {
        for (int j = threadIdx.x; j < d; j += blockDim.x) out[j] = __int_as_float(0x7fc00000);
        return;
    }
    const long long base = (long long)id * d;
    for (int j = threadIdx.x; j < d; j += blockDim.x) out[j] = load_as_float<DT>(table, base + j);
}

extern "C" __global__ void embedding_f32(const float* table, const int* ids, float* y, int d, int vocab) { embedding_impl<DT_F32>(table, ids, y, d, vocab); }
LORI_KERNEL(embedding_f32)
extern "C" __global__ void embedding_f16(const f16* table, const int* ids, float* y, int d, int vocab) { embedding_impl<DT_F16>(table, ids, y, d, vocab); }
LORI_KERNEL(embedding_f16)
extern "C" __global__ void embedding_bf16(const bf16* table, const int* ids, float* y, int d, int vocab) { embedding_impl<DT_BF16>(table, ids, y, d, vocab); }
LORI_KERNEL(embedding_bf16)

// gather_rows: dst[i, :] = src[rows[i], :], f32 rows of width w. One block per output row.
extern "C" __global__ void gather_rows(const float* src, const int* rows, float* dst, int w, int src_rows)
{
    const int i = blockIdx.x;
    const int r = rows[i];
    float* out = dst + (long long)i * w;
    if (r < 0 || r >= src_rows)
    {
        for (int j = threadIdx.x; j < w; j += blockDim.x) out[j] = __int_as_float(0x7fc00000);
        return;
    }
    const float* in = src + (long long)r * w;
    for (int j = threadIdx.x; j < w; j += blockDim.x) out[j] = in[j];
}
LORI_KERNEL(gather_rows)

// embedding_backward: dtable[ids[i], :] += dy[i, :] over the N rows (full fine-tuning's embedding gradient).
// Thread j owns column j of every row and walks the tokens in order, so repeated ids add up in a fixed
// order without atomics (the result does not depend on scheduling). Ids outside [0, V) are skipped (the
// forward already wrote NaN rows for them). Grid-stride over D columns.
extern "C" __global__ void embedding_backward(const int* ids, const float* dy, float* dtable, int n, int d, int vocab)
{
    for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < d; j += gridDim.x * blockDim.x)
        for (int i = 0; i < n; i++)
        {
            const int id = ids[i];
            if (id < 0 || id >= vocab) continue;
            dtable[(long long)id * d + j] += dy[(long long)i * d + j];
        }
}
LORI_KERNEL(embedding_backward)
