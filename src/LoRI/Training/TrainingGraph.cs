using System.Runtime.InteropServices;
using LoRI.Adapters;
using LoRI.Backend;
using LoRI.Model;
using LoRI.Tensors;
using LoRI.Training.Data;

namespace LoRI.Training;

/// <summary>
/// A trainable tensor. The backend holds the live state (<see cref="ValueTensor"/>, its gradient, AdamW's moments);
/// the float arrays are its host image: the same memory on a host-memory backend (the CPU backend aliases them),
/// a copy on a device, brought up to date by TrainingGraph.SyncToHost / SyncGradsToHost and written back by
/// TrainingGraph.WeightsChanged.
/// </summary>
public sealed class TrainParam
{
    public required string Name { get; init; }
    public required int[] Shape { get; init; }
    public required float[] Value { get; init; }
    public required float[] Grad { get; init; }
    /// <summary>LoRI-S: where the gradient may be non-zero; null trains every entry.</summary>
    public bool[]? Mask { get; init; }
    public required AdamWState State { get; init; }

    public required Tensor ValueTensor { get; init; }
    public required Tensor GradTensor { get; init; }
    public required Tensor MTensor { get; init; }
    public required Tensor VTensor { get; init; }
    /// <summary>The mask as U8 (null without a mask).</summary>
    public Tensor? MaskTensor { get; init; }
    /// <summary>The live indices of a compact state (null for a dense state).</summary>
    public Tensor? LiveTensor { get; init; }
}

public enum ClipMode { PerTensor, Global, None }

/// <summary>
/// The Llama graph for training, written once against IBackend and <see cref="ITrainingOps"/> (the CPU backend and
/// the CUDA backend): a forward that keeps exactly what the backward needs, the hand-written backward, and the
/// optimizer step. The forward is LlamaModel's except attention, which runs over the batch itself (no KV cache)
/// and keeps the log-sum-exp for the backward. Adapters apply as the model's hook does:
/// y = x W^T + s (x A^T) B^T, with u = x A^T kept.
///
/// Weights: trained ones (full fine-tuning) are fp32 parameters; frozen ones are used as stored when the backend
/// trains with their dtype (<see cref="ITrainingOps.TrainsWith"/>: the CUDA backend reads bf16 weights), else as
/// fp32 copies. A backend that prefers it (<see cref="ITrainingOps.PrefersTransposedWeights"/>, the CPU) also gets
/// W^T per projection, so dx = dy W runs as its tiled MatMul(dy, W^T).
///
/// Activations are sized once for `maxTokens` tokens (batch x longest sequence). Saved per layer l (N tokens):
/// Xin [N, D] (layer input), Xn1 [N, D], Q [N, QD] and K [N, KvD] after RoPE, V [N, KvD], Lse [N, H], Attn [N, QD],
/// Xmid [N, D], Xn2 [N, D], G, U, Act [N, F], and u = x A^T [N, r] per adapted projection. Xin[L] is the final
/// hidden state. Views at each token count are made once and reused, so a step allocates no tensors.
/// </summary>
public sealed class TrainingGraph : IDisposable
{
    private readonly IBackend _be;
    private readonly ITrainingOps _ops;
    private readonly LlamaConfig _c;
    private readonly float _eps;
    private readonly int _maxTokens;
    private readonly LoraAdapter? _adapter;
    private readonly List<GCHandle> _pins = new();
    private readonly List<Tensor> _owned = new();

    // Weights as the ops read them: [V, D] embedding, [V, D] lm_head (the same tensor when tied), [D] norms,
    // projections [out, in], and W^T [in, out] when the backend prefers it.
    private readonly Tensor _embed, _lmHead, _finalNorm;
    private readonly Tensor[] _attnNorm, _mlpNorm;
    private readonly Tensor[][] _proj;
    private readonly Tensor?[][] _projT;
    private readonly Tensor _invFreq;
    private readonly Dictionary<Tensor, TrainParam> _paramOf = new(ReferenceEqualityComparer.Instance);
    // Adapter factors per [layer][proj]: A and B as backend tensors (B is a parameter's ValueTensor).
    private readonly Tensor?[][] _a, _b;

