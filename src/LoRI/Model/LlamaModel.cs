using LoRI.Backend;
using LoRI.Tensors;

namespace LoRI.Model;

/// <summary>
/// Adds an adapter's contribution to a projection's output: y += delta(x). The model calls it right after
/// the base MatMul of every projection (LoRA/LoRI apply unmerged through this).
/// </summary>
public interface ILinearHook
{
    /// <summary>x [N, in] F32 is the projection's input, y [N, out] F32 its output so far.</summary>
    void Apply(int layer, Proj proj, Tensor x, Tensor y);
}

/// <summary>
/// A hook that runs a projection's whole linear op, base product included, so a backend with
/// <see cref="ILinearAdapterOps"/> can fold the adapters into the base GEMM (AdapterSet, unmerged).
/// </summary>
public interface ILinearAdapterHook : ILinearHook
{
    /// <summary>y = x W^T of a projection plus the adapters' contribution. x [N, in] F32, w the projection's weight, y [N, out] F32.</summary>
    void Linear(int layer, Proj proj, Tensor x, Tensor w, Tensor y);
}

/// <summary>
/// Activation buffers for one forward over N tokens, as views of a workspace. Field shapes:
/// </summary>
public sealed class LlamaBuffers
{
    public required int Tokens { get; init; }
    public required Tensor Ids { get; init; }        // I32 [N]    token ids
    public required Tensor Slots { get; init; }      // I32 [N]    KV-cache slot (sequence) of each token
    public required Tensor Positions { get; init; }  // I32 [N]    position of each token in its sequence
    public required Tensor X { get; init; }          // F32 [N, D] the residual stream
    public required Tensor Xn { get; init; }         // F32 [N, D] normed input of attention / MLP
    public required Tensor Q { get; init; }          // F32 [N, QD]
    public required Tensor K { get; init; }          // F32 [N, KvD]
    public required Tensor V { get; init; }          // F32 [N, KvD]
    public required Tensor Attn { get; init; }       // F32 [N, QD] attention output before o_proj
    public required Tensor Out { get; init; }        // F32 [N, D]  o_proj / down_proj output
    public required Tensor Gate { get; init; }       // F32 [N, F]
    public required Tensor Up { get; init; }         // F32 [N, F]
    public required Tensor Act { get; init; }        // F32 [N, F]  silu(gate) * up
}

/// <summary>
/// A LlamaForCausalLM: the graph, written once against IBackend. Forward runs a batch of tokens from any
/// number of sequences (each its own KV-cache slot) and produces logits for chosen rows.
/// </summary>
public sealed partial class LlamaModel : IDisposable
{
    private readonly Workspace _ws;
    /// <summary>What backs the weights' memory (the memory-mapped checkpoint), disposed with the model.</summary>
    private IDisposable? _owner;

    public LlamaConfig Config { get; }
    public IBackend Backend { get; }
    public LlamaWeights Weights { get; }
    public Tensor InvFreq { get; }                  // F32 [HeadDim/2] rotary inverse frequencies (llama3 scaling applied)
    /// <summary>Adapters applied unmerged, or null.</summary>
    public ILinearHook? Hook { get; set; }

    public LlamaModel(LlamaConfig config, IBackend backend, LlamaWeights weights, int maxTokensPerForward = 512)
    {
        Config = config;
        Backend = backend;
        Weights = weights;
        InvFreq = backend.Allocate(DType.F32, config.HeadDim / 2);
        backend.Upload<float>(config.RopeInvFreq(), InvFreq);
        _ws = new Workspace(this, maxTokensPerForward);
    }

    /// <summary>The most tokens one Forward call takes (longer prompts are fed in chunks).</summary>
    public int MaxTokensPerForward => _ws.MaxTokens;

    /// <summary>The most logit rows one Forward call returns.</summary>
    public int MaxOutputsPerForward => _ws.MaxOutputs;

    /// <summary>
    /// Runs tokens ids[i] of sequence slots[i] at positions[i] (each sequence's earlier positions must already
    /// be in the cache) and writes the logits of rows outputRows[j] to logits [outputRows.Length, V].
    /// </summary>
    public void Forward(ReadOnlySpan<int> ids, ReadOnlySpan<int> slots, ReadOnlySpan<int> positions,
                        ReadOnlySpan<int> outputRows, KvCache cache, Span<float> logits)
    {
        if (logits.Length != outputRows.Length * Config.VocabSize)
            throw new ArgumentException($"the logits span must hold rows x {Config.VocabSize} floats (got {outputRows.Length} rows, {logits.Length} floats)");
        var t = ForwardLogits(ids, slots, positions, outputRows, cache);
        if (t is not null) Backend.Download(t, logits);
    }

