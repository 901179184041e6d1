// gemm_tc: the MatMul op on tensor cores, for activations staged in bf16:
//   y = alpha * x W^T (+ y when accumulate != 0)
// x bf16 [N, K] row-major, W bf16 [M, K] row-major (the weight as stored: one row per output), y f32 [N, M].
// Products bf16 x bf16 are exact in fp32 and the sums are fp32 (mma.sync's accumulator).
//
// Tiling (sm_80 mma.sync, PTX ISA "Matrix multiply-accumulate operation using mma instruction"):
//  - a block of 8 warps computes a 128 x 128 tile of y (rows: tokens, columns: outputs), walking K in
//    steps of 32 through a 3-stage shared-memory ring filled by cp.async (the load of tile kt + 2 runs
//    while tile kt is multiplied);
//  - warp (wm, wn) = (warp / 4, warp % 4) owns rows 64 wm .. +63 and columns 32 wn .. +31: 4 x 4
//    fragments of m16n8, fed by ldmatrix.x4 (A: one 16 x 16 block per call; B: two n8 x k16 blocks,
//    since W's rows are B's columns, the non-transposed ldmatrix yields the "col" B fragment directly);
//  - shared rows are padded to 40 elements (80 bytes): the 8 row addresses of one ldmatrix phase fall
//    in 8 different 16-byte bank groups.
// Edges: rows of x / W past N / M and the K tail are zero-filled. gemm_tc_bf16 needs K % 8 == 0 and
// 16-byte aligned x and W (16-byte cp.async with src-size 0 or 16); gemm_tc_bf16_ragged takes any K and
// alignment, staging the tiles through registers with per-element predicates.
// Grid (ceil(M/128), ceil(N/128)), block 256, dynamic shared memory GEMM_TC_SMEM_BYTES (61,440).
#include "../include/lori_cuda.cuh"

#define GTC_BM 128
#define GTC_BN 128
#define GTC_BK 32
#define GTC_STAGES 3
#define GTC_LDS (GTC_BK + 8)
#define GTC_THREADS 256
#define GTC_STAGE_ELEMS ((GTC_BM + GTC_BN) * GTC_LDS)

struct __align__(16) gtc_u32x4 { u32 x, y, z, w; };

// Fills one stage: A (x rows row0..) then B (W rows col0..), 8-element chunks, 4 chunks per row.
template <bool ALIGNED>
__device__ __forceinline__ void gtc_load_stage(bf16* stage, const bf16* x, const bf16* w, int n, int m, int k, int row0, int col0, int k0)
{
    for (int c = threadIdx.x; c < (GTC_BM + GTC_BN) * (GTC_BK / 8); c += GTC_THREADS)
    {
        const bool is_a = c < GTC_BM * (GTC_BK / 8);
        const int cc = is_a ? c : c - GTC_BM * (GTC_BK / 8);
        const int r = cc >> 2, kc = (cc & 3) * 8;
        const int grow = (is_a ? row0 : col0) + r;
        const int limit = is_a ? n : m;
        const bf16* src = is_a ? x : w;
        bf16* dst = stage + (is_a ? 0 : GTC_BM * GTC_LDS) + r * GTC_LDS + kc;
        const int gk = k0 + kc;
        if (ALIGNED)
        {
            // K % 8 == 0: a chunk is wholly inside or wholly outside the matrix
            const bool inside = grow < limit && gk < k;
            cp_async_16(dst, inside ? src + (long long)grow * k + gk : src, inside ? 16 : 0);
        }
        else
        {
            u32 v[4];
            for (int e = 0; e < 4; e++)
            {
                bf16 lo = 0, hi = 0;
                if (grow < limit)
                {
                    const bf16* p = src + (long long)grow * k;
                    if (gk + 2 * e < k) lo = p[gk + 2 * e];
                    if (gk + 2 * e + 1 < k) hi = p[gk + 2 * e + 1];
                }
                v[e] = pack_bf16x2(lo, hi);
            }
            gtc_u32x4 q;
            q.x = v[0]; q.y = v[1]; q.z = v[2]; q.w = v[3];
            *reinterpret_cast<gtc_u32x4*>(dst) = q;
        }
    }
}