    // Full-size activation storage; Run works on views of its first n rows.
    private readonly Tensor _ids, _pos, _targets, _weights, _loss;
    private readonly Tensor[] _xin, _xn1, _q, _k, _v, _lse, _attn, _xmid, _xn2, _g, _u, _act;
    private readonly Tensor?[][] _ua;
    private readonly Tensor _hf, _tmp, _dx, _dxmid, _dxn, _dhf, _dattn, _dq, _dk, _dv, _dact, _dg, _du, _dua;
    private readonly Dictionary<int, Views> _views = new();

    // Optimizer: one norm and one clip coefficient per parameter.
    private readonly Tensor _norms, _coefs;
    private readonly float[] _normsHost, _coefsHost;

    public LlamaConfig Config => _c;
    public TrainMethod Method { get; }
    public LoraAdapter? Adapter => _adapter;
    public IReadOnlyList<TrainParam> Params { get; }
    public int MaxTokens => _maxTokens;
    public IBackend Backend => _be;

    /// <summary>
    /// A graph for `method` on the model. Adapter methods take the adapter whose B (and A for lora) train in place;
    /// a mask restricts B to its kept entries (required by lori-s; with lori-d it is section 7's continual learning).
    /// With compactMaskedState the optimizer keeps moments only for the kept entries.
    /// </summary>
    public TrainingGraph(LlamaModel model, TrainMethod method, LoraAdapter? adapter, int maxTokens, LoraMask? mask = null,
                         bool compactMaskedState = true)
    {
        _ops = model.Backend as ITrainingOps
               ?? throw new UnsupportedException($"backend '{model.Backend.Name}' has no training ops (the cpu and cuda backends have)");
        if ((method == TrainMethod.Full) != (adapter is null))
            throw new ArgumentException(method == TrainMethod.Full ? "full fine-tuning takes no adapter" : $"{method.Name()} needs an adapter");
        if (method == TrainMethod.LoriS && mask is null) throw new ArgumentException("lori-s needs a mask");
        if (method == TrainMethod.Lora && mask is not null) throw new ArgumentException("a mask restricts B with A frozen: use lori-s or lori-d, not lora");
        if (maxTokens < 1) throw new ArgumentOutOfRangeException(nameof(maxTokens), maxTokens, "at least one token");
        _be = model.Backend;
        _c = model.Config;
        adapter?.ValidateFor(_c);
        _eps = _c.RmsNormEps;
        _maxTokens = maxTokens;
        _adapter = adapter;
        Method = method;
        int L = _c.NumLayers, D = _c.HiddenSize, F = _c.IntermediateSize, QD = _c.QDim, KD = _c.KvDim, H = _c.NumHeads;
        bool full = method == TrainMethod.Full;
        var parms = new List<TrainParam>();

        var w = model.Weights;
        _invFreq = Host(_c.RopeInvFreq());
        _embed = full ? Param(parms, "model.embed_tokens.weight", w.Embed, null, false) : w.Embed;
        _attnNorm = new Tensor[L]; _mlpNorm = new Tensor[L]; _proj = new Tensor[L][]; _projT = new Tensor?[L][];
        for (int l = 0; l < L; l++)
        {
            _attnNorm[l] = full ? Param(parms, $"model.layers.{l}.input_layernorm.weight", w.Layers[l].AttnNorm, null, false) : F32(w.Layers[l].AttnNorm);
            _proj[l] = new Tensor[7];
            _projT[l] = new Tensor?[7];
            foreach (var p in Projs.All)
                _proj[l][(int)p] = full ? Param(parms, p.HfPrefix(l) + ".weight", w.Layers[l][p], null, false) : Frozen(w.Layers[l][p]);
            _mlpNorm[l] = full ? Param(parms, $"model.layers.{l}.post_attention_layernorm.weight", w.Layers[l].MlpNorm, null, false) : F32(w.Layers[l].MlpNorm);
        }
        _finalNorm = full ? Param(parms, "model.norm.weight", w.FinalNorm, null, false) : F32(w.FinalNorm);
        bool tied = ReferenceEquals(w.LmHead, w.Embed);
        _lmHead = tied ? (full || _ops.TrainsWith(w.Embed.DType) ? _embed : Frozen(w.Embed))
            : full ? Param(parms, "lm_head.weight", w.LmHead, null, false) : Frozen(w.LmHead);
        if (_ops.PrefersTransposedWeights)
            for (int l = 0; l < L; l++)
                foreach (var p in Projs.All)
                {
                    var (o, i) = p.Shape(_c);
                    _projT[l][(int)p] = Own(_be.Allocate(DType.F32, i, o));
                }
        RefreshTransposes();

        _a = new Tensor?[L][]; _b = new Tensor?[L][];
        for (int l = 0; l < L; l++) { _a[l] = new Tensor?[7]; _b[l] = new Tensor?[7]; }
        if (adapter is not null)
            foreach (var m in adapter.Modules)
            {
                _pins.Add(GCHandle.Alloc(m.A, GCHandleType.Pinned));
                _pins.Add(GCHandle.Alloc(m.B, GCHandleType.Pinned));
                _a[m.Layer][(int)m.Proj] = method == TrainMethod.Lora ? ParamArray(parms, m.Key('A'), [m.Rank, m.In], m.A, null, compactMaskedState)
                    : Host(m.A, m.Rank, m.In);
                bool[]? keep = null;
                if (mask is not null)
                {
                    var e = mask[m.Layer, m.Proj] ?? throw new ShapeMismatchException($"the mask has no entry for {m.Key('B')}");
                    if (e.Out != m.Out || e.Rank != m.Rank)
                        throw new ShapeMismatchException($"mask {e.Key} is [{e.Out}, {e.Rank}], the adapter's B is [{m.Out}, {m.Rank}]");
                    keep = e.Keep.Select(b => b != 0).ToArray();
                }
                _b[m.Layer][(int)m.Proj] = ParamArray(parms, m.Key('B'), [m.Out, m.Rank], m.B, keep, compactMaskedState);
            }
        Params = parms;

        int n = maxTokens, r = adapter?.Modules.Max(m => m.Rank) ?? 0;
        Tensor A(int width) => Own(_be.Allocate(DType.F32, n, width));
        Tensor[] PerLayer(int width, int count) { var a = new Tensor[count]; for (int i = 0; i < count; i++) a[i] = A(width); return a; }
        _ids = Own(_be.Allocate(DType.I32, n)); _pos = Own(_be.Allocate(DType.I32, n)); _targets = Own(_be.Allocate(DType.I32, n));
        _weights = Own(_be.Allocate(DType.F32, n)); _loss = Own(_be.Allocate(DType.F32, n));
        _xin = PerLayer(D, L + 1); _xn1 = PerLayer(D, L); _q = PerLayer(QD, L); _k = PerLayer(KD, L); _v = PerLayer(KD, L);
        _lse = PerLayer(H, L); _attn = PerLayer(QD, L); _xmid = PerLayer(D, L); _xn2 = PerLayer(D, L);
        _g = PerLayer(F, L); _u = PerLayer(F, L); _act = PerLayer(F, L);
        _ua = new Tensor?[L][];
        for (int l = 0; l < L; l++)
        {
            _ua[l] = new Tensor?[7];
            foreach (var p in Projs.All)
                if (adapter?[l, p] is { } m) _ua[l][(int)p] = A(m.Rank);
        }
        _hf = A(D); _tmp = A(D); _dx = A(D); _dxmid = A(D); _dxn = A(D); _dhf = A(D);
        _dattn = A(QD); _dq = A(QD); _dk = A(KD); _dv = A(KD);
        _dact = A(F); _dg = A(F); _du = A(F);
        _dua = A(Math.Max(1, r));
        _norms = Own(_be.Allocate(DType.F32, Math.Max(1, parms.Count)));
        _coefs = Own(_be.Allocate(DType.F32, Math.Max(1, parms.Count)));
        _normsHost = new float[Math.Max(1, parms.Count)];
        _coefsHost = new float[Math.Max(1, parms.Count)];
    }

