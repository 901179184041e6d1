// random_fill: device-side initialisation of weights for benchmarks (a random model built on the device,
// with no host copy): x[i] = offset + scale * u(i), u uniform in [-1, 1) from a 64-bit hash of (seed, i)
// (splitmix64 finaliser), so the values depend only on the seed and the index. f32 and bf16 outputs.
#include "../include/lori_dtypes.cuh"

__device__ __forceinline__ float rf_uniform(unsigned long long seed, long long i)
{
    unsigned long long z = seed + 0x9e3779b97f4a7c15ull * (unsigned long long)(i + 1);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 8388608.0f) - 1.0f;  // 24 bits -> [-1, 1)
}

template <int DT>
__device__ __forceinline__ void random_fill_impl(void* x, long long n, unsigned long long seed, float scale, float offset)
{
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        store_from_float<DT>(x, i, offset + scale * rf_uniform(seed, i));
}

extern "C" __global__ void random_fill_f32(float* x, long long n, unsigned long long seed, float scale, float offset) { random_fill_impl<DT_F32>(x, n, seed, scale, offset); }
LORI_KERNEL(random_fill_f32)
extern "C" __global__ void random_fill_bf16(bf16* x, long long n, unsigned long long seed, float scale, float offset) { random_fill_impl<DT_BF16>(x, n, seed, scale, offset); }
LORI_KERNEL(random_fill_bf16)
