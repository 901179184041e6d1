using System.Diagnostics;
using LoRI.Model;

namespace LoRI.Generation;

public sealed record GenerationOptions
{
    public int MaxNewTokens { get; init; } = 128;
    public SamplingOptions Sampling { get; init; } = new();
    /// <summary>Token ids that end a sequence (the model's eos ids). The stop token is not part of the output.</summary>
    public IReadOnlyList<int> StopIds { get; init; } = [];
}

public enum FinishReason { Eos, Length, Stop }

public sealed record GenerationResult(int[] Tokens, FinishReason Finish, int PromptTokens, double PrefillSeconds, double DecodeSeconds)
{
    public double DecodeTokensPerSecond => Tokens.Length > 1 && DecodeSeconds > 0 ? (Tokens.Length - 1) / DecodeSeconds : 0;
}

/// <summary>
/// Generates continuations for a batch of prompts: one prefill over all prompts (in chunks the model
/// accepts), then one decode step per token in which every live sequence advances together. Buffers are
/// sized once, so a decode step allocates nothing.
/// </summary>
public sealed class Generator : IDisposable
{
    private readonly LlamaModel _m;
    private readonly KvCache _cache;
    private readonly int[] _ids, _slots, _pos, _outRows;
    private readonly float[] _logits, _prefillLogits;

    public int MaxBatch { get; }
    public int MaxContext { get; }

    public Generator(LlamaModel model, int maxBatch = 1, int maxContext = 2048)
    {
        if (maxBatch < 1 || maxBatch > model.MaxOutputsPerForward)
            throw new ArgumentOutOfRangeException(nameof(maxBatch), $"batch must be 1..{model.MaxOutputsPerForward}");
        _m = model;
        MaxBatch = maxBatch;
        MaxContext = Math.Min(maxContext, model.Config.MaxPositionEmbeddings);
        _cache = new KvCache(model.Backend, model.Config, maxBatch, MaxContext);
        int n = model.MaxTokensPerForward;
        _ids = new int[n]; _slots = new int[n]; _pos = new int[n]; _outRows = new int[n];
        _logits = new float[maxBatch * model.Config.VocabSize];
        _prefillLogits = new float[maxBatch * model.Config.VocabSize];
    }

    /// <summary>
    /// Whether to decode on the device when the model's backend offers it (<see cref="IDeviceDecoding"/>): the
    /// token choice then happens there and only ids come back. Default true; false forces the host path (logits
    /// downloaded and sampled by <see cref="Sampler"/> every step).
    /// </summary>
    public bool UseDeviceDecoder { get; set; } = true;

    /// <summary>How the last <see cref="Generate"/> call decoded (path, steps, graph replays).</summary>
    public DecodeStats LastStats { get; private set; } = DecodeStats.Host(0);

    /// <summary>The device decoder, made on first use when the backend offers one.</summary>
    private IDeviceDecoder? DeviceDecoder()
    {
        if (!UseDeviceDecoder) return null;
        if (!_decoderTried)
        {
            _decoderTried = true;
            _decoder = (_m.Backend as IDeviceDecoding)?.CreateDecoder(_m, _cache, MaxBatch);
        }
        return _decoder;
    }

    private IDeviceDecoder? _decoder;
    private bool _decoderTried;