    private Tensor Own(Tensor t)
    {
        _owned.Add(t);
        return t;
    }

    /// <summary>A pinned host array as a backend tensor: aliased on a host-memory backend, copied to a device.</summary>
    private Tensor Host(float[] a, params int[] shape)
    {
        if (shape.Length == 0) shape = [a.Length];
        _pins.Add(GCHandle.Alloc(a, GCHandleType.Pinned));
        return Own(_be.FromHost(Marshal.UnsafeAddrOfPinnedArrayElement(a, 0), DType.F32, shape, null));
    }

    private Tensor HostInts(int[] a)
    {
        _pins.Add(GCHandle.Alloc(a, GCHandleType.Pinned));
        return Own(_be.FromHost(Marshal.UnsafeAddrOfPinnedArrayElement(a, 0), DType.I32, [a.Length], null));
    }

    /// <summary>An F32 copy of a stored weight, on the backend.</summary>
    private Tensor F32(Tensor stored)
    {
        var t = Own(_be.Allocate(DType.F32, stored.Shape));
        _ops.Cast(stored, t);
        return t;
    }

    /// <summary>A frozen weight as the ops read it: as stored when the backend trains with its dtype, else an F32 copy.</summary>
    private Tensor Frozen(Tensor stored) => _ops.TrainsWith(stored.DType) ? stored : F32(stored);

