// flash_attention: causal grouped-query attention with an online softmax (no score matrix in memory),
// forward with the log-sum-exp saved, split-KV decoding with a combine, and the backward.
//
// Maths (IBackend.Attention, CpuOps.AttentionForwardWithLse / AttentionBackward): query row i at position
// p_i, query head h, KV head h / group (group = heads / kv_heads), scale = 1/sqrt(hd):
//   s_j = scale q.k_j (j <= p_i), lse = log sum_j exp(s_j), P_j = exp(s_j - lse), y = sum_j P_j v_j.
// Backward: dP_j = dy.v_j, D = dy.y (= sum_j P_j dP_j), dS_j = P_j (dP_j - D):
//   dq = scale sum_j dS_j k_j;  dk_j = scale sum dS_j q;  dv_j = sum P_j dy  (sums over the group's heads
//   and every query that sees j).
//
// Where keys come from: with `slots` non-null, row i reads the KV cache [s, t, kv_heads * hd] of slot
// slots[i] at positions 0..positions[i] (inference). With `slots` null, rows are a batch of sequences of
// t tokens (training): row i is position i % t of sequence i / t and its keys are the rows of k and v
// [N, kv_heads * hd] of that sequence, so the same kernel indexes both as base + (slot * t + j) * width.
//
// flash_attention_forward: grid (N, kv_heads, splits), 128 threads. A block takes one query row and the
//   `group` query heads of one KV head together (each K/V tile is read once for all of them), walks its
//   share of the positions (split `sp` of `splits`, in tiles of 32) with the online softmax, and writes
//   y and lse directly (splits == 1) or its unnormalised partial output with (max, sum) into `part`
//   (flash-decoding; then flash_attention_combine). Needs group * hd <= 2048. Dynamic shared memory: see
//   each kernel's first comment (CudaBackend.Attention.cs computes the same sizes). A row whose slot or position is out of range gets NaN.
// flash_attention_combine: grid (N, heads), any multiple of 32 threads: merges the splits.
// attention_backward_dot: D[r] = dy[r, :] . y[r, :] for each of the N * heads rows of hd; one warp per row.
// flash_attention_backward_dq: grid (N, kv_heads), 128 threads, like the forward; dq written (=).
// flash_attention_backward_dkdv: grid (N, kv_heads), 128 threads; block j owns key row j of KV head
//   kvh and walks the later queries of its sequence, head by head; dk, dv written (=). Training layout only.
#include "../include/lori_cuda.cuh"

#define FA_THREADS 128
#define FA_TK 32
#define FA_ACC 16   // accumulators per thread: group * hd <= FA_THREADS * FA_ACC = 2048
#define FA_NEG_INF (-__int_as_float(0x7f800000))
#define FA_NAN (__int_as_float(0x7fc00000))


__device__ __forceinline__ bool fa_row(const int* slots, const int* positions, int i, int s, int t, int& slot, int& pos)
{
    if (slots) { slot = slots[i]; pos = positions[i]; }
    else { slot = i / t; pos = i % t; }
    return slot >= 0 && slot < s && pos >= 0 && pos < t;
}

