namespace LoRI.Training.Data;

/// <summary>How per-token losses become the step's loss.</summary>
public enum LossReduction
{
    /// <summary>The reference: each sequence's summed response NLL, then the mean over the batch's sequences.</summary>
    SumTokensMeanSequences,
    /// <summary>The mean NLL over every response token of the batch.</summary>
    MeanTokens,
}

/// <summary>
/// A padded batch of `Size` sequences of `SeqLen` tokens (the longest example), right-padded. Row-major
/// [Size * SeqLen] arrays: position t of sequence b is index b * SeqLen + t. Targets[i] is the token position
/// i must predict (the next one) where that token belongs to the response, else -1; Weights[i] is the
/// reduction's factor for it (0 where Targets is -1), so the loss is sum_i Weights[i] * nll_i.
/// Right padding is safe under causal attention: no real token attends to a pad.
/// </summary>
public sealed class Batch
{
    public int Size { get; }
    public int SeqLen { get; }
    public int[] Tokens { get; }
    public int[] Positions { get; }
    public int[] Targets { get; }
    public float[] Weights { get; }
    public int[] Lengths { get; }
    public int TargetTokens { get; }
    /// <summary>Real (non-pad) tokens of the batch.</summary>
    public int RealTokens { get; }

    public Batch(IReadOnlyList<TrainingExample> examples, int padId, LossReduction reduction, float scale = 1f)
    {
        if (examples.Count == 0) throw new ArgumentException("a batch needs at least one example");
        Size = examples.Count;
        SeqLen = examples.Max(e => e.Tokens.Length);
        int n = Size * SeqLen;
        Tokens = new int[n];
        Positions = new int[n];
        Targets = new int[n];
        Weights = new float[n];
        Lengths = new int[Size];
        Array.Fill(Tokens, padId);
        Array.Fill(Targets, -1);
        int targets = 0, real = 0;
        for (int b = 0; b < Size; b++)
        {
            var e = examples[b];
            Lengths[b] = e.Tokens.Length;
            real += e.Tokens.Length;
            for (int t = 0; t < SeqLen; t++) Positions[b * SeqLen + t] = t;
            e.Tokens.CopyTo(Tokens, b * SeqLen);
            // Position t predicts token t + 1, which carries loss when it is a response token.
            for (int t = Math.Max(0, e.PromptLength - 1); t + 1 < e.Tokens.Length; t++)
            {
                Targets[b * SeqLen + t] = e.Tokens[t + 1];
                targets++;
            }
        }
        TargetTokens = targets;
        RealTokens = real;
        float w = reduction switch
        {
            LossReduction.SumTokensMeanSequences => scale / Size,
            LossReduction.MeanTokens => targets == 0 ? 0 : scale / targets,
            _ => throw new ArgumentOutOfRangeException(nameof(reduction)),
        };
        for (int i = 0; i < n; i++) if (Targets[i] >= 0) Weights[i] = w;
    }
}

/// <summary>
/// Deterministic data order: epoch e visits the examples in a Fisher-Yates permutation drawn from
/// SplitMix64 seeded by (seed, e), so any epoch's order can be recomputed from the seed alone (resume needs
/// no RNG state for it). Batches are consecutive slices of the permutation; the last partial batch is
/// dropped by default, as the reference does.
/// </summary>
public static class DataOrder
{
    public static int[] EpochPermutation(int count, ulong seed, int epoch)
    {
        var perm = new int[count];
        for (int i = 0; i < count; i++) perm[i] = i;
        var rng = new SplitMix64(seed ^ (0x9E3779B97F4A7C15UL * (ulong)(epoch + 1)));
        for (int i = count - 1; i > 0; i--)
        {
            int j = (int)rng.NextBelow((ulong)i + 1);
            (perm[i], perm[j]) = (perm[j], perm[i]);
        }
        return perm;
    }

    public static int BatchesPerEpoch(int count, int batchSize, bool dropLast = true) =>
        dropLast ? count / batchSize : (count + batchSize - 1) / batchSize;

    /// <summary>Indices of batch `index` of an epoch's permutation.</summary>
    public static ReadOnlySpan<int> BatchIndices(int[] permutation, int batchSize, int index) =>
        permutation.AsSpan(index * batchSize, Math.Min(batchSize, permutation.Length - index * batchSize));
}

/// <summary>SplitMix64 (Steele, Lea, Flood 2014): a tiny generator whose output is fixed by its definition, not by a runtime version.</summary>
public struct SplitMix64(ulong state)
{
    public ulong State = state;

    public ulong Next()
    {
        ulong z = State += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>Uniform in [0, bound) without modulo bias (rejection).</summary>
    public ulong NextBelow(ulong bound)
    {
        ulong limit = ulong.MaxValue - ulong.MaxValue % bound;
        ulong x;
        do x = Next(); while (x >= limit);
        return x % bound;
    }

    /// <summary>Uniform double in [0, 1) from the top 53 bits.</summary>
    public double NextDouble() => (Next() >> 11) * (1.0 / (1UL << 53));
}