template <bool ALIGNED>
__device__ __forceinline__ void gemm_tc_impl(const bf16* x, const bf16* w, float* y, int n, int m, int k, float alpha, int accumulate)
{
    LORI_DYNAMIC_SHARED(bf16, smem);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int wm = warp >> 2, wn = warp & 3;
    const int row0 = blockIdx.y * GTC_BM, col0 = blockIdx.x * GTC_BN;
    const int tiles = (k + GTC_BK - 1) / GTC_BK;

    float acc[4][4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            for (int e = 0; e < 4; e++) acc[i][j][e] = 0.f;

    for (int s = 0; s < GTC_STAGES - 1; s++)
    {
        if (s < tiles) gtc_load_stage<ALIGNED>(smem + s * GTC_STAGE_ELEMS, x, w, n, m, k, row0, col0, s * GTC_BK);
        cp_async_commit();
    }

    for (int kt = 0; kt < tiles; kt++)
    {
        // groups committed so far: STAGES - 1 + kt; allowing STAGES - 2 pending means tile kt has landed
        cp_async_wait<GTC_STAGES - 2>();
        __syncthreads();  // tile kt visible to every warp; every warp is done with tile kt - 1's stage
        const int pf = kt + GTC_STAGES - 1;
        if (pf < tiles) gtc_load_stage<ALIGNED>(smem + (pf % GTC_STAGES) * GTC_STAGE_ELEMS, x, w, n, m, k, row0, col0, pf * GTC_BK);
        cp_async_commit();

        const bf16* sa = smem + (kt % GTC_STAGES) * GTC_STAGE_ELEMS;
        const bf16* sb = sa + GTC_BM * GTC_LDS;
        for (int kk = 0; kk < GTC_BK; kk += 16)
        {
            u32 af[4][4], bfrag[4][2];
            for (int i = 0; i < 4; i++)
                ldmatrix_x4(af[i], sa + (wm * 64 + i * 16 + (lane & 15)) * GTC_LDS + kk + (lane >> 4) * 8);
            for (int j2 = 0; j2 < 2; j2++)
            {
                // matrices: (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15)
                u32 r[4];
                ldmatrix_x4(r, sb + (wn * 32 + j2 * 16 + (lane >> 4) * 8 + (lane & 7)) * GTC_LDS + kk + ((lane >> 3) & 1) * 8);
                bfrag[2 * j2][0] = r[0];
                bfrag[2 * j2][1] = r[1];
                bfrag[2 * j2 + 1][0] = r[2];
                bfrag[2 * j2 + 1][1] = r[3];
            }
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 4; j++) mma_m16n8k16_bf16(acc[i][j], af[i], bfrag[j], acc[i][j]);
        }
    }
    cp_async_wait<0>();

    // accumulator fragment: e 0,1 at (row g, cols 2t, 2t+1), e 2,3 at row g + 8
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            for (int e = 0; e < 4; e++)
            {
                const int r = row0 + wm * 64 + i * 16 + (lane >> 2) + (e >> 1) * 8;
                const int c = col0 + wn * 32 + j * 8 + (lane & 3) * 2 + (e & 1);
                if (r >= n || c >= m) continue;
                float* out = y + (long long)r * m + c;
                const float v = alpha * acc[i][j][e];
                *out = accumulate ? *out + v : v;
            }
}

extern "C" __global__ void gemm_tc_bf16(const bf16* x, const bf16* w, float* y, int n, int m, int k, float alpha, int accumulate)
{
    gemm_tc_impl<true>(x, w, y, n, m, k, alpha, accumulate);
}
LORI_KERNEL(gemm_tc_bf16)

extern "C" __global__ void gemm_tc_bf16_ragged(const bf16* x, const bf16* w, float* y, int n, int m, int k, float alpha, int accumulate)
{
    gemm_tc_impl<false>(x, w, y, n, m, k, alpha, accumulate);
}
LORI_KERNEL(gemm_tc_bf16_ragged)

// ---- the linear op with a LoRA adapter on tensor cores (additive: the kernels above are unchanged) ----
// Both kernels reuse the tiling above (128 x 128 block tile, 32-deep K steps, 3-stage cp.async ring,
// ldmatrix + mma.sync) with a loader that reads each tile from one of two (activation, weight) sources.
//
// gemm_tc_shrink_bf16: the weight [W; A] ([M + R, K]: A's rows appended below W's, nothing copied):
//     y = alpha * x W^T (+ y when accumulate)    for output columns 0 .. M - 1   (y f32 [N, M])
//     u = bf16(scale * x A^T)                    for output columns M .. M + R - 1 (u bf16 [N, R])
//   So the adapter's shrink rides in the base GEMM's grid (ceil((M + R) / 128) column tiles); with M = 0 it is
//   the shrink alone. Then `y += u B^T` is gemm_tc_bf16 with K = R and accumulate (variant "shrink rows").
// gemm_tc_lora_bf16: the K concatenation [x | u] [W | B]^T: the main loop runs over the ceil(K / 32) tiles of
//     (x, W) and then the ceil(R / 32) tiles of (u, B) into the same accumulators:
//     y = alpha * (x W^T + u B^T) (+ y when accumulate)   u bf16 [N, R], B bf16 [M, R] (dense)
//   (variant "K-concat": one GEMM for base and expand, after a shrink).
// x bf16 [N, K], W bf16 [M, K], A bf16 [R, K]. The _ragged twins take any K, R and alignment; the others need
// K % 8 == 0, R % 8 == 0 and 16-byte aligned x, W, A / u, B.
// Grid (ceil((M + R_out) / 128), ceil(N / 128)) with R_out = R for the shrink kernel and 0 for the K-concat one;
// block 256, dynamic shared memory GEMM_TC_SMEM_BYTES.

