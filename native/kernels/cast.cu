// cast: dtype conversions between f32 and bf16 / f16, round to nearest even (NaN stays NaN).
// Grid-stride loops over n elements.
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
