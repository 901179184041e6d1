using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using LoRI.Tensors;

namespace LoRI.Backend.Cpu;

/// <summary>
/// The reference backend: host memory, every op vectorised and split across cores by a WorkerPool.
/// Every other backend is held against this one. Ops allocate nothing after the first call at a given
/// shape (per-worker scratch grows once).
/// </summary>
public sealed unsafe partial class CpuBackend : IBackend
{
    private readonly WorkerPool _pool;
    private readonly MatMulJob _matmul;
    private readonly RowsJob _rows = new();
    private readonly AttentionJob _attention;

    public string Name => "cpu";
    public bool IsHostMemory => true;
    public WorkerPool Pool => _pool;

    public CpuBackend(WorkerPool? pool = null)
    {
        _pool = pool ?? WorkerPool.Shared;
        _matmul = new MatMulJob(_pool.Workers);
        _attention = new AttentionJob(_pool.Workers);
    }

    // ---- memory ----

    private sealed class NativeBlock(nint ptr) : IDisposable
    {
        private nint _ptr = ptr;
        public void Dispose()
        {
            var p = Interlocked.Exchange(ref _ptr, 0);
            if (p != 0) NativeMemory.AlignedFree((void*)p);
        }
    }

    public Tensor Allocate(DType dtype, params int[] shape)
    {
        long bytes = DTypes.ElementCount(shape) * dtype.Size();
        var p = (nint)NativeMemory.AlignedAlloc((nuint)Math.Max(bytes, 64), 64);
        NativeMemory.Clear((void*)p, (nuint)bytes);
        return new Tensor(this, dtype, shape, p, new NativeBlock(p));
    }

    public Tensor FromHost(nint data, DType dtype, int[] shape, IDisposable? keepAlive) =>
        new(this, dtype, shape, data, keepAlive);

    public void Upload<T>(ReadOnlySpan<T> src, Tensor dst) where T : unmanaged
    {
        CheckHostCopy<T>(src.Length, dst);
        src.CopyTo(new Span<T>((void*)dst.Pointer, src.Length));
    }

    public void Download<T>(Tensor src, Span<T> dst) where T : unmanaged
    {
        CheckHostCopy<T>(dst.Length, src);
        new ReadOnlySpan<T>((void*)src.Pointer, dst.Length).CopyTo(dst);
    }

    private static void CheckHostCopy<T>(int count, Tensor t) where T : unmanaged
    {
        if ((long)count * sizeof(T) != t.ByteSize)
            throw new ArgumentException($"copy of {count} x {typeof(T).Name} does not match tensor {t}");
    }

    public void Synchronize() { }

    public void Dispose() { }

    // ---- shape checks (the op layer asserts before it launches, as ggml's exported ops do) ----

    internal static ArgumentException Bad(string op, string what) => new($"{op}: {what}");

    private static void ExpectF32(string op, Tensor a)
    {
        if (a.DType != DType.F32) throw Bad(op, $"expected F32, found {a}");
    }

    private static void ExpectF32(string op, Tensor a, Tensor b) { ExpectF32(op, a); ExpectF32(op, b); }
    private static void ExpectF32(string op, Tensor a, Tensor b, Tensor c) { ExpectF32(op, a, b); ExpectF32(op, c); }
    private static void ExpectF32(string op, Tensor a, Tensor b, Tensor c, Tensor d) { ExpectF32(op, a, b); ExpectF32(op, c, d); }

    // ---- ops ----

    public void Embedding(Tensor table, Tensor ids, Tensor y)
    {
        ExpectF32("Embedding", y);
        if (!(ids.DType == DType.I32 && ids.Length == y.Rows))
            throw Bad("Embedding", $"ids {ids} vs output {y}");
        if (!(table.Cols == y.Cols))
            throw Bad("Embedding", $"table {table} vs output {y}");
        int d = y.Cols, v = table.Rows;
        var idSpan = ids.Span<int>();
        for (int i = 0; i < idSpan.Length; i++)
        {
            int id = idSpan[i];
            if ((uint)id >= (uint)v) throw new ArgumentOutOfRangeException(nameof(ids), $"token id {id} is outside the vocabulary [0, {v})");
            CpuOps.ToFloat(table.DType, table.Pointer, (long)id * d, CpuOps.AsSpan(y.Pointer, (long)i * d, d));
        }
    }

