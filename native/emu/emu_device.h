// The CUDA execution model as seen from inside a kernel, for kernels compiled as C++ on the host.
//
// lori_cuda.cuh includes this file when the compiler is not a CUDA compiler. A kernel then runs as
// one fiber per CUDA thread (see emu.cpp): threadIdx/blockIdx/blockDim/gridDim read the running
// fiber's context, __syncthreads and the warp collectives (shuffles, votes, ldmatrix, mma) suspend
// the fiber until every thread they synchronise with has arrived. Static __shared__ variables are
// thread_local: a block runs entirely on one OS thread, so all its fibers see one copy.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <math.h>
#include <type_traits>
#include <utility>

struct uint3 { unsigned x, y, z; };
struct dim3
{
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace lori_emu {

// One CUDA thread: its coordinates and its place in the warp.
struct ThreadCtx
{
    uint3 thread_idx;
    unsigned linear;   // x + y*bx + z*bx*by
    unsigned lane;     // linear % 32
    unsigned warp;     // linear / 32
};

// One block while it runs: coordinates shared by all its threads.
struct BlockCtx
{
    uint3 block_idx;
    dim3 block_dim;
    dim3 grid_dim;
    unsigned char* dynamic_smem;
    size_t dynamic_smem_bytes;
};

extern thread_local ThreadCtx* t_thread;
extern thread_local BlockCtx* t_block;

void syncthreads();
// Called by a spin-wait whose condition failed (mbarrier.try_wait): lets the block's other threads run.
// A block whose only runnable threads keep failing their waits fails the launch as a deadlock.
void spin_wait();
// Called by the twins whenever they change state a spin-wait may be waiting on (an mbarrier).
void note_sync_progress();
// Stops the calling thread's block with an error (the launch then fails with the message).
[[noreturn]] void trap(const char* what);

// A warp collective: the calling lane deposits `payload` and waits until every lane of `mask` that
// exists in the block has arrived at a collective with the same `resolve`; then `resolve` runs once
// with all 32 payload pointers (null for lanes that do not take part) and every lane continues.
using WarpResolve = void (*)(void* const* payloads, unsigned participants);
void warp_collective(unsigned mask, void* payload, WarpResolve resolve);

// Registration of kernels by name (see LORI_KERNEL): a trampoline unpacks cuLaunchKernel's argument
// array into the kernel's typed parameters.
using Trampoline = void (*)(void** args);
struct KernelInfo;
void register_kernel(const char* file, const char* name, Trampoline tramp, unsigned param_count);

template <class F> struct KernelSignature;
template <class... A> struct KernelSignature<void (*)(A...)>
{
    static constexpr unsigned count = sizeof...(A);
    template <auto Fn, size_t... I> static void call(void** args, std::index_sequence<I...>)
    {
        Fn(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(args[I])...);
    }
};

template <auto Fn> struct KernelRegistrar
{
    using Sig = KernelSignature<decltype(Fn)>;
    static void trampoline(void** args) { Sig::template call<Fn>(args, std::make_index_sequence<Sig::count>{}); }
    KernelRegistrar(const char* file, const char* name) { register_kernel(file, name, &trampoline, Sig::count); }
};

template <class T> inline uint64_t to_bits(T v)
{
    static_assert(sizeof(T) <= 8, "warp shuffles move at most 64 bits");
    uint64_t u = 0;
    std::memcpy(&u, &v, sizeof(T));
    return u;
}
template <class T> inline T from_bits(uint64_t u)
{
    T v;
    std::memcpy(&v, &u, sizeof(T));
    return v;
}

enum class ShuffleMode { Index, Up, Down, Xor };
uint64_t shuffle(unsigned mask, uint64_t value, int operand, int width, ShuffleMode mode);
enum class VoteMode { Any, All, Ballot };
unsigned vote(unsigned mask, int predicate, VoteMode mode);

// Exact host twins of the inline-PTX wrappers: each is a warp collective following the PTX ISA's
// fragment layouts (see emu.cpp).
void mma_m16n8k16_bf16_f32(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]);
void ldmatrix_m8n8_b16(uint32_t* regs, int count, bool trans, const void* row_address);

// sm_90a twins (emu_sm90.cpp). Shared-window addresses are offsets into the block's dynamic shared memory.
uint32_t shared_offset(const void* p);
// wgmma.mma_async m64nNk16 .f32.bf16.bf16, both operands K-major from descriptors. Deferred: the
// operation joins the warp's open group and runs (reading shared memory then) at the wait_group that
// retires it, the latest moment the hardware may read its operands.
void wgmma_m64nNk16_bf16_f32(float* d, int n, uint64_t desc_a, uint64_t desc_b, int scale_d);
void wgmma_commit_group();
void wgmma_wait_group(int pending);
// mbarrier (PTX ISA, "Parallel Synchronization and Communication Instructions: mbarrier"): the 8-byte
// object in shared memory holds the pending and expected arrival counts, the tx-count and the phase.
void mbarrier_init(uint32_t bar, unsigned count);
void mbarrier_arrive_expect_tx(uint32_t bar, unsigned bytes);
void mbarrier_arrive(uint32_t bar);
bool mbarrier_try_wait_parity(uint32_t bar, unsigned parity);
// cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes: the box at (c0, c1)
// of the tensor map (as lemu_tensor_map_encode_tiled wrote it) into shared memory at dst, out-of-bound
// elements zero, swizzled as the map says; then complete_tx of the box's bytes on bar. The copy is done
// at once, one legal order of the asynchronous copy.
void tma_load_2d(uint32_t dst, const void* tensor_map, int c0, int c1, uint32_t bar);

} // namespace lori_emu

