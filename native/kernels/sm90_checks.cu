// Small sm_90a programs with known answers that pin down the emulator's Hopper twins (lori_sm90.cuh):
// the emulator's tests run them (tests/LoRI.Tests/Cuda/Sm90TwinTests.cs), and an sm_90a build runs the
// same programs on a real device, which is the judge of the twins' reading of the PTX ISA.
// Bodies exist only where LORI_SM90A is 1 (see lori_sm90.cuh); elsewhere they compile empty.
#include "../include/lori_sm90.cuh"

#if LORI_SM90A
__device__ __forceinline__ unsigned char* sm90c_aligned_smem()
{
    LORI_DYNAMIC_SHARED(unsigned char, smem);
    const u32 base = lori_smem_addr(smem);
    return smem + ((1024u - (base & 1023u)) & 1023u);
}
#endif

// One warpgroup (128 threads): D = C + A B with A [64, 64] bf16 row-major (K-major), bt = B^T [128, 64]
// bf16 row-major (K-major B), C and D [64, 128] f32 row-major. The threads write both operands into
// 128-byte-swizzled tiles, then four m64n128k16 wgmmas (K steps of 16: descriptor start + 32 bytes each)
// form one group. mode 0: wait, then store. mode 1: zero the A tile after the commit and before the
// wait (a race on hardware; on the emulator, whose wgmma reads its operands at the wait, D = C). mode 2:
// never wait (the emulator fails the launch). mode 3: A's descriptor without its swizzle mode. Dynamic shared memory: 1024 + 8192 + 16384 bytes.
extern "C" __global__ void sm90_wgmma_tile(const bf16* a, const bf16* bt, const float* c, float* d, int mode)
{
#if LORI_SM90A
    unsigned char* ta = sm90c_aligned_smem();
    unsigned char* tb = ta + 64 * 128;
    for (int i = threadIdx.x; i < 64 * 64; i += 128)
        *reinterpret_cast<bf16*>(ta + sw128_offset(i / 64, i % 64)) = a[i];
    for (int i = threadIdx.x; i < 128 * 64; i += 128)
        *reinterpret_cast<bf16*>(tb + sw128_offset(i / 64, i % 64)) = bt[i];
    fence_proxy_async_shared();
    __syncthreads();

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    float acc[64];
    for (int j = 0; j < 16; j++)
        for (int e = 0; e < 4; e++)
            acc[4 * j + e] = c[(16 * warp + (lane >> 2) + 8 * (e >> 1)) * 128 + 8 * j + 2 * (lane & 3) + (e & 1)];
    wgmma_fence();
    // mode 3 clears the swizzle field of A's descriptor: a layout the tiles are not in (the emulator traps)
    const u64 keep = mode == 3 ? ~((u64)3 << 62) : ~(u64)0;
    for (int kk = 0; kk < 4; kk++)
        wgmma_m64n128k16_bf16(acc, wgmma_desc_sw128(lori_smem_addr(ta) + kk * 32) & keep, wgmma_desc_sw128(lori_smem_addr(tb) + kk * 32), 1);
    wgmma_commit();
    if (mode == 2) return;
    if (mode == 1)
    {
        for (int i = threadIdx.x; i < 64 * 64; i += 128) *reinterpret_cast<bf16*>(ta + 2 * i) = 0;
        fence_proxy_async_shared();
        __syncthreads();
    }
    wgmma_wait<0>();
    for (int j = 0; j < 16; j++)
        for (int e = 0; e < 4; e++)
            d[(16 * warp + (lane >> 2) + 8 * (e >> 1)) * 128 + 8 * j + 2 * (lane & 3) + (e & 1)] = acc[4 * j + e];
#endif
}
LORI_KERNEL(sm90_wgmma_tile)

// The bulk tensor copy: one box of `map` (bf16, 64 x 128 elements, 128-byte swizzle) at coordinates
// (c0, c1) into 1024-byte aligned shared memory, completed on an mbarrier; then the block reads the box
// back through sw128_offset, i.e. where the wgmma descriptors expect element (row, k), into out [128, 64].
// Out-of-bound elements must arrive as zeros. 128 threads; dynamic shared memory 1024 + 16384 + 8.
extern "C" __global__ void sm90_tma_box(const __grid_constant__ lori_tensor_map map, bf16* out, int c0, int c1)
{
#if LORI_SM90A
    unsigned char* box = sm90c_aligned_smem();
    const u32 bar = lori_smem_addr(box) + 64 * 128 * 2;
    if (threadIdx.x == 0)
    {
        mbarrier_init(bar, 1);
        fence_mbarrier_init();
    }
    __syncthreads();
    if (threadIdx.x == 0)
    {
        mbarrier_arrive_expect_tx(bar, 64 * 128 * 2);
        tma_load_2d(lori_smem_addr(box), &map, c0, c1, bar);
    }
    mbarrier_wait_parity(bar, 0);
    for (int i = threadIdx.x; i < 128 * 64; i += blockDim.x)
        out[i] = *reinterpret_cast<const bf16*>(box + sw128_offset(i / 64, i % 64));
#endif
}
LORI_KERNEL(sm90_tma_box)

// mbarrier phases: every thread of the block arrives once per phase on a barrier initialised with
// blockDim.x + extra arrivals, then waits for the phase by its parity. Thread 0 records, after each of
// three phases, whether try_wait says the phase of that parity completed (1) and whether the next one
// did (0): out[2 p] and out[2 p + 1]. With extra > 0 no phase ever completes (the emulator reports the
// spin-wait as a deadlock). Dynamic shared memory: 1024 + 8 bytes.
extern "C" __global__ void sm90_mbarrier_phases(int* out, int extra)
{
#if LORI_SM90A
    const u32 bar = lori_smem_addr(sm90c_aligned_smem());
    if (threadIdx.x == 0)
    {
        mbarrier_init(bar, blockDim.x + extra);
        fence_mbarrier_init();
    }
    __syncthreads();
    for (int p = 0; p < 3; p++)
    {
        mbarrier_arrive(bar);
        mbarrier_wait_parity(bar, p & 1);
        if (threadIdx.x == 0)
        {
            out[2 * p] = mbarrier_try_wait_parity(bar, p & 1) ? 1 : 0;
            out[2 * p + 1] = mbarrier_try_wait_parity(bar, (p + 1) & 1) ? 1 : 0;
        }
    }
#endif
}
LORI_KERNEL(sm90_mbarrier_phases)