    public void RmsNorm(Tensor x, Tensor weight, float eps, Tensor y)
    {
        ExpectF32("RmsNorm", x, weight, y);
        if (!(x.Length == y.Length && weight.Length == x.Cols))
            throw Bad("RmsNorm", $"x {x}, weight {weight}, y {y}");
        _rows.Set(RowsJob.Kind.RmsNorm, x, weight, y, eps);
        _pool.Run(_rows, x.Rows, 4);
    }

    public void MatMul(Tensor x, Tensor w, Tensor y, float alpha = 1f, bool accumulate = false)
    {
        ExpectF32("MatMul", x, y);
        if (!(w.DType is DType.F32 or DType.BF16 or DType.F16))
            throw Bad("MatMul", $"weight {w} must be F32, F16 or BF16");
        if (!(x.Cols == w.Cols && y.Cols == w.Rows && x.Rows == y.Rows && w.Rank == 2))
            throw Bad("MatMul", $"x {x} times weight {w}^T does not give y {y}");
        _matmul.Set(x, w, y, alpha, accumulate);
        _pool.Run(_matmul, _matmul.Items);
    }

    public void Rope(Tensor x, int heads, int headDim, Tensor positions, Tensor invFreq)
    {
        ExpectF32("Rope", x, invFreq);
        if (!(x.Cols == heads * headDim && invFreq.Length == headDim / 2 && positions.Length == x.Rows && positions.DType == DType.I32))
            throw Bad("Rope", $"x {x}, heads {heads} x {headDim}, positions {positions}, invFreq {invFreq}");
        _rows.Set(RowsJob.Kind.Rope, x, invFreq, positions, 0, heads, headDim);
        _pool.Run(_rows, x.Rows, 4);
    }

    public void KvStore(Tensor src, Tensor cache, Tensor slots, Tensor positions)
    {
        ExpectF32("KvStore", src, cache);
        if (!(cache.Rank == 3 && cache.Cols == src.Cols && slots.Length == src.Rows && positions.Length == src.Rows))
            throw Bad("KvStore", $"src {src}, cache {cache}, slots {slots}, positions {positions}");
        int w = src.Cols, s = cache.Shape[0], t = cache.Shape[1];
        var sl = slots.Span<int>(); var ps = positions.Span<int>();
        for (int i = 0; i < sl.Length; i++)
        {
            if ((uint)sl[i] >= (uint)s || (uint)ps[i] >= (uint)t)
                throw new ArgumentOutOfRangeException(nameof(positions), $"KvStore: slot {sl[i]} position {ps[i]} outside cache {cache}");
            CpuOps.AsSpan(src.Pointer, (long)i * w, w).CopyTo(CpuOps.AsSpan(cache.Pointer, ((long)sl[i] * t + ps[i]) * w, w));
        }
    }

    public void Attention(Tensor q, Tensor kCache, Tensor vCache, Tensor slots, Tensor positions,
                          int heads, int kvHeads, int headDim, Tensor y)
    {
        ExpectF32("Attention", q, kCache, vCache, y);
        if (!(q.Cols == heads * headDim && y.Length == q.Length && kCache.Rank == 3 && kCache.Cols == kvHeads * headDim
               && vCache.Length == kCache.Length && heads % kvHeads == 0 && slots.Length == q.Rows && positions.Length == q.Rows))
            throw Bad("Attention", $"q {q}, k {kCache}, v {vCache}, heads {heads}/{kvHeads} x {headDim}, y {y}");
        _attention.Set(q, kCache, vCache, slots, positions, heads, kvHeads, headDim, y);
        _pool.Run(_attention, q.Rows * heads);
    }

