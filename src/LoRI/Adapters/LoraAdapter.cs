using LoRI.Model;
using LoRI.Tensors;

namespace LoRI.Adapters;

/// <summary>
/// One adapted projection: y += Scale * B (A x).
///   A  F32 [Rank, In]   row-major (peft lora_A.weight)
///   B  F32 [Out, Rank]  row-major (peft lora_B.weight)
/// </summary>
public sealed class LoraModule
{
    public int Layer { get; }
    public Proj Proj { get; }
    public int Rank { get; }
    public int In { get; }
    public int Out { get; }
    public double Alpha { get; }
    /// <summary>s = Alpha / Rank (Alpha / sqrt(Rank) with rsLoRA).</summary>
    public float Scale { get; }
    public float[] A { get; }
    public float[] B { get; }

    public LoraModule(int layer, Proj proj, int rank, int inDim, int outDim, double alpha, bool useRslora, float[] a, float[] b)
    {
        if (rank < 1 || inDim < 1 || outDim < 1) throw new ArgumentException($"{Name(layer, proj)}: rank, in and out must be positive");
        if (a.LongLength != (long)rank * inDim) throw new ShapeMismatchException($"{Name(layer, proj)}: A has {a.Length} values, expected [{rank}, {inDim}]");
        if (b.LongLength != (long)outDim * rank) throw new ShapeMismatchException($"{Name(layer, proj)}: B has {b.Length} values, expected [{outDim}, {rank}]");
        Layer = layer; Proj = proj; Rank = rank; In = inDim; Out = outDim; Alpha = alpha;
        Scale = (float)LoraConfig.Scale(alpha, rank, useRslora);
        A = a; B = b;
    }

    private static string Name(int layer, Proj p) => p.HfPrefix(layer);

    /// <summary>model.layers.{i}.{block}.{proj}</summary>
    public string Name() => Name(Layer, Proj);

    /// <summary>The peft key of lora_A / lora_B: base_model.model.model.layers.{i}.{block}.{proj}.lora_{A|B}.weight.</summary>
    public string Key(char factor) => PeftKey(Layer, Proj, factor);

    public static string PeftKey(int layer, Proj p, char factor) => $"base_model.model.{p.HfPrefix(layer)}.lora_{factor}.weight";

    public long NonZeroB()
    {
        long n = 0;
        foreach (var v in B) if (v != 0) n++;
        return n;
    }
}

/// <summary>
/// A LoRA / LoRI adapter in host memory: its config and one <see cref="LoraModule"/> per adapted (layer, projection).
/// Under LoRI only B is trained (A is frozen random), so "trainable" counts B; "parameters" counts A and B.
/// </summary>
public sealed class LoraAdapter
{
    private readonly SortedDictionary<(int Layer, Proj Proj), LoraModule> _modules = new();

    public LoraConfig Config { get; }
    /// <summary>Tensors of the adapter file that were deliberately not used, each with the reason.</summary>
    public List<string> Notes { get; } = new();

    public LoraAdapter(LoraConfig config, IEnumerable<LoraModule> modules)
    {
        Config = config;
        foreach (var m in modules)
            if (!_modules.TryAdd((m.Layer, m.Proj), m))
                throw new ArgumentException($"module {m.Name()} given twice");
        if (_modules.Count == 0) throw new ArgumentException("an adapter needs at least one module");
    }

    /// <summary>Modules ordered by layer, then projection.</summary>
    public IEnumerable<LoraModule> Modules => _modules.Values;
    public int ModuleCount => _modules.Count;

    public LoraModule? this[int layer, Proj p] => _modules.TryGetValue((layer, p), out var m) ? m : null;

    public int LayerCount => _modules.Keys.Max(k => k.Layer) + 1;

    public IReadOnlyList<Proj> Projections => _modules.Keys.Select(k => k.Proj).Distinct().Order().ToList();

    /// <summary>A and B elements of every module (LoRA's trainable count).</summary>
    public long ParameterCount => _modules.Values.Sum(m => (long)m.Rank * (m.In + m.Out));
    /// <summary>B elements (trainable under LoRI, A being frozen).</summary>
    public long TrainableParameterCount => _modules.Values.Sum(m => (long)m.Rank * m.Out);
    public long NonZeroB => _modules.Values.Sum(m => m.NonZeroB());
    /// <summary>Fraction of B elements that are exactly zero.</summary>
    public double BSparsity => 1 - (double)NonZeroB / TrainableParameterCount;

    /// <summary>Throws naming the module, tensor and both shapes when a module does not fit the model.</summary>
    public void ValidateFor(LlamaConfig c)
    {
        foreach (var m in _modules.Values)
        {
            if (m.Layer >= c.NumLayers)
                throw new ShapeMismatchException($"adapter module {m.Name()} is for layer {m.Layer}, the model has {c.NumLayers} layers");
            var (o, i) = m.Proj.Shape(c);
            if (m.In != i)
                throw new ShapeMismatchException($"tensor '{m.Key('A')}' has shape [{m.Rank}, {m.In}], the model needs [{m.Rank}, {i}]");
            if (m.Out != o)
                throw new ShapeMismatchException($"tensor '{m.Key('B')}' has shape [{m.Out}, {m.Rank}], the model needs [{o}, {m.Rank}]");
        }
    }

    /// <summary>
    /// A LoRI adapter for tests and benchmarks: A ~ Uniform(-1/sqrt(in), 1/sqrt(in)) (peft's init), B ~ N(0, bStd)
    /// with each element zeroed with probability <paramref name="bSparsity"/>. Each tensor draws from its own
    /// stream of <paramref name="seed"/>, so the result does not depend on which projections are chosen.
    /// </summary>
    public static LoraAdapter CreateRandom(LlamaConfig c, int rank, double alpha, ulong seed, double bSparsity = 0,
                                           IEnumerable<Proj>? projections = null, float bStd = 0.05f, bool useRslora = false,
                                           IEnumerable<int>? layers = null, string? baseModel = null)
    {
        if (bSparsity is < 0 or > 1) throw new ArgumentOutOfRangeException(nameof(bSparsity), "sparsity is a fraction in [0, 1]");
        var projs = (projections ?? Projs.All).ToArray();
        var ls = (layers ?? Enumerable.Range(0, c.NumLayers)).ToArray();
        var modules = new List<LoraModule>();
        foreach (int l in ls)
            foreach (var p in projs)
            {
                var (o, i) = p.Shape(c);
                var name = LoraConfig.ModuleKey(l, p);
                var ra = Rng.ForStream(seed, name + ".lora_A");
                var a = new float[rank * i];
                float bound = 1f / MathF.Sqrt(i);
                for (int k = 0; k < a.Length; k++) a[k] = (float)((ra.NextDouble() * 2 - 1) * bound);
                var rb = Rng.ForStream(seed, name + ".lora_B");
                var b = new float[o * rank];
                for (int k = 0; k < b.Length; k++)
                {
                    float v = (float)(rb.NextGaussian() * bStd);
                    b[k] = rb.NextDouble() < bSparsity ? 0 : v;
                }
                modules.Add(new LoraModule(l, p, rank, i, o, alpha, useRslora, a, b));
            }
        var config = LoraConfig.Describe(modules.Select(m => (m.Layer, m.Proj, m.Rank, m.Alpha)), useRslora, baseModel);
        return new LoraAdapter(config, modules);
    }
}