extern "C" __global__ void flash_attention_forward(const float* q, const float* k, const float* v, const int* slots, const int* positions,
                                                   float* y, float* lse, float* part, int heads, int kv_heads, int hd, int s, int t, int splits, float scale)
{
    // shared: q [g][hd], k tile [FA_TK][hd + 1] (padded: threads reading different rows hit different
    // banks), v tile [FA_TK][hd], p [g][FA_TK], statistics (max, sum, rescale) [3][g]
    LORI_DYNAMIC_SHARED(float, smem);
    const int i = blockIdx.x, kvh = blockIdx.y, sp = blockIdx.z;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int group = heads / kv_heads, h0 = kvh * group, ks_stride = hd + 1;
    int slot, pos;
    if (!fa_row(slots, positions, i, s, t, slot, pos))
    {
        if (splits == 1)
        {
            for (int e = tid; e < group * hd; e += FA_THREADS) y[((long long)i * heads + h0) * hd + e] = FA_NAN;
            if (lse && tid < group) lse[(long long)i * heads + h0 + tid] = FA_NAN;
        }
        return;  // with splits, the combine writes the NaN row
    }
    const int w = kv_heads * hd;
    const float* kb = k + (long long)slot * t * w + kvh * hd;
    const float* vb = v + (long long)slot * t * w + kvh * hd;
    const int len = pos + 1;
    const int chunk = ((len + splits - 1) / splits + FA_TK - 1) / FA_TK * FA_TK;
    const int j0 = sp * chunk, j1 = min(len, j0 + chunk);

    float* qs = smem;
    float* ks = qs + group * hd;
    float* vs = ks + FA_TK * ks_stride;
    float* ps = vs + FA_TK * hd;
    float* st = ps + group * FA_TK;  // st[g] max, st[group + g] sum, st[2 group + g] rescale of this tile

    const float* qr = q + ((long long)i * heads + h0) * hd;
    for (int e = tid; e < group * hd; e += FA_THREADS) qs[e] = qr[e];
    for (int g = tid; g < group; g += FA_THREADS) { st[g] = FA_NEG_INF; st[group + g] = 0.f; }
    float acc[FA_ACC];
    for (int c = 0; c < FA_ACC; c++) acc[c] = 0.f;
    __syncthreads();

    for (int jt = j0; jt < j1; jt += FA_TK)
    {
        const int cnt = min(FA_TK, j1 - jt);
        for (int e = tid; e < FA_TK * hd; e += FA_THREADS)
        {
            const int r = e / hd, d = e % hd;
            const bool in = r < cnt;
            ks[r * ks_stride + d] = in ? kb[(long long)(jt + r) * w + d] : 0.f;
            vs[e] = in ? vb[(long long)(jt + r) * w + d] : 0.f;
        }
        __syncthreads();
        for (int p = tid; p < group * FA_TK; p += FA_THREADS)
        {
            const int g = p / FA_TK, j = p % FA_TK;
            float sc = FA_NEG_INF;
            if (j < cnt)
            {
                float dot = 0.f;
                for (int d = 0; d < hd; d++) dot += qs[g * hd + d] * ks[j * ks_stride + d];
                sc = dot * scale;
            }
            ps[p] = sc;
        }
        __syncthreads();
        // online softmax, one warp per query head, one lane per position of the tile
        for (int g = warp; g < group; g += FA_THREADS / 32)
        {
            const float sc = ps[g * FA_TK + lane];
            const float mold = st[g];
            const float mnew = fmaxf(mold, warp_max(sc));
            const float p = sc == FA_NEG_INF ? 0.f : expf(sc - mnew);
            const float sum = warp_sum(p);
            ps[g * FA_TK + lane] = p;
            __syncwarp();
            if (lane == 0)
            {
                const float a = mold == FA_NEG_INF ? 0.f : expf(mold - mnew);
                st[g] = mnew;
                st[group + g] = st[group + g] * a + sum;
                st[2 * group + g] = a;
            }
        }
        __syncthreads();
        for (int c = 0; c < FA_ACC; c++)
        {
            const int e = tid + c * FA_THREADS;
            if (e >= group * hd) break;
            const int g = e / hd, d = e % hd;
            float o = acc[c] * st[2 * group + g];
            for (int j = 0; j < cnt; j++) o += ps[g * FA_TK + j] * vs[j * hd + d];
            acc[c] = o;
        }
        __syncthreads();
    }

    for (int c = 0; c < FA_ACC; c++)
    {
        const int e = tid + c * FA_THREADS;
        if (e >= group * hd) break;
        const int g = e / hd, d = e % hd;
        const long long row = (long long)i * heads + h0 + g;
        if (splits == 1) y[row * hd + d] = acc[c] / st[group + g];
        else part[(row * splits + sp) * hd + d] = acc[c];
    }
    if (tid < group)
    {
        const long long row = (long long)i * heads + h0 + tid;
        if (splits == 1)
        {
            if (lse) lse[row] = st[tid] + logf(st[group + tid]);
        }
        else
        {
            float* ml = part + (long long)gridDim.x * heads * splits * hd + (row * splits + sp) * 2;
            ml[0] = st[tid];
            ml[1] = st[group + tid];
        }
    }
}
LORI_KERNEL(flash_attention_forward)

