using LLama;
using LLama.Common;
using LLama.Native;

namespace LoRI.Tests.Gguf;

/// <summary>
/// llama.cpp (through LLamaSharp 0.30.0 and its CPU backend) as an independent reference: loads a GGUF, runs a
/// prompt in one batch with logits for every position, optionally with GGUF LoRA adapters applied.
/// Flash attention off and an F32 KV cache: llama.cpp's defaults (F16 cache) alone differ from an exact
/// computation by ~7e-3 on logits; with these settings it agrees with a double-precision reference to ~2.5e-6.
/// </summary>
internal static class LlamaCppPeer
{
    private static readonly object Gate = new();
    private static bool _configured;

    private static void Configure()
    {
        lock (Gate)
        {
            if (_configured) return;
            // Quiet: llama.cpp logs every tensor at load otherwise. Warnings and errors still reach the test output.
            NativeLibraryConfig.All.WithLogCallback((level, message) =>
            {
                if (level is LLamaLogLevel.Error or LLamaLogLevel.Warning) TestContext.Progress.Write("llama.cpp: " + message);
            });
            _configured = true;
        }
    }

    public static ModelParams Params(string gguf, int context = 256, bool vocabOnly = false) => new(gguf)
    {
        ContextSize = (uint)context,
        BatchSize = (uint)context,
        UBatchSize = (uint)context,
        GpuLayerCount = 0,
        FlashAttention = false,
        TypeK = GGMLType.GGML_TYPE_F32,
        TypeV = GGMLType.GGML_TYPE_F32,
        Threads = 2,
        BatchThreads = 2,
        VocabOnly = vocabOnly,
    };

    /// <summary>Logits [ids.Length, vocab] for every position of one sequence starting at position 0.</summary>
    public static float[] Logits(string gguf, int[] ids, IReadOnlyList<(string Path, float Scale)>? loras = null)
    {
        using var m = Load(gguf);
        return m.Logits(ids, loras);
    }

    public static Model Load(string gguf)
    {
        Configure();
        return new Model(gguf);
    }

    /// <summary>A loaded GGUF; each Logits call runs on a fresh context (empty KV cache) with the given adapters.</summary>
    public sealed class Model(string gguf) : IDisposable
    {
        private readonly ModelParams _p = Params(gguf);
        private readonly LLamaWeights _weights = LLamaWeights.LoadFromFile(Params(gguf));
        private readonly Dictionary<string, LoraAdapter> _loras = new();

        public int VocabSize => _weights.Vocab.Count;

        public float[] Logits(int[] ids, IReadOnlyList<(string Path, float Scale)>? loras = null)
        {
            using var ctx = _weights.CreateContext(_p);
            if (loras is { Count: > 0 })
            {
                var list = new (LoraAdapter, float)[loras.Count];
                for (int i = 0; i < loras.Count; i++)
                {
                    if (!_loras.TryGetValue(loras[i].Path, out var ad))
                        _loras[loras[i].Path] = ad = _weights.NativeHandle.LoadLoraFromFile(loras[i].Path);
                    list[i] = (ad, loras[i].Scale);
                }
                ctx.NativeHandle.SetLoraAdapters(list);
            }
            var batch = new LLamaBatch();
            for (int i = 0; i < ids.Length; i++) batch.Add((LLamaToken)ids[i], i, (LLamaSeqId)0, true);
            var rc = ctx.NativeHandle.Decode(batch);
            Assert.That(rc, Is.EqualTo(DecodeResult.Ok), "llama_decode");
            int v = VocabSize;
            var result = new float[ids.Length * v];
            for (int i = 0; i < ids.Length; i++) ctx.NativeHandle.GetLogitsIth(i).CopyTo(result.AsSpan(i * v, v));
            return result;
        }

        public void Dispose() => _weights.Dispose();
    }

    /// <summary>llama.cpp's tokenization of <paramref name="text"/> with the vocabulary of a GGUF (no BOS unless asked).</summary>
    public static Func<string, bool, bool, int[]> Tokenizer(string gguf, out IDisposable owner)
    {
        Configure();
        var weights = LLamaWeights.LoadFromFile(Params(gguf, vocabOnly: true));
        owner = weights;
        return (text, addBos, special) => weights.Tokenize(text, addBos, special, System.Text.Encoding.UTF8).Select(t => (int)t).ToArray();
    }
}
