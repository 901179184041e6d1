// cast: dtype conversions between f32 and bf16 / f16, round to nearest even (NaN stays NaN), grid-stride
// loops over n elements; and the f32 transpose (the CPU-style W^T copies of training, when a backend wants them).
#include "../include/lori_dtypes.cuh"

template <int FROM, int TO>
__device__ __forceinline__ void cast_impl(const void* src, void* dst, long long n)
{
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        store_from_float<TO>(dst, i, load_as_float<FROM>(src, i));
}

extern "C" __global__ void cast_f32_bf16(const float* src, bf16* dst, long long n) { cast_impl<DT_F32, DT_BF16>(src, dst, n); }
LORI_KERNEL(cast_f32_bf16)
extern "C" __global__ void cast_bf16_f32(const bf16* src, float* dst, long long n) { cast_impl<DT_BF16, DT_F32>(src, dst, n); }
LORI_KERNEL(cast_bf16_f32)
extern "C" __global__ void cast_f32_f16(const float* src, f16* dst, long long n) { cast_impl<DT_F32, DT_F16>(src, dst, n); }
LORI_KERNEL(cast_f32_f16)
extern "C" __global__ void cast_f16_f32(const f16* src, float* dst, long long n) { cast_impl<DT_F16, DT_F32>(src, dst, n); }
LORI_KERNEL(cast_f16_f32)

// transpose_f32: dst [cols, rows] = src [rows, cols]^T, f32, through a 32 x 33 shared tile (reads and writes
// both coalesced, no bank conflicts). Grid (ceil(cols/32), ceil(rows/32)), block (32, 8).
extern "C" __global__ void transpose_f32(const float* src, float* dst, int rows, int cols)
{
    __shared__ float tile[32][33];
    const int c0 = blockIdx.x * 32, r0 = blockIdx.y * 32;
    for (int dy = threadIdx.y; dy < 32; dy += blockDim.y)
    {
        const int r = r0 + dy, c = c0 + threadIdx.x;
        if (r < rows && c < cols) tile[dy][threadIdx.x] = src[(long long)r * cols + c];
    }
    __syncthreads();
    for (int dy = threadIdx.y; dy < 32; dy += blockDim.y)
    {
        const int c = c0 + dy, r = r0 + threadIdx.x;
        if (c < cols && r < rows) dst[(long long)c * rows + r] = tile[threadIdx.x][dy];
    }
}
LORI_KERNEL(transpose_f32)