    /// <summary>A parameter initialised from a stored weight (fp32 master copy).</summary>
    private Tensor Param(List<TrainParam> list, string name, Tensor stored, bool[]? mask, bool compact)
    {
        var value = GC.AllocateArray<float>(checked((int)stored.Length), pinned: true);
        var f32 = _be.Allocate(DType.F32, stored.Shape);
        _ops.Cast(stored, f32);
        _be.Download<float>(f32, value);
        f32.Dispose();
        return ParamArray(list, name, stored.Shape, value, mask, compact);
    }

    /// <summary>A parameter whose value is the given (pinned) array.</summary>
    private Tensor ParamArray(List<TrainParam> list, string name, int[] shape, float[] value, bool[]? mask, bool compact)
    {
        var grad = GC.AllocateArray<float>(value.Length, pinned: true);
        var st = mask is not null && compact ? AdamWState.ForMask(mask) : new AdamWState(value.Length);
        Tensor? maskT = null, liveT = null;
        if (mask is not null)
        {
            maskT = Own(_be.Allocate(DType.U8, mask.Length));
            _be.Upload<byte>(mask.Select(b => b ? (byte)1 : (byte)0).ToArray(), maskT);
        }
        if (st.Live is { } live) liveT = HostInts(live);
        var p = new TrainParam
        {
            Name = name, Shape = shape, Value = value, Grad = grad, Mask = mask, State = st,
            ValueTensor = Host(value, shape), GradTensor = Host(grad, shape),
            MTensor = Host(st.M), VTensor = Host(st.V), MaskTensor = maskT, LiveTensor = liveT,
        };
        list.Add(p);
        _paramOf[p.ValueTensor] = p;
        return p.ValueTensor;
    }

    public void Dispose()
    {
        _views.Clear();
        foreach (var t in _owned) t.Dispose();
        _owned.Clear();
        foreach (var h in _pins) h.Free();
        _pins.Clear();
    }

    /// <summary>The fp32 weights by HF name (full fine-tuning only), for saving the model.</summary>
    public IEnumerable<(string Name, int[] Shape, float[] Value)> Weights()
    {
        if (Method != TrainMethod.Full) throw new InvalidOperationException($"{Method.Name()} trains an adapter; the weights stay the model's");
        SyncToHost();
        return Params.Select(p => (p.Name, p.Shape, p.Value)).ToList();
    }

    /// <summary>Copies the parameters and AdamW's moments to their host arrays (nothing to do on a host-memory backend).</summary>
    public void SyncToHost()
    {
        if (_be.IsHostMemory) return;
        foreach (var p in Params)
        {
            _be.Download<float>(p.ValueTensor, p.Value);
            _be.Download<float>(p.MTensor, p.State.M);
            _be.Download<float>(p.VTensor, p.State.V);
        }
    }

    /// <summary>Copies the accumulated gradients to the parameters' Grad arrays (nothing to do on a host-memory backend).</summary>
    public void SyncGradsToHost()
    {
        if (_be.IsHostMemory) return;
        foreach (var p in Params) _be.Download<float>(p.GradTensor, p.Grad);
    }

    /// <summary>
    /// Call after writing the host arrays from outside (a checkpoint load: parameters, moments, a frozen A) so the
    /// backend's copies and the backward's W^T follow.
    /// </summary>
    public void WeightsChanged()
    {
        if (!_be.IsHostMemory)
        {
            foreach (var p in Params)
            {
                _be.Upload<float>(p.Value, p.ValueTensor);
                _be.Upload<float>(p.State.M, p.MTensor);
                _be.Upload<float>(p.State.V, p.VTensor);
            }
            if (_adapter is not null && Method != TrainMethod.Lora)
                foreach (var m in _adapter.Modules) _be.Upload<float>(m.A, _a[m.Layer][(int)m.Proj]!);
        }
        RefreshTransposes();
    }

