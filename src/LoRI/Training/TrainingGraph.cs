using System.Runtime.InteropServices;
using LoRI.Adapters;
using LoRI.Backend;
using LoRI.Backend.Cpu;
using LoRI.Model;
using LoRI.Tensors;
using LoRI.Training.Data;

namespace LoRI.Training;

/// <summary>A trainable tensor: fp32 master value (pinned; the backend aliases it), its gradient, mask and AdamW state.</summary>
public sealed class TrainParam
{
    public required string Name { get; init; }
    public required int[] Shape { get; init; }
    public required float[] Value { get; init; }
    public required float[] Grad { get; init; }
    /// <summary>LoRI-S: where the gradient may be non-zero; null trains every entry.</summary>
    public bool[]? Mask { get; init; }
    public required AdamWState State { get; set; }
}

public enum ClipMode { PerTensor, Global, None }

/// <summary>
/// The Llama graph for training on a host-memory backend: a forward that keeps exactly what the backward
/// needs, and the hand-written backward (CpuOps.*Backward). The forward uses the backend's ops (the ones
/// LlamaModel runs) except attention, which is CpuOps.AttentionForwardWithLse over the batch itself (no KV
/// cache) so that the log-sum-exp is kept for the backward. Adapters apply as the model's hook does:
/// y = x W^T + s (x A^T) B^T, with u = x A^T kept.
///
/// Weights are fp32 copies of the model's (the master weights for `full`; for the adapter methods they are
/// frozen and only read). Activation memory is sized once for `maxTokens` tokens (batch x longest sequence).
///
/// Saved per layer l (N tokens): Xin [N, D] (layer input), Xn1 [N, D], Q [N, QD] and K [N, KvD] after RoPE,
/// V [N, KvD], Lse [N, H], Attn [N, QD], Xmid [N, D], Xn2 [N, D], G, U, Act [N, F], and u = x A^T [N, r] per
/// adapted projection. Xin[L] is the final hidden state.
/// </summary>
public sealed class TrainingGraph : IDisposable
{
    private readonly IBackend _be;
    private readonly LlamaConfig _c;
    private readonly float _eps;
    private readonly float[] _invFreq;
    private readonly int _maxTokens;
    private readonly LoraAdapter? _adapter;
    private readonly List<GCHandle> _pins = new();

    // fp32 weights: [V, D] embed, [V, D] lm_head (same array when tied), [D] norms, projections [out, in].
    private readonly float[] _embed, _lmHead, _finalNorm;
    private readonly float[][] _attnNorm, _mlpNorm;
    private readonly float[][][] _proj;
    // W^T [in, out] of every projection, so dx = dy W runs as the backend's tiled MatMul(dy, W^T); refreshed after
    // each optimizer step when the weights train (full).
    private readonly float[][][] _projT;
    private readonly Dictionary<float[], float[]> _gradOf = new(ReferenceEqualityComparer.Instance);

    // Saved activations.
    private readonly int[] _ids, _pos, _targets;
    private readonly float[] _weights, _loss;
    private readonly float[][] _xin, _xn1, _q, _k, _v, _lse, _attn, _xmid, _xn2, _g, _u, _act;
    private readonly float[][][] _ua;     // [layer][proj] u = x A^T
    private readonly float[] _hf, _tmp;
    // Backward scratch.
    private readonly float[] _dx, _dxmid, _dxn, _dattn, _dq, _dk, _dv, _dact, _dg, _du, _dua, _dhf, _ceScratch;
    // Full fine-tuning: dy^T and x^T for dW += dy^T x as the backend's MatMul(dy^T, x^T).
    private readonly float[] _dyT, _xT;

    public LlamaConfig Config => _c;
    public TrainMethod Method { get; }
    public LoraAdapter? Adapter => _adapter;
    public IReadOnlyList<TrainParam> Params { get; }
    public int MaxTokens => _maxTokens;

    /// <summary>Floats of lm_head scratch at most (the vocabulary chunk shrinks for long batches).</summary>
    public const int CrossEntropyScratchFloats = 16 << 20;

