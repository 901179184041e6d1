// gemm_wgmma: the MatMul op on Hopper's warpgroup tensor cores (sm_90a), same contract as gemm_tc.cu:
//   y = alpha * x W^T (+ y when accumulate != 0)
// x bf16 [N, K] row-major, W bf16 [M, K] row-major, y f32 [N, M]; bf16 products summed in fp32.
//
// Both operands are K-major, which is what wgmma reads without transposition (PTX ISA, "Asynchronous
// Warpgroup Level Matrix Multiply-Accumulate"): A = a 64 x 16 slice of x's tile, B = 16 x 128 of W^T,
// i.e. 128 rows of W. Tiles live in shared memory in the 128-byte swizzle layout (lori_sm90.cuh): each
// tile row is 64 bf16 of K (128 bytes) with its 16-byte chunks XOR-permuted by row % 8, so one K step of
// 16 is a descriptor whose start address moves by 32 bytes.
//
// gemm_wgmma_bf16 / _ragged (operands staged by the threads):
//  - a block of 2 warpgroups (256 threads) computes a 128 x 128 tile of y; warpgroup g owns rows 64 g ..
//    + 63 and all 128 columns: one m64n128k16 wgmma per K step of 16, 64 fp32 accumulators per thread;
//  - K walks in steps of 64 through a 4-stage ring: cp.async (16-byte chunks written at their swizzled
//    place) fills tile kt + 3 while tile kt is multiplied; after its cp.async group lands each thread
//    fences the async proxy (wgmma reads shared memory through it), then the block synchronises;
//  - each warpgroup issues the four K steps of a tile as one wgmma group and waits for it before the
//    next barrier, so a stage is never refilled while a wgmma may still read it.
// Edges: rows past N / M and the K tail are zero-filled. _bf16 needs K % 8 == 0 and 16-byte aligned x
// and W; _ragged takes any K and alignment, staging through registers with per-element predicates.
// Grid (ceil(M/128), ceil(N/128)), block 256, dynamic shared memory 132,096 bytes (4 stages x 32 KiB
// + 1 KiB to align the tiles to 1024 bytes).
//
// gemm_wgmma_tma_bf16: the same tile with the operands brought in by TMA in a producer / consumer
// pipeline (described at the kernel below).
//
// Only an sm_90a build has the instructions; for compute_80 / compute_90 (and NVRTC 11.8) the kernels
// compile with empty bodies. gemm_wgmma_probe writes 1 when the loaded code is the sm_90a build, so
// the runtime never launches an empty body (and then checks the real one against gemm_tc).
#include "../include/lori_sm90.cuh"

#define GWG_BM 128
#define GWG_BN 128
#define GWG_BK 64
#define GWG_STAGES 4
#define GWG_THREADS 256
#define GWG_TILE_BYTES (GWG_BM * GWG_BK * 2)
#define GWG_STAGE_BYTES (2 * GWG_TILE_BYTES)

extern "C" __global__ void gemm_wgmma_probe(int* out)
{
    *out = LORI_SM90A;
}
LORI_KERNEL(gemm_wgmma_probe)

#if LORI_SM90A

struct __align__(16) gwg_u32x4 { u32 x, y, z, w; };

// The block's tiles: dynamic shared memory rounded up to a 1024-byte boundary of the shared window.
__device__ __forceinline__ unsigned char* gwg_tiles()
{
    LORI_DYNAMIC_SHARED(unsigned char, smem);
    const u32 base = lori_smem_addr(smem);
    return smem + ((1024u - (base & 1023u)) & 1023u);
}

// Fills one stage: the A tile (x rows row0..) then the B tile (W rows col0..), 8 chunks of 16 bytes a row.
template <bool ALIGNED>
__device__ __forceinline__ void gwg_load_stage(unsigned char* stage, const bf16* x, const bf16* w, int n, int m, int k, int row0, int col0, int k0)
{
    for (int c = threadIdx.x; c < 2 * GWG_BM * (GWG_BK / 8); c += GWG_THREADS)
    {
        const bool is_a = c < GWG_BM * (GWG_BK / 8);
        const int cc = is_a ? c : c - GWG_BM * (GWG_BK / 8);
        const int r = cc >> 3, kc = (cc & 7) * 8;
        const int grow = (is_a ? row0 : col0) + r;
        const int limit = is_a ? n : m;
        const bf16* src = is_a ? x : w;
        unsigned char* dst = stage + (is_a ? 0 : GWG_TILE_BYTES) + sw128_offset(r, kc);
        const int gk = k0 + kc;
        if (ALIGNED)
        {
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
            gwg_u32x4 q;
            q.x = v[0]; q.y = v[1]; q.z = v[2]; q.w = v[3];
            *reinterpret_cast<gwg_u32x4*>(dst) = q;
        }
    }
}

