using LoRI.Model;
using LoRI.Tensors;

namespace LoRI.Training;

/// <summary>What a run trains (lori-method.md section 1).</summary>
public enum TrainMethod
{
    /// <summary>A and B of every target, dense.</summary>
    Lora,
    /// <summary>B only, A frozen at its random draw.</summary>
    LoriD,
    /// <summary>B only, A frozen, B restricted to a mask (gradient zeroed outside it).</summary>
    LoriS,
    /// <summary>Every weight of the model (no adapter).</summary>
    Full,
}

/// <summary>How A is drawn.</summary>
public enum AInit
{
    /// <summary>U(-1/sqrt(in), 1/sqrt(in)): peft's kaiming_uniform(a = sqrt(5)), the reference.</summary>
    Uniform,
    /// <summary>N(0, (1/r)^2): peft's init_lora_weights = "gaussian" (the paper's "random projection").</summary>
    Gaussian,
}

public static class TrainMethods
{
    public static TrainMethod Parse(string name) => name.ToLowerInvariant() switch
    {
        "lora" => TrainMethod.Lora,
        "lori-d" or "lori_d" => TrainMethod.LoriD,
        "lori-s" or "lori_s" => TrainMethod.LoriS,
        "full" => TrainMethod.Full,
        _ => throw new ArgumentException($"unknown method '{name}': expected lora, lori-d, lori-s or full"),
    };

    public static string Name(this TrainMethod m) => m switch
    {
        TrainMethod.Lora => "lora", TrainMethod.LoriD => "lori-d", TrainMethod.LoriS => "lori-s", TrainMethod.Full => "full",
        _ => throw new ArgumentOutOfRangeException(nameof(m)),
    };

    public static bool TrainsA(this TrainMethod m) => m == TrainMethod.Lora;

    public static AInit ParseAInit(string name) => name.ToLowerInvariant() switch
    {
        "uniform" => AInit.Uniform,
        "gaussian" => AInit.Gaussian,
        _ => throw new ArgumentException($"unknown A init '{name}': expected uniform or gaussian"),
    };
}

/// <summary>The LoRI pieces that need no model: A's draw, trainable-parameter counts, the magnitude mask.</summary>
public static class LoriSetup
{
    /// <summary>The PEFT module name of a target, e.g. "model.layers.3.self_attn.q_proj": the key A's stream is drawn from.</summary>
    public static string ModuleName(int layer, Proj p) => p.HfPrefix(layer);

    /// <summary>
    /// Draws A [rank, inFeatures] from the run's seed and the module's name (its own stream, so the draw does
    /// not depend on which other modules exist or in what order they are drawn).
    /// </summary>
    public static void DrawA(Span<float> a, int rank, int inFeatures, AInit kind, ulong seed, string moduleName)
    {
        if (a.Length != (long)rank * inFeatures) throw new ArgumentException($"A of {a.Length} elements is not [{rank}, {inFeatures}]");
        var rng = Rng.ForStream(seed, "lora_A/" + moduleName);
        if (kind == AInit.Uniform)
        {
            double bound = 1 / Math.Sqrt(inFeatures);
            for (int i = 0; i < a.Length; i++)
            {
                float v = (float)((rng.NextDouble() * 2 - 1) * bound);
                // Rounding to float can land one ulp outside the bound; keep the documented |A| <= 1/sqrt(in).
                a[i] = Math.Abs(v) > bound ? MathF.BitDecrement(Math.Abs(v)) * MathF.Sign(v) : v;
            }
        }
        else
        {
            double std = 1.0 / rank;
            for (int i = 0; i < a.Length; i++) a[i] = (float)(rng.NextGaussian() * std);
        }
    }

