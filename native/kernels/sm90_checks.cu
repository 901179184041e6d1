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