#define threadIdx (::lori_emu::t_thread->thread_idx)
#define blockIdx (::lori_emu::t_block->block_idx)
#define blockDim (::lori_emu::t_block->block_dim)
#define gridDim (::lori_emu::t_block->grid_dim)
#define warpSize 32

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __shared__ thread_local
#define __constant__ const
#define __align__(n) __attribute__((aligned(n)))
#define __grid_constant__
#define __launch_bounds__(...)

#define __syncthreads() ::lori_emu::syncthreads()
#define __trap() ::lori_emu::trap("__trap() called")

// A kernel's `extern "C"` name, registered with the emulator next to the kernel's definition.
#define LORI_KERNEL(name) static ::lori_emu::KernelRegistrar<&name> lori_kernel_registrar_##name(__FILE__, #name);
// Dynamic shared memory (`extern __shared__` on the device): the launch's dynamic bytes of this block.
#define LORI_DYNAMIC_SHARED(type, name) type* name = reinterpret_cast<type*>(::lori_emu::t_block->dynamic_smem)

inline void __syncwarp(unsigned mask = 0xffffffffu) { ::lori_emu::vote(mask, 1, ::lori_emu::VoteMode::All); }
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

template <class T> inline T __shfl_sync(unsigned mask, T v, int src, int width = 32)
{ return ::lori_emu::from_bits<T>(::lori_emu::shuffle(mask, ::lori_emu::to_bits(v), src, width, ::lori_emu::ShuffleMode::Index)); }
template <class T> inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32)
{ return ::lori_emu::from_bits<T>(::lori_emu::shuffle(mask, ::lori_emu::to_bits(v), (int)delta, width, ::lori_emu::ShuffleMode::Up)); }
template <class T> inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32)
{ return ::lori_emu::from_bits<T>(::lori_emu::shuffle(mask, ::lori_emu::to_bits(v), (int)delta, width, ::lori_emu::ShuffleMode::Down)); }
template <class T> inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32)
{ return ::lori_emu::from_bits<T>(::lori_emu::shuffle(mask, ::lori_emu::to_bits(v), lane_mask, width, ::lori_emu::ShuffleMode::Xor)); }

inline int __any_sync(unsigned mask, int p) { return (int)::lori_emu::vote(mask, p, ::lori_emu::VoteMode::Any); }
inline int __all_sync(unsigned mask, int p) { return (int)::lori_emu::vote(mask, p, ::lori_emu::VoteMode::All); }
inline unsigned __ballot_sync(unsigned mask, int p) { return ::lori_emu::vote(mask, p, ::lori_emu::VoteMode::Ballot); }

// Bit casts and the math intrinsics our kernels use.
inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline float __int_as_float(int u) { float f; std::memcpy(&f, &u, 4); return f; }
inline int __float_as_int(float f) { int u; std::memcpy(&u, &f, 4); return u; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __fdividef(float a, float b) { return a / b; }
// IEEE single operations rounded to nearest; the emulator is built without FMA contraction (x86-64 baseline).
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __clz(unsigned x) { return x == 0 ? 32 : __builtin_clz(x); }
inline int __ffs(unsigned x) { return __builtin_ffs((int)x); }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }

// Atomics: blocks run in parallel on several OS threads, so these are real atomics.
inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline float atomicAdd(float* p, float v)
{
    unsigned* u = reinterpret_cast<unsigned*>(p);
    unsigned old = __atomic_load_n(u, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(u, &old, __float_as_uint(__uint_as_float(old) + v), true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {}
    return __uint_as_float(old);
}
inline int atomicMax(int* p, int v)
{
    int old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (old < v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {}
    return old;
}
inline int atomicMin(int* p, int v)
{
    int old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (old > v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {}
    return old;
}
inline unsigned long long atomicMax(unsigned long long* p, unsigned long long v)
{
    unsigned long long old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (old < v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {}
    return old;
}
template <class T> inline T atomicCAS(T* p, T compare, T value)
{
    static_assert(std::is_integral_v<T>, "atomicCAS takes integers");
    __atomic_compare_exchange_n(p, &compare, value, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    return compare;
}
template <class T> inline T atomicExch(T* p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }
