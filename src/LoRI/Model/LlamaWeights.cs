using LoRI.Backend;
using LoRI.Tensors;

namespace LoRI.Model;

/// <summary>The seven adapted projections of a decoder layer, in PEFT's target-module order.</summary>
public enum Proj { Q, K, V, O, Gate, Up, Down }

public static class Projs
{
    public static readonly Proj[] All = [Proj.Q, Proj.K, Proj.V, Proj.O, Proj.Gate, Proj.Up, Proj.Down];

    /// <summary>The HF module name: q_proj ... down_proj.</summary>
    public static string ModuleName(this Proj p) => p switch
    {
        Proj.Q => "q_proj", Proj.K => "k_proj", Proj.V => "v_proj", Proj.O => "o_proj",
        Proj.Gate => "gate_proj", Proj.Up => "up_proj", Proj.Down => "down_proj",
        _ => throw new ArgumentOutOfRangeException(nameof(p)),
    };

    /// <summary>The HF parent block: self_attn or mlp.</summary>
    public static string Block(this Proj p) => p <= Proj.O ? "self_attn" : "mlp";

    /// <summary>`model.layers.{layer}.{block}.{module}` (append `.weight` for the base weight).</summary>
    public static string HfPrefix(this Proj p, int layer) => $"model.layers.{layer}.{p.Block()}.{p.ModuleName()}";

    public static bool TryParse(string moduleName, out Proj p)
    {
        foreach (var x in All)
            if (x.ModuleName() == moduleName || x.ModuleName()[..^5] == moduleName) { p = x; return true; }
        p = default;
        return false;
    }

    /// <summary>(out, in) of the projection's weight [out, in] for a config.</summary>
    public static (int Out, int In) Shape(this Proj p, LlamaConfig c) => p switch
    {
        Proj.Q => (c.QDim, c.HiddenSize),
        Proj.K or Proj.V => (c.KvDim, c.HiddenSize),
        Proj.O => (c.HiddenSize, c.QDim),
        Proj.Gate or Proj.Up => (c.IntermediateSize, c.HiddenSize),
        Proj.Down => (c.HiddenSize, c.IntermediateSize),
        _ => throw new ArgumentOutOfRangeException(nameof(p)),
    };
}

/// <summary>A tensor in host memory as a file holds it: address, dtype, shape, and what keeps it alive.</summary>
public readonly record struct HostTensor(nint Data, DType DType, int[] Shape, IDisposable? KeepAlive);

/// <summary>One decoder layer's weights. Norm weights are F32 copies; projections are as stored.</summary>
public sealed class LlamaLayerWeights
{
    public required Tensor AttnNorm { get; init; }   // [D] F32          input_layernorm
    public required Tensor MlpNorm { get; init; }    // [D] F32          post_attention_layernorm
    public readonly Tensor[] Projections = new Tensor[7]; // indexed by Proj: Q [QD, D], K/V [KvD, D], O [D, QD], Gate/Up [F, D], Down [D, F]

    public Tensor this[Proj p]
    {
        get => Projections[(int)p];
        set => Projections[(int)p] = value;
    }
}

/// <summary>All weights of a LlamaForCausalLM on one backend.</summary>
public sealed class LlamaWeights : IDisposable
{
    public required Tensor Embed { get; init; }       // [V, D]   model.embed_tokens.weight
    public required LlamaLayerWeights[] Layers { get; init; }
    public required Tensor FinalNorm { get; init; }   // [D] F32  model.norm.weight
    public required Tensor LmHead { get; init; }      // [V, D]   lm_head.weight, or Embed when tied

    /// <summary>
    /// Builds the weights from a source of host tensors by HF name. Projections and embeddings are handed to
    /// the backend as stored (aliased on the CPU); norm weights are converted to F32 copies.
    /// </summary>
    public static LlamaWeights Load(LlamaConfig c, IBackend backend, Func<string, HostTensor> source)
    {
        Tensor Raw(string name, int[] shape)
        {
            var h = source(name);
            if (!h.Shape.AsSpan().SequenceEqual(shape))
                throw new ShapeMismatchException($"tensor '{name}' has shape {DTypes.ShapeString(h.Shape)}, the config expects {DTypes.ShapeString(shape)}");
            if (!h.DType.IsFloat() || h.DType == DType.F64)
                throw new ShapeMismatchException($"tensor '{name}' is {h.DType}; expected F32, F16 or BF16");
            return backend.FromHost(h.Data, h.DType, shape, h.KeepAlive);
        }
        Tensor Norm(string name, int d)
        {
            var h = source(name);
            if (h.Shape.Length != 1 || h.Shape[0] != d)
                throw new ShapeMismatchException($"tensor '{name}' has shape {DTypes.ShapeString(h.Shape)}, the config expects [{d}]");
            var f = new float[d];
            unsafe { Backend.Cpu.CpuOps.ToFloat(h.DType, h.Data, 0, f); }
            var t = backend.Allocate(DType.F32, d);
            backend.Upload<float>(f, t);
            return t;
        }

        var layers = new LlamaLayerWeights[c.NumLayers];
        for (int l = 0; l < c.NumLayers; l++)
        {
            var lw = new LlamaLayerWeights
            {
                AttnNorm = Norm($"model.layers.{l}.input_layernorm.weight", c.HiddenSize),
                MlpNorm = Norm($"model.layers.{l}.post_attention_layernorm.weight", c.HiddenSize),
            };
            foreach (var p in Projs.All)
            {
                var (o, i) = p.Shape(c);
                lw[p] = Raw(p.HfPrefix(l) + ".weight", [o, i]);
            }
            layers[l] = lw;
        }
        var embed = Raw("model.embed_tokens.weight", [c.VocabSize, c.HiddenSize]);
        return new LlamaWeights
        {
            Embed = embed,
            Layers = layers,
            FinalNorm = Norm("model.norm.weight", c.HiddenSize),
            LmHead = c.TieWordEmbeddings ? embed : Raw("lm_head.weight", [c.VocabSize, c.HiddenSize]),
        };
    }

    public void Dispose()
    {
        Embed.Dispose();
        if (!ReferenceEquals(LmHead, Embed)) LmHead.Dispose();
        FinalNorm.Dispose();
        foreach (var l in Layers)
        {
            l.AttnNorm.Dispose();
            l.MlpNorm.Dispose();
            foreach (var t in l.Projections) t?.Dispose();
        }
    }
}
