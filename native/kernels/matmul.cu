// matmul: y = alpha * x W^T (+ y when accumulate != 0). x f32 [N, K] row-major, W [M, K] row-major in
// f32 / f16 / bf16 (converted to f32 as a tile is loaded), y f32 [N, M]. fp32 accumulation.
//
// The plain tiled GEMM, the correctness baseline for faster kernels: a block of 16x16 threads computes
// a 64x64 tile of y, walking K in steps of 16 through shared memory; thread (ty, tx) owns rows
// ty + 16i and columns tx + 16j (i, j < 4). Edges of every dimension are zero-filled, so any N, M, K
// work. Grid: (ceil(M/64), ceil(N/64)), block (16, 16).
#include "../include/lori_dtypes.cuh"
#include "../include/lori_tile.cuh"

template <int DT>
__device__ __forceinline__ void matmul_impl(const float* x, const void* w, float* y, int n, int m, int k, float alpha, int accumulate)
{
    __shared__ float xs[LT_K][LT_TILE + 1];
    __shared__ float ws[LT_K][LT_TILE + 1];
    const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * 16 + tx;
    const int row0 = blockIdx.y * LT_TILE, col0 = blockIdx.x * LT_TILE;
    float acc[4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) acc[i][j] = 0.f;

    for (int k0 = 0; k0 < k; k0 += LT_K)
    {
        // 64 x 16 elements of each operand, 4 per thread: element e = tid + 256 q -> (r = e / 16, c = e % 16)
        for (int q = 0; q < 4; q++)
        {
            const int e = tid + 256 * q, r = e / LT_K, c = e % LT_K;
            const int gk = k0 + c;
            const int xr = row0 + r, wr = col0 + r;
            xs[c][r] = (xr < n && gk < k) ? x[(long long)xr * k + gk] : 0.f;
            ws[c][r] = (wr < m && gk < k) ? load_as_float<DT>(w, (long long)wr * k + gk) : 0.f;
        }
        __syncthreads();
        lt_tile_fma(xs, ws, acc, tx, ty);
        __syncthreads();
    }
    lt_tile_store(y, acc, row0, col0, n, m, tx, ty, alpha, accumulate);
}

extern "C" __global__ void matmul_f32(const float* x, const float* w, float* y, int n, int m, int k, float alpha, int accumulate) { matmul_impl<DT_F32>(x, w, y, n, m, k, alpha, accumulate); }
LORI_KERNEL(matmul_f32)
extern "C" __global__ void matmul_f16(const float* x, const f16* w, float* y, int n, int m, int k, float alpha, int accumulate) { matmul_impl<DT_F16>(x, w, y, n, m, k, alpha, accumulate); }
LORI_KERNEL(matmul_f16)
extern "C" __global__ void matmul_bf16(const float* x, const bf16* w, float* y, int n, int m, int k, float alpha, int accumulate) { matmul_impl<DT_BF16>(x, w, y, n, m, k, alpha, accumulate); }
LORI_KERNEL(matmul_bf16)