extern "C" __global__ void flash_attention_combine(const float* part, const int* slots, const int* positions, float* y, float* lse,
                                                   int heads, int hd, int s, int t, int splits)
{
    const int i = blockIdx.x, h = blockIdx.y;
    const long long row = (long long)i * heads + h;
    int slot, pos;
    if (!fa_row(slots, positions, i, s, t, slot, pos))
    {
        for (int d = threadIdx.x; d < hd; d += blockDim.x) y[row * hd + d] = FA_NAN;
        if (lse && threadIdx.x == 0) lse[row] = FA_NAN;
        return;
    }
    const float* ml = part + (long long)gridDim.x * heads * splits * hd + row * splits * 2;
    float mx = FA_NEG_INF;
    for (int sp = 0; sp < splits; sp++) mx = fmaxf(mx, ml[2 * sp]);
    float total = 0.f;
    for (int sp = 0; sp < splits; sp++)
        if (ml[2 * sp + 1] > 0.f) total += ml[2 * sp + 1] * expf(ml[2 * sp] - mx);
    const float inv = 1.0f / total;
    for (int d = threadIdx.x; d < hd; d += blockDim.x)
    {
        float o = 0.f;
        for (int sp = 0; sp < splits; sp++)
            if (ml[2 * sp + 1] > 0.f) o += part[(row * splits + sp) * hd + d] * expf(ml[2 * sp] - mx);
        y[row * hd + d] = o * inv;
    }
    if (lse && threadIdx.x == 0) lse[row] = mx + logf(total);
}
LORI_KERNEL(flash_attention_combine)

extern "C" __global__ void attention_backward_dot(const float* dy, const float* y, float* dsum, int rows, int hd)
{
    const int lane = threadIdx.x & 31;
    const int warps = (gridDim.x * blockDim.x) >> 5;
    for (int r = (blockIdx.x * blockDim.x + threadIdx.x) >> 5; r < rows; r += warps)
    {
        float a = 0.f;
        for (int d = lane; d < hd; d += 32) a += dy[(long long)r * hd + d] * y[(long long)r * hd + d];
        a = warp_sum(a);
        if (lane == 0) dsum[r] = a;
    }
}
LORI_KERNEL(attention_backward_dot)

extern "C" __global__ void flash_attention_backward_dq(const float* q, const float* k, const float* v, const float* dy, const float* lse, const float* dsum,
                                                       float* dq, int heads, int kv_heads, int hd, int t, float scale)
{
    // shared: q, dy [g][hd], k tile, v tile [FA_TK][hd + 1], dS [g][FA_TK], lse and D [2][g]
    LORI_DYNAMIC_SHARED(float, smem);
    const int i = blockIdx.x, kvh = blockIdx.y, tid = threadIdx.x;
    const int group = heads / kv_heads, h0 = kvh * group, stride = hd + 1, w = kv_heads * hd;
    const int seq = i / t, pos = i % t;
    const float* kb = k + (long long)seq * t * w + kvh * hd;
    const float* vb = v + (long long)seq * t * w + kvh * hd;
    float* qs = smem;
    float* dys = qs + group * hd;
    float* ks = dys + group * hd;
    float* vs = ks + FA_TK * stride;
    float* ds = vs + FA_TK * stride;
    float* ld = ds + group * FA_TK;  // ld[g] lse, ld[group + g] D
    const long long base = ((long long)i * heads + h0) * hd;
    for (int e = tid; e < group * hd; e += FA_THREADS) { qs[e] = q[base + e]; dys[e] = dy[base + e]; }
    for (int g = tid; g < group; g += FA_THREADS)
    {
        ld[g] = lse[(long long)i * heads + h0 + g];
        ld[group + g] = dsum[(long long)i * heads + h0 + g];
    }
    float acc[FA_ACC];
    for (int c = 0; c < FA_ACC; c++) acc[c] = 0.f;
    __syncthreads();
    for (int jt = 0; jt <= pos; jt += FA_TK)
    {
        const int cnt = min(FA_TK, pos + 1 - jt);
        for (int e = tid; e < FA_TK * hd; e += FA_THREADS)
        {
            const int r = e / hd, d = e % hd;
            const bool in = r < cnt;
            ks[r * stride + d] = in ? kb[(long long)(jt + r) * w + d] : 0.f;
            vs[r * stride + d] = in ? vb[(long long)(jt + r) * w + d] : 0.f;
        }
        __syncthreads();
        for (int p = tid; p < group * FA_TK; p += FA_THREADS)
        {
            const int g = p / FA_TK, j = p % FA_TK;
            float dsv = 0.f;
            if (j < cnt)
            {
                float sdot = 0.f, pdot = 0.f;
                for (int d = 0; d < hd; d++)
                {
                    sdot += qs[g * hd + d] * ks[j * stride + d];
                    pdot += dys[g * hd + d] * vs[j * stride + d];
                }
                const float pj = expf(sdot * scale - ld[g]);
                dsv = pj * (pdot - ld[group + g]) * scale;
            }
            ds[p] = dsv;
        }
        __syncthreads();
        for (int c = 0; c < FA_ACC; c++)
        {
            const int e = tid + c * FA_THREADS;
            if (e >= group * hd) break;
            const int g = e / hd, d = e % hd;
            float o = acc[c];
            for (int j = 0; j < cnt; j++) o += ds[g * FA_TK + j] * ks[j * stride + d];
            acc[c] = o;
        }
        __syncthreads();
    }
    for (int c = 0; c < FA_ACC; c++)
    {
        const int e = tid + c * FA_THREADS;
        if (e >= group * hd) break;
        dq[base + e] = acc[c];
    }
}
LORI_KERNEL(flash_attention_backward_dq)

