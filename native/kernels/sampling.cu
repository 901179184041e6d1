// sampling: on-device token choice from logits f32 [R, V], one block per row.
//
// argmax_rows: out[r] = the index of the largest logit (the lowest index among equals; NaN is never
//   chosen unless the row is all NaN, then 0).
// sample_top_p: nucleus sampling. With p_i = exp((l_i - max) / temperature) (unnormalised, Z = sum p_i),
//   the nucleus is every token with p_i >= tau, tau the largest probability value for which the
//   tokens at or above it hold at least top_p * Z (ties at tau are all kept). tau is found exactly by
//   bisection over the bit patterns of non-negative floats (monotonic in value). Then, with u = uniforms[r]
//   in [0, 1), the token is the first in index order at which the running sum of nucleus p_i exceeds
//   u * (nucleus mass). blockDim.x a multiple of 32.
// sample_rows: the generator's token choice on the device (a captured decode step): temperature, then top-k,
//   then top-p, as the host Sampler applies them, with the random number made on the device. With p_i as above,
//   top-k keeps every token with p_i >= tau_k, tau_k the largest value with count(p >= tau_k) >= top_k (ties at
//   the k-th value all kept); top-p then keeps p_i >= tau, tau >= tau_k the largest value whose kept tokens
//   hold at least top_p of the top-k mass. Both thresholds by bisection over float bits, as in sample_top_p.
//   u = a hash of (seed, slots[r], positions[r] + 1): the position of the token being chosen, so a sequence
//   draws the same numbers whatever its row in the batch and whether the step was replayed from a graph.
#include "../include/lori_cuda.cuh"

__device__ __forceinline__ void argmax_pair(float& v, int& i, float ov, int oi)
{
    // larger value wins; equal values: lower index; NaN loses to everything
    const bool take = (ov > v) || (ov == v && oi < i) || (v != v && ov == ov) || (v != v && ov != ov && oi < i);
    if (take) { v = ov; i = oi; }
}

extern "C" __global__ void argmax_rows(const float* logits, int vocab, int* out)
{
    __shared__ float sv[32];
    __shared__ int si[32];
    const float* row = logits + (long long)blockIdx.x * vocab;
    float best = __int_as_float(0x7fc00000);
    int idx = 0x7fffffff;
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) argmax_pair(best, idx, row[j], j);
    for (int o = 16; o > 0; o >>= 1)
    {
        const float ov = __shfl_xor_sync(LORI_FULL_MASK, best, o);
        const int oi = __shfl_xor_sync(LORI_FULL_MASK, idx, o);
        argmax_pair(best, idx, ov, oi);
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) { sv[warp] = best; si[warp] = idx; }
    __syncthreads();
    if (threadIdx.x == 0)
    {
        for (int w = 1; w < (int)(blockDim.x >> 5); w++) argmax_pair(best, idx, sv[w], si[w]);
        out[blockIdx.x] = idx == 0x7fffffff ? 0 : idx;
    }
}
LORI_KERNEL(argmax_rows)

extern "C" __global__ void sample_top_p(const float* logits, int vocab, float temperature, float top_p, const float* uniforms, int* out)
{
    __shared__ float scratch[32];
    __shared__ float chunk_mass[1024];
    const float* row = logits + (long long)blockIdx.x * vocab;
    float mx = -__int_as_float(0x7f800000);
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) mx = fmaxf(mx, row[j]);
    mx = block_max(mx, scratch);
    const float inv_t = 1.0f / temperature;
    float z = 0.f;
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) z += expf((row[j] - mx) * inv_t);
    z = block_sum(z, scratch);
    const float target = top_p * z;

    // largest tau (as float bits) with mass(p >= tau) >= target; mass(p >= 0) = z >= target always
    unsigned lo = 0u, hi = 0x3f800001u;  // p <= 1 (the max has p = 1)
    while (hi - lo > 1u)
    {
        const unsigned mid = lo + (hi - lo) / 2u;
        const float tau = __uint_as_float(mid);
        float mass = 0.f;
        for (int j = threadIdx.x; j < vocab; j += blockDim.x)
        {
            const float p = expf((row[j] - mx) * inv_t);
            if (p >= tau) mass += p;
        }
        mass = block_sum(mass, scratch);
        if (mass >= target) lo = mid; else hi = mid;
    }
    const float tau = __uint_as_float(lo);

    // each thread owns one contiguous chunk of the vocabulary; prefix sums over chunks find the token
    const int chunk = (vocab + blockDim.x - 1) / blockDim.x;
    const int begin = threadIdx.x * chunk;
    const int end = min(vocab, begin + chunk);
    float mine = 0.f;
    for (int j = begin; j < end; j++)
    {
        const float p = expf((row[j] - mx) * inv_t);
        if (p >= tau) mine += p;
    }
    chunk_mass[threadIdx.x] = mine;
    __syncthreads();
    if (threadIdx.x == 0)
    {
        float total = 0.f;
        for (int c = 0; c < (int)blockDim.x; c++) total += chunk_mass[c];
        const float goal = uniforms[blockIdx.x] * total;
        float run = 0.f;
        int chosen = -1;
        for (int c = 0; c < (int)blockDim.x && chosen < 0; c++)
        {
            if (run + chunk_mass[c] <= goal) { run += chunk_mass[c]; continue; }
            const int b = c * chunk, e = min(vocab, b + chunk);
            for (int j = b; j < e; j++)
            {
                const float p = expf((row[j] - mx) * inv_t);
                if (p < tau) continue;
                run += p;
                if (run > goal) { chosen = j; break; }
            }
        }
        // rounding left the goal unreached: the last token of the nucleus
        for (int j = vocab - 1; j >= 0 && chosen < 0; j--)
            if (expf((row[j] - mx) * inv_t) >= tau) chosen = j;
        out[blockIdx.x] = chosen >= 0 ? chosen : 0;
    }
}
LORI_KERNEL(sample_top_p)

