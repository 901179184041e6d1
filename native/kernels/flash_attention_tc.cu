// flash_attention_tc: causal grouped-query attention on tensor cores (mma.sync m16n8k16 bf16, fp32
// accumulators), FlashAttention-2 style: forward with an online softmax and the log-sum-exp saved, and the
// backward that rebuilds P from that log-sum-exp. Same maths and layouts as flash_attention.cu (see there):
//   s_j = scale q.k_j (j <= p_i), lse = log sum_j exp(s_j), P_j = exp(s_j - lse), y = sum_j P_j v_j;
//   dP_j = dy.v_j, D = dy.y, dS_j = P_j (dP_j - D), dq = scale sum_j dS_j k_j, dk_j = scale sum dS_j q,
//   dv_j = sum P_j dy.
//
// Precision: q, k, v, dy are F32 in memory and rounded to bf16 as they are staged into shared memory; every
// product of two bf16 values is exact in fp32 and mma.sync sums in fp32. S, the softmax statistics, P (for
// the log-sum-exp and the normaliser), dP and dS are fp32; P is rounded to bf16 as the A operand of P.V and
// P^T.dy, dS as the A operand of dS.K and dS^T.q. Tolerance.Bf16Attention* bounds what that costs. The
// exponentials are __expf (ex2.approx on the device: a relative error of a few 2^-22 for the arguments
// <= 0 met here, far below bf16's 2^-8).
//
// Head dim D: a multiple of 16 up to 128 (one instantiation per D: _d16 ... _d128; the fragments of a warp's
// 16 rows are register arrays sized at compile time). Blocks of 128 threads = 4 warps; warp w owns 16 rows
// of the block's 64 (queries in the forward and dq, keys in dk/dv). Lane l holds, in the mma fragment
// layout, the rows g = l / 4 and g + 8 of its warp's 16 and the columns 2 (l % 4), +1 of each n8 tile.
// Shared rows are D + 8 bf16 (D / 8 + 1 = an odd number of 16-byte units): the 8 row addresses of one
// ldmatrix phase fall in 8 different bank groups. Tiles are staged through registers (F32 -> bf16), so
// q, k, v, dy must be 16-byte aligned (float4 loads; the host checks and falls back to the SIMT kernels).
//
// flash_attention_tc_forward_dD: grid (ceil(N / 64), heads), 128 threads. Rows i0 .. i0 + 63 of q, head h,
//   KV head h / group. Row i reads the keys of (slot, position) as flash_attention_forward does (the KV cache
//   when `slots` is non-null, else the training batch: slot = i / t, position = i % t). The block walks the
//   distinct slots of its rows in increasing order (one pass for a prefill chunk or a training tile inside
//   one sequence, two when a tile straddles two sequences); for each it streams keys 0 .. (the largest
//   position of its rows in that slot) in tiles of 64:
//     S (16 x 64 per warp) = Q K^T: Q fragments stay in registers (ldmatrix.x4 once), K via ldmatrix.x4
//       (K's rows are B's columns: no transpose);
//     mask (key <= own position, own slot), scale, row max over the quad (shuffles), rescale O, P = exp;
//     O (16 x D per warp) += P V: P's accumulator fragments are repacked as the A operand in registers
//       (the m16n8 C layout of two adjacent n8 tiles is the m16n8k16 A layout), V via ldmatrix.x4.trans.
//   A warp whose 16 rows see none of a tile's keys skips its mma work (causal). Rows whose slot or position
//   is out of range get NaN (y and lse). Shared: Q, K, V [64][D + 8] bf16, slot and position of each row,
//   the current slot and its last position: 3 * 64 * (D + 8) * 2 + 520 bytes (52,744 at D = 128).
//   Registers per thread: Q fragments D / 4, O D / 2, S 32 floats, statistics 4.
// flash_attention_tc_backward_dq_dD: grid (ceil(t / 64), batch, heads), 128 threads; training layout. 64
//   query rows of one sequence and head; per key tile of 64 (up to the block's last position): S = Q K^T,
//   dP = dy V^T (Q and dy fragments re-read from shared memory by ldmatrix for each tile, which keeps the
//   thread under ~160 registers at D = 128: dq D / 2, S and dP 32 floats each), P = exp(scale S - lse),
//   dS = P (dP - D), dq += dS K (dS repacked as A, K via ldmatrix.trans); dq written (=) times scale.
//   Shared: Q, dy, K, V [64][D + 8] bf16, lse and D of the 64 rows: 4 * 64 * (D + 8) * 2 + 512 bytes
//   (70,144 at D = 128).
// flash_attention_tc_backward_dkdv_dD: grid (ceil(t / 64), batch, kv_heads), 128 threads; training layout.
//   64 keys of one sequence and KV head (K and V staged once); for each query head of the group and each
//   tile of 32 queries from the block's first key on: S^T = K Q^T, dP^T = V dy^T (K, V as A operands from
//   shared memory, Q and dy as B without a transpose), P^T and dS^T as above, dv += P^T dy and
//   dk += dS^T Q (Q and dy via ldmatrix.trans). dk (times scale), dv written (=). No atomics: each block
//   owns its keys. Shared: K, V [64][D + 8], Q, dy [32][D + 8] bf16, lse and D of the 32 queries:
//   192 * (D + 8) * 2 + 256 bytes (52,480 at D = 128). Registers: dk and dv D / 2 floats each, S^T and
//   dP^T 16 floats each.
// D = dy.y comes from attention_backward_dot (flash_attention.cu).
// ptxas 11.8 (nvcc -O3 --use_fast_math, -Xptxas -v) at D = 128, registers sm_80 / sm_90: forward 198 / 176,
// dq 167 / 166, dk/dv 222 / 203; at D = 64: 137 / 126, 149 / 124, 133 / 128; no spills at any D but 8 bytes in
// dk/dv at D = 32 (sm_80). At ~200 registers x 128 threads a multiprocessor holds two blocks (8 warps).
#include "../include/lori_cuda.cuh"

