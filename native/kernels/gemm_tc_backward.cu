// gemm_tc_backward: the two backward products of y = x W^T on tensor cores, with the operands staged in bf16
// (the caller casts the F32 gradients and activations into scratch, as MatMul does for x):
//   dx = alpha * dy W    (+ dx when accumulate != 0)    gemm_tc_bwd_input,  gemm_tc_bwd_input_ragged
//   dW = alpha * dy^T x  (+ dW when accumulate != 0)    gemm_tc_bwd_weight, gemm_tc_bwd_weight_ragged
// dy bf16 [N, M], W bf16 [M, K] (the weight as stored), x bf16 [N, K]; dx f32 [N, K], dW f32 [M, K]; row-major.
// Products bf16 x bf16 are exact in fp32 and the sums are fp32 (mma.sync's accumulator); the result is the fp32
// product of the bf16-rounded operands. The SIMT kernel (matmul_backward.cu) stays the fp32 reference/fallback.
//
// Both are one product C[R, C] = alpha * sum_i A(r, i) B(i, c), C = K columns, where B(i, c) = b[i K + c] is
// stored with the inner index i as its row (W for dx: i = output m; x for dW: i = token n), and
//   dx: R = N, inner M, A(r, i) = dy[r M + i]   (row-major, as gemm_tc's x);
//   dW: R = M, inner N, A(r, i) = dy[i M + r]   (dy^T: the inner index is dy's row).
// So B, and dW's A, arrive "k-major" while mma.sync m16n8k16 .row.col wants A by rows and B by columns. They are
// copied to shared memory as stored (rows = inner index, no transposing copy) and transposed by ldmatrix .trans:
// for an 8 x 8 block held as rows i, columns c, .trans gives lane (g, t) = (lane / 4, lane % 4) the pair
// (i = 2t, 2t + 1; c = g), which is exactly mma's B fragment b0 (b1: rows i + 8), and for dy^T held as rows i,
// columns r exactly A's a0 (a1: r + 8, a2: i + 8, a3: both). PTX ISA: "Matrix fragments for mma.m16n8k16",
// "ldmatrix".
//
// Tiling (as gemm_tc.cu): a block of 8 warps computes a 128 x 128 tile of C, walking the inner dimension in steps
// of 32 through a 3-stage shared-memory ring filled by cp.async (tile kt + 2 loads while tile kt is multiplied);
// warp (wm, wn) = (warp / 4, warp % 4) owns rows 64 wm .. +63 and columns 32 wn .. +31 (4 x 4 m16n8 fragments).
// Shared layouts per stage: A row-major [128][32 + 8] (dx) or A^T [32][128 + 8] (dW); B [32][128 + 8]. Rows of 40
// or 136 bf16 (80 / 272 bytes) put the 8 row addresses of one ldmatrix phase in 8 different 16-byte bank groups.
// Edges: rows / columns past R / C and the inner tail are zero-filled. The plain kernels need M % 8 == 0,
// K % 8 == 0 and 16-byte aligned operands (16-byte cp.async chunks, src-size 0 or 16); the _ragged ones take any
// shape and alignment, staging tiles through registers with per-element predicates.
// Grid (ceil(K / 128), ceil(R / 128)), block 256, dynamic shared memory GEMM_TC_BWD_SMEM_BYTES (56,832).
#include "../include/lori_mma_tile.cuh"

#define GTB_BM 128
#define GTB_BN 128
#define GTB_BK 32
#define GTB_STAGES 3
#define GTB_THREADS 256
#define GTB_LDA (GTB_BK + 8)   // A row-major: [BM][BK + 8]
#define GTB_LDT (GTB_BN + 8)   // k-major tiles (A^T and B): [BK][128 + 8]
#define GTB_A_ELEMS (GTB_BM * GTB_LDA)
#define GTB_T_ELEMS (GTB_BK * GTB_LDT)
#define GTB_STAGE_ELEMS (GTB_A_ELEMS + GTB_T_ELEMS)   // the larger A layout; dW's stage leaves the difference unused
#define GEMM_TC_BWD_SMEM_BYTES (GTB_STAGES * GTB_STAGE_ELEMS * 2)

// One 8-element chunk of a row-major bf16 matrix [rows, cols] (leading dimension ld) at (r, c) into shared memory.
// Aligned: cols % 8 == 0 and 16-byte aligned rows, so the chunk lies wholly inside or wholly outside.
template <bool ALIGNED>
__device__ __forceinline__ void gtb_chunk(bf16* dst, const bf16* src, int rows, int cols, long long ld, int r, int c)
{
    if (ALIGNED)
    {
        const bool inside = r < rows && c < cols;
        cp_async_16(dst, inside ? src + (long long)r * ld + c : src, inside ? 16 : 0);
    }
    else mma_tile_load8_predicated(dst, src, rows, cols, ld, r, c);
}

// Fills one stage for inner offset k0: 512 chunks of A, then 512 chunks of B (32 inner rows x 16 chunks).
template <bool A_TRANS, bool ALIGNED>
__device__ __forceinline__ void gtb_load_stage(bf16* stage, const bf16* dy, const bf16* b, int n, int m, int k, int row0, int col0, int k0)
{
    const int inner = A_TRANS ? n : m;
    for (int c = threadIdx.x; c < 1024; c += GTB_THREADS)
    {
        if (c < 512)
        {
            if (A_TRANS)
            {
                // dy rows k0 + i, columns row0 + 8 j: A^T tile [i][r]
                const int i = c >> 4, j = (c & 15) * 8;
                gtb_chunk<ALIGNED>(stage + i * GTB_LDT + j, dy, n, m, m, k0 + i, row0 + j);
            }
            else
            {
                // dy rows row0 + r, columns k0 + 8 j: A tile [r][i]
                const int r = c >> 2, j = (c & 3) * 8;
                gtb_chunk<ALIGNED>(stage + r * GTB_LDA + j, dy, n, m, m, row0 + r, k0 + j);
            }
        }
        else
        {
            const int cc = c - 512, i = cc >> 4, j = (cc & 15) * 8;
            gtb_chunk<ALIGNED>(stage + GTB_A_ELEMS + i * GTB_LDT + j, b, inner, k, k, k0 + i, col0 + j);
        }
    }
}

