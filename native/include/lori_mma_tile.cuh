// Pieces shared by the mma.sync GEMMs that tile their output as gemm_tc.cu does: a block of 8 warps owns a
// 128 x 128 tile, warp (wm, wn) = (warp / 4, warp % 4) owns rows 64 wm .. +63 and columns 32 wn .. +31 as 4 x 4
// m16n8 accumulators (acc[i][j]: rows 16 i, columns 8 j of the warp's part).
//  - mma_tile_load8_predicated: one 8-element bf16 chunk of a row-major matrix into shared memory through
//    registers, every element predicated (the ragged kernels' loader: any shape, any alignment);
//  - mma_tile_step: the 16 mma.sync of one k16 step of a warp, from 4 A and 4 B fragments;
//  - mma_tile_store: the epilogue, out[r, c] = alpha acc (+ out when accumulate), bounded by rows x cols.
// Accumulator fragment (PTX ISA, "Matrix fragments for mma.m16n8k16"): e 0,1 at (row g, cols 2t, 2t+1), e 2,3 at
// row g + 8, with g = lane / 4, t = lane % 4.
#pragma once
#include "lori_cuda.cuh"

struct __align__(16) mma_tile_u32x4 { u32 x, y, z, w; };

// Chunk (r, c .. c + 7) of src [rows, cols] (leading dimension ld) into dst (16-byte aligned); zeros outside.
__device__ __forceinline__ void mma_tile_load8_predicated(bf16* dst, const bf16* src, int rows, int cols, long long ld, int r, int c)
{
    u32 v[4];
    for (int e = 0; e < 4; e++)
    {
        bf16 lo = 0, hi = 0;
        if (r < rows)
        {
            const bf16* p = src + (long long)r * ld;
            if (c + 2 * e < cols) lo = p[c + 2 * e];
            if (c + 2 * e + 1 < cols) hi = p[c + 2 * e + 1];
        }
        v[e] = pack_bf16x2(lo, hi);
    }
    mma_tile_u32x4 q;
    q.x = v[0]; q.y = v[1]; q.z = v[2]; q.w = v[3];
    *reinterpret_cast<mma_tile_u32x4*>(dst) = q;
}

__device__ __forceinline__ void mma_tile_zero(float acc[4][4][4])
{
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            for (int e = 0; e < 4; e++) acc[i][j][e] = 0.f;
}

__device__ __forceinline__ void mma_tile_step(float acc[4][4][4], const u32 af[4][4], const u32 bfrag[4][2])
{
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) mma_m16n8k16_bf16(acc[i][j], af[i], bfrag[j], acc[i][j]);
}

// The block's tile starts at (row0, col0) of out [rows, cols] (row-major, leading dimension cols).
__device__ __forceinline__ void mma_tile_store(float* out, const float acc[4][4][4], int row0, int col0, int wm, int wn, int lane,
                                               int rows, int cols, float alpha, int accumulate)
{
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            for (int e = 0; e < 4; e++)
            {
                const int r = row0 + wm * 64 + i * 16 + (lane >> 2) + (e >> 1) * 8;
                const int c = col0 + wn * 32 + j * 8 + (lane & 3) * 2 + (e & 1);
                if (r >= rows || c >= cols) continue;
                float* o = out + (long long)r * cols + c;
                const float v = alpha * acc[i][j][e];
                *o = accumulate ? *o + v : v;
            }
}