    /// <summary>
    /// A graph for `method` on the model. Adapter methods take the adapter whose B (and A for lora) train in place;
    /// a mask restricts B to its kept entries (required by lori-s; with lori-d it is section 7's continual learning).
    /// With compactMaskedState the optimizer keeps moments only for the kept entries.
    /// </summary>
    public TrainingGraph(LlamaModel model, TrainMethod method, LoraAdapter? adapter, int maxTokens, LoraMask? mask = null,
                         bool compactMaskedState = true)
    {
        if (!model.Backend.IsHostMemory)
            throw new UnsupportedException($"training runs on a host-memory backend (cpu); '{model.Backend.Name}' has no backward kernels yet");
        if ((method == TrainMethod.Full) != (adapter is null))
            throw new ArgumentException(method == TrainMethod.Full ? "full fine-tuning takes no adapter" : $"{method.Name()} needs an adapter");
        if (method == TrainMethod.LoriS && mask is null) throw new ArgumentException("lori-s needs a mask");
        if (method == TrainMethod.Lora && mask is not null) throw new ArgumentException("a mask restricts B with A frozen: use lori-s or lori-d, not lora");
        _be = model.Backend;
        _c = model.Config;
        adapter?.ValidateFor(_c);
        _eps = _c.RmsNormEps;
        _invFreq = _c.RopeInvFreq();
        _maxTokens = maxTokens;
        _adapter = adapter;
        Method = method;
        int L = _c.NumLayers, D = _c.HiddenSize, F = _c.IntermediateSize, QD = _c.QDim, KD = _c.KvDim, H = _c.NumHeads;

        var w = model.Weights;
        _embed = ToF32(w.Embed);
        _lmHead = ReferenceEquals(w.LmHead, w.Embed) ? _embed : ToF32(w.LmHead);
        _finalNorm = ToF32(w.FinalNorm);
        _attnNorm = new float[L][]; _mlpNorm = new float[L][]; _proj = new float[L][][]; _projT = new float[L][][];
        for (int l = 0; l < L; l++)
        {
            _attnNorm[l] = ToF32(w.Layers[l].AttnNorm);
            _mlpNorm[l] = ToF32(w.Layers[l].MlpNorm);
            _proj[l] = new float[7][];
            _projT[l] = new float[7][];
            foreach (var p in Projs.All)
            {
                _proj[l][(int)p] = ToF32(w.Layers[l][p]);
                _projT[l][(int)p] = GC.AllocateArray<float>(_proj[l][(int)p].Length, pinned: true);
            }
        }
        RefreshTransposes();

        int n = maxTokens, r = adapter?.Modules.Max(m => m.Rank) ?? 0;
        float[] A(long len) => GC.AllocateArray<float>(checked((int)len), pinned: true);
        float[][] PerLayer(int width, int count) { var a = new float[count][]; for (int i = 0; i < count; i++) a[i] = A((long)n * width); return a; }
        _ids = GC.AllocateArray<int>(n, pinned: true);
        _pos = GC.AllocateArray<int>(n, pinned: true);
        _targets = new int[n];
        _weights = new float[n];
        _loss = new float[n];
        _xin = PerLayer(D, L + 1); _xn1 = PerLayer(D, L); _q = PerLayer(QD, L); _k = PerLayer(KD, L); _v = PerLayer(KD, L);
        _lse = PerLayer(H, L); _attn = PerLayer(QD, L); _xmid = PerLayer(D, L); _xn2 = PerLayer(D, L);
        _g = PerLayer(F, L); _u = PerLayer(F, L); _act = PerLayer(F, L);
        _ua = new float[L][][];
        for (int l = 0; l < L; l++)
        {
            _ua[l] = new float[7][];
            foreach (var p in Projs.All)
                if (adapter?[l, p] is { } m) _ua[l][(int)p] = A((long)n * m.Rank);
        }
        _hf = A((long)n * D); _tmp = A((long)n * D);
        _dx = A((long)n * D); _dxmid = A((long)n * D); _dxn = A((long)n * D); _dhf = A((long)n * D);
        _dattn = A((long)n * QD); _dq = A((long)n * QD); _dk = A((long)n * KD); _dv = A((long)n * KD);
        _dact = A((long)n * F); _dg = A((long)n * F); _du = A((long)n * F);
        _dua = A((long)n * Math.Max(1, r));
        int widest = Math.Max(Math.Max(D, F), Math.Max(QD, KD));
        _dyT = method == TrainMethod.Full ? A((long)n * widest) : [];
        _xT = method == TrainMethod.Full ? A((long)n * widest) : [];
        _ceScratch = A(Math.Min(CpuOps.CrossEntropyScratchLength(n, _c.VocabSize), Math.Max(n, CrossEntropyScratchFloats)));

        if (adapter is not null)
            foreach (var m in adapter.Modules)
            {
                _pins.Add(GCHandle.Alloc(m.A, GCHandleType.Pinned));
                _pins.Add(GCHandle.Alloc(m.B, GCHandleType.Pinned));
            }
        Params = BuildParams(mask, compactMaskedState);
    }

