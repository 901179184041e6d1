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
#include "../include/lori_mma_tile.cuh"

#define GTC_BM 128
#define GTC_BN 128
#define GTC_BK 32
#define GTC_STAGES 3
#define GTC_LDS (GTC_BK + 8)
#define GTC_THREADS 256
#define GTC_STAGE_ELEMS ((GTC_BM + GTC_BN) * GTC_LDS)

// One (activation, weight) source of the K loop: weight rows 0 .. m - 1 from w, rows m .. m + m2 - 1 from w2
// (m2 = 0: w alone).
struct gtc_source
{
    const bf16* x;
    const bf16* w;
    const bf16* w2;
    int m, m2, k, tiles;
};

__device__ __forceinline__ gtc_source gtc_src(const bf16* x, const bf16* w, const bf16* w2, int m, int m2, int k)
{
    gtc_source s;
    s.x = x; s.w = w; s.w2 = w2; s.m = m; s.m2 = m2; s.k = k; s.tiles = (k + GTC_BK - 1) / GTC_BK;
    return s;
}

// Fills one stage from s at K offset k0: A (x rows row0..) then B (weight rows col0..), 8-element chunks, 4 chunks
// per row.
template <bool ALIGNED>
__device__ __forceinline__ void gtc_load_stage(bf16* stage, const gtc_source& s, int n, int row0, int col0, int k0)
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
            // K % 8 == 0: a chunk is wholly inside or wholly outside the matrix
            const bool inside = src && gk < s.k;
            cp_async_16(dst, inside ? src + gk : s.x, inside ? 16 : 0);
        }
        else mma_tile_load8_row(dst, src, s.k, gk);
    }
}

// The K tiles of one source.
template <bool ALIGNED>
struct gtc_tiles1
{
    gtc_source s;
    int n, row0, col0;

    __device__ __forceinline__ void operator()(bf16* stage, int kt) const { gtc_load_stage<ALIGNED>(stage, s, n, row0, col0, kt * GTC_BK); }
};

// The K tiles of the concatenation: those of s0 first, then those of s1.
template <bool ALIGNED>
struct gtc_tiles2
{
    gtc_source s0, s1;
    int n, row0, col0;

    __device__ __forceinline__ void operator()(bf16* stage, int kt) const
    {
        if (kt < s0.tiles) gtc_load_stage<ALIGNED>(stage, s0, n, row0, col0, kt * GTC_BK);
        else gtc_load_stage<ALIGNED>(stage, s1, n, row0, col0, (kt - s0.tiles) * GTC_BK);
    }
};

// The main loop of every kernel here: acc = the block's 128 x 128 tile of A B^T over K tiles 0 .. tiles - 1, where
// load(stage, kt) issues the loads of K tile kt into one stage (A rows, then B rows) of the cp.async ring.
template <class Load>
__device__ __forceinline__ void gtc_main_loop(float acc[4][4][4], bf16* smem, int tiles, int wm, int wn, int lane, const Load& load)
{
    mma_tile_zero(acc);

    for (int s = 0; s < GTC_STAGES - 1; s++)
    {
        if (s < tiles) load(smem + s * GTC_STAGE_ELEMS, s);
        cp_async_commit();
    }

    for (int kt = 0; kt < tiles; kt++)
    {
        // groups committed so far: STAGES - 1 + kt; allowing STAGES - 2 pending means tile kt has landed
        cp_async_wait<GTC_STAGES - 2>();
        __syncthreads();  // tile kt visible to every warp; every warp is done with tile kt - 1's stage
        const int pf = kt + GTC_STAGES - 1;
        if (pf < tiles) load(smem + (pf % GTC_STAGES) * GTC_STAGE_ELEMS, pf);
        cp_async_commit();

        const bf16* sa = smem + (kt % GTC_STAGES) * GTC_STAGE_ELEMS;
        const bf16* sb = sa + GTC_BM * GTC_LDS;
        for (int kk = 0; kk < GTC_BK; kk += 16)
        {
            u32 af[4][4], bfrag[4][2];
            mma_tile_frags_nt(af, bfrag, sa, sb, GTC_LDS, kk, wm, wn, lane);
            mma_tile_step(acc, af, bfrag);
        }
    }
    cp_async_wait<0>();
}

template <bool ALIGNED>
__device__ __forceinline__ void gemm_tc_impl(const bf16* x, const bf16* w, float* y, int n, int m, int k, float alpha, int accumulate)
{
    LORI_DYNAMIC_SHARED(bf16, smem);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int wm = warp >> 2, wn = warp & 3;
    const int row0 = blockIdx.y * GTC_BM, col0 = blockIdx.x * GTC_BN;

    gtc_tiles1<ALIGNED> load;
    load.s = gtc_src(x, w, w, m, 0, k); load.n = n; load.row0 = row0; load.col0 = col0;
    float acc[4][4][4];
    gtc_main_loop(acc, smem, load.s.tiles, wm, wn, lane, load);

    mma_tile_store(y, acc, row0, col0, wm, wn, lane, n, m, alpha, accumulate);
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

// The two-source GEMM's epilogue: columns < m of the product go to y (alpha, accumulate), columns m .. m + r_out - 1
// to u (bf16, times scale).
struct gtc_split_out
{
    float* y;
    bf16* u;
    int n, m, r_out;
    float alpha, scale;
    int accumulate;

    __device__ __forceinline__ void operator()(int r, int c, float v) const
    {
        if (r >= n) return;
        if (c < m)
        {
            float* out = y + (long long)r * m + c;
            const float a = alpha * v;
            *out = accumulate ? *out + a : a;
        }
        else if (c < m + r_out) u[(long long)r * r_out + (c - m)] = float_to_bf16(scale * v);
    }
};

template <bool ALIGNED>
__device__ __forceinline__ void gemm_tc2_impl(const gtc_source s0, const gtc_source s1, float* y, bf16* u, int n, int m, int r_out,
                                              float alpha, float scale, int accumulate)
{
    LORI_DYNAMIC_SHARED(bf16, smem);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int wm = warp >> 2, wn = warp & 3;
    const int row0 = blockIdx.y * GTC_BM, col0 = blockIdx.x * GTC_BN;

    gtc_tiles2<ALIGNED> load;
    load.s0 = s0; load.s1 = s1; load.n = n; load.row0 = row0; load.col0 = col0;
    float acc[4][4][4];
    gtc_main_loop(acc, smem, s0.tiles + s1.tiles, wm, wn, lane, load);

    gtc_split_out out;
    out.y = y; out.u = u; out.n = n; out.m = m; out.r_out = r_out; out.alpha = alpha; out.scale = scale; out.accumulate = accumulate;
    mma_tile_each(acc, row0, col0, wm, wn, lane, out);
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
