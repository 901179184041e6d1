using System.Numerics.Tensors;

namespace LoRI.Training;

/// <summary>
/// Gradient masking and clipping as torch.nn.utils.clip_grad_norm_ does it:
///   norm = ||g||_2, coef = min(1, maxNorm / (norm + 1e-6)), g *= coef
/// (torch multiplies even when coef is 1, which changes nothing). The reference clips every tensor on its
/// own (clip_grad_norm_ called once per parameter, max norm 1), after the LoRI-S mask has zeroed the
/// gradient; global clipping over all tensors at once is the option.
/// </summary>
public static class GradClip
{
    /// <summary>Zeroes the gradient where the mask is false (LoRI-S: grad[~mask] = 0), before clipping.</summary>
    public static void ApplyMask(Span<float> grad, ReadOnlySpan<bool> mask)
    {
        if (mask.Length != grad.Length) throw new ArgumentException($"mask of {mask.Length} entries for a gradient of {grad.Length}");
        for (int i = 0; i < grad.Length; i++) if (!mask[i]) grad[i] = 0;
    }

    /// <summary>L2 norm, accumulated in double and rounded to float (torch reduces in float; double is the exact value it approximates).</summary>
    public static float Norm(ReadOnlySpan<float> grad)
    {
        double s = 0;
        const int block = 4096;
        for (int i = 0; i < grad.Length; i += block)
            s += TensorPrimitives.SumOfSquares(grad.Slice(i, Math.Min(block, grad.Length - i)));
        return (float)Math.Sqrt(s);
    }

    /// <summary>The clip coefficient for a norm: min(1, maxNorm / (norm + 1e-6)), in float as torch computes it.</summary>
    public static float Coefficient(float norm, float maxNorm) => MathF.Min(1f, maxNorm / (norm + 1e-6f));

    /// <summary>Clips one tensor to L2 norm maxNorm; returns its norm before clipping.</summary>
    public static float ClipPerTensor(Span<float> grad, float maxNorm)
    {
        float norm = Norm(grad);
        float coef = Coefficient(norm, maxNorm);
        if (coef != 1f) TensorPrimitives.Multiply(grad, coef, grad);
        return norm;
    }

    /// <summary>
    /// Global clipping: the norm of all tensors together (the norm of their norms, as torch computes it);
    /// every tensor is scaled by the same coefficient. Returns the total norm before clipping.
    /// </summary>
    public static float ClipGlobal(IReadOnlyList<Memory<float>> grads, float maxNorm)
    {
        double s = 0;
        foreach (var g in grads) { double n = Norm(g.Span); s += n * n; }
        float total = (float)Math.Sqrt(s);
        float coef = Coefficient(total, maxNorm);
        if (coef != 1f)
            foreach (var g in grads) TensorPrimitives.Multiply(g.Span, coef, g.Span);
        return total;
    }
}