    public void Dispose()
    {
        foreach (var h in _pins) h.Free();
        _pins.Clear();
    }

    private List<TrainParam> BuildParams(LoraMask? mask, bool compact)
    {
        var list = new List<TrainParam>();
        TrainParam Add(string name, int[] shape, float[] value, bool[]? mask)
        {
            var grad = GC.AllocateArray<float>(value.Length, pinned: true);
            _gradOf[value] = grad;
            var st = mask is not null && compact ? AdamWState.ForMask(mask) : new AdamWState(value.Length);
            var p = new TrainParam { Name = name, Shape = shape, Value = value, Grad = grad, Mask = mask, State = st };
            list.Add(p);
            return p;
        }
        if (Method == TrainMethod.Full)
        {
            int D = _c.HiddenSize;
            Add("model.embed_tokens.weight", [_c.VocabSize, D], _embed, null);
            for (int l = 0; l < _c.NumLayers; l++)
            {
                Add($"model.layers.{l}.input_layernorm.weight", [D], _attnNorm[l], null);
                foreach (var p in Projs.All)
                {
                    var (o, i) = p.Shape(_c);
                    Add(p.HfPrefix(l) + ".weight", [o, i], _proj[l][(int)p], null);
                }
                Add($"model.layers.{l}.post_attention_layernorm.weight", [D], _mlpNorm[l], null);
            }
            Add("model.norm.weight", [D], _finalNorm, null);
            if (!ReferenceEquals(_lmHead, _embed)) Add("lm_head.weight", [_c.VocabSize, D], _lmHead, null);
            return list;
        }
        foreach (var m in _adapter!.Modules)
        {
            if (Method == TrainMethod.Lora) Add(m.Key('A'), [m.Rank, m.In], m.A, null);
            bool[]? keep = null;
            if (mask is not null)
            {
                var e = mask[m.Layer, m.Proj] ?? throw new ShapeMismatchException($"the mask has no entry for {m.Key('B')}");
                if (e.Out != m.Out || e.Rank != m.Rank)
                    throw new ShapeMismatchException($"mask {e.Key} is [{e.Out}, {e.Rank}], the adapter's B is [{m.Out}, {m.Rank}]");
                keep = e.Keep.Select(b => b != 0).ToArray();
            }
            Add(m.Key('B'), [m.Out, m.Rank], m.B, keep);
        }
        return list;
    }

    /// <summary>The fp32 weights by HF name, for saving a fully fine-tuned model.</summary>
    public IEnumerable<(string Name, int[] Shape, float[] Value)> Weights()
    {
        int D = _c.HiddenSize;
        yield return ("model.embed_tokens.weight", [_c.VocabSize, D], _embed);
        for (int l = 0; l < _c.NumLayers; l++)
        {
            yield return ($"model.layers.{l}.input_layernorm.weight", [D], _attnNorm[l]);
            foreach (var p in Projs.All)
            {
                var (o, i) = p.Shape(_c);
                yield return (p.HfPrefix(l) + ".weight", [o, i], _proj[l][(int)p]);
            }
            yield return ($"model.layers.{l}.post_attention_layernorm.weight", [D], _mlpNorm[l]);
        }
        yield return ("model.norm.weight", [D], _finalNorm);
        if (!ReferenceEquals(_lmHead, _embed)) yield return ("lm_head.weight", [_c.VocabSize, D], _lmHead);
    }