// One (activation, weight) source of the K loop: weight rows 0 .. m - 1 from w, rows m .. m + m2 - 1 from w2.
struct gtc_source
{
    const bf16* x;
    const bf16* w;
    const bf16* w2;
    int m, m2, k, tiles;
};

template <bool ALIGNED>
__device__ __forceinline__ void gtc_load_stage_src(bf16* stage, const gtc_source& s, int n, int row0, int col0, int k0)
{
    for (int c = threadIdx.x; c < (GTC_BM + GTC_BN) * (GTC_BK / 8); c += GTC_THREADS)
    {
        const bool is_a = c < GTC_BM * (GTC_BK / 8);
        const int cc = is_a ? c : c - GTC_BM * (GTC_BK / 8);
        const int r = cc >> 2, kc = (cc & 3) * 8;
        const int grow = (is_a ? row0 : col0) + r;
        // the row's address, or null past the matrix
        const bf16* src = 0;
        if (is_a) { if (grow < n) src = s.x + (long long)grow * s.k; }
        else if (grow < s.m) src = s.w + (long long)grow * s.k;
        else if (grow < s.m + s.m2) src = s.w2 + (long long)(grow - s.m) * s.k;
        bf16* dst = stage + (is_a ? 0 : GTC_BM * GTC_LDS) + r * GTC_LDS + kc;
        const int gk = k0 + kc;
        if (ALIGNED)
        {
            const bool inside = src && gk < s.k;
            cp_async_16(dst, inside ? src + gk : s.x, inside ? 16 : 0);
        }
        else
        {
            u32 v[4];
            for (int e = 0; e < 4; e++)
            {
                bf16 lo = 0, hi = 0;
                if (src)
                {
                    if (gk + 2 * e < s.k) lo = src[gk + 2 * e];
                    if (gk + 2 * e + 1 < s.k) hi = src[gk + 2 * e + 1];
                }
                v[e] = pack_bf16x2(lo, hi);
            }
            gtc_u32x4 q;
            q.x = v[0]; q.y = v[1]; q.z = v[2]; q.w = v[3];
            *reinterpret_cast<gtc_u32x4*>(dst) = q;
        }
    }
}

// K tile kt of the concatenation: tiles of s0 first, then those of s1.
template <bool ALIGNED>
__device__ __forceinline__ void gtc_load_tile2(bf16* stage, const gtc_source& s0, const gtc_source& s1, int n, int row0, int col0, int kt)
{
    if (kt < s0.tiles) gtc_load_stage_src<ALIGNED>(stage, s0, n, row0, col0, kt * GTC_BK);
    else gtc_load_stage_src<ALIGNED>(stage, s1, n, row0, col0, (kt - s0.tiles) * GTC_BK);
}