    /// <summary>
    /// Generates for each prompt. <paramref name="onToken"/> (sequence index, token) sees every generated token as
    /// it is produced (streaming) and may return false to stop that sequence (stop strings are checked there).
    /// On a backend with <see cref="IDeviceDecoding"/> (and <see cref="UseDeviceDecoder"/>) tokens are chosen on
    /// the device; greedy tokens are the same either way, sampled ones follow the same distribution from another
    /// random stream (reproducible for a seed on each path).
    /// </summary>
    public GenerationResult[] Generate(IReadOnlyList<int[]> prompts, GenerationOptions options, Func<int, int, bool>? onToken = null)
    {
        int b = prompts.Count, v = _m.Config.VocabSize;
        if (b < 1 || b > MaxBatch) throw new ArgumentException($"this generator takes 1..{MaxBatch} prompts (got {b})");
        options.Sampling.Validate();
        for (int i = 0; i < b; i++)
        {
            if (prompts[i].Length == 0) throw new ArgumentException($"prompt {i} is empty: at least one token (e.g. BOS) is needed");
            if (prompts[i].Length + options.MaxNewTokens > MaxContext)
                throw new ArgumentException($"prompt {i} has {prompts[i].Length} tokens; with {options.MaxNewTokens} new tokens it exceeds the context of {MaxContext}");
            foreach (var t in prompts[i])
                if ((uint)t >= (uint)v) throw new ArgumentException($"prompt {i} holds token id {t}, outside the vocabulary [0, {v})");
        }
        var device = DeviceDecoder();
        device?.Begin(options.Sampling);
        var samplers = device is null ? new Sampler[b] : null;
        var outputs = new List<int>[b];
        var finish = new FinishReason?[b];
        var len = new int[b];
        // pending[i]: the token chosen for sequence i and not yet looked at (after prefill, then after each step).
        var pending = new int[b];
        for (int i = 0; i < b; i++)
        {
            if (samplers is not null) samplers[i] = new Sampler(options.Sampling, v, (ulong)i);
            outputs[i] = new List<int>(options.MaxNewTokens);
            len[i] = prompts[i].Length;
        }

        long t0 = Stopwatch.GetTimestamp();
        Prefill(prompts, device, samplers, pending);
        long t1 = Stopwatch.GetTimestamp();
        var live = new int[b];
        var next = new int[b];
        int steps = 0;
        while (true)
        {
            int nLive = 0;
            for (int i = 0; i < b; i++)
            {
                if (finish[i] is not null) continue;
                int tok = pending[i];
                if (Contains(options.StopIds, tok)) { finish[i] = FinishReason.Eos; continue; }
                outputs[i].Add(tok);
                if (onToken is not null && !onToken(i, tok)) { finish[i] = FinishReason.Stop; continue; }
                if (outputs[i].Count >= options.MaxNewTokens) { finish[i] = FinishReason.Length; continue; }
                live[nLive++] = i;
            }
            if (nLive == 0) break;
            for (int j = 0; j < nLive; j++)
            {
                int i = live[j];
                _ids[j] = outputs[i][^1];
                _slots[j] = i;
                _pos[j] = len[i]++;
                _outRows[j] = j;
            }
            steps++;
            if (device is not null)
            {
                device.Step(_ids.AsSpan(0, nLive), _slots.AsSpan(0, nLive), _pos.AsSpan(0, nLive), next.AsSpan(0, nLive));
                for (int j = 0; j < nLive; j++) pending[live[j]] = next[j];
                continue;
            }
            _m.Forward(_ids.AsSpan(0, nLive), _slots.AsSpan(0, nLive), _pos.AsSpan(0, nLive), _outRows.AsSpan(0, nLive),
                _cache, _logits.AsSpan(0, nLive * v));
            for (int j = 0; j < nLive; j++) pending[live[j]] = samplers![live[j]].Sample(_logits.AsSpan(j * v, v));
        }
        long t2 = Stopwatch.GetTimestamp();
        LastStats = device?.Stats ?? DecodeStats.Host(steps);
        var res = new GenerationResult[b];
        for (int i = 0; i < b; i++)
            res[i] = new GenerationResult(outputs[i].ToArray(), finish[i] ?? FinishReason.Length, prompts[i].Length,
                Stopwatch.GetElapsedTime(t0, t1).TotalSeconds, Stopwatch.GetElapsedTime(t1, t2).TotalSeconds);
        return res;
    }

    private static bool Contains(IReadOnlyList<int> ids, int t)
    {
        for (int i = 0; i < ids.Count; i++) if (ids[i] == t) return true;
        return false;
    }

    /// <summary>
    /// Feeds every prompt token, chunked to the model's forward size, and chooses each prompt's first new token
    /// into pending[i]: on the device, or by sampler i from the prompt's last-token logits.
    /// </summary>
    private void Prefill(IReadOnlyList<int[]> prompts, IDeviceDecoder? device, Sampler[]? samplers, int[] pending)
    {
        int cap = _m.MaxTokensPerForward;
        int n = 0, nOut = 0;
        var outSeq = new int[prompts.Count];
        for (int i = 0; i < prompts.Count; i++)
        {
            var p = prompts[i];
            for (int t = 0; t < p.Length; t++)
            {
                _ids[n] = p[t]; _slots[n] = i; _pos[n] = t;
                if (t == p.Length - 1) { _outRows[nOut] = n; outSeq[nOut++] = i; }
                n++;
                if (n == cap) { Flush(n, nOut, outSeq, device, samplers, pending); n = 0; nOut = 0; }
            }
        }
        if (n > 0) Flush(n, nOut, outSeq, device, samplers, pending);
    }

    /// <summary>Runs one prefill chunk and chooses the first token of each prompt that ends in it.</summary>
    private void Flush(int n, int nOut, int[] outSeq, IDeviceDecoder? device, Sampler[]? samplers, int[] pending)
    {
        int v = _m.Config.VocabSize;
        if (device is not null)
        {
            var chosen = new int[nOut];
            device.Prefill(_ids.AsSpan(0, n), _slots.AsSpan(0, n), _pos.AsSpan(0, n), _outRows.AsSpan(0, nOut), chosen);
            for (int j = 0; j < nOut; j++) pending[outSeq[j]] = chosen[j];
            return;
        }
        _m.Forward(_ids.AsSpan(0, n), _slots.AsSpan(0, n), _pos.AsSpan(0, n), _outRows.AsSpan(0, nOut), _cache, _prefillLogits.AsSpan(0, nOut * v));
        for (int j = 0; j < nOut; j++) pending[outSeq[j]] = samplers![outSeq[j]].Sample(_prefillLogits.AsSpan(j * v, v));
    }

    public void Dispose()
    {
        _decoder?.Dispose();
        _decoder = null;
        _cache.Dispose();
    }
}