    private void RefreshTransposes()
    {
        for (int l = 0; l < _c.NumLayers; l++)
            foreach (var p in Projs.All)
                if (_projT[l][(int)p] is { } t) _ops.Transpose(_proj[l][(int)p], t);
    }

    private Tensor? GradOf(Tensor value) => _paramOf.TryGetValue(value, out var p) ? p.GradTensor : null;

    /// <summary>The views of every buffer at one token count, made once.</summary>
    private sealed class Views
    {
        public required Tensor Ids, Pos, Targets, Weights, Loss, Hf, Tmp, Dx, Dxmid, Dxn, Dhf, Dattn, Dq, Dk, Dv, Dact, Dg, Du, Dua;
        public required Tensor[] Xin, Xn1, Q, K, V, Lse, Attn, Xmid, Xn2, G, U, Act;
        public required Tensor?[][] Ua;
        public required Dictionary<int, Tensor> DuaByRank;
    }

    private Views ViewsFor(int n)
    {
        if (_views.TryGetValue(n, out var v)) return v;
        Tensor R(Tensor t) => t.View(0, n, t.Cols);
        Tensor R1(Tensor t) => t.View(0, n);
        Tensor[] All(Tensor[] ts) => ts.Select(R).ToArray();
        v = new Views
        {
            Ids = R1(_ids), Pos = R1(_pos), Targets = R1(_targets), Weights = R1(_weights), Loss = R1(_loss),
            Hf = R(_hf), Tmp = R(_tmp), Dx = R(_dx), Dxmid = R(_dxmid), Dxn = R(_dxn), Dhf = R(_dhf), Dattn = R(_dattn),
            Dq = R(_dq), Dk = R(_dk), Dv = R(_dv), Dact = R(_dact), Dg = R(_dg), Du = R(_du), Dua = R(_dua),
            Xin = All(_xin), Xn1 = All(_xn1), Q = All(_q), K = All(_k), V = All(_v), Lse = All(_lse), Attn = All(_attn),
            Xmid = All(_xmid), Xn2 = All(_xn2), G = All(_g), U = All(_u), Act = All(_act),
            Ua = _ua.Select(row => row.Select(t => t is null ? null : R(t)).ToArray()).ToArray(),
            DuaByRank = (_adapter?.Modules.Select(m => m.Rank).Distinct() ?? []).ToDictionary(r => r, r => _dua.View(0, n, r)),
        };
        _views[n] = v;
        return v;
    }

