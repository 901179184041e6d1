// The 64 x 64 output tile shared by the plain SIMT GEMMs (matmul.cu, matmul_backward.cu): 256 threads as
// 16 x 16; thread (tx, ty) owns rows ty + 16 i and columns tx + 16 j (i, j < 4) of the tile. Operands are
// staged K-major in shared memory, [LT_K][LT_TILE + 1] (the +1 keeps the column reads free of bank conflicts).
#pragma once
#include "lori_cuda.cuh"

#define LT_TILE 64
#define LT_K 16

// acc[i][j] += sum_kk as[kk][ty + 16 i] * bs[kk][tx + 16 j]
__device__ __forceinline__ void lt_tile_fma(const float (*as)[LT_TILE + 1], const float (*bs)[LT_TILE + 1], float (*acc)[4], int tx, int ty)
{
    for (int kk = 0; kk < LT_K; kk++)
    {
        float av[4], bv[4];
        for (int i = 0; i < 4; i++) av[i] = as[kk][ty + 16 * i];
        for (int j = 0; j < 4; j++) bv[j] = bs[kk][tx + 16 * j];
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++) acc[i][j] += av[i] * bv[j];
    }
}

// y[r, c] = alpha * acc (+ y[r, c] when accumulate) for the thread's cells inside [n, m]; y is row-major [n, m].
__device__ __forceinline__ void lt_tile_store(float* y, const float (*acc)[4], int row0, int col0, int n, int m, int tx, int ty,
                                              float alpha, int accumulate)
{
    for (int i = 0; i < 4; i++)
    {
        const int r = row0 + ty + 16 * i;
        if (r >= n) continue;
        for (int j = 0; j < 4; j++)
        {
            const int c = col0 + tx + 16 * j;
            if (c >= m) continue;
            float* out = y + (long long)r * m + c;
            *out = accumulate ? *out + alpha * acc[i][j] : alpha * acc[i][j];
        }
    }
}
