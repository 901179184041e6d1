using LoRI.Tensors;

namespace LoRI.Backend.Cpu;

/// <summary>
/// `lora_apply` on the CPU: y += scale * B (A x). Two parallel phases in one op: the shrink t = scale * x A^T
/// into scratch [N, Rank] (tiles of 4 rank rows x 64 tokens), then the expand y += t B^T over tiles of out rows.
/// A dense B goes through the MatMul tile kernel. A compact B is walked row by row (a gather of its few
/// non-zeros per row) for small N; for larger N each 16-row tile is unpacked into per-worker scratch once and
/// reused for all tokens, since the tile kernel then wins over the scalar gather.
/// </summary>
public sealed unsafe partial class CpuBackend : IAdapterOps
{
    private LoraJob? _loraJob;

    public void LoraApply(Tensor x, LoraFactors f, float scale, Tensor y)
    {
        ExpectF32("LoraApply", x, y);
        if (!(x.Cols == f.In && y.Cols == f.Out && x.Rows == y.Rows))
            throw Bad("LoraApply", $"x {x} and y {y} do not fit factors A [{f.Rank}, {f.In}], B [{f.Out}, {f.Rank}]");
        if (f.A.Backend != this) throw Bad("LoraApply", "the factors live on another backend");
        var job = _loraJob ??= new LoraJob(_pool.Workers);
        job.Set(x, f, scale, y);
        job.Phase = LoraJob.Stage.Shrink;
        _pool.Run(job, job.ShrinkItems);
        job.Phase = LoraJob.Stage.Expand;
        _pool.Run(job, job.ExpandItems);
    }

    private sealed class LoraJob(int workers) : ParallelJob
    {
        public enum Stage { Shrink, Expand }
        private const int RankTile = 4, TokenTile = 64, OutTile = 16;
        /// <summary>At or below this many tokens the compact B is walked sparsely; above, unpacked per tile.</summary>
        public const int SparseWalkMaxTokens = 4;

        private readonly float[][] _tiles = new float[workers][];
        private float[] _t = [];
        private Tensor _x = null!, _y = null!;
        private LoraFactors _f = null!;
        private float _scale;
        private int _n, _tokenTiles;
        public Stage Phase;

        public int ShrinkItems => (_f.Rank + RankTile - 1) / RankTile * _tokenTiles;
        public int ExpandItems => (_f.Out + OutTile - 1) / OutTile * _tokenTiles;

        public void Set(Tensor x, LoraFactors f, float scale, Tensor y)
        {
            _x = x; _f = f; _scale = scale; _y = y; _n = x.Rows;
            _tokenTiles = (_n + TokenTile - 1) / TokenTile;
            if (_t.Length < _n * f.Rank) _t = GC.AllocateUninitializedArray<float>(_n * f.Rank, pinned: true);
            if (f.Form == LoraBForm.Compact)
                for (int i = 0; i < _tiles.Length; i++)
                    if (_tiles[i] is null || _tiles[i].Length < OutTile * f.Rank)
                        _tiles[i] = GC.AllocateUninitializedArray<float>(OutTile * f.Rank, pinned: true);
        }

        public override void Execute(int begin, int end, int worker)
        {
            int r = _f.Rank;
            fixed (float* t = _t)
            {
                for (int item = begin; item < end; item++)
                {
                    int tile = item / _tokenTiles, nt = item % _tokenTiles;
                    int n0 = nt * TokenTile, n1 = Math.Min(_n, n0 + TokenTile);
                    if (Phase == Stage.Shrink)
                    {
                        int m0 = tile * RankTile, m1 = Math.Min(r, m0 + RankTile);
                        CpuOps.MatMulTile((float*)_x.Pointer, _f.In, (float*)_f.A.Pointer, 0, t, r, n0, n1, m0, m1, _scale, false);
                        continue;
                    }
                    int o0 = tile * OutTile, o1 = Math.Min(_f.Out, o0 + OutTile);
                    if (_f.Form == LoraBForm.Dense)
                        CpuOps.MatMulTile(t, r, (float*)_f.B!.Pointer, 0, (float*)_y.Pointer, _f.Out, n0, n1, o0, o1, 1f, true);
                    else if (_n <= SparseWalkMaxTokens)
                        CpuOps.LoraExpandCompact(t, r, (int*)_f.RowStart!.Pointer, (byte*)_f.Cols!.Pointer, (float*)_f.Values!.Pointer,
                            (float*)_y.Pointer, _f.Out, n0, n1, o0, o1);
                    else
                    {
                        fixed (float* tileBuf = _tiles[worker])
                        {
                            CpuOps.UnpackCompactRows((int*)_f.RowStart!.Pointer, (byte*)_f.Cols!.Pointer, (float*)_f.Values!.Pointer, r, o0, o1, tileBuf);
                            CpuOps.MatMulTile(t, r, tileBuf, o0, (float*)_y.Pointer, _f.Out, n0, n1, o0, o1, 1f, true);
                        }
                    }
                }
            }
        }
    }
}
