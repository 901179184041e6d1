using LoRI.Backend;
using LoRI.Generation;
using LoRI.Model;
using LoRI.Tensors;

namespace LoRI.Cuda.Backend;

public sealed partial class CudaBackend : IDeviceDecoding
{
    /// <summary>The graph-replaying decoder of <see cref="CudaDeviceDecoder"/> (null for a model or cache on another backend).</summary>
    public IDeviceDecoder? CreateDecoder(LlamaModel model, KvCache cache, int maxBatch)
    {
        if (!ReferenceEquals(model.Backend, this) || !ReferenceEquals(cache.K[0].Backend, this)) return null;
        return new CudaDeviceDecoder(model, cache, maxBatch);
    }
}

/// <summary>
/// The decode loop of <see cref="Generator"/> on a <see cref="CudaBackend"/>: the KV cache on the device, the token
/// chosen on the device (greedy argmax, or temperature / top-k / top-p with on-device random numbers), and the
/// decode step of each batch size captured once as a CUDA graph and replayed. A step of n sequences is
/// embedding, every layer (unmerged adapters included, through the fused adapter op), final norm, lm_head,
/// the token choice written into the next step's ids, and the positions advanced; while the batch is the one
/// of the previous step, a replay needs nothing from the host, which reads back n ids.
///
/// Batches: one graph per live count n (1..maxBatch) met in a call, captured lazily. When a sequence finishes the
/// others are compacted, so the host uploads their ids, slots and positions once and the next count's graph runs.
/// The first step at a count runs op by op (it sizes the backend's scratch), the second is captured. A graph is
/// dropped when the scratch it points into was reallocated since, and at every <see cref="Begin"/> (adapters or
/// merged weights may have changed between calls). Should a step refuse capture (a linear hook that copies from
/// the host), the decoder keeps running steps op by op, still sampling on the device.
/// </summary>
public sealed class CudaDeviceDecoder : IDeviceDecoder
{
    /// <summary>The path name in <see cref="DecodeStats"/>: steps replayed from graphs, or (a capture was refused) run op by op.</summary>
    public const string PathName = "cuda-graph", StepsPathName = "cuda-steps";

    private readonly LlamaModel _model;
    private readonly CudaBackend _be;
    private readonly KvCache _cache;
    private readonly int _maxBatch;
    private readonly List<Tensor> _owned = new();
    private readonly LlamaBuffers _full;
    private readonly LlamaBuffers?[] _views;         // per live count n
    private readonly Tensor _h, _logits;             // F32 [maxBatch, D], [maxBatch, V]
    private readonly (Tensor H, Tensor Logits)?[] _outViews;
    private readonly Tensor _prefillSlots, _prefillPositions, _prefillIds;   // I32 [model.MaxOutputsPerForward]
    private readonly int[] _prefillHostSlots, _prefillHostPositions;
    private readonly CudaGraph?[] _graphs;
    private readonly ulong[] _graphScratch, _warmScratch;
    private readonly bool[] _warm;
    private readonly int[] _lastSlots, _lastPositions, _lastNext;
    private int _lastN;
    private SamplingOptions _sampling = new();
    private bool _noGraph;
    private int _steps, _replays, _captures, _launchesPerStep = -1;

    /// <summary>Why steps stopped being captured (a capture refused an op), or null while graphs are used.</summary>
    public string? NoGraphReason { get; private set; }

