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

// The pieces both samplers share, with p_j = exp((row[j] - mx) * inv_t). Block-wide: every thread calls them.

// The row's largest logit.
__device__ __forceinline__ float smp_row_max(const float* row, int vocab, float* scratch)
{
    float mx = -__int_as_float(0x7f800000);
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) mx = fmaxf(mx, row[j]);
    return block_max(mx, scratch);
}

// The mass of the tokens with p_j >= tau.
__device__ __forceinline__ float smp_mass_at_least(const float* row, int vocab, float mx, float inv_t, float tau, float* scratch)
{
    float mass = 0.f;
    for (int j = threadIdx.x; j < vocab; j += blockDim.x)
    {
        const float p = expf((row[j] - mx) * inv_t);
        if (p >= tau) mass += p;
    }
    return block_sum(mass, scratch);
}

// The largest tau (as float bits, searched from lo up; p <= 1, the max has p = 1) with mass(p >= tau) >= target;
// mass(p >= tau(lo)) >= target must hold.
__device__ __forceinline__ unsigned smp_bisect_mass(const float* row, int vocab, float mx, float inv_t, unsigned lo, float target, float* scratch)
{
    unsigned hi = 0x3f800001u;
    while (hi - lo > 1u)
    {
        const unsigned mid = lo + (hi - lo) / 2u;
        if (smp_mass_at_least(row, vocab, mx, inv_t, __uint_as_float(mid), scratch) >= target) lo = mid; else hi = mid;
    }
    return lo;
}

// Each thread owns one contiguous chunk of the vocabulary and writes its nucleus (p_j >= tau) mass to
// chunk_mass[threadIdx.x]; returns the chunk length (after a barrier: every chunk's mass is visible).
__device__ __forceinline__ int smp_chunk_masses(const float* row, int vocab, float mx, float inv_t, float tau, float* chunk_mass)
{
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
    return chunk;
}

// One thread, after smp_chunk_masses: the first nucleus token in index order at which the running sum of nucleus
// p_j exceeds u * (nucleus mass); prefix sums over the chunks skip to the chunk that holds it.
__device__ __forceinline__ int smp_pick(const float* row, int vocab, float mx, float inv_t, float tau, int chunk, const float* chunk_mass, float u)
{
    float total = 0.f;
    for (int c = 0; c < (int)blockDim.x; c++) total += chunk_mass[c];
    const float goal = u * total;
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
    return chosen >= 0 ? chosen : 0;
}

extern "C" __global__ void sample_top_p(const float* logits, int vocab, float temperature, float top_p, const float* uniforms, int* out)
{
    __shared__ float scratch[32];
    __shared__ float chunk_mass[1024];
    const float* row = logits + (long long)blockIdx.x * vocab;
    const float mx = smp_row_max(row, vocab, scratch);
    const float inv_t = 1.0f / temperature;
    float z = 0.f;
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) z += expf((row[j] - mx) * inv_t);
    z = block_sum(z, scratch);

    // mass(p >= 0) = z >= top_p z always
    const float tau = __uint_as_float(smp_bisect_mass(row, vocab, mx, inv_t, 0u, top_p * z, scratch));
    const int chunk = smp_chunk_masses(row, vocab, mx, inv_t, tau, chunk_mass);
    if (threadIdx.x == 0) out[blockIdx.x] = smp_pick(row, vocab, mx, inv_t, tau, chunk, chunk_mass, uniforms[blockIdx.x]);
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
    const float mx = smp_row_max(row, vocab, scratch);
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
        const float kept = smp_mass_at_least(row, vocab, mx, inv_t, __uint_as_float(lo), scratch);
        lo = smp_bisect_mass(row, vocab, mx, inv_t, lo, top_p * kept, scratch);
    }
    const float tau = __uint_as_float(lo);
    const int chunk = smp_chunk_masses(row, vocab, mx, inv_t, tau, chunk_mass);
    if (threadIdx.x == 0)
        out[blockIdx.x] = smp_pick(row, vocab, mx, inv_t, tau, chunk, chunk_mass, sr_uniform(seed, slots[blockIdx.x], positions[blockIdx.x] + 1));
}
LORI_KERNEL(sample_rows)
