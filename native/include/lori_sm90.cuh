// Hopper (sm_90a) instructions for the kernels that use them, each with a host twin for the emulator
// (native/emu/emu_sm90.cpp): warpgroup MMA from shared-memory descriptors (wgmma.mma_async + fence /
// commit_group / wait_group), the async-proxy fence, mbarriers (init, arrive, arrive.expect_tx,
// try_wait.parity) and the 2-D bulk tensor copy (TMA) from a cuTensorMapEncodeTiled map.
//
// Device code for these exists only where the compiler targets sm_90a: LORI_SM90A is 1 under
// __CUDA_ARCH_FEAT_SM90_ALL (nvcc -arch=sm_90a, NVRTC 12+ --gpu-architecture=compute_90a) and in the
// emulator (g++, where every wrapper calls its twin), 0 for compute_80 / compute_90 builds and for
// NVRTC 11.8, which knows no sm_90a. A kernel guards its body with `#if LORI_SM90A` so the file still
// compiles everywhere; such a body-less build is detected at run time (see gemm_wgmma.cu's probe).
//
// Shared-memory addresses: descriptors and mbarrier operands take 32-bit shared-window addresses
// (lori_smem_addr). In the emulator that address is the offset into the block's dynamic shared
// memory, so kernels that use these wrappers keep their operands in dynamic shared memory.
#pragma once
#include "lori_cuda.cuh"

#if defined(__CUDA_ARCH__)
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define LORI_SM90A 1
#else
#define LORI_SM90A 0
#endif
#else
#define LORI_SM90A 1
#endif

typedef unsigned long long u64;

// A CUtensorMap (cuTensorMapEncodeTiled's 128 opaque bytes), passed to kernels as a
// `const __grid_constant__ lori_tensor_map` parameter so the bulk tensor copy can name it by address.
struct __align__(64) lori_tensor_map { u64 opaque[16]; };

#if LORI_SM90A

__device__ __forceinline__ u32 lori_smem_addr(const void* p)
{
#if defined(__CUDA_ARCH__)
    return (u32)__cvta_generic_to_shared(p);
#else
    return ::lori_emu::shared_offset(p);
#endif
}

// A K-major operand tile in the 128-byte swizzle layout (PTX ISA, "Shared Memory Matrix Layout"): row r
// of the tile (an M row of A or an N row of B) holds 64 bf16 of K in 128 bytes at r * 128, and its
// 16-byte chunk c sits at chunk position c ^ (r % 8). The swizzle is a function of the address (bits 4-6
// XOR bits 7-9), so tiles start on 1024-byte boundaries. Stride byte offset (between 8-row groups):
// 1024; leading byte offset: unused by this layout (1 by convention). Stepping K by 16 adds 32 bytes to
// the start address.
__device__ __forceinline__ u64 wgmma_desc_sw128(u32 smem_addr)
{
    return (u64)((smem_addr & 0x3ffffu) >> 4) | ((u64)1 << 16) | ((u64)(1024 >> 4) << 32) | ((u64)1 << 62);
}

// Byte offset of element (row, k) in a 128-byte-swizzled K-major bf16 tile that starts on a 1024-byte
// boundary: what a thread that fills the tile itself (instead of TMA) writes to.
__device__ __forceinline__ u32 sw128_offset(int row, int k)
{
    const u32 linear = (u32)row * 128u + (u32)k * 2u;
    return linear ^ (((linear >> 7) & 7u) << 4);
}

// Orders this thread's register accesses (the accumulators) before the warpgroup's next wgmma.
__device__ __forceinline__ void wgmma_fence()
{
#if defined(__CUDA_ARCH__)
    asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
#endif
}

// Closes the wgmma operations issued so far into one group.
__device__ __forceinline__ void wgmma_commit()
{
#if defined(__CUDA_ARCH__)
    asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
#else
    ::lori_emu::wgmma_commit_group();
#endif
}

// Waits until at most N groups are still in flight; their accumulators may be read after it.
template <int N> __device__ __forceinline__ void wgmma_wait()
{
#if defined(__CUDA_ARCH__)
    asm volatile("wgmma.wait_group.sync.aligned %0;" :: "n"(N) : "memory");
#else
    ::lori_emu::wgmma_wait_group(N);
#endif
}

// Makes this thread's generic-proxy writes to shared memory (st.shared, cp.async) visible to the async
// proxy (wgmma operand reads, TMA). The emulator has one proxy: nothing to do.
__device__ __forceinline__ void fence_proxy_async_shared()
{
#if defined(__CUDA_ARCH__)
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
#endif
}

