// The one header every kernel includes. It needs no CUDA header, so a kernel compiles with nvcc, with
// NVRTC alone (which ships neither cuda_bf16.h nor stdint.h) and, for the host emulator, with g++.
//
//  - bf16 / f16 are raw 16-bit storage types with explicit conversions (round to nearest even).
//  - Each inline-PTX wrapper has a host twin under `#ifndef __CUDA_ARCH__` that the emulator runs
//    exactly (mma.sync m16n8k16, ldmatrix, cp.async).
//  - LORI_KERNEL(name) after an `extern "C" __global__` kernel registers it with the emulator and
//    expands to nothing for a CUDA compiler. LORI_DYNAMIC_SHARED(type, name) declares the dynamic
//    shared memory (`extern __shared__`).
#pragma once

#if defined(__CUDACC__)
#define LORI_KERNEL(name)
#define LORI_DYNAMIC_SHARED(type, name) extern __shared__ __align__(16) type name[]
#else
#include "../emu/emu_device.h"
#endif

typedef unsigned short bf16;
typedef unsigned short f16;
typedef unsigned int u32;

#define LORI_FULL_MASK 0xffffffffu

// ---- conversions --------------------------------------------------------------------------------

__device__ __forceinline__ float bf16_to_float(bf16 h) { return __uint_as_float(((u32)h) << 16); }

__device__ __forceinline__ bf16 float_to_bf16(float f)
{
#if defined(__CUDA_ARCH__)
    unsigned short r;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(f));
    return r;
#else
    u32 u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16)0x7fff;
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16)(u >> 16);
#endif
}

__device__ __forceinline__ float f16_to_float(f16 h)
{
#if defined(__CUDA_ARCH__)
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
#else
    u32 sign = ((u32)h & 0x8000u) << 16;
    u32 exp = ((u32)h >> 10) & 0x1fu;
    u32 man = (u32)h & 0x3ffu;
    if (exp == 0x1fu) return __uint_as_float(sign | 0x7f800000u | (man << 13));
    if (exp == 0)
    {
        // subnormal half: man * 2^-24, exact in float
        float v = (float)man * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    return __uint_as_float(sign | ((exp + 112u) << 23) | (man << 13));
#endif
}

__device__ __forceinline__ f16 float_to_f16(float f)
{
#if defined(__CUDA_ARCH__)
    unsigned short r;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r) : "f"(f));
    return r;
#else
    u32 u = __float_as_uint(f);
    u32 sign = (u >> 16) & 0x8000u;
    u32 a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (f16)(sign | 0x7e00u);
    if (a >= 0x477ff000u) return (f16)(sign | 0x7c00u);  // rounds to >= 65520: infinity
    if (a < 0x38800000u)
    {
        // result is a half subnormal (or zero): value / 2^-24 rounded to nearest even
        float v = __uint_as_float(a) * 16777216.0f;
        float r = rintf(v);
        return (f16)(sign | (u32)r);
    }
    u32 man = a & 0x7fffffu;
    u32 exp = (a >> 23) - 112u;
    u32 h = (exp << 10) | (man >> 13);
    u32 rest = man & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++;
    return (f16)(sign | h);
#endif
}

__device__ __forceinline__ u32 pack_bf16x2(bf16 lo, bf16 hi) { return (u32)lo | ((u32)hi << 16); }

// ---- warp reductions ----------------------------------------------------------------------------

__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(LORI_FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(LORI_FULL_MASK, v, o));
    return v;
}

// Sum over the block; `scratch` is shared memory of at least 32 floats. Every thread gets the sum.
// blockDim.x must be a multiple of 32.
__device__ __forceinline__ float block_sum(float v, float* scratch)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.f;
    return warp_sum(v);
}

// Maximum over the block, like block_sum.
__device__ __forceinline__ float block_max(float v, float* scratch)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : -__int_as_float(0x7f800000);
    return warp_max(v);
}

// ---- tensor-core wrappers (sm_80+) --------------------------------------------------------------

