// Pieces shared by the mma.sync GEMMs that tile their output as gemm_tc.cu does: a block of 8 warps owns a
// 128 x 128 tile, warp (wm, wn) = (warp / 4, warp % 4) owns rows 64 wm .. +63 and columns 32 wn .. +31 as 4 x 4
// m16n8 accumulators (acc[i][j]: rows 16 i, columns 8 j of the warp's part).
//  - mma_tile_load8_predicated / mma_tile_load8_row: one 8-element bf16 chunk of a row-major matrix into shared
//    memory through registers, every element predicated (the ragged kernels' loader: any shape, any alignment);
//  - mma_tile_frags_nt: a warp's 4 A and 4 B fragments of one k16 step when both tiles are held k-contiguous
//    (A [rows][ld], B [cols][ld]: B's columns are rows in shared memory, as W's rows in y = x W^T);
//  - mma_tile_step: the 16 mma.sync of one k16 step of a warp, from 4 A and 4 B fragments;
//  - mma_tile_each: the epilogue's walk, f(r, c, acc) for every accumulator at its output coordinates;
//  - mma_tile_store: the epilogue, out[r, c] = alpha acc (+ out when accumulate), bounded by rows x cols.
// Accumulator fragment (PTX ISA, "Matrix fragments for mma.m16n8k16"): e 0,1 at (row g, cols 2t, 2t+1), e 2,3 at
// row g + 8, with g = lane / 4, t = lane % 4.
#pragma once
#include "lori_cuda.cuh"

struct __align__(16) mma_tile_u32x4 { u32 x, y, z, w; };

// Chunk (c .. c + 7) of one row of cols elements (row: the row's start, or null past the matrix) into dst
// (16-byte aligned); zeros outside.
__device__ __forceinline__ void mma_tile_load8_row(bf16* dst, const bf16* row, int cols, int c)
{
    u32 v[4];
    for (int e = 0; e < 4; e++)
    {
        bf16 lo = 0, hi = 0;
        if (row)
        {
            if (c + 2 * e < cols) lo = row[c + 2 * e];
            if (c + 2 * e + 1 < cols) hi = row[c + 2 * e + 1];
        }
        v[e] = pack_bf16x2(lo, hi);
    }
    mma_tile_u32x4 q;
    q.x = v[0]; q.y = v[1]; q.z = v[2]; q.w = v[3];
    *reinterpret_cast<mma_tile_u32x4*>(dst) = q;
}

// Chunk (r, c .. c + 7) of src [rows, cols] (leading dimension ld) into dst (16-byte aligned); zeros outside.
__device__ __forceinline__ void mma_tile_load8_predicated(bf16* dst, const bf16* src, int rows, int cols, long long ld, int r, int c)
{
    mma_tile_load8_row(dst, r < rows ? src + (long long)r * ld : (const bf16*)0, cols, c);
}

__device__ __forceinline__ void mma_tile_zero(float acc[4][4][4])
{
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            for (int e = 0; e < 4; e++) acc[i][j][e] = 0.f;
}

// Fragments at k offset kk of A [128][ld] (warp rows 64 wm ..) and B [128][ld] (warp columns 32 wn .., one row per
// column), both held k-contiguous: the non-transposed ldmatrix yields A's row fragment and B's "col" fragment.
__device__ __forceinline__ void mma_tile_frags_nt(u32 af[4][4], u32 bfrag[4][2], const bf16* sa, const bf16* sb, int ld, int kk, int wm, int wn,
                                                  int lane)
{
    for (int i = 0; i < 4; i++)
        ldmatrix_x4(af[i], sa + (wm * 64 + i * 16 + (lane & 15)) * ld + kk + (lane >> 4) * 8);
    for (int j2 = 0; j2 < 2; j2++)
    {
        // matrices: (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15)
        u32 r[4];
        ldmatrix_x4(r, sb + (wn * 32 + j2 * 16 + (lane >> 4) * 8 + (lane & 7)) * ld + kk + ((lane >> 3) & 1) * 8);
        bfrag[2 * j2][0] = r[0];
        bfrag[2 * j2][1] = r[1];
        bfrag[2 * j2 + 1][0] = r[2];
        bfrag[2 * j2 + 1][1] = r[3];
    }
}

__device__ __forceinline__ void mma_tile_step(float acc[4][4][4], const u32 af[4][4], const u32 bfrag[4][2])
{
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) mma_m16n8k16_bf16(acc[i][j], af[i], bfrag[j], acc[i][j]);
}

// f(r, c, v) for every accumulator v of the warp, at its coordinates in the output; the block's tile starts at
// (row0, col0). No bounds: f checks them.
template <class F>
__device__ __forceinline__ void mma_tile_each(const float acc[4][4][4], int row0, int col0, int wm, int wn, int lane, const F& f)
{
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            for (int e = 0; e < 4; e++)
                f(row0 + wm * 64 + i * 16 + (lane >> 2) + (e >> 1) * 8, col0 + wn * 32 + j * 8 + (lane & 3) * 2 + (e & 1), acc[i][j][e]);
}

// out[r, c] = alpha v (+ out when accumulate) inside out [rows, cols] (row-major, leading dimension cols).
struct mma_tile_f32_out
{
    float* out;
    int rows, cols;
    float alpha;
    int accumulate;

    __device__ __forceinline__ void operator()(int r, int c, float v) const
    {
        if (r >= rows || c >= cols) return;
        float* o = out + (long long)r * cols + c;
        const float a = alpha * v;
        *o = accumulate ? *o + a : a;
    }
};

// The block's tile starts at (row0, col0) of out [rows, cols] (row-major, leading dimension cols).
__device__ __forceinline__ void mma_tile_store(float* out, const float acc[4][4][4], int row0, int col0, int wm, int wn, int lane,
                                               int rows, int cols, float alpha, int accumulate)
{
    mma_tile_f32_out f;
    f.out = out; f.rows = rows; f.cols = cols; f.alpha = alpha; f.accumulate = accumulate;
    mma_tile_each(acc, row0, col0, wm, wn, lane, f);
}