    /// <summary>Call after writing the weights from outside (a checkpoint load) so the backward's W^T copies follow.</summary>
    public void WeightsChanged() => RefreshTransposes();

    private void RefreshTransposes()
    {
        for (int l = 0; l < _c.NumLayers; l++)
            foreach (var p in Projs.All)
            {
                var (o, i) = p.Shape(_c);
                Transpose(_proj[l][(int)p], o, i, _projT[l][(int)p]);
            }
    }

    /// <summary>dst [cols, rows] = src [rows, cols]^T, in 32 x 32 tiles.</summary>
    private static void Transpose(ReadOnlySpan<float> src, int rows, int cols, Span<float> dst)
    {
        const int tile = 32;
        for (int r0 = 0; r0 < rows; r0 += tile)
            for (int c0 = 0; c0 < cols; c0 += tile)
            {
                int r1 = Math.Min(rows, r0 + tile), c1 = Math.Min(cols, c0 + tile);
                for (int r = r0; r < r1; r++)
                    for (int c = c0; c < c1; c++)
                        dst[c * rows + r] = src[r * cols + c];
            }
    }

    private static float[] ToF32(Tensor t)
    {
        var a = GC.AllocateArray<float>(checked((int)t.Length), pinned: true);
        CpuOps.ToFloat(t.DType, t.Pointer, 0, a);
        return a;
    }

    private Tensor T(float[] a, int rows, int cols) =>
        _be.FromHost(Marshal.UnsafeAddrOfPinnedArrayElement(a, 0), DType.F32, [rows, cols], null);
    private Tensor T(float[] a, int len) =>
        _be.FromHost(Marshal.UnsafeAddrOfPinnedArrayElement(a, 0), DType.F32, [len], null);
    private Tensor I(int[] a, int len) =>
        _be.FromHost(Marshal.UnsafeAddrOfPinnedArrayElement(a, 0), DType.I32, [len], null);

    private float[]? GradOf(float[] value) => _gradOf.TryGetValue(value, out var g) ? g : null;

