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
    /// Generates for each prompt. <paramref name="onToken"/> (sequence index, token) sees every generated token as
    /// it is produced (streaming) and may return false to stop that sequence (stop strings are checked there).
    /// </summary>
    public GenerationResult[] Generate(IReadOnlyList<int[]> prompts, GenerationOptions options, Func<int, int, bool>? onToken = null)
    {
        int b = prompts.Count, v = _m.Config.VocabSize;
        if (b < 1 || b > MaxBatch) throw new ArgumentException($"this generator takes 1..{MaxBatch} prompts (got {b})");
        for (int i = 0; i < b; i++)
        {
            if (prompts[i].Length == 0) throw new ArgumentException($"prompt {i} is empty: at least one token (e.g. BOS) is needed");
            if (prompts[i].Length + options.MaxNewTokens > MaxContext)
                throw new ArgumentException($"prompt {i} has {prompts[i].Length} tokens; with {options.MaxNewTokens} new tokens it exceeds the context of {MaxContext}");
            foreach (var t in prompts[i])
                if ((uint)t >= (uint)v) throw new ArgumentException($"prompt {i} holds token id {t}, outside the vocabulary [0, {v})");
        }
        var samplers = new Sampler[b];
        var outputs = new List<int>[b];
        var finish = new FinishReason?[b];
        var len = new int[b];
        for (int i = 0; i < b; i++)
        {
            samplers[i] = new Sampler(options.Sampling, v, (ulong)i);
            outputs[i] = new List<int>(options.MaxNewTokens);
            len[i] = prompts[i].Length;
        }

        long t0 = Stopwatch.GetTimestamp();
        Prefill(prompts);
        long t1 = Stopwatch.GetTimestamp();
        // rowOf[i]: the row of _logits holding sequence i's next-token logits (after prefill, row i).
        var rowOf = new int[b];
        for (int i = 0; i < b; i++) rowOf[i] = i;
        var live = new int[b];
        while (true)
        {
            int nLive = 0;
            for (int i = 0; i < b; i++)
            {
                if (finish[i] is not null) continue;
                int tok = samplers[i].Sample(_logits.AsSpan(rowOf[i] * v, v));
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
                rowOf[i] = j;
            }
            _m.Forward(_ids.AsSpan(0, nLive), _slots.AsSpan(0, nLive), _pos.AsSpan(0, nLive), _outRows.AsSpan(0, nLive),
                _cache, _logits.AsSpan(0, nLive * v));
        }
        long t2 = Stopwatch.GetTimestamp();
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

    /// <summary>Feeds every prompt token, chunked to the model's forward size; leaves row i of _logits = last-token logits of prompt i.</summary>
    private void Prefill(IReadOnlyList<int[]> prompts)
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
                if (n == cap) { Flush(n, nOut, outSeq); n = 0; nOut = 0; }
            }
        }
        if (n > 0) Flush(n, nOut, outSeq);
    }

    /// <summary>Runs one prefill chunk and moves each finished prompt's logits to its own row.</summary>
    private void Flush(int n, int nOut, int[] outSeq)
    {
        int v = _m.Config.VocabSize;
        _m.Forward(_ids.AsSpan(0, n), _slots.AsSpan(0, n), _pos.AsSpan(0, n), _outRows.AsSpan(0, nOut), _cache, _prefillLogits.AsSpan(0, nOut * v));
        for (int j = 0; j < nOut; j++) Array.Copy(_prefillLogits, j * v, _logits, outSeq[j] * v, v);
    }

    public void Dispose() => _cache.Dispose();
}
