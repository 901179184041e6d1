// Small programs with known answers that pin down the execution model: the emulator's tests run them
// (tests/LoRI.Tests/Cuda/EmulatorTests.cs), and they compile with NVRTC like every other kernel, so the
// same programs can confirm the emulator against a real GPU.
#include "../include/lori_cuda.cuh"

// out[b] = sum of x[b*blockDim.x .. +blockDim.x) by a shared-memory tree with __syncthreads.
// blockDim.x must be a power of two <= 1024.
extern "C" __global__ void emu_block_sum(const float* x, float* out)
{
    __shared__ float s[1024];
    const int t = threadIdx.x;
    s[t] = x[blockIdx.x * blockDim.x + t];
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half >>= 1)
    {
        if (t < half) s[t] += s[t + half];
        __syncthreads();
    }
    if (t == 0) out[blockIdx.x] = s[0];
}
LORI_KERNEL(emu_block_sum)

// The same sum with the block's dynamic shared memory (one float per thread).
extern "C" __global__ void emu_block_sum_dynamic(const float* x, float* out)
{
    LORI_DYNAMIC_SHARED(float, s);
    const int t = threadIdx.x;
    s[t] = x[blockIdx.x * blockDim.x + t];
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half >>= 1)
    {
        if (t < half) s[t] += s[t + half];
        __syncthreads();
    }
    if (t == 0) out[blockIdx.x] = s[0];
}
LORI_KERNEL(emu_block_sum_dynamic)

// Per warp: sum by __shfl_down_sync into lane 0; broadcast of lane 5's value with __shfl_sync; the
// xor-butterfly sum in every lane. out has 3 floats per warp; each lane writes its butterfly sum to
// butterfly[global thread].
extern "C" __global__ void emu_warp_shuffles(const float* x, float* out, float* butterfly)
{
    const int gid = blockIdx.x * blockDim.x + threadIdx.x;
    const int warp = gid / 32, lane = threadIdx.x & 31;
    const float v = x[gid];
    float s = v;
    for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(LORI_FULL_MASK, s, o);
    const float b = __shfl_sync(LORI_FULL_MASK, v, 5);
    const float up = __shfl_up_sync(LORI_FULL_MASK, v, 1);
    butterfly[gid] = warp_sum(v);
    if (lane == 0)
    {
        out[3 * warp] = s;
        out[3 * warp + 1] = b;
    }
    if (lane == 31) out[3 * warp + 2] = up;  // lane 30's value
}
LORI_KERNEL(emu_warp_shuffles)

// Votes over pred[gid] != 0: per warp, the ballot, __any_sync and __all_sync.
extern "C" __global__ void emu_warp_votes(const int* pred, unsigned* out)
{
    const int gid = blockIdx.x * blockDim.x + threadIdx.x;
    const int p = pred[gid];
    const unsigned ballot = __ballot_sync(LORI_FULL_MASK, p);
    const int any = __any_sync(LORI_FULL_MASK, p);
    const int all = __all_sync(LORI_FULL_MASK, p);
    if ((threadIdx.x & 31) == 0)
    {
        const int warp = gid / 32;
        out[3 * warp] = ballot;
        out[3 * warp + 1] = (unsigned)any;
        out[3 * warp + 2] = (unsigned)all;
    }
}
LORI_KERNEL(emu_warp_votes)

// bins[values[i]] += 1 with atomicAdd; total += weights[i] with float atomicAdd; maximum = max value.
extern "C" __global__ void emu_histogram(const int* values, const float* weights, int n, int* bins, float* total, int* maximum)
{
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    {
        atomicAdd(&bins[values[i]], 1);
        atomicAdd(total, weights[i]);
        atomicMax(maximum, values[i]);
    }
}
LORI_KERNEL(emu_histogram)

// Every thread of a 3-D grid of 3-D blocks writes its coordinates to its own slot.
extern "C" __global__ void emu_indices(int* out)
{
    const int bl = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    const int tl = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    const int g = bl * (blockDim.x * blockDim.y * blockDim.z) + tl;
    int* o = out + 6 * g;
    o[0] = blockIdx.x; o[1] = blockIdx.y; o[2] = blockIdx.z;
    o[3] = threadIdx.x; o[4] = threadIdx.y; o[5] = threadIdx.z;
}
LORI_KERNEL(emu_indices)

// D = A B + C with one mma.sync, fragments read straight from global memory in the PTX ISA layout.
// A [16][16] row-major, Bt [8][16] (B column-major: Bt[n][k] = B[k][n]), C and D [16][8] row-major.
extern "C" __global__ void emu_mma_direct(const bf16* A, const bf16* Bt, const float* C, float* D)
{
    const int lane = threadIdx.x, g = lane >> 2, t = lane & 3;
    u32 a[4], b[2];
    float c[4], d[4];
    a[0] = pack_bf16x2(A[g * 16 + 2 * t], A[g * 16 + 2 * t + 1]);
    a[1] = pack_bf16x2(A[(g + 8) * 16 + 2 * t], A[(g + 8) * 16 + 2 * t + 1]);
    a[2] = pack_bf16x2(A[g * 16 + 2 * t + 8], A[g * 16 + 2 * t + 9]);
    a[3] = pack_bf16x2(A[(g + 8) * 16 + 2 * t + 8], A[(g + 8) * 16 + 2 * t + 9]);
    b[0] = pack_bf16x2(Bt[g * 16 + 2 * t], Bt[g * 16 + 2 * t + 1]);
    b[1] = pack_bf16x2(Bt[g * 16 + 2 * t + 8], Bt[g * 16 + 2 * t + 9]);
    c[0] = C[g * 8 + 2 * t]; c[1] = C[g * 8 + 2 * t + 1];
    c[2] = C[(g + 8) * 8 + 2 * t]; c[3] = C[(g + 8) * 8 + 2 * t + 1];
    mma_m16n8k16_bf16(d, a, b, c);
    D[g * 8 + 2 * t] = d[0]; D[g * 8 + 2 * t + 1] = d[1];
    D[(g + 8) * 8 + 2 * t] = d[2]; D[(g + 8) * 8 + 2 * t + 1] = d[3];
}
LORI_KERNEL(emu_mma_direct)

