// matmul_backward: the products the backward passes need besides y = x W^T, as one tiled kernel over
// strided operands (the same 64 x 64 tiling as matmul.cu, fp32 accumulation, zero-filled edges):
//   y[r, c] = alpha * sum_k A(r, k) B(k, c) (+ y when accumulate != 0),   y f32 [n, m] row-major,
//   A(r, k) = a[r * sar + k * sak] (f32), B(k, c) = b[k * sbk + c * sbc] (f32 or bf16).
// Layouts used: input gradient dx = dy W (A = dy [n, k]: sar = k, sak = 1; B = W [k, m]: sbk = m, sbc = 1)
// and weight gradient dW = G^T h (A = G^T: G [k, n], sar = 1, sak = n; B = h [k, m]: sbk = m, sbc = 1).
// Grid (ceil(m/64), ceil(n/64)), block (16, 16).
#include "../include/lori_dtypes.cuh"
#include "../include/lori_tile.cuh"

template <int DT>
__device__ __forceinline__ void matmul_strided_impl(const float* a, const void* b, float* y, int n, int m, int k,
                                                    long long sar, long long sak, long long sbk, long long sbc, float alpha, int accumulate)
{
    __shared__ float as[LT_K][LT_TILE + 1];
    __shared__ float bs[LT_K][LT_TILE + 1];
    const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * 16 + tx;
    const int row0 = blockIdx.y * LT_TILE, col0 = blockIdx.x * LT_TILE;
    float acc[4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) acc[i][j] = 0.f;
    for (int k0 = 0; k0 < k; k0 += LT_K)
    {
        for (int q = 0; q < 4; q++)
        {
            const int e = tid + 256 * q, r = e / LT_K, c = e % LT_K;
            const int gk = k0 + c;
            as[c][r] = (row0 + r < n && gk < k) ? a[(row0 + r) * sar + gk * sak] : 0.f;
            // B tile: element e -> (kk = e / 64, col = e % 64), so consecutive threads read consecutive columns
            const int kk = e / LT_TILE, cc = e % LT_TILE;
            bs[kk][cc] = (k0 + kk < k && col0 + cc < m) ? load_as_float<DT>(b, (k0 + kk) * sbk + (col0 + cc) * sbc) : 0.f;
        }
        __syncthreads();
        lt_tile_fma(as, bs, acc, tx, ty);
        __syncthreads();
    }
    lt_tile_store(y, acc, row0, col0, n, m, tx, ty, alpha, accumulate);
}

extern "C" __global__ void matmul_strided_f32(const float* a, const float* b, float* y, int n, int m, int k,
                                              long long sar, long long sak, long long sbk, long long sbc, float alpha, int accumulate)
{
    matmul_strided_impl<DT_F32>(a, b, y, n, m, k, sar, sak, sbk, sbc, alpha, accumulate);
}
LORI_KERNEL(matmul_strided_f32)

extern "C" __global__ void matmul_strided_bf16(const float* a, const bf16* b, float* y, int n, int m, int k,
                                               long long sar, long long sak, long long sbk, long long sbc, float alpha, int accumulate)
{
    matmul_strided_impl<DT_BF16>(a, b, y, n, m, k, sar, sak, sbk, sbc, alpha, accumulate);
}
LORI_KERNEL(matmul_strided_bf16)
