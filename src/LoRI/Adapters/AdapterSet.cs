using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using LoRI.Backend;
using LoRI.Model;
using LoRI.Tensors;

namespace LoRI.Adapters;

/// <summary>
/// Adapters attached to a loaded model, each with a user weight w_i, either
///  - unmerged: an <see cref="ILinearHook"/> adding sum_i w_i s_i B_i (A_i x) after each projection's base MatMul
///    through the fused `lora_apply` op (B compact when sparse, dense otherwise); weights can be changed with
///    <see cref="SetWeight"/> at no cost; or
///  - merged: every touched projection W replaced by a new tensor W + sum_i w_i s_i B_i A_i, computed in fp32
///    and stored in W's dtype; the original tensors are kept and put back by <see cref="Detach"/> bit for bit.
/// Detach (or Dispose) leaves the model exactly as it was, so adapters can be switched without reloading the
/// base weights. Detach before disposing the model.
/// </summary>
public sealed class AdapterSet : ILinearAdapterHook, IDisposable
{
    /// <summary>The set attached to each model (at most one, so merges never stack and detach in the wrong order).</summary>
    private static readonly ConditionalWeakTable<LlamaModel, AdapterSet> AttachedTo = new();

    private readonly LlamaModel _model;
    private readonly List<(LoraAdapter Adapter, float Weight)> _adapters;
    private readonly Slot[][][] _slots;                  // [layer][proj] -> adapters touching it (unmerged)
    private readonly LoraTerm[][][] _terms;              // [layer][proj] -> the slots of non-zero scale, as the linear op takes them
    private readonly List<(int Layer, Proj Proj, Tensor Original)> _originals = new();
    private readonly Tensor? _scratch;                   // generic path only: F32 [MaxTokensPerForward, max rank]
    private readonly Dictionary<(int Tokens, int Rank), Tensor> _scratchViews = new();
    private bool _attached;

    private sealed class Slot(int adapter, LoraFactors factors, float moduleScale)
    {
        public int Adapter { get; } = adapter;
        public LoraFactors Factors { get; } = factors;
        public float ModuleScale { get; } = moduleScale;
        public float Scale;
    }

    public bool Merged { get; }
    public IReadOnlyList<(LoraAdapter Adapter, float Weight)> Adapters => _adapters;

    private AdapterSet(LlamaModel model, List<(LoraAdapter, float)> adapters, bool merge, LoraBForm? form)
    {
        _model = model;
        _adapters = adapters;
        Merged = merge;
        var c = model.Config;
        _slots = new Slot[c.NumLayers][][];
        _terms = new LoraTerm[c.NumLayers][][];
        for (int l = 0; l < c.NumLayers; l++)
        {
            _slots[l] = new Slot[7][];
            _terms[l] = new LoraTerm[7][];
            for (int p = 0; p < 7; p++)
            {
                _slots[l][p] = [];
                _terms[l][p] = [];
            }
        }
        if (merge) return;
        int maxRank = 0;
        try
        {
            for (int i = 0; i < adapters.Count; i++)
                foreach (var m in adapters[i].Item1.Modules)
                {
                    // The compact form indexes columns with a byte: a larger rank (e.g. after a cat merge) stays dense.
                    var f = LoraFactors.Create(model.Backend, m.A, m.B, m.Rank, m.In, m.Out,
                        model.Backend is not IAdapterOps || m.Rank > 256 ? LoraBForm.Dense : form);
                    var s = new Slot(i, f, m.Scale) { Scale = m.Scale * adapters[i].Item2 };
                    ref var list = ref _slots[m.Layer][(int)m.Proj];
                    list = [.. list, s];
                    maxRank = Math.Max(maxRank, m.Rank);
                }
            if (model.Backend is not IAdapterOps)
                _scratch = model.Backend.Allocate(DType.F32, model.MaxTokensPerForward, Math.Max(1, maxRank));
            RebuildTerms();
        }
        catch
        {
            DisposeFactors();
            throw;
        }
    }

    /// <summary>
    /// Attaches adapters to a model (which must have none attached): unmerged as its Hook, or merged into its
    /// weights. Each adapter is checked against the model's shapes first. <paramref name="form"/> forces the B
    /// form of the unmerged path (null: compact for sparse B, dense otherwise).
    /// </summary>
    public static AdapterSet Attach(LlamaModel model, IReadOnlyList<(LoraAdapter Adapter, float Weight)> adapters, bool merge,
                                    LoraBForm? form = null)
    {
        if (adapters.Count == 0) throw new ArgumentException("no adapter to attach");
        if (model.Hook is not null || AttachedTo.TryGetValue(model, out _))
            throw new InvalidOperationException("the model already has adapters attached; detach them first");
        foreach (var (a, w) in adapters)
        {
            a.ValidateFor(model.Config);
            if (!float.IsFinite(w)) throw new ArgumentException($"adapter weight {w} is not a finite number");
        }
        var set = new AdapterSet(model, adapters.ToList(), merge, form);
        if (merge) set.MergeIntoWeights();
        else model.Hook = set;
        set._attached = true;
        AttachedTo.AddOrUpdate(model, set);
        return set;
    }

