using LoRI.Adapters;
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

/// <summary>The LoRI pieces that need no model: A's draw, a fresh adapter, trainable-parameter counts (the mask rule is LoRI.Adapters.LoraMask).</summary>
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
    /// A fresh adapter for training: every target of every layer, A drawn by DrawA from the seed, B = 0 (peft's init).
    /// </summary>
    public static LoraAdapter CreateAdapter(LlamaConfig c, int rank, double alpha, IReadOnlyList<Proj> targets, AInit init,
                                            ulong seed, string? baseModel = null)
    {
        var modules = new List<LoraModule>();
        for (int l = 0; l < c.NumLayers; l++)
            foreach (var p in targets)
            {
                var (o, i) = p.Shape(c);
                var a = new float[rank * i];
                DrawA(a, rank, i, init, seed, ModuleName(l, p));
                modules.Add(new LoraModule(l, p, rank, i, o, alpha, false, a, new float[o * rank]));
            }
        var config = LoraConfig.Describe(modules.Select(m => (m.Layer, m.Proj, m.Rank, m.Alpha)), false, baseModel);
        return new LoraAdapter(config, modules);
    }

    /// <summary>Target projections from a list such as "q,k,v,o,gate,up,down" (or the _proj names).</summary>
    public static IReadOnlyList<Proj> ParseTargets(string list)
    {
        var r = new List<Proj>();
        foreach (var s in list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (!Projs.TryParse(s, out var p))
                throw new ArgumentException($"unknown target '{s}': expected q, k, v, o, gate, up, down (or their _proj names)");
            if (!r.Contains(p)) r.Add(p);
        }
        if (r.Count == 0) throw new ArgumentException("no target modules given");
        return r.Order().ToList();
    }
}