    public void SwiGlu(Tensor gate, Tensor up, Tensor y)
    {
        ExpectF32("SwiGlu", gate, up, y);
        if (!(gate.Length == up.Length && up.Length == y.Length))
            throw Bad("SwiGlu", $"gate {gate}, up {up}, y {y}");
        _rows.Set(RowsJob.Kind.SwiGlu, gate, up, y, 0);
        _pool.Run(_rows, gate.Rows, 4);
    }

    public void Add(Tensor a, Tensor b, Tensor y)
    {
        ExpectF32("Add", a, b, y);
        if (!(a.Length == b.Length && b.Length == y.Length))
            throw Bad("Add", $"a {a}, b {b}, y {y}");
        TensorPrimitives.Add(CpuOps.AsSpan(a.Pointer, 0, (int)a.Length), CpuOps.AsSpan(b.Pointer, 0, (int)b.Length),
            CpuOps.AsSpan(y.Pointer, 0, (int)y.Length));
    }

    public void GatherRows(Tensor src, Tensor rows, Tensor dst)
    {
        ExpectF32("GatherRows", src, dst);
        if (!(src.Cols == dst.Cols && rows.Length == dst.Rows && rows.DType == DType.I32))
            throw Bad("GatherRows", $"src {src}, rows {rows}, dst {dst}");
        int w = src.Cols;
        var r = rows.Span<int>();
        for (int i = 0; i < r.Length; i++)
        {
            if ((uint)r[i] >= (uint)src.Rows) throw new ArgumentOutOfRangeException(nameof(rows), $"GatherRows: row {r[i]} outside {src}");
            CpuOps.AsSpan(src.Pointer, (long)r[i] * w, w).CopyTo(CpuOps.AsSpan(dst.Pointer, (long)i * w, w));
        }
    }

    // ---- jobs ----

    /// <summary>Row-parallel elementwise ops: each item is one row.</summary>
    private sealed class RowsJob : ParallelJob
    {
        public enum Kind { RmsNorm, Rope, SwiGlu }
        private Kind _kind;
        private Tensor _a = null!, _b = null!, _c = null!;
        private float _eps;
        private int _heads, _headDim;

        public void Set(Kind kind, Tensor a, Tensor b, Tensor c, float eps, int heads = 0, int headDim = 0)
        {
            _kind = kind; _a = a; _b = b; _c = c; _eps = eps; _heads = heads; _headDim = headDim;
        }

        public override void Execute(int begin, int end, int worker)
        {
            int d = _a.Cols;
            for (int r = begin; r < end; r++)
            {
                switch (_kind)
                {
                    case Kind.RmsNorm:
                        CpuOps.RmsNormRow(CpuOps.AsSpan(_a.Pointer, (long)r * d, d), CpuOps.AsSpan(_b.Pointer, 0, d), _eps,
                            CpuOps.AsSpan(_c.Pointer, (long)r * d, d));
                        break;
                    case Kind.Rope:
                        int pos = ((int*)_c.Pointer)[r];
                        var inv = CpuOps.AsSpan(_b.Pointer, 0, _headDim / 2);
                        for (int h = 0; h < _heads; h++)
                            CpuOps.RopeHead(CpuOps.AsSpan(_a.Pointer, (long)r * d + h * _headDim, _headDim), pos, inv);
                        break;
                    case Kind.SwiGlu:
                        CpuOps.SwiGlu(CpuOps.AsSpan(_a.Pointer, (long)r * d, d), CpuOps.AsSpan(_b.Pointer, (long)r * d, d),
                            CpuOps.AsSpan(_c.Pointer, (long)r * d, d));
                        break;
                }
            }
        }
    }

    /// <summary>
    /// y = alpha x W^T, tiled: items are (tile of 16 weight rows) x (tile of 64 activation rows), so a
    /// bf16/f16 weight tile is converted to F32 once into per-worker scratch and reused for 64 tokens.
    /// </summary>
    private sealed class MatMulJob(int workers) : ParallelJob
    {
        private const int WeightTile = 16, TokenTile = 64;
        private readonly float[][] _scratch = new float[workers][];
        private Tensor _x = null!, _w = null!, _y = null!;
        private float _alpha;
        private bool _accumulate;
        private int _mTiles, _nTiles;
        public int Items => _mTiles * _nTiles;

