// attention: causal grouped-query attention of N tokens against a KV cache, the simple (non-flash)
// baseline. Token i (slot slots[i], position positions[i]) and query head h attend to cache entries
// 0..positions[i] of KV head h / (heads / kv_heads):
//   y[i, h] = sum_t softmax_t(q . k_t * scale) v_t
// q, y f32 [N, heads*hd]; k_cache, v_cache f32 [S, T, kv_heads*hd].
// Grid (N, heads); blockDim.x a multiple of 32. Dynamic shared memory: (T + hd) floats (the scores of
// every position and the query). An out-of-range slot or position yields a NaN row.
#include "../include/lori_cuda.cuh"

extern "C" __global__ void attention_forward(const float* q, const float* k_cache, const float* v_cache, const int* slots,
                                             const int* positions, float* y, int heads, int kv_heads, int hd, int s, int t, float scale)
{
    LORI_DYNAMIC_SHARED(float, smem);
    __shared__ float scratch[32];
    float* scores = smem;
    float* sq = smem + t;
    const int i = blockIdx.x, h = blockIdx.y;
    const int slot = slots[i], pos = positions[i];
    float* out = y + ((long long)i * heads + h) * hd;
    if (slot < 0 || slot >= s || pos < 0 || pos >= t)
    {
        for (int d = threadIdx.x; d < hd; d += blockDim.x) out[d] = __int_as_float(0x7fc00000);
        return;
    }
    const int kvh = h / (heads / kv_heads);
    const int w = kv_heads * hd;
    const float* qr = q + ((long long)i * heads + h) * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) sq[d] = qr[d];
    __syncthreads();

    const float* kbase = k_cache + (long long)slot * t * w + kvh * hd;
    const float* vbase = v_cache + (long long)slot * t * w + kvh * hd;
    float mx = -__int_as_float(0x7f800000);
    for (int j = threadIdx.x; j <= pos; j += blockDim.x)
    {
        const float* kr = kbase + (long long)j * w;
        float dot = 0.f;
        for (int d = 0; d < hd; d++) dot += sq[d] * kr[d];
        dot *= scale;
        scores[j] = dot;
        mx = fmaxf(mx, dot);
    }
    mx = block_max(mx, scratch);
    float sum = 0.f;
    for (int j = threadIdx.x; j <= pos; j += blockDim.x)
    {
        const float e = expf(scores[j] - mx);
        scores[j] = e;
        sum += e;
    }
    sum = block_sum(sum, scratch);  // its leading __syncthreads also publishes every score
    const float inv = 1.0f / sum;
    for (int d = threadIdx.x; d < hd; d += blockDim.x)
    {
        float acc = 0.f;
        for (int j = 0; j <= pos; j++) acc += scores[j] * vbase[(long long)j * w + d];
        out[d] = acc * inv;
    }
}
LORI_KERNEL(attention_forward)
