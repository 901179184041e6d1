using LoRI.Backend;
using LoRI.Tensors;

namespace LoRI.Model;

/// <summary>
/// Keys and values of every layer for `Slots` independent sequences of up to `MaxTokens` positions.
/// K[l], V[l]: F32 [Slots, MaxTokens, KvDim]; keys are stored after RoPE.
/// </summary>
public sealed class KvCache : IDisposable
{
    public Tensor[] K { get; }
    public Tensor[] V { get; }
    public int Slots { get; }
    public int MaxTokens { get; }

    public KvCache(IBackend backend, LlamaConfig c, int slots, int maxTokens)
    {
        if (slots < 1 || maxTokens < 1) throw new ArgumentOutOfRangeException(nameof(slots), "a KV cache needs at least one slot and one position");
        Slots = slots;
        MaxTokens = maxTokens;
        K = new Tensor[c.NumLayers];
        V = new Tensor[c.NumLayers];
        for (int l = 0; l < c.NumLayers; l++)
        {
            K[l] = backend.Allocate(DType.F32, slots, maxTokens, c.KvDim);
            V[l] = backend.Allocate(DType.F32, slots, maxTokens, c.KvDim);
        }
    }

    /// <summary>Bytes the cache needs per token position of one slot, for `info`.</summary>
    public static long BytesPerToken(LlamaConfig c) => 2L * c.NumLayers * c.KvDim * sizeof(float);

    public void Dispose()
    {
        foreach (var t in K) t.Dispose();
        foreach (var t in V) t.Dispose();
    }
}