    public CudaDeviceDecoder(LlamaModel model, KvCache cache, int maxBatch)
    {
        _be = model.Backend as CudaBackend ?? throw new ArgumentException($"CudaDeviceDecoder needs a model on a CUDA backend, not '{model.Backend.Name}'");
        if (maxBatch < 1 || maxBatch > cache.Slots)
            throw new ArgumentOutOfRangeException(nameof(maxBatch), maxBatch, $"1..{cache.Slots} (the cache's slots)");
        _model = model;
        _cache = cache;
        _maxBatch = maxBatch;
        var c = model.Config;
        try
        {
            _full = model.AllocateBuffers(maxBatch);
            foreach (var t in new[] { _full.Ids, _full.Slots, _full.Positions, _full.X, _full.Xn, _full.Q, _full.K, _full.V, _full.Attn, _full.Out, _full.Gate, _full.Up, _full.Act })
                _owned.Add(t);
            _h = Own(_be.Allocate(DType.F32, maxBatch, c.HiddenSize));
            _logits = Own(_be.Allocate(DType.F32, maxBatch, c.VocabSize));
            int outs = model.MaxOutputsPerForward;
            _prefillSlots = Own(_be.Allocate(DType.I32, outs));
            _prefillPositions = Own(_be.Allocate(DType.I32, outs));
            _prefillIds = Own(_be.Allocate(DType.I32, outs));
        }
        catch
        {
            Dispose();
            throw;
        }
        _prefillHostSlots = new int[model.MaxOutputsPerForward];
        _prefillHostPositions = new int[model.MaxOutputsPerForward];
        _views = new LlamaBuffers?[maxBatch + 1];
        _views[maxBatch] = _full;
        _outViews = new (Tensor, Tensor)?[maxBatch + 1];
        _graphs = new CudaGraph?[maxBatch + 1];
        _graphScratch = new ulong[maxBatch + 1];
        _warmScratch = new ulong[maxBatch + 1];
        _warm = new bool[maxBatch + 1];
        _lastSlots = new int[maxBatch];
        _lastPositions = new int[maxBatch];
        _lastNext = new int[maxBatch];
    }

    private Tensor Own(Tensor t)
    {
        _owned.Add(t);
        return t;
    }

    public DecodeStats Stats => new(_noGraph ? StepsPathName : PathName, _steps, _replays, _captures, _launchesPerStep);

    public void Begin(SamplingOptions sampling)
    {
        sampling.Validate();
        _sampling = sampling;
        DropGraphs();
        Array.Clear(_warm);
        _lastN = 0;
        _noGraph = false;
        NoGraphReason = null;
        _steps = _replays = _captures = 0;
        _launchesPerStep = -1;
    }

    public void Prefill(ReadOnlySpan<int> ids, ReadOnlySpan<int> slots, ReadOnlySpan<int> positions, ReadOnlySpan<int> outputRows, Span<int> sampled)
    {
        if (sampled.Length != outputRows.Length)
            throw new ArgumentException($"{outputRows.Length} output rows need as many sampled ids (got room for {sampled.Length})");
        foreach (var s in slots)
            if ((uint)s >= (uint)_maxBatch) throw new ArgumentOutOfRangeException(nameof(slots), s, $"slots are 0..{_maxBatch - 1}");
        _lastN = 0;
        var logits = _model.ForwardLogits(ids, slots, positions, outputRows, _cache);
        int r = outputRows.Length;
        if (logits is null || r == 0) return;
        var chosen = _prefillIds.Slice(0, r);
        if (_sampling.Temperature == 0) _be.Argmax(logits, chosen);
        else
        {
            for (int j = 0; j < r; j++)
            {
                _prefillHostSlots[j] = slots[outputRows[j]];
                _prefillHostPositions[j] = positions[outputRows[j]];
            }
            var sl = _prefillSlots.Slice(0, r);
            var pos = _prefillPositions.Slice(0, r);
            _be.Upload<int>(_prefillHostSlots.AsSpan(0, r), sl);
            _be.Upload<int>(_prefillHostPositions.AsSpan(0, r), pos);
            _be.SampleRows(logits, _sampling.Temperature, _sampling.TopK, _sampling.TopP, _sampling.Seed, sl, pos, chosen);
        }
        _be.Download<int>(chosen, sampled);
    }