// The same product staged through shared memory with cp.async, fragments loaded with ldmatrix:
// A with .x4, B either from Bt [8][16] with .x2 (trans_b = 0) or from B [16][8] with .x2.trans.
extern "C" __global__ void emu_mma_ldmatrix(const bf16* A, const bf16* Bsrc, const float* C, float* D, int trans_b)
{
    __shared__ __align__(16) bf16 sa[16 * 16];
    __shared__ __align__(16) bf16 sb[16 * 8];
    const int lane = threadIdx.x, g = lane >> 2, t = lane & 3;
    cp_async_16(sa + lane * 8, A + lane * 8);            // 32 x 16 bytes = all of A
    if (lane < 16) cp_async_16(sb + lane * 8, Bsrc + lane * 8);  // 16 x 16 bytes = all of B
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    u32 a[4], b[2];
    // lane l gives row (l % 8) of matrix l / 8; matrices: rows 0-7/8-15 x cols 0-7, then cols 8-15
    ldmatrix_x4(a, sa + ((lane % 8) + 8 * ((lane / 8) % 2)) * 16 + 8 * (lane / 16));
    if (trans_b) ldmatrix_x2_trans(b, sb + ((lane % 8) + 8 * ((lane / 8) % 2)) * 8);
    else ldmatrix_x2(b, sb + (lane % 8) * 16 + 8 * ((lane / 8) % 2));
    float c[4], d[4];
    c[0] = C[g * 8 + 2 * t]; c[1] = C[g * 8 + 2 * t + 1];
    c[2] = C[(g + 8) * 8 + 2 * t]; c[3] = C[(g + 8) * 8 + 2 * t + 1];
    mma_m16n8k16_bf16(d, a, b, c);
    D[g * 8 + 2 * t] = d[0]; D[g * 8 + 2 * t + 1] = d[1];
    D[(g + 8) * 8 + 2 * t] = d[2]; D[(g + 8) * 8 + 2 * t + 1] = d[3];
}
LORI_KERNEL(emu_mma_ldmatrix)

// ldmatrix .x1 (and .x1.trans) of one 8x8 matrix M [8][8]: out[lane] = the register lane received.
extern "C" __global__ void emu_ldmatrix_x1(const bf16* M, u32* out, int trans)
{
    __shared__ __align__(16) bf16 s[64];
    const int lane = threadIdx.x;
    if (lane < 8) cp_async_16(s + lane * 8, M + lane * 8);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    u32 r[1];
    if (trans) ldmatrix_x1_trans(r, s + (lane % 8) * 8);
    else ldmatrix_x1(r, s + (lane % 8) * 8);
    out[lane] = r[0];
}
LORI_KERNEL(emu_ldmatrix_x1)

// Float -> bf16 -> float and float -> f16 -> float round trips through the device helpers.
extern "C" __global__ void emu_conversions(const float* x, bf16* b, f16* h, float* back_b, float* back_h, int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    b[i] = float_to_bf16(x[i]);
    h[i] = float_to_f16(x[i]);
    back_b[i] = bf16_to_float(b[i]);
    back_h[i] = f16_to_float(h[i]);
}
LORI_KERNEL(emu_conversions)

// A deliberate bug: thread 0 of block 0 writes one float past the end of buf[n].
extern "C" __global__ void emu_oob_write(float* buf, int n)
{
    if (blockIdx.x == 0 && threadIdx.x == 0)
    {
        volatile float* p = buf;
        p[n] = 1.0f;
    }
}
LORI_KERNEL(emu_oob_write)

// A deliberate deadlock: lanes 0-15 wait at __syncthreads while lanes 16-31 wait at a full-warp shuffle.
extern "C" __global__ void emu_divergent_sync(float* out)
{
    if (threadIdx.x < 16) __syncthreads();
    else out[threadIdx.x] = __shfl_sync(LORI_FULL_MASK, 1.0f, 0);
}
LORI_KERNEL(emu_divergent_sync)

// A deliberate race: each thread reads its neighbour's shared slot without a __syncthreads after the
// writes. The emulator runs even blocks' threads in order and odd blocks' in reverse, so in one of the
// two the neighbour has not written yet and the stale value shows. out [gridDim.x][blockDim.x].
extern "C" __global__ void emu_missing_barrier(int* out, int salt)
{
    __shared__ int s[1024];
    const int t = threadIdx.x, n = blockDim.x;
    s[t] = salt + 1000 * blockIdx.x + t;
    out[blockIdx.x * n + t] = s[(t + 1) % n];
}
LORI_KERNEL(emu_missing_barrier)

// A deliberate fault: cp.async from a source that is not 16-byte aligned (the hardware faults too).
extern "C" __global__ void emu_misaligned_cp_async(const float* src, float* out)
{
    __shared__ __align__(16) float s[4];
    cp_async_16(s, src + 1);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    out[threadIdx.x] = s[threadIdx.x & 3];
}
LORI_KERNEL(emu_misaligned_cp_async)