    /// <summary>
    /// <see cref="Forward"/> with the logits left on the backend: F32 [outputRows.Length, V], a view of the model's
    /// workspace valid until the next forward (null when no row is asked for). Device-side sampling reads it there.
    /// </summary>
    public Tensor? ForwardLogits(ReadOnlySpan<int> ids, ReadOnlySpan<int> slots, ReadOnlySpan<int> positions,
                                 ReadOnlySpan<int> outputRows, KvCache cache)
    {
        int n = ids.Length;
        if (n == 0 || n > _ws.MaxTokens || slots.Length != n || positions.Length != n)
            throw new ArgumentException($"Forward takes 1..{_ws.MaxTokens} tokens with one slot and position each (got {n}, {slots.Length}, {positions.Length})");
        if (outputRows.Length > _ws.MaxOutputs)
            throw new ArgumentException($"Forward returns at most {_ws.MaxOutputs} rows (got {outputRows.Length})");
        var b = _ws.For(n);
        Backend.Upload(ids, b.Ids);
        Backend.Upload(slots, b.Slots);
        Backend.Upload(positions, b.Positions);
        Hidden(b, cache);
        if (outputRows.Length == 0) return null;
        var rows = _ws.OutRows(outputRows.Length);
        Backend.Upload(outputRows, rows.Rows);
        Backend.GatherRows(b.X, rows.Rows, rows.H);
        Backend.RmsNorm(rows.H, Weights.FinalNorm, Config.RmsNormEps, rows.H);
        Backend.MatMul(rows.H, Weights.LmHead, rows.Logits);
        return rows.Logits;
    }

    /// <summary>Embeds b.Ids and runs every layer; b.X holds the last hidden states (before the final norm).</summary>
    public void Hidden(LlamaBuffers b, KvCache cache)
    {
        Backend.Embedding(Weights.Embed, b.Ids, b.X);
        for (int l = 0; l < Config.NumLayers; l++) ForwardLayer(l, b, cache.K[l], cache.V[l]);
    }

    /// <summary>
    /// One decoder layer on b.X in place:
    ///   X += o_proj(attention(rope(q_proj(n1)), rope(k_proj(n1)), v_proj(n1)))   with n1 = rmsnorm(X)
    ///   X += down_proj(silu(gate_proj(n2)) * up_proj(n2))                         with n2 = rmsnorm(X)
    /// K and V of the batch's tokens are stored into kCache/vCache [S, T, KvD] first.
    /// </summary>
    public void ForwardLayer(int l, LlamaBuffers b, Tensor kCache, Tensor vCache)
    {
        var c = Config;
        var w = Weights.Layers[l];
        Backend.RmsNorm(b.X, w.AttnNorm, c.RmsNormEps, b.Xn);
        Linear(l, Proj.Q, b.Xn, b.Q);
        Linear(l, Proj.K, b.Xn, b.K);
        Linear(l, Proj.V, b.Xn, b.V);
        Backend.Rope(b.Q, c.NumHeads, c.HeadDim, b.Positions, InvFreq);
        Backend.Rope(b.K, c.NumKvHeads, c.HeadDim, b.Positions, InvFreq);
        Backend.KvStore(b.K, kCache, b.Slots, b.Positions);
        Backend.KvStore(b.V, vCache, b.Slots, b.Positions);
        Backend.Attention(b.Q, kCache, vCache, b.Slots, b.Positions, c.NumHeads, c.NumKvHeads, c.HeadDim, b.Attn);
        Linear(l, Proj.O, b.Attn, b.Out);
        Backend.Add(b.X, b.Out, b.X);

        Backend.RmsNorm(b.X, w.MlpNorm, c.RmsNormEps, b.Xn);
        Linear(l, Proj.Gate, b.Xn, b.Gate);
        Linear(l, Proj.Up, b.Xn, b.Up);
        Backend.SwiGlu(b.Gate, b.Up, b.Act);
        Linear(l, Proj.Down, b.Act, b.Out);
        Backend.Add(b.X, b.Out, b.X);
    }