#define FTC_THREADS 128
#define FTC_ROWS 64    // rows of a block: 4 warps x 16
#define FTC_BN 64      // keys per tile (forward, dq)
#define FTC_BQ 32      // queries per tile (dk/dv)
#define FTC_NEG_INF (-__int_as_float(0x7f800000))
#define FTC_NAN (__int_as_float(0x7fc00000))
#define FTC_NO_SLOT 0x7fffffff

struct __align__(16) ftc_f32x4 { float x, y, z, w; };
struct __align__(8) ftc_u32x2 { u32 x, y; };

// rows x D floats (row r at src + r * stride) into bf16 shared rows of D + 8; rows >= count are zero.
template <int D, int ROWS>
__device__ __forceinline__ void ftc_stage(bf16* dst, const float* src, long long stride, int count)
{
    constexpr int C = D / 4;
    for (int c = threadIdx.x; c < ROWS * C; c += FTC_THREADS)
    {
        const int r = c / C, d = (c % C) * 4;
        ftc_f32x4 v = {0.f, 0.f, 0.f, 0.f};
        if (r < count) v = *reinterpret_cast<const ftc_f32x4*>(src + r * stride + d);
        ftc_u32x2 o;
        o.x = pack_bf16x2(float_to_bf16(v.x), float_to_bf16(v.y));
        o.y = pack_bf16x2(float_to_bf16(v.z), float_to_bf16(v.w));
        *reinterpret_cast<ftc_u32x2*>(dst + r * (D + 8) + d) = o;
    }
}

// The A fragments (16 rows x D) of the rows at `rows` (shared, row stride D + 8).
template <int D>
__device__ __forceinline__ void ftc_load_a(u32 f[D / 16][4], const bf16* rows)
{
    const int lane = threadIdx.x & 31;
    for (int kk = 0; kk < D / 16; kk++) ldmatrix_x4(f[kk], rows + (lane & 15) * (D + 8) + kk * 16 + (lane >> 4) * 8);
}