    /// <summary>
    /// Forward and backward of one batch: the gradients of sum_i Weights[i] * nll_i are added (+=) to every
    /// parameter's Grad. Returns that loss. With backward false, only the loss (evaluation, perplexity).
    /// </summary>
    public double Run(Batch batch, bool backward = true)
    {
        int n = batch.Size * batch.SeqLen;
        if (n > _maxTokens) throw new ArgumentException($"a batch of {batch.Size} x {batch.SeqLen} tokens exceeds the graph's {_maxTokens}");
        int L = _c.NumLayers, D = _c.HiddenSize, F = _c.IntermediateSize, QD = _c.QDim, KD = _c.KvDim;
        int H = _c.NumHeads, KH = _c.NumKvHeads, hd = _c.HeadDim;
        batch.Tokens.CopyTo(_ids, 0);
        batch.Positions.CopyTo(_pos, 0);
        var ids = I(_ids, n);
        var pos = I(_pos, n);
        var invFreq = T(_invFreq, _invFreq.Length);

        _be.Embedding(T(_embed, _c.VocabSize, D), ids, T(_xin[0], n, D));
        for (int l = 0; l < L; l++)
        {
            _be.RmsNorm(T(_xin[l], n, D), T(_attnNorm[l], D), _eps, T(_xn1[l], n, D));
            Linear(l, Proj.Q, _xn1[l], _q[l], n);
            Linear(l, Proj.K, _xn1[l], _k[l], n);
            Linear(l, Proj.V, _xn1[l], _v[l], n);
            _be.Rope(T(_q[l], n, QD), H, hd, pos, invFreq);
            _be.Rope(T(_k[l], n, KD), KH, hd, pos, invFreq);
            CpuOps.AttentionForwardWithLse(_q[l].AsSpan(0, n * QD), _k[l].AsSpan(0, n * KD), _v[l].AsSpan(0, n * KD),
                batch.Size, batch.SeqLen, H, KH, hd, _attn[l].AsSpan(0, n * QD), _lse[l].AsSpan(0, n * H));
            Linear(l, Proj.O, _attn[l], _tmp, n);
            _be.Add(T(_xin[l], n, D), T(_tmp, n, D), T(_xmid[l], n, D));
            _be.RmsNorm(T(_xmid[l], n, D), T(_mlpNorm[l], D), _eps, T(_xn2[l], n, D));
            Linear(l, Proj.Gate, _xn2[l], _g[l], n);
            Linear(l, Proj.Up, _xn2[l], _u[l], n);
            _be.SwiGlu(T(_g[l], n, F), T(_u[l], n, F), T(_act[l], n, F));
            Linear(l, Proj.Down, _act[l], _tmp, n);
            _be.Add(T(_xmid[l], n, D), T(_tmp, n, D), T(_xin[l + 1], n, D));
        }
        _be.RmsNorm(T(_xin[L], n, D), T(_finalNorm, D), _eps, T(_hf, n, D));

        batch.Targets.CopyTo(_targets, 0);
        batch.Weights.CopyTo(_weights, 0);
        bool full = Method == TrainMethod.Full;
        double loss = CpuOps.LmHeadCrossEntropy(_hf.AsSpan(0, n * D), _lmHead, D, _targets.AsSpan(0, n), _weights.AsSpan(0, n),
            _loss.AsSpan(0, n), backward ? _dhf.AsSpan(0, n * D) : [], backward && full ? GradOf(_lmHead) : [], _ceScratch);
        if (!backward) return loss;

        // d(final norm): dX = dL/dXin[L].
        CpuOps.RmsNormBackward(_xin[L].AsSpan(0, n * D), _finalNorm, _dhf.AsSpan(0, n * D), D, _eps,
            _dx.AsSpan(0, n * D), full ? GradOf(_finalNorm) : []);
        for (int l = L - 1; l >= 0; l--)
        {
            // Xin[l+1] = Xmid + down(Act): the residual passes dX to Xmid, down_proj's input gets dX Wd.
            _dx.AsSpan(0, n * D).CopyTo(_dxmid);
            LinearBackward(l, Proj.Down, _act[l], _dx, _dact, n);
            CpuOps.SwiGluBackward(_g[l].AsSpan(0, n * F), _u[l].AsSpan(0, n * F), _dact.AsSpan(0, n * F),
                _dg.AsSpan(0, n * F), _du.AsSpan(0, n * F));
            LinearBackward(l, Proj.Gate, _xn2[l], _dg, _dxn, n);
            LinearBackward(l, Proj.Up, _xn2[l], _du, _dxn, n, accumulate: true);
            CpuOps.RmsNormBackward(_xmid[l].AsSpan(0, n * D), _mlpNorm[l], _dxn.AsSpan(0, n * D), D, _eps,
                _dxmid.AsSpan(0, n * D), full ? GradOf(_mlpNorm[l]) : [], accumulate: true);
            // Xmid = Xin + o(Attn).
            LinearBackward(l, Proj.O, _attn[l], _dxmid, _dattn, n);
            CpuOps.AttentionBackward(_q[l].AsSpan(0, n * QD), _k[l].AsSpan(0, n * KD), _v[l].AsSpan(0, n * KD),
                _lse[l].AsSpan(0, n * H), _dattn.AsSpan(0, n * QD), batch.Size, batch.SeqLen, H, KH, hd,
                _dq.AsSpan(0, n * QD), _dk.AsSpan(0, n * KD), _dv.AsSpan(0, n * KD));
            CpuOps.RopeBackward(_dq.AsSpan(0, n * QD), H, hd, _pos.AsSpan(0, n), _invFreq);
            CpuOps.RopeBackward(_dk.AsSpan(0, n * KD), KH, hd, _pos.AsSpan(0, n), _invFreq);
            LinearBackward(l, Proj.Q, _xn1[l], _dq, _dxn, n);
            LinearBackward(l, Proj.K, _xn1[l], _dk, _dxn, n, accumulate: true);
            LinearBackward(l, Proj.V, _xn1[l], _dv, _dxn, n, accumulate: true);
            // Below layer 0 only the embedding is left, which trains only in full fine-tuning.
            if (l == 0 && !full) break;
            _dxmid.AsSpan(0, n * D).CopyTo(_dx);
            CpuOps.RmsNormBackward(_xin[l].AsSpan(0, n * D), _attnNorm[l], _dxn.AsSpan(0, n * D), D, _eps,
                    _dx.AsSpan(0, n * D), full ? GradOf(_attnNorm[l]) : [], accumulate: true);
        }
        if (full) CpuOps.EmbeddingBackward(_ids.AsSpan(0, n), _dx.AsSpan(0, n * D), D, GradOf(_embed));
        return loss;
    }