    /// <summary>y = x W^T of a projection, plus the unmerged adapters' contribution.</summary>
    public void Linear(int layer, Proj p, Tensor x, Tensor y)
    {
        var w = Weights.Layers[layer][p];
        if (Hook is ILinearAdapterHook fused)
        {
            fused.Linear(layer, p, x, w, y);
            return;
        }
        Backend.MatMul(x, w, y);
        Hook?.Apply(layer, p, x, y);
    }

    /// <summary>A fresh set of buffers for `tokens` tokens (owned by the caller: used by training to save activations).</summary>
    public LlamaBuffers AllocateBuffers(int tokens) => Workspace.Create(Backend, Config, tokens, null);

    public void Dispose()
    {
        _ws.Dispose();
        InvFreq.Dispose();
        Weights.Dispose();
        _owner?.Dispose();
        _owner = null;
    }

    /// <summary>
    /// Buffers for up to MaxTokens tokens, allocated once; views for each token count are made on first use and
    /// kept, so repeated forwards of the same size (every decode step) allocate nothing.
    /// </summary>
    private sealed class Workspace : IDisposable
    {
        private readonly List<Tensor> _owned = new();
        private readonly LlamaBuffers?[] _byCount;
        private readonly (Tensor Rows, Tensor H, Tensor Logits)?[] _outByCount;
        private readonly LlamaBuffers _full;
        private readonly Tensor _outRows, _outH, _logits;
        private readonly LlamaConfig _c;
        /// <summary>Logit rows one forward can return: a [64, 128256] F32 buffer is 33 MB; more would cost memory for nothing.</summary>
        private const int MaxOutputRows = 64;
        public int MaxTokens { get; }
        public int MaxOutputs { get; }

        public Workspace(LlamaModel m, int maxTokens)
        {
            _c = m.Config;
            MaxTokens = maxTokens;
            _full = Create(m.Backend, _c, maxTokens, _owned);
            _byCount = new LlamaBuffers?[maxTokens + 1];
            _byCount[maxTokens] = _full;
            MaxOutputs = Math.Min(maxTokens, MaxOutputRows);
            _outByCount = new (Tensor, Tensor, Tensor)?[MaxOutputs + 1];
            _outRows = Own(m.Backend.Allocate(DType.I32, MaxOutputs));
            _outH = Own(m.Backend.Allocate(DType.F32, MaxOutputs, _c.HiddenSize));
            _logits = Own(m.Backend.Allocate(DType.F32, MaxOutputs, _c.VocabSize));
        }

        private Tensor Own(Tensor t) { _owned.Add(t); return t; }

        public static LlamaBuffers Create(IBackend be, LlamaConfig c, int n, List<Tensor>? owned)
        {
            Tensor A(DType dt, params int[] shape) { var t = be.Allocate(dt, shape); owned?.Add(t); return t; }
            return new LlamaBuffers
            {
                Tokens = n,
                Ids = A(DType.I32, n), Slots = A(DType.I32, n), Positions = A(DType.I32, n),
                X = A(DType.F32, n, c.HiddenSize), Xn = A(DType.F32, n, c.HiddenSize),
                Q = A(DType.F32, n, c.QDim), K = A(DType.F32, n, c.KvDim), V = A(DType.F32, n, c.KvDim),
                Attn = A(DType.F32, n, c.QDim), Out = A(DType.F32, n, c.HiddenSize),
                Gate = A(DType.F32, n, c.IntermediateSize), Up = A(DType.F32, n, c.IntermediateSize),
                Act = A(DType.F32, n, c.IntermediateSize),
            };
        }

        public LlamaBuffers For(int n) => _byCount[n] ??= new LlamaBuffers
        {
            Tokens = n,
            Ids = _full.Ids.Slice(0, n), Slots = _full.Slots.Slice(0, n), Positions = _full.Positions.Slice(0, n),
            X = _full.X.Slice(0, n), Xn = _full.Xn.Slice(0, n), Q = _full.Q.Slice(0, n), K = _full.K.Slice(0, n),
            V = _full.V.Slice(0, n), Attn = _full.Attn.Slice(0, n), Out = _full.Out.Slice(0, n),
            Gate = _full.Gate.Slice(0, n), Up = _full.Up.Slice(0, n), Act = _full.Act.Slice(0, n),
        };

        public (Tensor Rows, Tensor H, Tensor Logits) OutRows(int n) =>
            _outByCount[n] ??= (_outRows.Slice(0, n), _outH.Slice(0, n), _logits.Slice(0, n));

        public void Dispose()
        {
            foreach (var t in _owned) t.Dispose();
        }
    }
}