// acc[N/8] (16 x N) += A B^T: A's fragments from `a` (registers, or shared rows when a_rows is non-null),
// B stored as N rows of D (shared, stride D + 8): B's rows are the columns of the product.
template <int D, int N>
__device__ __forceinline__ void ftc_mma_abt(float acc[N / 8][4], const u32 a[D / 16][4], const bf16* a_rows, const bf16* b)
{
    const int lane = threadIdx.x & 31;
    for (int kk = 0; kk < D / 16; kk++)
    {
        u32 af[4];
        if (a_rows) ldmatrix_x4(af, a_rows + (lane & 15) * (D + 8) + kk * 16 + (lane >> 4) * 8);
        else for (int e = 0; e < 4; e++) af[e] = a[kk][e];
        for (int j2 = 0; j2 < N / 16; j2++)
        {
            // matrices: (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15)
            u32 r[4];
            ldmatrix_x4(r, b + (j2 * 16 + (lane >> 4) * 8 + (lane & 7)) * (D + 8) + kk * 16 + ((lane >> 3) & 1) * 8);
            const u32 b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
            mma_m16n8k16_bf16(acc[2 * j2], af, b0, acc[2 * j2]);
            mma_m16n8k16_bf16(acc[2 * j2 + 1], af, b1, acc[2 * j2 + 1]);
        }
    }
}