template <bool A_TRANS, bool ALIGNED>
__device__ __forceinline__ void gemm_tc_bwd_impl(const bf16* dy, const bf16* b, float* out, int n, int m, int k, float alpha, int accumulate)
{
    LORI_DYNAMIC_SHARED(bf16, smem);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int wm = warp >> 2, wn = warp & 3;
    const int rows = A_TRANS ? m : n, inner = A_TRANS ? n : m;
    const int row0 = blockIdx.y * GTB_BM, col0 = blockIdx.x * GTB_BN;
    const int tiles = (inner + GTB_BK - 1) / GTB_BK;

    float acc[4][4][4];
    mma_tile_zero(acc);

    for (int s = 0; s < GTB_STAGES - 1; s++)
    {
        if (s < tiles) gtb_load_stage<A_TRANS, ALIGNED>(smem + s * GTB_STAGE_ELEMS, dy, b, n, m, k, row0, col0, s * GTB_BK);
        cp_async_commit();
    }

    for (int kt = 0; kt < tiles; kt++)
    {
        // groups committed so far: STAGES - 1 + kt; allowing STAGES - 2 pending means tile kt has landed
        cp_async_wait<GTB_STAGES - 2>();
        __syncthreads();  // tile kt visible to every warp; every warp is done with tile kt - 1's stage
        const int pf = kt + GTB_STAGES - 1;
        if (pf < tiles) gtb_load_stage<A_TRANS, ALIGNED>(smem + (pf % GTB_STAGES) * GTB_STAGE_ELEMS, dy, b, n, m, k, row0, col0, pf * GTB_BK);
        cp_async_commit();

        const bf16* sa = smem + (kt % GTB_STAGES) * GTB_STAGE_ELEMS;
        const bf16* sb = sa + GTB_A_ELEMS;
        for (int kk = 0; kk < GTB_BK; kk += 16)
        {
            u32 af[4][4], bfrag[4][2];
            for (int i = 0; i < 4; i++)
            {
                if (A_TRANS)
                    // matrices: (r 0-7, i 0-7), (r 8-15, i 0-7), (r 0-7, i 8-15), (r 8-15, i 8-15) held as rows i
                    ldmatrix_x4_trans(af[i], sa + (kk + (lane >> 4) * 8 + (lane & 7)) * GTB_LDT + wm * 64 + i * 16 + ((lane >> 3) & 1) * 8);
                else
                    ldmatrix_x4(af[i], sa + (wm * 64 + i * 16 + (lane & 15)) * GTB_LDA + kk + (lane >> 4) * 8);
            }
            for (int j2 = 0; j2 < 2; j2++)
            {
                // matrices: (i 0-7, c 0-7), (i 8-15, c 0-7), (i 0-7, c 8-15), (i 8-15, c 8-15) held as rows i
                u32 r[4];
                ldmatrix_x4_trans(r, sb + (kk + ((lane >> 3) & 1) * 8 + (lane & 7)) * GTB_LDT + wn * 32 + j2 * 16 + (lane >> 4) * 8);
                bfrag[2 * j2][0] = r[0];
                bfrag[2 * j2][1] = r[1];
                bfrag[2 * j2 + 1][0] = r[2];
                bfrag[2 * j2 + 1][1] = r[3];
            }
            mma_tile_step(acc, af, bfrag);
        }
    }
    cp_async_wait<0>();

    mma_tile_store(out, acc, row0, col0, wm, wn, lane, rows, k, alpha, accumulate);
}

extern "C" __global__ void gemm_tc_bwd_input(const bf16* dy, const bf16* w, float* dx, int n, int m, int k, float alpha, int accumulate)
{
    gemm_tc_bwd_impl<false, true>(dy, w, dx, n, m, k, alpha, accumulate);
}
LORI_KERNEL(gemm_tc_bwd_input)

extern "C" __global__ void gemm_tc_bwd_input_ragged(const bf16* dy, const bf16* w, float* dx, int n, int m, int k, float alpha, int accumulate)
{
    gemm_tc_bwd_impl<false, false>(dy, w, dx, n, m, k, alpha, accumulate);
}
LORI_KERNEL(gemm_tc_bwd_input_ragged)

extern "C" __global__ void gemm_tc_bwd_weight(const bf16* dy, const bf16* x, float* dw, int n, int m, int k, float alpha, int accumulate)
{
    gemm_tc_bwd_impl<true, true>(dy, x, dw, n, m, k, alpha, accumulate);
}
LORI_KERNEL(gemm_tc_bwd_weight)

extern "C" __global__ void gemm_tc_bwd_weight_ragged(const bf16* dy, const bf16* x, float* dw, int n, int m, int k, float alpha, int accumulate)
{
    gemm_tc_bwd_impl<true, false>(dy, x, dw, n, m, k, alpha, accumulate);
}
LORI_KERNEL(gemm_tc_bwd_weight_ragged)