// y = alpha * acc (+ y) for one warpgroup's 64 x 128 accumulator fragment (layout in lori_sm90.cuh).
__device__ __forceinline__ void gwg_store(float* y, const float acc[64], int row0, int col0, int n, int m, float alpha, int accumulate)
{
    const int warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31;
    for (int j = 0; j < 16; j++)
        for (int e = 0; e < 4; e++)
        {
            const int r = row0 + 16 * warp + (lane >> 2) + 8 * (e >> 1);
            const int c = col0 + 8 * j + 2 * (lane & 3) + (e & 1);
            if (r >= n || c >= m) continue;
            float* out = y + (long long)r * m + c;
            const float v = alpha * acc[4 * j + e];
            *out = accumulate ? *out + v : v;
        }
}

template <bool ALIGNED>
__device__ __forceinline__ void gemm_wgmma_impl(const bf16* x, const bf16* w, float* y, int n, int m, int k, float alpha, int accumulate)
{
    unsigned char* tiles = gwg_tiles();
    const int group = threadIdx.x >> 7;
    const int row0 = blockIdx.y * GWG_BM, col0 = blockIdx.x * GWG_BN;
    const int ktiles = (k + GWG_BK - 1) / GWG_BK;

    float acc[64];
    for (int i = 0; i < 64; i++) acc[i] = 0.f;

    for (int s = 0; s < GWG_STAGES - 1; s++)
    {
        if (s < ktiles) gwg_load_stage<ALIGNED>(tiles + s * GWG_STAGE_BYTES, x, w, n, m, k, row0, col0, s * GWG_BK);
        cp_async_commit();
    }

    for (int kt = 0; kt < ktiles; kt++)
    {
        // groups committed so far: STAGES - 1 + kt; allowing STAGES - 2 pending means tile kt has landed
        cp_async_wait<GWG_STAGES - 2>();
        fence_proxy_async_shared();
        __syncthreads();  // tile kt written by every thread; every warpgroup is done with tile kt - 1
        const int pf = kt + GWG_STAGES - 1;
        if (pf < ktiles) gwg_load_stage<ALIGNED>(tiles + (pf % GWG_STAGES) * GWG_STAGE_BYTES, x, w, n, m, k, row0, col0, pf * GWG_BK);
        cp_async_commit();

        const u32 a = lori_smem_addr(tiles + (kt % GWG_STAGES) * GWG_STAGE_BYTES) + group * 64 * 128;
        const u32 b = lori_smem_addr(tiles + (kt % GWG_STAGES) * GWG_STAGE_BYTES + GWG_TILE_BYTES);
        wgmma_fence();
        for (int kk = 0; kk < GWG_BK / 16; kk++)
            wgmma_m64n128k16_bf16(acc, wgmma_desc_sw128(a + kk * 32), wgmma_desc_sw128(b + kk * 32), 1);
        wgmma_commit();
        wgmma_wait<0>();
    }
    cp_async_wait<0>();
    gwg_store(y, acc, row0 + 64 * group, col0, n, m, alpha, accumulate);
}

// The TMA kernel's shared memory after the tiles: full[STAGES] then empty[STAGES] mbarriers.
#define GWG_BARRIERS_OFFSET (GWG_STAGES * GWG_STAGE_BYTES)

#endif // LORI_SM90A