    /// <summary>
    /// Forward and backward of one batch: the gradients of sum_i Weights[i] * nll_i are added (+=) to every
    /// parameter's gradient. Returns that loss. With backward false, only the loss (evaluation, perplexity).
    /// </summary>
    public double Run(Batch batch, bool backward = true)
    {
        int n = batch.Size * batch.SeqLen;
        if (n > _maxTokens) throw new ArgumentException($"a batch of {batch.Size} x {batch.SeqLen} tokens exceeds the graph's {_maxTokens}");
        int L = _c.NumLayers, H = _c.NumHeads, KH = _c.NumKvHeads, hd = _c.HeadDim;
        CheckIds(batch, n);
        var v = ViewsFor(n);
        _be.Upload<int>(batch.Tokens.AsSpan(0, n), v.Ids);
        _be.Upload<int>(batch.Positions.AsSpan(0, n), v.Pos);
        _be.Upload<int>(batch.Targets.AsSpan(0, n), v.Targets);
        _be.Upload<float>(batch.Weights.AsSpan(0, n), v.Weights);

        _be.Embedding(_embed, v.Ids, v.Xin[0]);
        for (int l = 0; l < L; l++)
        {
            _be.RmsNorm(v.Xin[l], _attnNorm[l], _eps, v.Xn1[l]);
            Linear(v, l, Proj.Q, v.Xn1[l], v.Q[l]);
            Linear(v, l, Proj.K, v.Xn1[l], v.K[l]);
            Linear(v, l, Proj.V, v.Xn1[l], v.V[l]);
            _be.Rope(v.Q[l], H, hd, v.Pos, _invFreq);
            _be.Rope(v.K[l], KH, hd, v.Pos, _invFreq);
            _ops.AttentionForwardWithLse(v.Q[l], v.K[l], v.V[l], batch.Size, batch.SeqLen, H, KH, hd, v.Attn[l], v.Lse[l]);
            Linear(v, l, Proj.O, v.Attn[l], v.Tmp);
            _be.Add(v.Xin[l], v.Tmp, v.Xmid[l]);
            _be.RmsNorm(v.Xmid[l], _mlpNorm[l], _eps, v.Xn2[l]);
            Linear(v, l, Proj.Gate, v.Xn2[l], v.G[l]);
            Linear(v, l, Proj.Up, v.Xn2[l], v.U[l]);
            _be.SwiGlu(v.G[l], v.U[l], v.Act[l]);
            Linear(v, l, Proj.Down, v.Act[l], v.Tmp);
            _be.Add(v.Xmid[l], v.Tmp, v.Xin[l + 1]);
        }
        _be.RmsNorm(v.Xin[L], _finalNorm, _eps, v.Hf);

        bool full = Method == TrainMethod.Full;
        double loss = _ops.LmHeadCrossEntropy(v.Hf, _lmHead, v.Targets, v.Weights, v.Loss, backward ? v.Dhf : null,
            backward && full ? GradOf(_lmHead) : null);
        if (!backward) return loss;

        // d(final norm): dX = dL/dXin[L].
        _ops.RmsNormBackward(v.Xin[L], _finalNorm, v.Dhf, _eps, v.Dx, GradOf(_finalNorm), accumulate: false);
        for (int l = L - 1; l >= 0; l--)
        {
            // Xin[l+1] = Xmid + down(Act): the residual passes dX to Xmid, down_proj's input gets dX Wd.
            _ops.Cast(v.Dx, v.Dxmid);
            LinearBackward(v, l, Proj.Down, v.Act[l], v.Dx, v.Dact);
            _ops.SwiGluBackward(v.G[l], v.U[l], v.Dact, v.Dg, v.Du);
            LinearBackward(v, l, Proj.Gate, v.Xn2[l], v.Dg, v.Dxn);
            LinearBackward(v, l, Proj.Up, v.Xn2[l], v.Du, v.Dxn, accumulate: true);
            _ops.RmsNormBackward(v.Xmid[l], _mlpNorm[l], v.Dxn, _eps, v.Dxmid, GradOf(_mlpNorm[l]), accumulate: true);
            // Xmid = Xin + o(Attn).
            LinearBackward(v, l, Proj.O, v.Attn[l], v.Dxmid, v.Dattn);
            _ops.AttentionBackward(v.Q[l], v.K[l], v.V[l], v.Attn[l], v.Lse[l], v.Dattn, batch.Size, batch.SeqLen, H, KH, hd, v.Dq, v.Dk, v.Dv);
            _ops.RopeBackward(v.Dq, H, hd, v.Pos, _invFreq);
            _ops.RopeBackward(v.Dk, KH, hd, v.Pos, _invFreq);
            LinearBackward(v, l, Proj.Q, v.Xn1[l], v.Dq, v.Dxn);
            LinearBackward(v, l, Proj.K, v.Xn1[l], v.Dk, v.Dxn, accumulate: true);
            LinearBackward(v, l, Proj.V, v.Xn1[l], v.Dv, v.Dxn, accumulate: true);
            // Below layer 0 only the embedding is left, which trains only in full fine-tuning.
            if (l == 0 && !full) break;
            _ops.Cast(v.Dxmid, v.Dx);
            _ops.RmsNormBackward(v.Xin[l], _attnNorm[l], v.Dxn, _eps, v.Dx, GradOf(_attnNorm[l]), accumulate: true);
        }
        if (full) _ops.EmbeddingBackward(v.Ids, v.Dx, GradOf(_embed)!);
        return loss;
    }