    public void Step(ReadOnlySpan<int> ids, ReadOnlySpan<int> slots, ReadOnlySpan<int> positions, Span<int> next)
    {
        int n = ids.Length;
        if (n < 1 || n > _maxBatch || slots.Length != n || positions.Length != n || next.Length != n)
            throw new ArgumentException($"a decode step takes 1..{_maxBatch} sequences with one slot, position and output each (got {n}, {slots.Length}, {positions.Length}, {next.Length})");
        for (int j = 0; j < n; j++)
        {
            if ((uint)slots[j] >= (uint)_maxBatch) throw new ArgumentOutOfRangeException(nameof(slots), slots[j], $"slots are 0..{_maxBatch - 1}");
            if (positions[j] < 0 || positions[j] >= _cache.MaxTokens)
                throw new ArgumentOutOfRangeException(nameof(positions), positions[j], $"positions are 0..{_cache.MaxTokens - 1}");
        }
        var b = Buffers(n);
        bool continues = Continues(ids, slots, positions);
        _lastN = 0;   // until this step completes, the device's ids and positions are not known to follow
        if (!continues)
        {
            _be.Upload(ids, b.Ids);
            _be.Upload(slots, b.Slots);
            _be.Upload(positions, b.Positions);
        }

        ulong scratch = _be.ScratchFingerprint();
        var g = _graphs[n];
        if (g is not null && _graphScratch[n] != scratch)
        {
            g.Dispose();
            _graphs[n] = g = null;
            _warm[n] = false;
        }
        if (g is not null) Replay(g);
        else if (_noGraph || !_warm[n] || _warmScratch[n] != scratch)
        {
            RunStep(n);
            _warm[n] = true;
            _warmScratch[n] = _be.ScratchFingerprint();
        }
        else Capture(n, scratch);
        _steps++;

        _be.Download(b.Ids, next);
        _lastN = n;
        slots.CopyTo(_lastSlots);
        next.CopyTo(_lastNext);
        for (int j = 0; j < n; j++) _lastPositions[j] = positions[j] + 1;
    }

    /// <summary>True when this step is the previous one's batch one position on: its ids, slots and positions are on the device already.</summary>
    private bool Continues(ReadOnlySpan<int> ids, ReadOnlySpan<int> slots, ReadOnlySpan<int> positions)
    {
        int n = ids.Length;
        return n == _lastN && ids.SequenceEqual(_lastNext.AsSpan(0, n)) && slots.SequenceEqual(_lastSlots.AsSpan(0, n))
               && positions.SequenceEqual(_lastPositions.AsSpan(0, n));
    }

    private void Replay(CudaGraph g)
    {
        g.Launch();
        _replays++;
    }

    private void Capture(int n, ulong scratch)
    {
        _be.BeginCapture();
        CudaGraph g;
        try
        {
            RunStep(n);
        }
        catch (InvalidOperationException e)
        {
            // Nothing ran while capturing: run this step op by op, and every later one.
            _be.EndCapture().Dispose();
            _noGraph = true;
            NoGraphReason = e.Message;
            RunStep(n);
            return;
        }
        catch
        {
            _be.EndCapture().Dispose();
            throw;
        }
        g = _be.EndCapture();
        _graphs[n] = g;
        _graphScratch[n] = scratch;
        _captures++;
        _launchesPerStep = g.LaunchCount;
        Replay(g);
    }

    /// <summary>One decode step of the first n rows, every op on the backend's stream (captured or not).</summary>
    private void RunStep(int n)
    {
        var b = Buffers(n);
        var (h, logits) = OutViews(n);
        _model.Hidden(b, _cache);
        _be.RmsNorm(b.X, _model.Weights.FinalNorm, _model.Config.RmsNormEps, h);
        _be.MatMul(h, _model.Weights.LmHead, logits);
        if (_sampling.Temperature == 0) _be.Argmax(logits, b.Ids);
        else _be.SampleRows(logits, _sampling.Temperature, _sampling.TopK, _sampling.TopP, _sampling.Seed, b.Slots, b.Positions, b.Ids);
        _be.AdvancePositions(b.Positions);
    }

    private LlamaBuffers Buffers(int n) => _views[n] ??= new LlamaBuffers
    {
        Tokens = n,
        Ids = _full.Ids.Slice(0, n), Slots = _full.Slots.Slice(0, n), Positions = _full.Positions.Slice(0, n),
        X = _full.X.Slice(0, n), Xn = _full.Xn.Slice(0, n), Q = _full.Q.Slice(0, n), K = _full.K.Slice(0, n),
        V = _full.V.Slice(0, n), Attn = _full.Attn.Slice(0, n), Out = _full.Out.Slice(0, n),
        Gate = _full.Gate.Slice(0, n), Up = _full.Up.Slice(0, n), Act = _full.Act.Slice(0, n),
    };

    private (Tensor H, Tensor Logits) OutViews(int n) => _outViews[n] ??= (_h.Slice(0, n), _logits.Slice(0, n));

    private void DropGraphs()
    {
        for (int i = 0; i < _graphs.Length; i++)
        {
            _graphs[i]?.Dispose();
            _graphs[i] = null;
        }
    }

    public void Dispose()
    {
        if (_graphs is not null) DropGraphs();
        foreach (var t in _owned) t.Dispose();
        _owned.Clear();
    }
}
