using System.Numerics;
using LoRI.Backend;

namespace LoRI.Training;

/// <summary>
/// AdamW hyperparameters; the defaults are torch.optim.AdamW's with the reference's weight decay of 0.
/// Doubles, as Python holds them: torch forms 1 - beta in double before rounding to float, and
/// (float)(1 - 0.999) differs from 1 - 0.999f by 1.3e-5 relative.
/// </summary>
public sealed record AdamWOptions
{
    public double Beta1 { get; init; } = 0.9;
    public double Beta2 { get; init; } = 0.999;
    public double Eps { get; init; } = 1e-8;
    public double WeightDecay { get; init; }
}

/// <summary>
/// The optimizer state of one parameter tensor, fp32. Dense: M and V are as long as the tensor. Compact
/// (LoRI-S): Live lists the entries that train (ascending indices into the tensor) and M, V hold only
/// those, so a 90%-sparse B keeps a tenth of the state; every other entry is never read or written.
/// </summary>
public sealed class AdamWState
{
    /// <summary>First moment (exp_avg), one per live entry.</summary>
    public float[] M { get; }
    /// <summary>Second moment (exp_avg_sq), one per live entry.</summary>
    public float[] V { get; }
    /// <summary>Indices of the live entries, or null when every entry trains.</summary>
    public int[]? Live { get; }
    /// <summary>Optimizer steps taken on this tensor (torch's per-parameter `step`).</summary>
    public long Step { get; set; }
    /// <summary>Elements of the parameter tensor (not of the state).</summary>
    public int ParameterLength { get; }

    public AdamWState(int parameterLength, int[]? live = null)
    {
        if (live is not null)
            for (int i = 0; i < live.Length; i++)
                if ((uint)live[i] >= (uint)parameterLength || (i > 0 && live[i] <= live[i - 1]))
                    throw new ArgumentException($"live index {live[i]} at {i} is out of order or outside [0, {parameterLength})", nameof(live));
        ParameterLength = parameterLength;
        Live = live;
        // Pinned: a host-memory backend uses them in place (TrainingGraph aliases them as tensors).
        M = GC.AllocateArray<float>(live?.Length ?? parameterLength, pinned: true);
        V = GC.AllocateArray<float>(live?.Length ?? parameterLength, pinned: true);
    }

    /// <summary>Compact state over the entries where mask is true.</summary>
    public static AdamWState ForMask(ReadOnlySpan<bool> mask)
    {
        int count = 0;
        foreach (var m in mask) if (m) count++;
        var live = GC.AllocateArray<int>(count, pinned: true);
        for (int i = 0, j = 0; i < mask.Length; i++) if (mask[i]) live[j++] = i;
        return new AdamWState(mask.Length, live);
    }
}

/// <summary>
/// AdamW with the exact arithmetic of PyTorch's single-tensor implementation (torch.optim.AdamW,
/// foreach=False), in fp32 with the scalars formed in double as Python forms them:
///   step += 1
///   p  *= 1 - lr * wd                                    (decoupled weight decay, before the update)
///   m   = m + (1 - beta1) * (g - m)                      (exp_avg.lerp_(g, 1 - beta1))
///   v   = v * beta2 + ((1 - beta2) * g) * g              (exp_avg_sq.mul_(beta2).addcmul_(g, g, 1 - beta2))
///   denom = sqrt(v) / sqrt(1 - beta2^step) + eps         (eps outside the square root)
///   p  += (-lr / (1 - beta1^step)) * m / denom           (param.addcdiv_(m, denom, -step_size))
/// The vector loop does the same IEEE operations in the same order as the scalar tail (no fused
/// multiply-add), so results do not depend on the SIMD width.
/// </summary>
public static class AdamW
{
    public static void Step(Span<float> param, ReadOnlySpan<float> grad, AdamWState state, double lr, AdamWOptions options)
    {
        if (param.Length != state.ParameterLength || grad.Length != param.Length)
            throw new ArgumentException($"AdamW: parameter of {param.Length}, gradient of {grad.Length}, state for {state.ParameterLength} elements");
        state.Step++;
        Update(param, grad, state.M, state.V, state.Live, state.Live is not null, Scalars(lr, options, state.Step));
    }

