using LoRI.Adapters;
using LoRI.Backend.Cpu;
using LoRI.Model;
using LoRI.Tensors;
using LoRI.Tests.Support;
using LoRI.Text;

namespace LoRI.Tests.Gguf;

/// <summary>Small random Llama models written as HF folders (with a byte-level Llama-3-style tokenizer) for the GGUF tests.</summary>
internal static class GgufTestModels
{
    /// <summary>llama3 scaling that touches every regime at head dim 16, theta 10000: wavelengths 6.3, 20, 63, 199 ... against 16 and 64.</summary>
    public static readonly RopeScaling Llama3Scaling = new(Factor: 8f, LowFreqFactor: 1f, HighFreqFactor: 4f, OriginalMaxPositionEmbeddings: 64);

    /// <summary>
    /// 2 layers, hidden 64, 4 query heads of dim 16 with <paramref name="kvHeads"/> KV heads, ffn 96, weights ~N(0, 0.15)
    /// and norm weights 1 + U(-0.3, 0.3) (so a misplaced norm shows), vocab = the byte-level tokenizer's 262 ids.
    /// </summary>
    public static LlamaConfig Write(string dir, int kvHeads, bool tied, bool scaling, ulong seed = 7)
    {
        var vocab = TokenizerFiles.WriteByteLevel(dir);
        var c = new LlamaConfig
        {
            HiddenSize = 64, IntermediateSize = 96, NumLayers = 2, NumHeads = 4, NumKvHeads = kvHeads, HeadDim = 16,
            VocabSize = vocab.VocabSize, MaxPositionEmbeddings = 256, RopeTheta = 10000f, RmsNormEps = 1e-5f,
            TieWordEmbeddings = tied, RopeScaling = scaling ? Llama3Scaling : null,
            BosTokenId = vocab.BosId, EosTokenIds = vocab.EosIds, TorchDtype = "float32",
        };
        var tensors = RandomWeights.Create(c, seed, DType.F32, std: 0.15f);
        for (int i = 0; i < tensors.Count; i++)
        {
            var t = tensors[i];
            if (!t.Name.EndsWith("norm.weight", StringComparison.Ordinal)) continue;
            var f = TestModels.RandomFloats(t.Shape[0], seed * 1000 + (ulong)i, 0.3f);
            for (int k = 0; k < f.Length; k++) f[k] += 1f;
            tensors[i] = t with { Data = RandomWeights.Encode(f, DType.F32) };
        }
        LlamaModel.Save(dir, c, tensors);
        return c;
    }

    /// <summary>Our CPU backend's logits [ids.Length, V] for one sequence from position 0.</summary>
    public static float[] OurLogits(string dir, int[] ids, IReadOnlyList<(LoraAdapter Adapter, float Weight)>? adapters = null)
    {
        using var m = LlamaModel.Load(dir, new CpuBackend(), maxTokensPerForward: Math.Max(ids.Length, 1));
        using var set = adapters is { Count: > 0 } ? AdapterSet.Attach(m, adapters, merge: false) : null;
        using var cache = new KvCache(m.Backend, m.Config, 1, 256);
        var logits = new float[ids.Length * m.Config.VocabSize];
        var rows = Enumerable.Range(0, ids.Length).ToArray();
        m.Forward(ids, new int[ids.Length], rows, rows, cache, logits);
        return logits;
    }

    /// <summary>Deterministic token ids in [0, vocab) (special tokens included: the graph does not care).</summary>
    public static int[] Prompt(int length, int vocab, ulong seed)
    {
        var r = new Rng(seed);
        return Enumerable.Range(0, length).Select(_ => (int)(r.NextDouble() * vocab)).ToArray();
    }
}