// Producer / consumer over TMA: warpgroup 0 is the producer (one thread issues the copies), warpgroups 1
// and 2 consume, each owning 64 rows of the 128 x 128 tile as in the kernels above. Stage s has two
// mbarriers: full[s] (count 1: the producer's arrive.expect_tx of the stage's 32 KiB, completed by the two
// copies' complete_tx) and empty[s] (count 8: lane 0 of each consumer warp, once the wgmma group that read
// the stage has retired). Use u = kt / STAGES of a stage waits on full's phase parity u & 1, and the
// producer's refill for use u waits on empty's phase u - 1. Consumers keep one wgmma group in flight:
// after committing tile kt they wait until only it is pending, then release tile kt - 1's stage.
// The maps (cuTensorMapEncodeTiled, bf16, 128-byte swizzle, zero fill) describe x as [N, K] and W as
// [M, K] with a 64 x 128 box (K x rows), so both land in the swizzled layout the descriptors read, and
// the edges past N, M and K arrive as zeros. Needs K % 8 == 0 (row strides are multiples of 16 bytes)
// and 16-byte aligned x and W. Grid (ceil(M/128), ceil(N/128)), block 384, dynamic shared memory
// 132,160 bytes (the tiles, 1 KiB of alignment, 8 mbarriers). The launch bounds keep registers within
// 65,536 / 384 per thread (the accumulators take 64).
extern "C" __global__ __launch_bounds__(384, 1) void gemm_wgmma_tma_bf16(const __grid_constant__ lori_tensor_map tmx,
                                                                         const __grid_constant__ lori_tensor_map tmw,
                                                                         float* y, int n, int m, int k, float alpha, int accumulate)
{
#if LORI_SM90A
    unsigned char* tiles = gwg_tiles();
    const u32 base = lori_smem_addr(tiles);
    const u32 full = base + GWG_BARRIERS_OFFSET, empty = full + 8 * GWG_STAGES;
    const int group = threadIdx.x >> 7;
    const int row0 = blockIdx.y * GWG_BM, col0 = blockIdx.x * GWG_BN;
    const int ktiles = (k + GWG_BK - 1) / GWG_BK;

    if (threadIdx.x == 0)
    {
        for (int s = 0; s < GWG_STAGES; s++)
        {
            mbarrier_init(full + 8 * s, 1);
            mbarrier_init(empty + 8 * s, 8);
        }
        fence_mbarrier_init();
    }
    __syncthreads();

    if (group == 0)
    {
        if (threadIdx.x == 0)
            for (int kt = 0; kt < ktiles; kt++)
            {
                const int s = kt % GWG_STAGES, use = kt / GWG_STAGES;
                if (use > 0) mbarrier_wait_parity(empty + 8 * s, (use - 1) & 1);
                mbarrier_arrive_expect_tx(full + 8 * s, GWG_STAGE_BYTES);
                tma_load_2d(base + s * GWG_STAGE_BYTES, &tmx, kt * GWG_BK, row0, full + 8 * s);
                tma_load_2d(base + s * GWG_STAGE_BYTES + GWG_TILE_BYTES, &tmw, kt * GWG_BK, col0, full + 8 * s);
            }
        return;
    }

    const int consumer = group - 1;
    float acc[64];
    for (int i = 0; i < 64; i++) acc[i] = 0.f;
    for (int kt = 0; kt < ktiles; kt++)
    {
        const int s = kt % GWG_STAGES;
        mbarrier_wait_parity(full + 8 * s, (kt / GWG_STAGES) & 1);
        const u32 a = base + s * GWG_STAGE_BYTES + consumer * 64 * 128;
        const u32 b = base + s * GWG_STAGE_BYTES + GWG_TILE_BYTES;
        wgmma_fence();
        for (int kk = 0; kk < GWG_BK / 16; kk++)
            wgmma_m64n128k16_bf16(acc, wgmma_desc_sw128(a + kk * 32), wgmma_desc_sw128(b + kk * 32), 1);
        wgmma_commit();
        wgmma_wait<1>();
        if (kt > 0 && (threadIdx.x & 31) == 0) mbarrier_arrive(empty + 8 * ((kt - 1) % GWG_STAGES));
    }
    wgmma_wait<0>();
    gwg_store(y, acc, row0 + 64 * consumer, col0, n, m, alpha, accumulate);
#endif
}
LORI_KERNEL(gemm_wgmma_tma_bf16)

extern "C" __global__ __launch_bounds__(GWG_THREADS, 1) void gemm_wgmma_bf16(const bf16* x, const bf16* w, float* y, int n, int m, int k, float alpha, int accumulate)
{
#if LORI_SM90A
    gemm_wgmma_impl<true>(x, w, y, n, m, k, alpha, accumulate);
#endif
}
LORI_KERNEL(gemm_wgmma_bf16)

extern "C" __global__ __launch_bounds__(GWG_THREADS, 1) void gemm_wgmma_bf16_ragged(const bf16* x, const bf16* w, float* y, int n, int m, int k, float alpha, int accumulate)
{
#if LORI_SM90A
    gemm_wgmma_impl<false>(x, w, y, n, m, k, alpha, accumulate);
#endif
}
LORI_KERNEL(gemm_wgmma_bf16_ragged)
