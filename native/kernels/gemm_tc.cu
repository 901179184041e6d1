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