    /// <summary>
    /// Trainable parameters of a method on a config: LoRA r(in + out) per target, LoRI-D r * out, LoRI-S the kept
    /// fraction floor((1 - sparsity) * LoRI-D) of the pooled B entries, full every weight of the model.
    /// </summary>
    public static long TrainableParameters(LlamaConfig c, TrainMethod method, int rank, IReadOnlyCollection<Proj> targets, double sparsity = 0.9)
    {
        long lora = 0, loriD = 0;
        foreach (var p in targets)
        {
            var (o, i) = p.Shape(c);
            lora += (long)rank * (o + i);
            loriD += (long)rank * o;
        }
        lora *= c.NumLayers;
        loriD *= c.NumLayers;
        return method switch
        {
            TrainMethod.Lora => lora,
            TrainMethod.LoriD => loriD,
            TrainMethod.LoriS => KeptCount(loriD, sparsity),
            TrainMethod.Full => c.ParameterCount,
            _ => throw new ArgumentOutOfRangeException(nameof(method)),
        };
    }

    /// <summary>k = floor((1 - sparsity) * n): how many magnitudes the mask keeps.</summary>
    public static long KeptCount(long n, double sparsity)
    {
        if (sparsity is < 0 or > 1 || double.IsNaN(sparsity)) throw new ArgumentException($"sparsity must lie in [0, 1], found {sparsity}");
        return (long)Math.Floor((1 - sparsity) * n);
    }

    /// <summary>
    /// The global magnitude mask of lori-method.md section 2: pool |B| over every given matrix, threshold =
    /// the k-th largest with k = floor((1 - sparsity) * N), mask = |B| >= threshold (ties at the threshold are
    /// kept, so a mask may hold more than k entries). k = 0 keeps nothing. The selection is an exact radix
    /// select on the bits of |B| (monotonic for non-negative floats), so no copy of the pooled values is made.
    /// Returns the threshold.
    /// </summary>
    public static float MagnitudeMask(IReadOnlyList<ReadOnlyMemory<float>> bs, double sparsity, IReadOnlyList<Memory<bool>> masks)
    {
        if (masks.Count != bs.Count) throw new ArgumentException($"{bs.Count} matrices but {masks.Count} masks");
        long n = 0;
        for (int t = 0; t < bs.Count; t++)
        {
            if (masks[t].Length != bs[t].Length) throw new ArgumentException($"mask {t} has {masks[t].Length} entries for a B of {bs[t].Length}");
            n += bs[t].Length;
        }
        long k = KeptCount(n, sparsity);
        if (k == 0)
        {
            foreach (var m in masks) m.Span.Clear();
            return float.PositiveInfinity;
        }
        // Find the k-th largest |B| bit pattern: top 16 bits first, then the low 16 within that bucket.
        var hist = new long[1 << 16];
        foreach (var b in bs)
            foreach (var v in b.Span)
            {
                if (float.IsNaN(v)) throw new ArgumentException("B holds NaN: a mask cannot be drawn from it");
                hist[Bits(v) >> 16]++;
            }
        long remaining = k;
        int hi = (1 << 16) - 1;
        for (; hi >= 0; hi--)
        {
            if (hist[hi] >= remaining) break;
            remaining -= hist[hi];
        }
        Array.Clear(hist);
        foreach (var b in bs)
            foreach (var v in b.Span)
            {
                uint u = Bits(v);
                if ((u >> 16) == (uint)hi) hist[u & 0xFFFF]++;
            }
        int lo = (1 << 16) - 1;
        for (; lo >= 0; lo--)
        {
            if (hist[lo] >= remaining) break;
            remaining -= hist[lo];
        }
        uint thresholdBits = ((uint)hi << 16) | (uint)lo;
        for (int t = 0; t < bs.Count; t++)
        {
            var b = bs[t].Span;
            var m = masks[t].Span;
            for (int i = 0; i < b.Length; i++) m[i] = Bits(b[i]) >= thresholdBits;
        }
        return BitConverter.UInt32BitsToSingle(thresholdBits);
    }

    private static uint Bits(float v) => BitConverter.SingleToUInt32Bits(v) & 0x7FFFFFFFu;
}