// The two-source GEMM: columns < m of the product go to y (alpha, accumulate), columns m .. m + r_out - 1 to
// u (bf16, times scale).
template <bool ALIGNED>
__device__ __forceinline__ void gemm_tc2_impl(const gtc_source s0, const gtc_source s1, float* y, bf16* u, int n, int m, int r_out,
                                              float alpha, float scale, int accumulate)
{
    LORI_DYNAMIC_SHARED(bf16, smem);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int wm = warp >> 2, wn = warp & 3;
    const int row0 = blockIdx.y * GTC_BM, col0 = blockIdx.x * GTC_BN;
    const int tiles = s0.tiles + s1.tiles;

    float acc[4][4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            for (int e = 0; e < 4; e++) acc[i][j][e] = 0.f;

    for (int s = 0; s < GTC_STAGES - 1; s++)
    {
        if (s < tiles) gtc_load_tile2<ALIGNED>(smem + s * GTC_STAGE_ELEMS, s0, s1, n, row0, col0, s);
        cp_async_commit();
    }

    for (int kt = 0; kt < tiles; kt++)
    {
        cp_async_wait<GTC_STAGES - 2>();
        __syncthreads();
        const int pf = kt + GTC_STAGES - 1;
        if (pf < tiles) gtc_load_tile2<ALIGNED>(smem + (pf % GTC_STAGES) * GTC_STAGE_ELEMS, s0, s1, n, row0, col0, pf);
        cp_async_commit();

        const bf16* sa = smem + (kt % GTC_STAGES) * GTC_STAGE_ELEMS;
        const bf16* sb = sa + GTC_BM * GTC_LDS;
        for (int kk = 0; kk < GTC_BK; kk += 16)
        {
            u32 af[4][4], bfrag[4][2];
            for (int i = 0; i < 4; i++)
                ldmatrix_x4(af[i], sa + (wm * 64 + i * 16 + (lane & 15)) * GTC_LDS + kk + (lane >> 4) * 8);
            for (int j2 = 0; j2 < 2; j2++)
            {
                u32 r[4];
                ldmatrix_x4(r, sb + (wn * 32 + j2 * 16 + (lane >> 4) * 8 + (lane & 7)) * GTC_LDS + kk + ((lane >> 3) & 1) * 8);
                bfrag[2 * j2][0] = r[0];
                bfrag[2 * j2][1] = r[1];
                bfrag[2 * j2 + 1][0] = r[2];
                bfrag[2 * j2 + 1][1] = r[3];
            }
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 4; j++) mma_m16n8k16_bf16(acc[i][j], af[i], bfrag[j], acc[i][j]);
        }
    }
    cp_async_wait<0>();

    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            for (int e = 0; e < 4; e++)
            {
                const int r = row0 + wm * 64 + i * 16 + (lane >> 2) + (e >> 1) * 8;
                const int c = col0 + wn * 32 + j * 8 + (lane & 3) * 2 + (e & 1);
                if (r >= n) continue;
                if (c < m)
                {
                    float* out = y + (long long)r * m + c;
                    const float v = alpha * acc[i][j][e];
                    *out = accumulate ? *out + v : v;
                }
                else if (c < m + r_out) u[(long long)r * r_out + (c - m)] = float_to_bf16(scale * acc[i][j][e]);
            }
}

__device__ __forceinline__ gtc_source gtc_src(const bf16* x, const bf16* w, const bf16* w2, int m, int m2, int k)
{
    gtc_source s;
    s.x = x; s.w = w; s.w2 = w2; s.m = m; s.m2 = m2; s.k = k; s.tiles = (k + GTC_BK - 1) / GTC_BK;
    return s;
}

template <bool ALIGNED>
__device__ __forceinline__ void gemm_tc_shrink_impl(const bf16* x, const bf16* w, const bf16* a, float* y, bf16* u, int n, int m, int r, int k,
                                                    float alpha, float scale, int accumulate)
{
    const gtc_source s0 = gtc_src(x, w, a, m, r, k);
    gtc_source s1 = s0;
    s1.tiles = 0;
    gemm_tc2_impl<ALIGNED>(s0, s1, y, u, n, m, r, alpha, scale, accumulate);
}

template <bool ALIGNED>
__device__ __forceinline__ void gemm_tc_lora_impl(const bf16* x, const bf16* w, const bf16* u, const bf16* b, float* y, int n, int m, int k, int r,
                                                  float alpha, int accumulate)
{
    gemm_tc2_impl<ALIGNED>(gtc_src(x, w, w, m, 0, k), gtc_src(u, b, b, m, 0, r), y, 0, n, m, 0, alpha, 1.f, accumulate);
}

extern "C" __global__ void gemm_tc_shrink_bf16(const bf16* x, const bf16* w, const bf16* a, float* y, bf16* u, int n, int m, int r, int k,
                                               float alpha, float scale, int accumulate)
{
    gemm_tc_shrink_impl<true>(x, w, a, y, u, n, m, r, k, alpha, scale, accumulate);
}
LORI_KERNEL(gemm_tc_shrink_bf16)

extern "C" __global__ void gemm_tc_shrink_bf16_ragged(const bf16* x, const bf16* w, const bf16* a, float* y, bf16* u, int n, int m, int r, int k,
                                                      float alpha, float scale, int accumulate)
{
    gemm_tc_shrink_impl<false>(x, w, a, y, u, n, m, r, k, alpha, scale, accumulate);
}
LORI_KERNEL(gemm_tc_shrink_bf16_ragged)

extern "C" __global__ void gemm_tc_lora_bf16(const bf16* x, const bf16* w, const bf16* u, const bf16* b, float* y, int n, int m, int k, int r,
                                             float alpha, int accumulate)
{
    gemm_tc_lora_impl<true>(x, w, u, b, y, n, m, k, r, alpha, accumulate);
}
LORI_KERNEL(gemm_tc_lora_bf16)

extern "C" __global__ void gemm_tc_lora_bf16_ragged(const bf16* x, const bf16* w, const bf16* u, const bf16* b, float* y, int n, int m, int k, int r,
                                                    float alpha, int accumulate)
{
    gemm_tc_lora_impl<false>(x, w, u, b, y, n, m, k, r, alpha, accumulate);
}
LORI_KERNEL(gemm_tc_lora_bf16_ragged)