        public void Set(Tensor x, Tensor w, Tensor y, float alpha, bool accumulate)
        {
            _x = x; _w = w; _y = y; _alpha = alpha; _accumulate = accumulate;
            _mTiles = (w.Rows + WeightTile - 1) / WeightTile;
            _nTiles = (x.Rows + TokenTile - 1) / TokenTile;
            if (w.DType != DType.F32)
                for (int i = 0; i < _scratch.Length; i++)
                    if (_scratch[i] is null || _scratch[i].Length < WeightTile * w.Cols)
                        _scratch[i] = GC.AllocateUninitializedArray<float>(WeightTile * w.Cols, pinned: true);
        }

        public override void Execute(int begin, int end, int worker)
        {
            int k = _w.Cols, m = _w.Rows, n = _x.Rows;
            for (int item = begin; item < end; item++)
            {
                int mt = item / _nTiles, nt = item % _nTiles;
                int m0 = mt * WeightTile, m1 = Math.Min(m, m0 + WeightTile);
                int n0 = nt * TokenTile, n1 = Math.Min(n, n0 + TokenTile);
                float* wTile;
                if (_w.DType == DType.F32) wTile = (float*)_w.Pointer + (long)m0 * k;
                else
                {
                    var s = _scratch[worker];
                    CpuOps.ToFloat(_w.DType, _w.Pointer, (long)m0 * k, s.AsSpan(0, (m1 - m0) * k));
                    wTile = (float*)Unsafe.AsPointer(ref s[0]);
                }
                CpuOps.MatMulTile((float*)_x.Pointer, k, wTile, m0, (float*)_y.Pointer, m, n0, n1, m0, m1, _alpha, _accumulate);
            }
        }
    }

    /// <summary>One item per (token, query head).</summary>
    private sealed class AttentionJob(int workers) : ParallelJob
    {
        private readonly float[][] _scores = new float[workers][];
        private Tensor _q = null!, _k = null!, _v = null!, _slots = null!, _pos = null!, _y = null!;
        private int _heads, _kvHeads, _headDim;

        public void Set(Tensor q, Tensor k, Tensor v, Tensor slots, Tensor pos, int heads, int kvHeads, int headDim, Tensor y)
        {
            _q = q; _k = k; _v = v; _slots = slots; _pos = pos; _heads = heads; _kvHeads = kvHeads; _headDim = headDim; _y = y;
            int t = k.Shape[1];
            for (int i = 0; i < _scores.Length; i++)
                if (_scores[i] is null || _scores[i].Length < t) _scores[i] = new float[t];
        }

        public override void Execute(int begin, int end, int worker)
        {
            int s = _k.Shape[0], t = _k.Shape[1], kvW = _kvHeads * _headDim, group = _heads / _kvHeads;
            float scale = 1f / MathF.Sqrt(_headDim);
            var scores = _scores[worker].AsSpan();
            for (int item = begin; item < end; item++)
            {
                int tok = item / _heads, h = item % _heads;
                int slot = ((int*)_slots.Pointer)[tok], pos = ((int*)_pos.Pointer)[tok];
                if ((uint)slot >= (uint)s || (uint)pos >= (uint)t)
                    throw new ArgumentOutOfRangeException(nameof(pos), $"Attention: slot {slot} position {pos} outside cache {_k}");
                long baseOff = (long)slot * t * kvW + (h / group) * _headDim;
                CpuOps.AttendHead(CpuOps.AsSpan(_q.Pointer, (long)tok * _q.Cols + h * _headDim, _headDim),
                    (float*)_k.Pointer + baseOff, (float*)_v.Pointer + baseOff, pos + 1, kvW, scale, scores,
                    CpuOps.AsSpan(_y.Pointer, (long)tok * _y.Cols + h * _headDim, _headDim));
            }
        }
    }
}