extern "C" __global__ void flash_attention_backward_dkdv(const float* q, const float* k, const float* v, const float* dy, const float* lse, const float* dsum,
                                                         float* dk, float* dv, int heads, int kv_heads, int hd, int t, float scale)
{
    // shared: k row, v row [2][hd]; q tile, dy tile [FA_TK][hd]; P, dS [2][FA_TK]
    LORI_DYNAMIC_SHARED(float, smem);
    const int j = blockIdx.x, kvh = blockIdx.y, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int group = heads / kv_heads, h0 = kvh * group, w = kv_heads * hd;
    const int seq = j / t, jp = j % t;
    float* kr = smem;
    float* vr = kr + hd;
    float* qt = vr + hd;
    float* dyt = qt + FA_TK * hd;
    float* pt = dyt + FA_TK * hd;
    float* dst = pt + FA_TK;
    const long long krow = (long long)j * w + kvh * hd;
    for (int d = tid; d < hd; d += FA_THREADS) { kr[d] = k[krow + d]; vr[d] = v[krow + d]; }
    float ak[2] = {0.f, 0.f}, av[2] = {0.f, 0.f};  // d = tid, tid + 128 (hd <= 256)
    __syncthreads();
    for (int g = 0; g < group; g++)
    {
        const int h = h0 + g;
        for (int it = jp; it < t; it += FA_TK)
        {
            const int cnt = min(FA_TK, t - it);
            for (int e = tid; e < FA_TK * hd; e += FA_THREADS)
            {
                const int r = e / hd, d = e % hd;
                const long long qrow = ((long long)(seq * t + it + r) * heads + h) * hd + d;
                qt[e] = r < cnt ? q[qrow] : 0.f;
                dyt[e] = r < cnt ? dy[qrow] : 0.f;
            }
            __syncthreads();
            // one warp per query row: P = exp(scale q.k - lse), dS = P (dy.v - D) scale
            for (int r = warp; r < FA_TK; r += FA_THREADS / 32)
            {
                float sdot = 0.f, pdot = 0.f;
                for (int d = lane; d < hd; d += 32)
                {
                    sdot += qt[r * hd + d] * kr[d];
                    pdot += dyt[r * hd + d] * vr[d];
                }
                sdot = warp_sum(sdot);
                pdot = warp_sum(pdot);
                if (lane == 0)
                {
                    float pj = 0.f, dsv = 0.f;
                    if (r < cnt)
                    {
                        const long long row = (long long)(seq * t + it + r) * heads + h;
                        pj = expf(sdot * scale - lse[row]);
                        dsv = pj * (pdot - dsum[row]) * scale;
                    }
                    pt[r] = pj;
                    dst[r] = dsv;
                }
            }
            __syncthreads();
            for (int c = 0; c < 2; c++)
            {
                const int d = tid + c * FA_THREADS;
                if (d >= hd) break;
                float a = ak[c], b = av[c];
                for (int r = 0; r < cnt; r++)
                {
                    a += dst[r] * qt[r * hd + d];
                    b += pt[r] * dyt[r * hd + d];
                }
                ak[c] = a;
                av[c] = b;
            }
            __syncthreads();
        }
    }
    for (int c = 0; c < 2; c++)
    {
        const int d = tid + c * FA_THREADS;
        if (d >= hd) break;
        dk[krow + d] = ak[c];
        dv[krow + d] = av[c];
    }
}
LORI_KERNEL(flash_attention_backward_dkdv)
