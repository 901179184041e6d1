// kvstore: cache[slots[i], positions[i], :] = src[i, :]. src f32 [N, W], cache f32 [S, T, W].
// One block per token; a slot or position out of range writes nothing (the attention that later
// reads that entry sees whatever the cache held, so the backend checks ranges where it can).
#include "../include/lori_cuda.cuh"

extern "C" __global__ void kvstore(const float* src, float* cache, const int* slots, const int* positions, int w, int s, int t)
{
    const int i = blockIdx.x;
    const int slot = slots[i], pos = positions[i];
    if (slot < 0 || slot >= s || pos < 0 || pos >= t) return;
    float* dst = cache + ((long long)slot * t + pos) * w;
    const float* in = src + (long long)i * w;
    for (int j = threadIdx.x; j < w; j += blockDim.x) dst[j] = in[j];
}
LORI_KERNEL(kvstore)
