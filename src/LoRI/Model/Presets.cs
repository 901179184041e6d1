namespace LoRI.Model;

/// <summary>
/// Llama-3-architecture shapes for random models made by `init-model`: `tiny` runs in milliseconds (tests),
/// `small` is tens of millions of parameters (benchmarks, the demo). Both keep Llama-3's ratios that matter
/// to the code paths: GQA (4 query heads per KV head in `small`), SwiGLU, rope_theta 500000.
/// </summary>
public static class Presets
{
    public static readonly string[] Names = ["tiny", "small"];

    public static LlamaConfig Get(string name, int vocabSize, int bosId, int[] eosIds) => name switch
    {
        "tiny" => new LlamaConfig
        {
            HiddenSize = 64, IntermediateSize = 192, NumLayers = 2, NumHeads = 4, NumKvHeads = 2, HeadDim = 16,
            MaxPositionEmbeddings = 1024, VocabSize = vocabSize, BosTokenId = bosId, EosTokenIds = eosIds,
            TieWordEmbeddings = false, TorchDtype = "float32",
        },
        "small" => new LlamaConfig
        {
            HiddenSize = 512, IntermediateSize = 1792, NumLayers = 8, NumHeads = 8, NumKvHeads = 2, HeadDim = 64,
            MaxPositionEmbeddings = 2048, VocabSize = vocabSize, BosTokenId = bosId, EosTokenIds = eosIds,
            TieWordEmbeddings = true, TorchDtype = "bfloat16",
        },
        _ => throw new ArgumentException($"unknown preset '{name}': expected {string.Join(" or ", Names)}"),
    };
}
