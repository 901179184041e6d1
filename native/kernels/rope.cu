// rope: rotary position embedding in place, HF "rotate half" layout: within each head of width hd,
// element i pairs with i + hd/2 (i < hd/2) and the pair is rotated by angle pos * inv_freq[i]:
//   x'[i]        = x[i] cos - x[i+hd/2] sin
//   x'[i + hd/2] = x[i] sin + x[i+hd/2] cos
// inv_freq [hd/2] comes from the host (LlamaConfig.RopeInvFreq, llama3 scaling included). The
// backward is the rotation by -angle (the transpose). x f32 [N, heads*hd], positions int32 [N].
// One block per token; threads stride over heads * hd/2 pairs.
#include "../include/lori_cuda.cuh"

__device__ __forceinline__ void rope_impl(float* x, const int* positions, const float* inv_freq, int heads, int hd, float sign)
{
    const int half = hd / 2;
    const float pos = (float)positions[blockIdx.x];
    float* row = x + (long long)blockIdx.x * heads * hd;
    for (int k = threadIdx.x; k < heads * half; k += blockDim.x)
    {
        const int h = k / half, i = k - h * half;
        const float angle = pos * inv_freq[i];
        const float c = cosf(angle), s = sign * sinf(angle);
        float* p = row + h * hd;
        const float a = p[i], b = p[i + half];
        p[i] = a * c - b * s;
        p[i + half] = a * s + b * c;
    }
}

extern "C" __global__ void rope_forward(float* x, const int* positions, const float* inv_freq, int heads, int hd) { rope_impl(x, positions, inv_freq, heads, hd, 1.0f); }
LORI_KERNEL(rope_forward)
extern "C" __global__ void rope_backward(float* dx, const int* positions, const float* inv_freq, int heads, int hd) { rope_impl(dx, positions, inv_freq, heads, hd, -1.0f); }
LORI_KERNEL(rope_backward)
