using LoRI.Tensors;
using LoRI.Text;

namespace LoRI.Model;

/// <summary>Random Llama-3-architecture models in HF layout, for tests, benchmarks and demos.</summary>
public static class InitModel
{
    /// <summary>
    /// Writes config.json (with the eos ids), model.safetensors and a byte-level
    /// tokenizer (256 byte tokens + Llama-3's special tokens; <paramref name="corpus"/> and <paramref name="merges"/>
    /// add learned merges) to <paramref name="dir"/>. Returns the config written.
    /// </summary>
    public static LlamaConfig Write(string dir, string preset, ulong seed, DType? dtype = null,
                                    IEnumerable<string>? corpus = null, int merges = 0)
    {
        var vocab = TokenizerFiles.WriteByteLevel(dir, corpus, merges);
        var c = Presets.Get(preset, vocab.VocabSize, vocab.BosId, vocab.EosIds);
        var dt = dtype ?? (c.TorchDtype == "bfloat16" ? DType.BF16 : c.TorchDtype == "float16" ? DType.F16 : DType.F32);
        c = c with { TorchDtype = dt switch { DType.BF16 => "bfloat16", DType.F16 => "float16", _ => "float32" } };
        LlamaModel.Save(dir, c, RandomWeights.Create(c, seed, dt));
        return c;
    }
}
