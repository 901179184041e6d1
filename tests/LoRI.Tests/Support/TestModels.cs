using LoRI.Backend;
using LoRI.Backend.Cpu;
using LoRI.Model;
using LoRI.Tensors;

namespace LoRI.Tests.Support;

/// <summary>Small random Llama models built in memory for tests.</summary>
public static class TestModels
{
    /// <summary>2 layers, GQA 4:2, head dim 8, vocab 97 (prime, so nothing lines up with a tile by accident).</summary>
    public static LlamaConfig Tiny(bool tied = false, RopeScaling? scaling = null, int kvHeads = 2) => new()
    {
        HiddenSize = 32, IntermediateSize = 48, NumLayers = 2, NumHeads = 4, NumKvHeads = kvHeads, HeadDim = 8,
        VocabSize = 97, MaxPositionEmbeddings = 256, RopeTheta = 10000f, RmsNormEps = 1e-5f,
        TieWordEmbeddings = tied, RopeScaling = scaling, EosTokenIds = [1], BosTokenId = 0,
    };

    public static LlamaModel Create(LlamaConfig c, ulong seed = 1, DType dtype = DType.F32, IBackend? backend = null,
                                    int maxTokens = 64, float std = 0.2f)
    {
        var be = backend ?? new CpuBackend();
        var w = LlamaWeights.Load(c, be, RandomWeights.Source(RandomWeights.Create(c, seed, dtype, std)));
        return new LlamaModel(c, be, w, maxTokens);
    }

    public static float[] RandomFloats(int n, ulong seed, float scale = 1f)
    {
        var r = new Rng(seed);
        var f = new float[n];
        for (int i = 0; i < n; i++) f[i] = (float)((r.NextDouble() * 2 - 1) * scale);
        return f;
    }
}
