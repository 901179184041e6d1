using LoRI.Tensors;

namespace LoRI.Generation;

/// <summary>How the next token is picked. Temperature 0 is greedy (argmax); otherwise temperature, then top-k, then top-p, as HF applies them.</summary>
public sealed record SamplingOptions
{
    public float Temperature { get; init; }
    /// <summary>Keep only the k most likely tokens (0 = all).</summary>
    public int TopK { get; init; }
    /// <summary>Keep the smallest set of most likely tokens whose probability reaches p (1 = all).</summary>
    public float TopP { get; init; } = 1f;
    public ulong Seed { get; init; }

    public void Validate()
    {
        if (!(Temperature >= 0) || !float.IsFinite(Temperature)) throw new ArgumentException($"temperature must be >= 0 (found {Temperature})");
        if (TopK < 0) throw new ArgumentException($"top-k must be >= 0 (found {TopK})");
        if (!(TopP > 0 && TopP <= 1)) throw new ArgumentException($"top-p must be in (0, 1] (found {TopP})");
    }
}

/// <summary>Picks tokens from logits. Holds its scratch, so sampling allocates nothing per token.</summary>
public sealed class Sampler
{
    private readonly SamplingOptions _o;
    private readonly float[] _keys;
    private readonly int[] _index;
    private Rng _rng;

    public Sampler(SamplingOptions options, int vocabSize, ulong stream = 0)
    {
        options.Validate();
        _o = options;
        _keys = new float[vocabSize];
        _index = new int[vocabSize];
        _rng = new Rng(options.Seed ^ (stream * 0x9E3779B97F4A7C15UL));
    }

    public static int Argmax(ReadOnlySpan<float> logits)
    {
        int best = 0;
        float bv = float.NegativeInfinity;
        for (int i = 0; i < logits.Length; i++)
            if (logits[i] > bv) { bv = logits[i]; best = i; }
        return best;
    }

    public int Sample(ReadOnlySpan<float> logits)
    {
        if (_o.Temperature == 0) return Argmax(logits);
        int v = logits.Length;
        // Sort candidates by descending logit: keys are negated logits so Array.Sort's ascending order works in place.
        for (int i = 0; i < v; i++) { _keys[i] = -logits[i]; _index[i] = i; }
        int n = v;
        if (_o.TopK > 0 && _o.TopK < v)
        {
            n = _o.TopK;
            PartialSelect(n, v);
        }
        Array.Sort(_keys, _index, 0, n);
        // Softmax over the kept candidates at the temperature (keys[0] is the largest logit, negated).
        float inv = 1f / _o.Temperature, max = -_keys[0];
        double total = 0;
        for (int i = 0; i < n; i++)
        {
            float p = MathF.Exp((-_keys[i] - max) * inv);
            _keys[i] = p;
            total += p;
        }
        if (_o.TopP < 1f)
        {
            double cum = 0;
            int keep = 0;
            while (keep < n)
            {
                cum += _keys[keep++] / total;
                if (cum >= _o.TopP) break;
            }
            n = keep;
            total = 0;
            for (int i = 0; i < n; i++) total += _keys[i];
        }
        double r = _rng.NextDouble() * total;
        for (int i = 0; i < n; i++)
        {
            r -= _keys[i];
            if (r < 0) return _index[i];
        }
        return _index[n - 1];
    }

    /// <summary>Moves the k smallest keys (largest logits) into [0, k) by quickselect, in place.</summary>
    private void PartialSelect(int k, int n)
    {
        int lo = 0, hi = n - 1;
        while (lo < hi)
        {
            float pivot = _keys[(lo + hi) >>> 1];
            int i = lo, j = hi;
            while (i <= j)
            {
                while (_keys[i] < pivot) i++;
                while (_keys[j] > pivot) j--;
                if (i <= j)
                {
                    (_keys[i], _keys[j]) = (_keys[j], _keys[i]);
                    (_index[i], _index[j]) = (_index[j], _index[i]);
                    i++; j--;
                }
            }
            if (k - 1 <= j) hi = j;
            else if (k - 1 >= i) lo = i;
            else break;
        }
    }
}
