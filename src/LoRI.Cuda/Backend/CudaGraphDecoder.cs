using LoRI.Backend;
using LoRI.Cuda.Driver;
using LoRI.Model;
using LoRI.Tensors;

namespace LoRI.Cuda.Backend;

/// <summary>
/// Greedy decoding of one sequence on a <see cref="CudaBackend"/> with the decode step captured once as a
/// CUDA graph and replayed per token. The step is: embedding of the current token, every layer (KV cache on
/// the device), the final norm, the lm_head, the on-device argmax written into the next step's token id, and
/// the position advanced, so a replay needs nothing from the host; the host only reads the new id back.
/// The first step runs uncaptured (it sizes the backend's scratch buffers), the second is captured.
/// </summary>
public sealed class CudaGraphDecoder : IDisposable
{
    private readonly LlamaModel _model;
    private readonly CudaBackend _be;
    private readonly KvCache _cache;
    private readonly int _slot;
    private readonly LlamaBuffers _b;   // one token: Ids, Slots, Positions I32 [1], activations [1, *]
    private readonly Tensor _h;         // F32 [1, D]  final-normed hidden state
    private readonly Tensor _logits;    // F32 [1, V]
    private readonly List<Tensor> _owned = new();
    private CudaGraph? _graph;
    private readonly int[] _one = new int[1];
    private int _position = -1, _stepsRun;

    /// <summary>Steps run by replaying the captured graph (the others ran op by op).</summary>
    public int GraphReplays { get; private set; }
    /// <summary>Kernel launches in the captured step (-1 before capture).</summary>
    public int LaunchesPerStep => _graph?.LaunchCount ?? -1;

    public CudaGraphDecoder(LlamaModel model, KvCache cache, int slot = 0)
    {
        _be = model.Backend as CudaBackend ?? throw new ArgumentException($"CudaGraphDecoder needs a model on a CUDA backend, not '{model.Backend.Name}'");
        if (slot < 0 || slot >= cache.Slots) throw new ArgumentOutOfRangeException(nameof(slot), slot, $"the cache has {cache.Slots} slots");
        _model = model;
        _cache = cache;
        _slot = slot;
        _b = model.AllocateBuffers(1);
        foreach (var t in new[] { _b.Ids, _b.Slots, _b.Positions, _b.X, _b.Xn, _b.Q, _b.K, _b.V, _b.Attn, _b.Out, _b.Gate, _b.Up, _b.Act }) _owned.Add(t);
        _h = _be.Allocate(DType.F32, 1, model.Config.HiddenSize);
        _logits = _be.Allocate(DType.F32, 1, model.Config.VocabSize);
        _owned.Add(_h);
        _owned.Add(_logits);
    }

    /// <summary>
    /// Prefills <paramref name="prompt"/> (positions 0..) and returns up to <paramref name="maxNewTokens"/> greedy
    /// tokens (the lowest id among equal logits), stopping after a token in <paramref name="stop"/>.
    /// </summary>
    public int[] Generate(ReadOnlySpan<int> prompt, int maxNewTokens, IReadOnlyCollection<int>? stop = null)
    {
        if (prompt.Length + maxNewTokens > _cache.MaxTokens)
            throw new ArgumentException($"prompt of {prompt.Length} and {maxNewTokens} new tokens exceed the cache's {_cache.MaxTokens} positions");
        int first = Prefill(prompt);
        return Decode(first, maxNewTokens, stop);
    }

    /// <summary>Runs the prompt through the model (positions 0..) and returns the greedy first token.</summary>
    public int Prefill(ReadOnlySpan<int> prompt)
    {
        var c = _model.Config;
        if (prompt.Length == 0) throw new ArgumentException("an empty prompt");
        if (prompt.Length >= _cache.MaxTokens) throw new ArgumentException($"a prompt of {prompt.Length} leaves no room in the cache's {_cache.MaxTokens} positions");
        var logits = new float[c.VocabSize];
        var slots = new int[prompt.Length];
        Array.Fill(slots, _slot);
        var positions = new int[prompt.Length];
        for (int i = 0; i < positions.Length; i++) positions[i] = i;
        for (int p0 = 0; p0 < prompt.Length; p0 += _model.MaxTokensPerForward)
        {
            int n = Math.Min(_model.MaxTokensPerForward, prompt.Length - p0);
            bool last = p0 + n == prompt.Length;
            _model.Forward(prompt.Slice(p0, n), slots.AsSpan(p0, n), positions.AsSpan(p0, n), last ? [n - 1] : ReadOnlySpan<int>.Empty, _cache,
                           last ? logits : Span<float>.Empty);
        }
        _position = prompt.Length;
        return ArgmaxLowest(logits);
    }

    /// <summary>
    /// Greedy decoding after <see cref="Prefill"/>: <paramref name="first"/> (the prefill's token) is the first of at
    /// most <paramref name="maxNewTokens"/> tokens returned; each later one costs one step (a graph replay from the third).
    /// </summary>
    public int[] Decode(int first, int maxNewTokens, IReadOnlyCollection<int>? stop = null)
    {
        if (_position < 0) throw new InvalidOperationException("Decode needs a Prefill first");
        if (_position + maxNewTokens > _cache.MaxTokens)
            throw new ArgumentException($"{maxNewTokens} new tokens after position {_position} exceed the cache's {_cache.MaxTokens} positions");
        int token = first;
        var result = new List<int>();
        _be.Upload<int>([token], _b.Ids);
        _be.Upload<int>([_slot], _b.Slots);
        _be.Upload<int>([_position], _b.Positions);
        for (int i = 0; i < maxNewTokens; i++)
        {
            result.Add(token);
            if (i == maxNewTokens - 1 || (stop is not null && stop.Contains(token))) break;
            if (_graph is not null)
            {
                _graph.Launch();
                GraphReplays++;
            }
            else if (_stepsRun == 0) Step();
            else
            {
                _be.BeginCapture();
                try
                {
                    Step();
                }
                finally
                {
                    _graph = _be.EndCapture();
                }
                _graph.Launch();
                GraphReplays++;
            }
            _stepsRun++;
            _position++;
            _be.Download<int>(_b.Ids, _one);
            token = _one[0];
        }
        return result.ToArray();
    }

    private void Step()
    {
        var c = _model.Config;
        _model.Hidden(_b, _cache);
        _be.RmsNorm(_b.X, _model.Weights.FinalNorm, c.RmsNormEps, _h);
        _be.MatMul(_h, _model.Weights.LmHead, _logits);
        _be.Argmax(_logits, _b.Ids);
        _be.AdvancePositions(_b.Positions);
    }

    private static int ArgmaxLowest(ReadOnlySpan<float> v)
    {
        int best = 0;
        for (int i = 1; i < v.Length; i++)
            if (v[i] > v[best]) best = i;
        return best;
    }

    public void Dispose()
    {
        _graph?.Dispose();
        foreach (var t in _owned) t.Dispose();
        _owned.Clear();
    }
}