// D = A B + C for one warp. A 16x16 row-major, B 16x8 column-major (bf16), C/D 16x8 f32, held in the
// PTX ISA's fragment layout (a: 4 regs of bf16x2, b: 2 regs, c/d: 4 floats).
__device__ __forceinline__ void mma_m16n8k16_bf16(float d[4], const u32 a[4], const u32 b[2], const float c[4])
{
#if defined(__CUDA_ARCH__)
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]),
          "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
#else
    ::lori_emu::mma_m16n8k16_bf16_f32(d, a, b, c);
#endif
}

#if defined(__CUDA_ARCH__)
__device__ __forceinline__ u32 smem_u32(const void* p) { return (u32)__cvta_generic_to_shared(p); }
#endif

// ldmatrix .m8n8 .b16: lanes 0-7 (x1), 0-15 (x2) or 0-31 (x4) each give the address of one 16-byte row.
__device__ __forceinline__ void ldmatrix_x1(u32 r[1], const void* row)
{
#if defined(__CUDA_ARCH__)
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];" : "=r"(r[0]) : "r"(smem_u32(row)));
#else
    ::lori_emu::ldmatrix_m8n8_b16(r, 1, false, row);
#endif
}
__device__ __forceinline__ void ldmatrix_x2(u32 r[2], const void* row)
{
#if defined(__CUDA_ARCH__)
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];" : "=r"(r[0]), "=r"(r[1]) : "r"(smem_u32(row)));
#else
    ::lori_emu::ldmatrix_m8n8_b16(r, 2, false, row);
#endif
}
__device__ __forceinline__ void ldmatrix_x4(u32 r[4], const void* row)
{
#if defined(__CUDA_ARCH__)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_u32(row)));
#else
    ::lori_emu::ldmatrix_m8n8_b16(r, 4, false, row);
#endif
}
__device__ __forceinline__ void ldmatrix_x1_trans(u32 r[1], const void* row)
{
#if defined(__CUDA_ARCH__)
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];" : "=r"(r[0]) : "r"(smem_u32(row)));
#else
    ::lori_emu::ldmatrix_m8n8_b16(r, 1, true, row);
#endif
}
__device__ __forceinline__ void ldmatrix_x2_trans(u32 r[2], const void* row)
{
#if defined(__CUDA_ARCH__)
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];" : "=r"(r[0]), "=r"(r[1]) : "r"(smem_u32(row)));
#else
    ::lori_emu::ldmatrix_m8n8_b16(r, 2, true, row);
#endif
}
__device__ __forceinline__ void ldmatrix_x4_trans(u32 r[4], const void* row)
{
#if defined(__CUDA_ARCH__)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_u32(row)));
#else
    ::lori_emu::ldmatrix_m8n8_b16(r, 4, true, row);
#endif
}

// cp.async: copy 16 bytes global -> shared without passing through registers; `src_bytes` < 16
// zero-fills the rest (used for the ragged edge of a tile). The host twin copies at once, which is
// one legal ordering of the asynchronous copy.
__device__ __forceinline__ void cp_async_16(void* smem_dst, const void* gmem_src, int src_bytes = 16)
{
#if defined(__CUDA_ARCH__)
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" :: "r"(smem_u32(smem_dst)), "l"(gmem_src), "r"(src_bytes));
#else
    if (((uintptr_t)smem_dst | (uintptr_t)gmem_src) & 15u) ::lori_emu::trap("cp.async.cg 16: an address is not 16-byte aligned");
    if (src_bytes < 0 || src_bytes > 16) ::lori_emu::trap("cp.async: src_bytes outside [0, 16]");
    unsigned char* d = static_cast<unsigned char*>(smem_dst);
    const unsigned char* s = static_cast<const unsigned char*>(gmem_src);
    for (int i = 0; i < 16; i++) d[i] = i < src_bytes ? s[i] : 0;
#endif
}
__device__ __forceinline__ void cp_async_commit()
{
#if defined(__CUDA_ARCH__)
    asm volatile("cp.async.commit_group;");
#endif
}
template <int N> __device__ __forceinline__ void cp_async_wait()
{
#if defined(__CUDA_ARCH__)
    asm volatile("cp.async.wait_group %0;" :: "n"(N));
#endif
}
