using LoRI.Tensors;

namespace LoRI.Backend;

/// <summary>
/// The op set every backend implements. The Llama graph is written once against this interface;
/// backends implement ops and never know what a layer is.
///
/// Conventions (all ops):
///  - Activations are F32, row-major, one row per token: [N, features].
///  - Weights may be F32, F16 or BF16 and are used as stored (never expanded to F32 in memory).
///  - Index tensors (token ids, sequence slots, positions, row indices) are I32 on the backend.
///  - An op writes its output (`=`) unless its name or a flag says it accumulates (`+=`).
///  - Ops are enqueued in order on the backend's stream; only Download/Synchronize wait.
/// </summary>
public interface IBackend : IDisposable
{
    string Name { get; }

    /// <summary>True when Tensor.Pointer is a host address that C# may read directly.</summary>
    bool IsHostMemory { get; }

    /// <summary>A new zero-filled tensor owned by the caller.</summary>
    Tensor Allocate(DType dtype, params int[] shape);

    /// <summary>
    /// Makes host data (e.g. a memory-mapped safetensors tensor) available to the backend. A host-memory
    /// backend aliases it without a copy and keeps <paramref name="keepAlive"/> referenced; a device
    /// backend copies it.
    /// </summary>
    Tensor FromHost(nint data, DType dtype, int[] shape, IDisposable? keepAlive);

    void Upload<T>(ReadOnlySpan<T> src, Tensor dst) where T : unmanaged;
    void Download<T>(Tensor src, Span<T> dst) where T : unmanaged;
    void Synchronize();

    /// <summary>y[i, :] = table[ids[i], :] (converted to F32). table [V, D], ids I32 [N], y F32 [N, D].</summary>
    void Embedding(Tensor table, Tensor ids, Tensor y);

    /// <summary>y = x / sqrt(mean(x^2) + eps) * weight, per row, in F32. x, y [N, D]; weight [D].</summary>
    void RmsNorm(Tensor x, Tensor weight, float eps, Tensor y);

    /// <summary>
    /// The linear op: y = alpha * x W^T (+ y when accumulate). x F32 [N, K], w [M, K] (F32/F16/BF16), y F32 [N, M].
    /// </summary>
    void MatMul(Tensor x, Tensor w, Tensor y, float alpha = 1f, bool accumulate = false);

    /// <summary>
    /// Rotary embedding in place, HF "rotate half" convention: for each head, pairs (i, i + d/2) are rotated
    /// by angle pos * invFreq[i]. x F32 [N, heads * headDim]; positions I32 [N]; invFreq F32 [headDim / 2].
    /// </summary>
    void Rope(Tensor x, int heads, int headDim, Tensor positions, Tensor invFreq);

    /// <summary>cache[slot[i], pos[i], :] = src[i, :]. src F32 [N, W]; cache [S, T, W] (F32).</summary>
    void KvStore(Tensor src, Tensor cache, Tensor slots, Tensor positions);

    /// <summary>
    /// Causal grouped-query attention against a cache. Token i (sequence slot slots[i], position positions[i])
    /// attends to cache entries 0..positions[i] of its slot. q F32 [N, heads * headDim]; kCache, vCache
    /// [S, T, kvHeads * headDim]; query head h reads KV head h / (heads / kvHeads); y F32 [N, heads * headDim].
    /// Scores are scaled by 1/sqrt(headDim).
    /// </summary>
    void Attention(Tensor q, Tensor kCache, Tensor vCache, Tensor slots, Tensor positions,
                   int heads, int kvHeads, int headDim, Tensor y);

    /// <summary>y = silu(gate) * up, elementwise. All F32 of one shape.</summary>
    void SwiGlu(Tensor gate, Tensor up, Tensor y);

    /// <summary>y = a + b, elementwise (y may alias a or b). All F32 of one shape.</summary>
    void Add(Tensor a, Tensor b, Tensor y);

    /// <summary>dst[i, :] = src[rows[i], :]. src, dst F32; rows I32 [N].</summary>
    void GatherRows(Tensor src, Tensor rows, Tensor dst);
}
