namespace LoRI.Backend;

/// <summary>
/// Adapter ops a backend may implement next to <see cref="IBackend"/> (kept apart so that a backend without
/// them still runs adapters through <see cref="LoraOps.Apply"/>'s generic fallback).
/// </summary>
public interface IAdapterOps
{
    /// <summary>
    /// The fused LoRA op `lora_apply`: y += scale * B (A x) for every row of x, in one call: the shrink
    /// t = scale * x A^T [N, Rank] into backend scratch, then the expand y += t B^T, with B in either of its forms.
    /// x F32 [N, In], y F32 [N, Out]. Allocates nothing once its scratch has grown to N x Rank.
    /// </summary>
    void LoraApply(Tensor x, LoraFactors f, float scale, Tensor y);
}

/// <summary>One adapter's term of a linear with adapters: y += Scale * B (A x), Scale = s * the adapter's user weight.</summary>
public readonly record struct LoraTerm(LoraFactors Factors, float Scale);

/// <summary>
/// The op `linear_lora` a backend may implement next to <see cref="IAdapterOps"/>: a projection's base product and its
/// unmerged adapters in one call, so the backend can fold the adapters into the base GEMM's passes instead of
/// running them as separate ops afterwards (CUDA: native/kernels/gemv.cu and gemm_tc.cu).
/// </summary>
public interface ILinearAdapterOps
{
    /// <summary>
    /// y = x W^T + sum_i terms[i].Scale * B_i (A_i x). x F32 [N, In], w [Out, In] (F32/F16/BF16), y F32 [N, Out]
    /// (written, not accumulated), every term's factors [Rank, In] / [Out, Rank]. No term: the plain MatMul.
    /// </summary>
    void LinearWithAdapters(Tensor x, Tensor w, ReadOnlySpan<LoraTerm> terms, Tensor y);
}

/// <summary>Runs the LoRA op on any backend: its own fused op when it has one, else two MatMuls through IBackend.</summary>
public static class LoraOps
{
    /// <summary>
    /// y += scale * B (A x). <paramref name="scratch"/> (F32, at least N x Rank elements) is used only by the
    /// generic path, which needs B in the dense form; a scratch of exactly [N, Rank] is used as it is (no view
    /// allocated), so a caller that keeps such views per token count runs the generic path allocation-free.
    /// </summary>
    public static void Apply(IBackend backend, Tensor x, LoraFactors f, float scale, Tensor y, Tensor? scratch)
    {
        if (backend is IAdapterOps ops)
        {
            ops.LoraApply(x, f, scale, y);
            return;
        }
        if (f.B is null) throw new InvalidOperationException($"backend {backend.Name} has no fused LoRA op; B must be held dense");
        if (scratch is null || scratch.Length < (long)x.Rows * f.Rank)
            throw new ArgumentException($"the generic LoRA path needs scratch of {x.Rows} x {f.Rank} floats");
        var t = scratch.Rank == 2 && scratch.Rows == x.Rows && scratch.Cols == f.Rank ? scratch : scratch.View(0, x.Rows, f.Rank);
        backend.MatMul(x, f.A, t, scale);
        backend.MatMul(t, f.B, y, 1f, accumulate: true);
    }

    /// <summary>
    /// y = x W^T + sum_i Scale_i B_i (A_i x): the backend's own `linear_lora` when it has one, else the base MatMul
    /// followed by <see cref="Apply"/> per term (<paramref name="scratch"/> as there; terms of scale 0 skipped).
    /// </summary>
    public static void Linear(IBackend backend, Tensor x, Tensor w, ReadOnlySpan<LoraTerm> terms, Tensor y, Tensor? scratch)
    {
        if (backend is ILinearAdapterOps ops)
        {
            ops.LinearWithAdapters(x, w, terms, y);
            return;
        }
        backend.MatMul(x, w, y);
        foreach (var t in terms)
            if (t.Scale != 0) Apply(backend, x, t.Factors, t.Scale, y, scratch);
    }
}