    /// <summary>y = x W^T (+ s (x A^T) B^T, keeping u = x A^T).</summary>
    private void Linear(int l, Proj p, float[] x, float[] y, int n)
    {
        var (o, i) = p.Shape(_c);
        var xt = T(x, n, i);
        var yt = T(y, n, o);
        _be.MatMul(xt, T(_proj[l][(int)p], o, i), yt);
        if (_adapter?[l, p] is { } m)
        {
            var ut = T(_ua[l][(int)p], n, m.Rank);
            _be.MatMul(xt, T(m.A, m.Rank, m.In), ut);
            _be.MatMul(ut, T(m.B, m.Out, m.Rank), yt, m.Scale, accumulate: true);
        }
    }

    /// <summary>dx (=, or += with accumulate) from dy through the projection and its adapter; weight gradients (+=) where trained.</summary>
    private void LinearBackward(int l, Proj p, float[] x, float[] dy, float[] dx, int n, bool accumulate = false)
    {
        var (o, i) = p.Shape(_c);
        var w = _proj[l][(int)p];
        var dyS = dy.AsSpan(0, n * o);
        var xS = x.AsSpan(0, n * i);
        // dx (+)= dy W, as the backend's tiled x W'^T with W' = W^T.
        _be.MatMul(T(dy, n, o), T(_projT[l][(int)p], i, o), T(dx, n, i), 1f, accumulate);
        if (Method == TrainMethod.Full)
        {
            // dW += dy^T x, as the backend's MatMul(dy^T [o, n], (x^T) [i, n]).
            Transpose(dyS, n, o, _dyT);
            Transpose(xS, n, i, _xT);
            _be.MatMul(T(_dyT, o, n), T(_xT, i, n), T(GradOf(w)!, o, i), 1f, accumulate: true);
        }
        if (_adapter?[l, p] is { } m)
            CpuOps.LoraBackward(xS, _ua[l][(int)p].AsSpan(0, n * m.Rank), dyS, m.A, m.B, m.In, m.Out, m.Rank, m.Scale,
                Method == TrainMethod.Lora ? GradOf(m.A) : [], GradOf(m.B), dx.AsSpan(0, n * i), _dua.AsSpan(0, n * m.Rank));
    }

    /// <summary>
    /// One optimizer step over the accumulated gradients: mask (LoRI-S: grad[~mask] = 0), clip (per tensor by
    /// default, as the reference), AdamW, then zero the gradients. Returns the gradient norm before clipping
    /// (the global norm over all trained tensors).
    /// </summary>
    public float OptimizerStep(double lr, AdamWOptions opt, ClipMode clip = ClipMode.PerTensor, float maxNorm = 1f)
    {
        double sq = 0;
        foreach (var p in Params)
        {
            if (p.Mask is not null) GradClip.ApplyMask(p.Grad, p.Mask);
            if (clip == ClipMode.PerTensor) { double nrm = GradClip.ClipPerTensor(p.Grad, maxNorm); sq += nrm * nrm; }
        }
        float total = clip == ClipMode.PerTensor ? (float)Math.Sqrt(sq)
            : clip == ClipMode.Global ? GradClip.ClipGlobal(Params.Select(p => (Memory<float>)p.Grad).ToList(), maxNorm)
            : (float)Math.Sqrt(Params.Sum(p => { double x = GradClip.Norm(p.Grad); return x * x; }));
        foreach (var p in Params)
        {
            AdamW.Step(p.Value, p.Grad, p.State, lr, opt);
            Array.Clear(p.Grad);
        }
        if (Method == TrainMethod.Full) RefreshTransposes();
        return total;
    }

    public void ZeroGrad()
    {
        foreach (var p in Params) Array.Clear(p.Grad);
    }
}