    /// <summary>The fp32 scalars of step number <paramref name="step"/> (1-based), formed in double as torch forms them.</summary>
    public static AdamWScalars Scalars(double lr, AdamWOptions options, long step)
    {
        if (step < 1) throw new ArgumentOutOfRangeException(nameof(step), step, "AdamW steps count from 1");
        double bc1 = 1 - Math.Pow(options.Beta1, step);
        double bc2 = 1 - Math.Pow(options.Beta2, step);
        return new AdamWScalars(
            Decay: (float)(1 - lr * options.WeightDecay),
            ApplyDecay: options.WeightDecay != 0,
            OneMinusBeta1: (float)(1 - options.Beta1),
            Beta2: (float)options.Beta2,
            OneMinusBeta2: (float)(1 - options.Beta2),
            Bc2Sqrt: (float)Math.Sqrt(bc2),
            Eps: (float)options.Eps,
            NegStepSize: (float)(-(lr / bc1)));
    }

    /// <summary>
    /// The update with given scalars: dense (m, v as long as param) unless <paramref name="compact"/>, else over
    /// param[live[e]] with state m[e], v[e] only (an empty live list updates nothing).
    /// </summary>
    public static void Update(Span<float> param, ReadOnlySpan<float> grad, Span<float> m, Span<float> v, ReadOnlySpan<int> live, bool compact,
                              in AdamWScalars c)
    {
        if (!compact)
        {
            if (m.Length != param.Length || v.Length != param.Length || grad.Length != param.Length)
                throw new ArgumentException($"AdamW: parameter of {param.Length}, gradient of {grad.Length}, state of {m.Length} and {v.Length}");
            DenseStep(param, grad, m, v, c);
            return;
        }
        if (m.Length != live.Length || v.Length != live.Length || grad.Length != param.Length)
            throw new ArgumentException($"AdamW: {live.Length} live entries, state of {m.Length} and {v.Length}, gradient of {grad.Length} for {param.Length}");
        for (int i = 0; i < live.Length; i++)
        {
            int j = live[i];
            float p = param[j];
            Update(ref p, grad[j], ref m[i], ref v[i], c);
            param[j] = p;
        }
    }

    private static void Update(ref float p, float g, ref float m, ref float v, in AdamWScalars c)
    {
        if (c.ApplyDecay) p *= c.Decay;
        m += c.OneMinusBeta1 * (g - m);
        v = v * c.Beta2 + c.OneMinusBeta2 * g * g;
        float denom = MathF.Sqrt(v) / c.Bc2Sqrt + c.Eps;
        p += c.NegStepSize * m / denom;
    }

    private static void DenseStep(Span<float> param, ReadOnlySpan<float> grad, Span<float> m, Span<float> v, in AdamWScalars c)
    {
        int i = 0;
        if (Vector.IsHardwareAccelerated && param.Length >= Vector<float>.Count)
        {
            var decay = new Vector<float>(c.Decay);
            var b1 = new Vector<float>(c.OneMinusBeta1);
            var beta2 = new Vector<float>(c.Beta2);
            var b2 = new Vector<float>(c.OneMinusBeta2);
            var bc2 = new Vector<float>(c.Bc2Sqrt);
            var eps = new Vector<float>(c.Eps);
            var step = new Vector<float>(c.NegStepSize);
            int w = Vector<float>.Count;
            for (; i <= param.Length - w; i += w)
            {
                var p = new Vector<float>(param[i..]);
                var g = new Vector<float>(grad[i..]);
                var mv = new Vector<float>(m[i..]);
                var vv = new Vector<float>(v[i..]);
                if (c.ApplyDecay) p *= decay;
                mv += b1 * (g - mv);
                vv = vv * beta2 + b2 * g * g;
                var denom = Vector.SquareRoot(vv) / bc2 + eps;
                p += step * mv / denom;
                p.CopyTo(param[i..]);
                mv.CopyTo(m[i..]);
                vv.CopyTo(v[i..]);
            }
        }
        for (; i < param.Length; i++) Update(ref param[i], grad[i], ref m[i], ref v[i], c);
    }
}