    /// <summary>
    /// Token ids and targets inside the vocabulary, checked on the host before they reach the backend (a device
    /// would turn a bad id into NaN rows, not an error).
    /// </summary>
    private void CheckIds(Batch batch, int n)
    {
        int vocab = _c.VocabSize;
        for (int i = 0; i < n; i++)
        {
            if ((uint)batch.Tokens[i] >= (uint)vocab)
                throw new ArgumentOutOfRangeException(nameof(batch), $"token id {batch.Tokens[i]} at row {i} is outside the vocabulary [0, {vocab})");
            if (batch.Targets[i] >= vocab)
                throw new ArgumentOutOfRangeException(nameof(batch), $"target {batch.Targets[i]} at row {i} is outside the vocabulary [0, {vocab})");
        }
    }

    /// <summary>y = x W^T (+ s (x A^T) B^T, keeping u = x A^T).</summary>
    private void Linear(Views v, int l, Proj p, Tensor x, Tensor y)
    {
        _be.MatMul(x, _proj[l][(int)p], y);
        if (_adapter?[l, p] is { } m)
        {
            var u = v.Ua[l][(int)p]!;
            _be.MatMul(x, _a[l][(int)p]!, u);
            _be.MatMul(u, _b[l][(int)p]!, y, m.Scale, accumulate: true);
        }
    }

    /// <summary>
    /// dx (=, or += with accumulate) from dy through the projection and its adapter; weight gradients (+=) where trained:
    /// dW += dy^T x (full); dB += s dy^T u (masked); du = s dy B; dA += du^T x (lora); dx += du A.
    /// </summary>
    private void LinearBackward(Views v, int l, Proj p, Tensor x, Tensor dy, Tensor dx, bool accumulate = false)
    {
        var w = _proj[l][(int)p];
        if (_projT[l][(int)p] is { } wT) _be.MatMul(dy, wT, dx, 1f, accumulate);
        else _ops.MatMulBackwardInput(dy, w, dx, 1f, accumulate);
        if (GradOf(w) is { } dW) _ops.MatMulBackwardWeight(dy, x, dW, 1f, accumulate: true);
        if (_adapter?[l, p] is not { } m) return;
        var a = _a[l][(int)p]!;
        var b = _b[l][(int)p]!;
        var pb = _paramOf[b];
        _ops.LoraGradB(dy, v.Ua[l][(int)p]!, pb.MaskTensor, m.Scale, pb.GradTensor);
        var du = v.DuaByRank[m.Rank];
        _ops.MatMulBackwardInput(dy, b, du, m.Scale, accumulate: false);
        if (GradOf(a) is { } dA) _ops.MatMulBackwardWeight(du, x, dA, 1f, accumulate: true);
        _ops.MatMulBackwardInput(du, a, dx, 1f, accumulate: true);
    }

    /// <summary>
    /// One optimizer step over the accumulated gradients: mask (LoRI-S: grad[~mask] = 0), clip (per tensor by
    /// default, as the reference), AdamW, then zero the gradients. The norms come to the host and the clip
    /// coefficients are formed there in float as torch forms them. Returns the gradient norm before clipping
    /// (the global norm over all trained tensors).
    /// </summary>
    public float OptimizerStep(double lr, AdamWOptions opt, ClipMode clip = ClipMode.PerTensor, float maxNorm = 1f)
    {
        var ps = Params;
        for (int i = 0; i < ps.Count; i++) _ops.GradNorm(ps[i].GradTensor, ps[i].MaskTensor, _norms, i);
        _be.Download<float>(_norms, _normsHost);
        double sq = 0;
        for (int i = 0; i < ps.Count; i++) sq += (double)_normsHost[i] * _normsHost[i];
        float total = (float)Math.Sqrt(sq);
        if (clip != ClipMode.None)
        {
            for (int i = 0; i < ps.Count; i++)
                _coefsHost[i] = GradClip.Coefficient(clip == ClipMode.Global ? total : _normsHost[i], maxNorm);
            _be.Upload<float>(_coefsHost, _coefs);
        }
        for (int i = 0; i < ps.Count; i++)
        {
            var p = ps[i];
            p.State.Step++;
            _ops.AdamWStep(p.ValueTensor, p.GradTensor, p.MTensor, p.VTensor, p.LiveTensor, p.MaskTensor,
                clip == ClipMode.None ? null : _coefs, i, AdamW.Scalars(lr, opt, p.State.Step));
            _ops.Zero(p.GradTensor);
        }
        if (Method == TrainMethod.Full) RefreshTransposes();
        return total;
    }

    public void ZeroGrad()
    {
        foreach (var p in Params) _ops.Zero(p.GradTensor);
    }
}