// D (64 x 128, f32) = A (64 x 16, bf16) B (16 x 128, bf16) + (scale_d ? D : 0), issued by all 128 threads
// of a warpgroup. A and B are K-major tiles in shared memory named by descriptors; D is the PTX ISA's
// accumulator fragment: warp w of the warpgroup holds rows 16 w .. 16 w + 15, and with g = lane / 4,
// t = lane % 4, d[4 j + e] is row 16 w + g + 8 (e / 2), column 8 j + 2 t + (e % 2) (j < 16).
// Asynchronous: d must not be touched until a wgmma_wait that covers its group.
__device__ __forceinline__ void wgmma_m64n128k16_bf16(float d[64], u64 desc_a, u64 desc_b, int scale_d)
{
#if defined(__CUDA_ARCH__)
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(desc_a), "l"(desc_b), "r"(scale_d)
        : "memory");
#else
    ::lori_emu::wgmma_m64nNk16_bf16_f32(d, 128, desc_a, desc_b, scale_d);
#endif
}

// ---- mbarrier (PTX ISA, "mbarrier") ----------------------------------------------------------------
// A 64-bit object in shared memory: a phase completes when `count` arrivals have happened and every byte
// announced with expect_tx has landed; waiters name the phase by its parity.

__device__ __forceinline__ void mbarrier_init(u32 bar, u32 count)
{
#if defined(__CUDA_ARCH__)
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" :: "r"(bar), "r"(count) : "memory");
#else
    ::lori_emu::mbarrier_init(bar, count);
#endif
}

// Makes initialised mbarriers visible to the async proxy (the bulk copies that complete on them).
__device__ __forceinline__ void fence_mbarrier_init()
{
#if defined(__CUDA_ARCH__)
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
#endif
}

// One arrival that also announces `bytes` more to land in the current phase.
__device__ __forceinline__ void mbarrier_arrive_expect_tx(u32 bar, u32 bytes)
{
#if defined(__CUDA_ARCH__)
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" :: "r"(bar), "r"(bytes) : "memory");
#else
    ::lori_emu::mbarrier_arrive_expect_tx(bar, bytes);
#endif
}

__device__ __forceinline__ void mbarrier_arrive(u32 bar)
{
#if defined(__CUDA_ARCH__)
    asm volatile("{\n.reg .b64 state;\nmbarrier.arrive.shared::cta.b64 state, [%0];\n}\n" :: "r"(bar) : "memory");
#else
    ::lori_emu::mbarrier_arrive(bar);
#endif
}

// True once the phase of the given parity has completed.
__device__ __forceinline__ bool mbarrier_try_wait_parity(u32 bar, u32 parity)
{
#if defined(__CUDA_ARCH__)
    u32 done;
    asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
                 : "=r"(done) : "r"(bar), "r"(parity) : "memory");
    return done != 0;
#else
    return ::lori_emu::mbarrier_try_wait_parity(bar, parity);
#endif
}

// Spins on try_wait. On a device a wait of seconds means a broken pipeline (a phase that never completes):
// it traps, so the launch fails with an error instead of hanging the program. The emulator reports such a
// wait as a deadlock instead.
__device__ __forceinline__ void mbarrier_wait_parity(u32 bar, u32 parity)
{
#if defined(__CUDA_ARCH__)
    if (mbarrier_try_wait_parity(bar, parity)) return;
    u64 start, now;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
    while (!mbarrier_try_wait_parity(bar, parity))
    {
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
        if (now - start > 4000000000ull) __trap();
    }
#else
    while (!mbarrier_try_wait_parity(bar, parity)) {}
#endif
}

// ---- bulk tensor copy (PTX ISA, "cp.async.bulk.tensor") ------------------------------------------------
// The box of `map` whose first element is (c0, c1) (innermost coordinate first, in elements; out-of-bound
// elements arrive as zeros) into shared memory at dst, laid out and swizzled as the map says; the copy
// counts its bytes down on bar (complete_tx). Issued by one thread.
__device__ __forceinline__ void tma_load_2d(u32 dst, const lori_tensor_map* map, int c0, int c1, u32 bar)
{
#if defined(__CUDA_ARCH__)
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];"
                 :: "r"(dst), "l"((u64)map), "r"(c0), "r"(c1), "r"(bar) : "memory");
#else
    ::lori_emu::tma_load_2d(dst, map, c0, c1, bar);
#endif
}

#endif // LORI_SM90A