// splitmix64's finaliser: a bijective 64-bit mix.
__device__ __forceinline__ unsigned long long sr_mix(unsigned long long z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// Uniform in [0, 1) with 24 random bits, from (seed, slot, position).
__device__ __forceinline__ float sr_uniform(unsigned long long seed, int slot, int position)
{
    unsigned long long z = sr_mix(seed + 0x9e3779b97f4a7c15ull * (unsigned long long)(unsigned)(slot + 1));
    z = sr_mix(z + 0xd1b54a32d192ed03ull * (unsigned long long)(unsigned)(position + 1));
    return (float)(z >> 40) * (1.0f / 16777216.0f);
}

extern "C" __global__ void sample_rows(const float* logits, int vocab, float temperature, int top_k, float top_p,
                                       unsigned long long seed, const int* slots, const int* positions, int* out)
{
    __shared__ float scratch[32];
    __shared__ float chunk_mass[1024];
    const float* row = logits + (long long)blockIdx.x * vocab;
    float mx = -__int_as_float(0x7f800000);
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) mx = fmaxf(mx, row[j]);
    mx = block_max(mx, scratch);
    const float inv_t = 1.0f / temperature;

    // lo: the threshold's float bits; p <= 1 (the max has p = 1), so 0x3f800001 bounds every search from above
    unsigned lo = 0u;
    if (top_k > 0 && top_k < vocab)
    {
        unsigned hi = 0x3f800001u;
        while (hi - lo > 1u)
        {
            const unsigned mid = lo + (hi - lo) / 2u;
            const float tau = __uint_as_float(mid);
            float count = 0.f;
            for (int j = threadIdx.x; j < vocab; j += blockDim.x)
                if (expf((row[j] - mx) * inv_t) >= tau) count += 1.f;
            count = block_sum(count, scratch);
            if (count >= (float)top_k) lo = mid; else hi = mid;
        }
    }
    if (top_p < 1.f)
    {
        const float tau_k = __uint_as_float(lo);
        float kept = 0.f;
        for (int j = threadIdx.x; j < vocab; j += blockDim.x)
        {
            const float p = expf((row[j] - mx) * inv_t);
            if (p >= tau_k) kept += p;
        }
        const float target = top_p * block_sum(kept, scratch);
        unsigned hi = 0x3f800001u;
        while (hi - lo > 1u)
        {
            const unsigned mid = lo + (hi - lo) / 2u;
            const float tau = __uint_as_float(mid);
            float mass = 0.f;
            for (int j = threadIdx.x; j < vocab; j += blockDim.x)
            {
                const float p = expf((row[j] - mx) * inv_t);
                if (p >= tau) mass += p;
            }
            mass = block_sum(mass, scratch);
            if (mass >= target) lo = mid; else hi = mid;
        }
    }
    const float tau = __uint_as_float(lo);

    const int chunk = (vocab + blockDim.x - 1) / blockDim.x;
    const int begin = threadIdx.x * chunk;
    const int end = min(vocab, begin + chunk);
    float mine = 0.f;
    for (int j = begin; j < end; j++)
    {
        const float p = expf((row[j] - mx) * inv_t);
        if (p >= tau) mine += p;
    }
    chunk_mass[threadIdx.x] = mine;
    __syncthreads();
    if (threadIdx.x == 0)
    {
        float total = 0.f;
        for (int c = 0; c < (int)blockDim.x; c++) total += chunk_mass[c];
        const float goal = sr_uniform(seed, slots[blockIdx.x], positions[blockIdx.x] + 1) * total;
        float run = 0.f;
        int chosen = -1;
        for (int c = 0; c < (int)blockDim.x && chosen < 0; c++)
        {
            if (run + chunk_mass[c] <= goal) { run += chunk_mass[c]; continue; }
            const int b = c * chunk, e = min(vocab, b + chunk);
            for (int j = b; j < e; j++)
            {
                const float p = expf((row[j] - mx) * inv_t);
                if (p < tau) continue;
                run += p;
                if (run > goal) { chosen = j; break; }
            }
        }
        for (int j = vocab - 1; j >= 0 && chosen < 0; j--)
            if (expf((row[j] - mx) * inv_t) >= tau) chosen = j;
        out[blockIdx.x] = chosen >= 0 ? chosen : 0;
    }
}
LORI_KERNEL(sample_rows)