    /// <summary>Changes adapter <paramref name="index"/>'s weight (unmerged only).</summary>
    public void SetWeight(int index, float weight)
    {
        if (Merged) throw new InvalidOperationException("the adapters are merged into the weights; detach and attach again to change a weight");
        if ((uint)index >= (uint)_adapters.Count) throw new ArgumentOutOfRangeException(nameof(index));
        _adapters[index] = (_adapters[index].Adapter, weight);
        foreach (var layer in _slots)
            foreach (var list in layer)
                foreach (var s in list)
                    if (s.Adapter == index) s.Scale = s.ModuleScale * weight;
        RebuildTerms();
    }

    private void RebuildTerms()
    {
        for (int l = 0; l < _slots.Length; l++)
            for (int p = 0; p < 7; p++)
                _terms[l][p] = _slots[l][p].Where(s => s.Scale != 0).Select(s => new LoraTerm(s.Factors, s.Scale)).ToArray();
    }

    /// <summary>
    /// The projection's whole linear op: y = x W^T + sum_i w_i s_i B_i (A_i x) through <see cref="LoraOps.Linear"/>,
    /// so a backend with <see cref="ILinearAdapterOps"/> folds the adapters into its base GEMM.
    /// </summary>
    public void Linear(int layer, Proj proj, Tensor x, Tensor w, Tensor y)
    {
        var terms = _terms[layer][(int)proj];
        if (_model.Backend is ILinearAdapterOps ops)
        {
            ops.LinearWithAdapters(x, w, terms, y);
            return;
        }
        _model.Backend.MatMul(x, w, y);
        Apply(layer, proj, x, y);
    }

    public void Apply(int layer, Proj proj, Tensor x, Tensor y)
    {
        foreach (var s in _slots[layer][(int)proj])
            if (s.Scale != 0) LoraOps.Apply(_model.Backend, x, s.Factors, s.Scale, y, ScratchFor(x.Rows, s.Factors.Rank));
    }

    /// <summary>A [tokens, rank] view of the generic path's scratch, made once per shape (null on backends with the fused op).</summary>
    private Tensor? ScratchFor(int tokens, int rank)
    {
        if (_scratch is null) return null;
        if (!_scratchViews.TryGetValue((tokens, rank), out var v))
            _scratchViews[(tokens, rank)] = v = _scratch.View(0, tokens, rank);
        return v;
    }

    private void MergeIntoWeights()
    {
        var c = _model.Config;
        var be = _model.Backend;
        for (int l = 0; l < c.NumLayers; l++)
            foreach (var p in Projs.All)
            {
                var terms = new List<(LoraModule M, float Scale)>();
                foreach (var (a, w) in _adapters)
                    if (a[l, p] is { } m && w != 0) terms.Add((m, m.Scale * w));
                if (terms.Count == 0) continue;
                var lw = _model.Weights.Layers[l];
                var original = lw[p];
                var merged = MergedWeight(be, original, terms);
                _originals.Add((l, p, original));
                lw[p] = merged;
            }
    }

    /// <summary>W + sum scale_i B_i A_i, row by row in fp32, rounded once to W's dtype, in a new tensor.</summary>
    public static Tensor MergedWeight(IBackend be, Tensor w, IReadOnlyList<(LoraModule M, float Scale)> terms)
    {
        int outDim = w.Rows, inDim = w.Cols;
        var dt = w.DType;
        var bytes = new byte[w.ByteSize];
        be.Download<byte>(w, bytes);
        Parallel.For(0, outDim, () => new float[inDim], (o, _, row) =>
        {
            var raw = bytes.AsSpan((int)((long)o * inDim * dt.Size()), inDim * dt.Size());
            switch (dt)
            {
                case DType.F32: MemoryMarshal.Cast<byte, float>(raw).CopyTo(row); break;
                case DType.BF16: Bf16.ToFloat(MemoryMarshal.Cast<byte, ushort>(raw), row); break;
                case DType.F16: F16.ToFloat(MemoryMarshal.Cast<byte, ushort>(raw), row); break;
                default: throw new UnsupportedException($"cannot merge into a {dt} weight");
            }
            MergedModel.AddDelta(row, o, terms);
            MergedModel.Encode(row, dt, raw);
            return row;
        }, _ => { });
        var t = be.Allocate(dt, outDim, inDim);
        be.Upload<byte>(bytes, t);
        return t;
    }

    /// <summary>Removes the adapters: the hook is cleared, or every merged projection gets its original tensor back.</summary>
    public void Detach()
    {
        if (!_attached) return;
        _attached = false;
        AttachedTo.Remove(_model);
        if (Merged)
        {
            foreach (var (l, p, original) in _originals)
            {
                var lw = _model.Weights.Layers[l];
                var merged = lw[p];
                lw[p] = original;
                merged.Dispose();
            }
            _originals.Clear();
        }
        else if (ReferenceEquals(_model.Hook, this)) _model.Hook = null;
        DisposeFactors();
    }

    private void DisposeFactors()
    {
        foreach (var layer in _slots)
            for (int p = 0; p < layer.Length; p++)
            {
                foreach (var s in layer[p]) s.Factors.Dispose();
                layer[p] = [];
            }
        foreach (var layer in _terms)
            for (int p = 0; p < layer.Length; p++) layer[p] = [];
        _scratch?.Dispose();
    }

    public void Dispose() => Detach();
}