// acc[D/8] (16 x D) += P B: P (16 x K) given as fp32 accumulator fragments p[K/8] (rounded to bf16 here),
// B stored as K rows of D (shared, stride D + 8), read transposed.
template <int D, int K>
__device__ __forceinline__ void ftc_mma_pb(float acc[D / 8][4], const float p[K / 8][4], const bf16* b)
{
    const int lane = threadIdx.x & 31;
    for (int k2 = 0; k2 < K / 16; k2++)
    {
        // the C fragments of n8 tiles 2 k2 and 2 k2 + 1 are the A fragment of k16 tile k2
        const u32 a[4] = {
            pack_bf16x2(float_to_bf16(p[2 * k2][0]), float_to_bf16(p[2 * k2][1])),
            pack_bf16x2(float_to_bf16(p[2 * k2][2]), float_to_bf16(p[2 * k2][3])),
            pack_bf16x2(float_to_bf16(p[2 * k2 + 1][0]), float_to_bf16(p[2 * k2 + 1][1])),
            pack_bf16x2(float_to_bf16(p[2 * k2 + 1][2]), float_to_bf16(p[2 * k2 + 1][3])),
        };
        for (int n2 = 0; n2 < D / 16; n2++)
        {
            // matrices: (k 0-7, n 0-7), (k 8-15, n 0-7), (k 0-7, n 8-15), (k 8-15, n 8-15), transposed
            u32 r[4];
            ldmatrix_x4_trans(r, b + (k2 * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * (D + 8) + n2 * 16 + (lane >> 4) * 8);
            const u32 b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
            mma_m16n8k16_bf16(acc[2 * n2], a, b0, acc[2 * n2]);
            mma_m16n8k16_bf16(acc[2 * n2 + 1], a, b1, acc[2 * n2 + 1]);
        }
    }
}

__device__ __forceinline__ bool ftc_row(const int* slots, const int* positions, int i, int s, int t, int& slot, int& pos)
{
    if (slots) { slot = slots[i]; pos = positions[i]; }
    else { slot = i / t; pos = i % t; }
    return slot >= 0 && slot < s && pos >= 0 && pos < t;
}

template <int D>
__device__ __forceinline__ void ftc_forward(const float* q, const float* k, const float* v, const int* slots, const int* positions,
                                            float* y, float* lse, int n, int heads, int kv_heads, int s, int t, float scale)
{
    constexpr int LD = D + 8, NB = FTC_BN / 8, ND = D / 8;
    LORI_DYNAMIC_SHARED(bf16, smem);
    bf16* qs = smem;
    bf16* ks = qs + FTC_ROWS * LD;
    bf16* vs = ks + FTC_BN * LD;
    int* rslot = reinterpret_cast<int*>(vs + FTC_BN * LD);
    int* rpos = rslot + FTC_ROWS;
    int* ctl = rpos + FTC_ROWS;  // current slot, its last position

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, tq = lane & 3;
    const int i0 = blockIdx.x * FTC_ROWS, h = blockIdx.y, kvh = h / (heads / kv_heads);
    const int w = kv_heads * D;
    if (tid < FTC_ROWS)
    {
        int slot = -1, pos = -1;
        if (i0 + tid >= n || !ftc_row(slots, positions, i0 + tid, s, t, slot, pos)) slot = -1;
        rslot[tid] = slot;
        rpos[tid] = pos;
    }
    ftc_stage<D, FTC_ROWS>(qs, q + ((long long)i0 * heads + h) * D, (long long)heads * D, min(FTC_ROWS, n - i0));
    __syncthreads();
    u32 qf[D / 16][4];
    ftc_load_a<D>(qf, qs + warp * 16 * LD);

    const int r0 = warp * 16 + g, r1 = r0 + 8;
    float m[2] = {FTC_NEG_INF, FTC_NEG_INF}, l[2] = {0.f, 0.f};
    float o[ND][4];
    for (int d = 0; d < ND; d++)
        for (int e = 0; e < 4; e++) o[d][e] = 0.f;

    int prev = -1;
    for (;;)
    {
        __syncthreads();  // every thread has read ctl and finished with the last tile
        if (tid == 0)
        {
            int cur = FTC_NO_SLOT, last = -1;
            for (int r = 0; r < FTC_ROWS; r++)
                if (rslot[r] > prev && rslot[r] < cur) cur = rslot[r];
            for (int r = 0; r < FTC_ROWS; r++)
                if (rslot[r] == cur) last = max(last, rpos[r]);
            ctl[0] = cur;
            ctl[1] = last;
        }
        __syncthreads();
        const int cur = ctl[0], last = ctl[1];
        if (cur == FTC_NO_SLOT) break;
        prev = cur;
        const int lim0 = rslot[r0] == cur ? rpos[r0] : -1, lim1 = rslot[r1] == cur ? rpos[r1] : -1;
        const int wlim = (int)warp_max((float)max(lim0, lim1));  // positions < 2^24: exact in float
        const float* kb = k + (long long)cur * t * w + kvh * D;
        const float* vb = v + (long long)cur * t * w + kvh * D;
        for (int j0 = 0; j0 <= last; j0 += FTC_BN)
        {
            if (j0 > 0) __syncthreads();  // every warp is done with the previous K, V tile
            const int cnt = min(FTC_BN, last + 1 - j0);
            ftc_stage<D, FTC_BN>(ks, kb + (long long)j0 * w, w, cnt);
            ftc_stage<D, FTC_BN>(vs, vb + (long long)j0 * w, w, cnt);
            __syncthreads();
            if (j0 > wlim) continue;  // warp-uniform: none of this warp's rows sees these keys

            float sc[NB][4];
            for (int j = 0; j < NB; j++)
                for (int e = 0; e < 4; e++) sc[j][e] = 0.f;
            ftc_mma_abt<D, FTC_BN>(sc, qf, nullptr, ks);

            float mx[2] = {FTC_NEG_INF, FTC_NEG_INF};
            for (int j = 0; j < NB; j++)
                for (int e = 0; e < 4; e++)
                {
                    const int key = j0 + j * 8 + 2 * tq + (e & 1);
                    const float x = key <= (e < 2 ? lim0 : lim1) ? sc[j][e] * scale : FTC_NEG_INF;
                    sc[j][e] = x;
                    mx[e >> 1] = fmaxf(mx[e >> 1], x);
                }
            for (int rr = 0; rr < 2; rr++)
            {
                mx[rr] = fmaxf(mx[rr], __shfl_xor_sync(LORI_FULL_MASK, mx[rr], 1));
                mx[rr] = fmaxf(mx[rr], __shfl_xor_sync(LORI_FULL_MASK, mx[rr], 2));
                const float mnew = fmaxf(m[rr], mx[rr]);
                const float base = mnew == FTC_NEG_INF ? 0.f : mnew;  // a row that has seen no key yet
                const float alpha = __expf(m[rr] - base);
                m[rr] = mnew;
                l[rr] *= alpha;
                for (int d = 0; d < ND; d++)
                {
                    o[d][2 * rr] *= alpha;
                    o[d][2 * rr + 1] *= alpha;
                }
                for (int j = 0; j < NB; j++)
                    for (int e = 2 * rr; e < 2 * rr + 2; e++)
                    {
                        const float p = __expf(sc[j][e] - base);
                        sc[j][e] = p;
                        l[rr] += p;
                    }
            }
            ftc_mma_pb<D, FTC_BN>(o, sc, vs);
        }
    }

    for (int rr = 0; rr < 2; rr++)
    {
        l[rr] += __shfl_xor_sync(LORI_FULL_MASK, l[rr], 1);
        l[rr] += __shfl_xor_sync(LORI_FULL_MASK, l[rr], 2);
    }
    for (int rr = 0; rr < 2; rr++)
    {
        const int r = rr ? r1 : r0;
        const long long i = i0 + r;
        if (i >= n) continue;
        const bool valid = rslot[r] >= 0;
        const float inv = 1.0f / l[rr];
        float* yr = y + (i * heads + h) * D;
        for (int d = 0; d < ND; d++)
            for (int e = 2 * rr; e < 2 * rr + 2; e++) yr[d * 8 + 2 * tq + (e & 1)] = valid ? o[d][e] * inv : FTC_NAN;
        if (lse && tq == 0) lse[i * heads + h] = valid ? m[rr] + logf(l[rr]) : FTC_NAN;
    }
}

template <int D>
__device__ __forceinline__ void ftc_backward_dq(const float* q, const float* k, const float* v, const float* dy, const float* lse, const float* dsum,
                                                float* dq, int heads, int kv_heads, int t, float scale)
{
    constexpr int LD = D + 8, NB = FTC_BN / 8, ND = D / 8;
    LORI_DYNAMIC_SHARED(bf16, smem);
    bf16* qs = smem;
    bf16* dys = qs + FTC_ROWS * LD;
    bf16* ks = dys + FTC_ROWS * LD;
    bf16* vs = ks + FTC_BN * LD;
    float* ls = reinterpret_cast<float*>(vs + FTC_BN * LD);
    float* ds = ls + FTC_ROWS;

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, tq = lane & 3;
    const int p0 = blockIdx.x * FTC_ROWS, seq = blockIdx.y, h = blockIdx.z, kvh = h / (heads / kv_heads);
    const int w = kv_heads * D, count = min(FTC_ROWS, t - p0);
    const long long row0 = (long long)seq * t + p0;
    ftc_stage<D, FTC_ROWS>(qs, q + (row0 * heads + h) * D, (long long)heads * D, count);
    ftc_stage<D, FTC_ROWS>(dys, dy + (row0 * heads + h) * D, (long long)heads * D, count);
    if (tid < FTC_ROWS)
    {
        ls[tid] = tid < count ? lse[(row0 + tid) * heads + h] : 0.f;
        ds[tid] = tid < count ? dsum[(row0 + tid) * heads + h] : 0.f;
    }
    __syncthreads();

    const int r0 = warp * 16 + g;
    const int pos[2] = {p0 + r0, p0 + r0 + 8};
    const float lr[2] = {ls[r0], ls[r0 + 8]}, dr[2] = {ds[r0], ds[r0 + 8]};
    const int wlast = min(t - 1, p0 + warp * 16 + 15);
    float acc[ND][4];
    for (int d = 0; d < ND; d++)
        for (int e = 0; e < 4; e++) acc[d][e] = 0.f;

    const int last = p0 + count - 1;
    const float* kb = k + (long long)seq * t * w + kvh * D;
    const float* vb = v + (long long)seq * t * w + kvh * D;
    for (int j0 = 0; j0 <= last; j0 += FTC_BN)
    {
        if (j0 > 0) __syncthreads();
        const int cnt = min(FTC_BN, last + 1 - j0);
        ftc_stage<D, FTC_BN>(ks, kb + (long long)j0 * w, w, cnt);
        ftc_stage<D, FTC_BN>(vs, vb + (long long)j0 * w, w, cnt);
        __syncthreads();
        if (j0 > wlast) continue;

        float sc[NB][4], dp[NB][4];
        for (int j = 0; j < NB; j++)
            for (int e = 0; e < 4; e++) { sc[j][e] = 0.f; dp[j][e] = 0.f; }
        ftc_mma_abt<D, FTC_BN>(sc, nullptr, qs + warp * 16 * LD, ks);
        ftc_mma_abt<D, FTC_BN>(dp, nullptr, dys + warp * 16 * LD, vs);
        for (int j = 0; j < NB; j++)
            for (int e = 0; e < 4; e++)
            {
                const int key = j0 + j * 8 + 2 * tq + (e & 1), rr = e >> 1;
                const float p = key <= pos[rr] && pos[rr] < t ? __expf(sc[j][e] * scale - lr[rr]) : 0.f;
                sc[j][e] = p * (dp[j][e] - dr[rr]);
            }
        ftc_mma_pb<D, FTC_BN>(acc, sc, ks);
    }
    for (int rr = 0; rr < 2; rr++)
    {
        if (pos[rr] >= t) continue;
        float* out = dq + ((row0 + r0 + rr * 8) * heads + h) * D;
        for (int d = 0; d < ND; d++)
            for (int e = 2 * rr; e < 2 * rr + 2; e++) out[d * 8 + 2 * tq + (e & 1)] = acc[d][e] * scale;
    }
}

template <int D>
__device__ __forceinline__ void ftc_backward_dkdv(const float* q, const float* k, const float* v, const float* dy, const float* lse, const float* dsum,
                                                  float* dk, float* dv, int heads, int kv_heads, int t, float scale)
{
    constexpr int LD = D + 8, NQ = FTC_BQ / 8, ND = D / 8;
    LORI_DYNAMIC_SHARED(bf16, smem);
    bf16* ks = smem;
    bf16* vs = ks + FTC_ROWS * LD;
    bf16* qs = vs + FTC_ROWS * LD;
    bf16* dys = qs + FTC_BQ * LD;
    float* ls = reinterpret_cast<float*>(dys + FTC_BQ * LD);
    float* ds = ls + FTC_BQ;

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, tq = lane & 3;
    const int k0 = blockIdx.x * FTC_ROWS, seq = blockIdx.y, kvh = blockIdx.z, group = heads / kv_heads;
    const int w = kv_heads * D, kcount = min(FTC_ROWS, t - k0);
    const long long seq0 = (long long)seq * t;
    ftc_stage<D, FTC_ROWS>(ks, k + (seq0 + k0) * w + kvh * D, w, kcount);
    ftc_stage<D, FTC_ROWS>(vs, v + (seq0 + k0) * w + kvh * D, w, kcount);

    const int kw = k0 + warp * 16;  // this warp's first key
    const int key[2] = {kw + g, kw + g + 8};
    float adk[ND][4], adv[ND][4];
    for (int d = 0; d < ND; d++)
        for (int e = 0; e < 4; e++) { adk[d][e] = 0.f; adv[d][e] = 0.f; }

    for (int gi = 0; gi < group; gi++)
    {
        const int h = kvh * group + gi;
        for (int p0 = k0; p0 < t; p0 += FTC_BQ)
        {
            __syncthreads();  // the previous Q, dy tile is no longer read (and K, V are staged)
            const int cnt = min(FTC_BQ, t - p0);
            ftc_stage<D, FTC_BQ>(qs, q + ((seq0 + p0) * heads + h) * D, (long long)heads * D, cnt);
            ftc_stage<D, FTC_BQ>(dys, dy + ((seq0 + p0) * heads + h) * D, (long long)heads * D, cnt);
            if (tid < FTC_BQ)
            {
                ls[tid] = tid < cnt ? lse[(seq0 + p0 + tid) * heads + h] : 0.f;
                ds[tid] = tid < cnt ? dsum[(seq0 + p0 + tid) * heads + h] : 0.f;
            }
            __syncthreads();
            if (p0 + FTC_BQ - 1 < kw || kw >= t) continue;  // warp-uniform: no query here sees this warp's keys

            float sc[NQ][4], dp[NQ][4];
            for (int j = 0; j < NQ; j++)
                for (int e = 0; e < 4; e++) { sc[j][e] = 0.f; dp[j][e] = 0.f; }
            ftc_mma_abt<D, FTC_BQ>(sc, nullptr, ks + warp * 16 * LD, qs);
            ftc_mma_abt<D, FTC_BQ>(dp, nullptr, vs + warp * 16 * LD, dys);
            for (int j = 0; j < NQ; j++)
                for (int e = 0; e < 4; e++)
                {
                    const int c = j * 8 + 2 * tq + (e & 1), qp = p0 + c, kj = key[e >> 1];
                    const float p = kj <= qp && qp < t ? __expf(sc[j][e] * scale - ls[c]) : 0.f;
                    sc[j][e] = p;
                    dp[j][e] = p * (dp[j][e] - ds[c]);
                }
            ftc_mma_pb<D, FTC_BQ>(adv, sc, dys);
            ftc_mma_pb<D, FTC_BQ>(adk, dp, qs);
        }
    }
    for (int rr = 0; rr < 2; rr++)
    {
        if (key[rr] >= t) continue;
        const long long row = (seq0 + key[rr]) * w + kvh * D;
        for (int d = 0; d < ND; d++)
            for (int e = 2 * rr; e < 2 * rr + 2; e++)
            {
                const int c = d * 8 + 2 * tq + (e & 1);
                dk[row + c] = adk[d][e] * scale;
                dv[row + c] = adv[d][e];
            }
    }
}

#define FTC_FORWARD_PARAMS const float* q, const float* k, const float* v, const int* slots, const int* positions, float* y, float* lse, \
                           int n, int heads, int kv_heads, int s, int t, float scale
#define FTC_FORWARD_ARGS q, k, v, slots, positions, y, lse, n, heads, kv_heads, s, t, scale
#define FTC_DQ_PARAMS const float* q, const float* k, const float* v, const float* dy, const float* lse, const float* dsum, float* dq, \
                      int heads, int kv_heads, int t, float scale
#define FTC_DQ_ARGS q, k, v, dy, lse, dsum, dq, heads, kv_heads, t, scale
#define FTC_DKDV_PARAMS const float* q, const float* k, const float* v, const float* dy, const float* lse, const float* dsum, float* dk, float* dv, \
                        int heads, int kv_heads, int t, float scale
#define FTC_DKDV_ARGS q, k, v, dy, lse, dsum, dk, dv, heads, kv_heads, t, scale


extern "C" __global__ void __launch_bounds__(FTC_THREADS) flash_attention_tc_forward_d16(FTC_FORWARD_PARAMS) { ftc_forward<16>(FTC_FORWARD_ARGS); }
LORI_KERNEL(flash_attention_tc_forward_d16)
extern "C" __global__ void __launch_bounds__(FTC_THREADS) flash_attention_tc_backward_dq_d16(FTC_DQ_PARAMS) { ftc_backward_dq<16>(FTC_DQ_ARGS); }
LORI_KERNEL(flash_attention_tc_backward_dq_d16)
extern "C" __global__ void __launch_bounds__(FTC_THREADS) flash_attention_tc_backward_dkdv_d16(FTC_DKDV_PARAMS) { ftc_backward_dkdv<16>(FTC_DKDV_ARGS); }
LORI_KERNEL(flash_attention_tc_backward_dkdv_d16)

extern "C" __global__ void __launch_bounds__(FTC_THREADS) flash_attention_tc_forward_d32(FTC_FORWARD_PARAMS) { ftc_forward<32>(FTC_FORWARD_ARGS); }
LORI_KERNEL(flash_attention_tc_forward_d32)
extern "C" __global__ void __launch_bounds__(FTC_THREADS) flash_attention_tc_backward_dq_d32(FTC_DQ_PARAMS) { ftc_backward_dq<32>(FTC_DQ_ARGS); }
LORI_KERNEL(flash_attention_tc_backward_dq_d32)
extern "C" __global__ void __launch_bounds__(FTC_THREADS) flash_attention_tc_backward_dkdv_d32(FTC_DKDV_PARAMS) { ftc_backward_dkdv<32>(FTC_DKDV_ARGS); }
LORI_KERNEL(flash_attention_tc_backward_dkdv_d32)

extern "C" __global__ void __launch_bounds__(FTC_THREADS) flash_attention_tc_forward_d48(FTC_FORWARD_PARAMS) { ftc_forward<48>(FTC_FORWARD_ARGS); }
LORI_KERNEL(flash_attention_tc_forward_d48)
extern "C" __global__ void __launch_bounds__(FTC_THREADS) flash_attention_tc_backward_dq_d48(FTC_DQ_PARAMS) { ftc_backward_dq<48>(FTC_DQ_ARGS); }
LORI_KERNEL(flash_attention_tc_backward_dq_d48)
extern "C" __global__ void __launch_bounds__(FTC_THREADS) flash_attention_tc_backward_dkdv_d48(FTC_DKDV_PARAMS) { ftc_backward_dkdv<48>(FTC_DKDV_ARGS); }
LORI_KERNEL(flash_attention_tc_backward_dkdv_d48)

extern "C" __global__ void __launch_bounds__(FTC_THREADS) flash_attention_tc_forward_d64(FTC_FORWARD_PARAMS) { ftc_forward<64>(FTC_FORWARD_ARGS); }
LORI_KERNEL(flash_attention_tc_forward_d64)
extern "C" __global__ void __launch_bounds__(FTC_THREADS) flash_attention_tc_backward_dq_d64(FTC_DQ_PARAMS) { ftc_backward_dq<64>(FTC_DQ_ARGS); }
LORI_KERNEL(flash_attention_tc_backward_dq_d64)
extern "C" __global__ void __launch_bounds__(FTC_THREADS) flash_attention_tc_backward_dkdv_d64(FTC_DKDV_PARAMS) { ftc_backward_dkdv<64>(FTC_DKDV_ARGS); }
LORI_KERNEL(flash_attention_tc_backward_dkdv_d64)

extern "C" __global__ void __launch_bounds__(FTC_THREADS) flash_attention_tc_forward_d80(FTC_FORWARD_PARAMS) { ftc_forward<80>(FTC_FORWARD_ARGS); }
LORI_KERNEL(flash_attention_tc_forward_d80)
extern "C" __global__ void __launch_bounds__(FTC_THREADS) flash_attention_tc_backward_dq_d80(FTC_DQ_PARAMS) { ftc_backward_dq<80>(FTC_DQ_ARGS); }
LORI_KERNEL(flash_attention_tc_backward_dq_d80)
extern "C" __global__ void __launch_bounds__(FTC_THREADS) flash_attention_tc_backward_dkdv_d80(FTC_DKDV_PARAMS) { ftc_backward_dkdv<80>(FTC_DKDV_ARGS); }
LORI_KERNEL(flash_attention_tc_backward_dkdv_d80)

extern "C" __global__ void __launch_bounds__(FTC_THREADS) flash_attention_tc_forward_d96(FTC_FORWARD_PARAMS) { ftc_forward<96>(FTC_FORWARD_ARGS); }
LORI_KERNEL(flash_attention_tc_forward_d96)
extern "C" __global__ void __launch_bounds__(FTC_THREADS) flash_attention_tc_backward_dq_d96(FTC_DQ_PARAMS) { ftc_backward_dq<96>(FTC_DQ_ARGS); }
LORI_KERNEL(flash_attention_tc_backward_dq_d96)
extern "C" __global__ void __launch_bounds__(FTC_THREADS) flash_attention_tc_backward_dkdv_d96(FTC_DKDV_PARAMS) { ftc_backward_dkdv<96>(FTC_DKDV_ARGS); }
LORI_KERNEL(flash_attention_tc_backward_dkdv_d96)

extern "C" __global__ void __launch_bounds__(FTC_THREADS) flash_attention_tc_forward_d112(FTC_FORWARD_PARAMS) { ftc_forward<112>(FTC_FORWARD_ARGS); }
LORI_KERNEL(flash_attention_tc_forward_d112)
extern "C" __global__ void __launch_bounds__(FTC_THREADS) flash_attention_tc_backward_dq_d112(FTC_DQ_PARAMS) { ftc_backward_dq<112>(FTC_DQ_ARGS); }
LORI_KERNEL(flash_attention_tc_backward_dq_d112)
extern "C" __global__ void __launch_bounds__(FTC_THREADS) flash_attention_tc_backward_dkdv_d112(FTC_DKDV_PARAMS) { ftc_backward_dkdv<112>(FTC_DKDV_ARGS); }
LORI_KERNEL(flash_attention_tc_backward_dkdv_d112)

extern "C" __global__ void __launch_bounds__(FTC_THREADS) flash_attention_tc_forward_d128(FTC_FORWARD_PARAMS) { ftc_forward<128>(FTC_FORWARD_ARGS); }
LORI_KERNEL(flash_attention_tc_forward_d128)
extern "C" __global__ void __launch_bounds__(FTC_THREADS) flash_attention_tc_backward_dq_d128(FTC_DQ_PARAMS) { ftc_backward_dq<128>(FTC_DQ_ARGS); }
LORI_KERNEL(flash_attention_tc_backward_dq_d128)
extern "C" __global__ void __launch_bounds__(FTC_THREADS) flash_attention_tc_backward_dkdv_d128(FTC_DKDV_PARAMS) { ftc_backward_dkdv<128>(FTC_DKDV_ARGS); }
LORI_KERNEL(flash_attention_tc_backward_dkdv_d128)
