namespace LoRI.Cuda.Checks;

/// <summary>
/// The one comparison rule for kernels against their reference: element i passes when
/// |got - ref| &lt;= atol + rtol * |ref|. A non-finite reference element is not measured; it must be
/// matched exactly (NaN by NaN, an infinity by the same infinity). The result names the worst element
/// (the largest error relative to its allowance).
/// </summary>
public static class Tolerance
{
    /// <summary>The spacing of bf16 numbers just above 1 (2^-7): rtol for bf16 values is a stated multiple of it.</summary>
    public const float Bf16Epsilon = 0.0078125f;
    /// <summary>The spacing of f16 numbers just above 1 (2^-10).</summary>
    public const float F16Epsilon = 0.0009765625f;

    /// <summary>
    /// The bound for a sum of <paramref name="k"/> products whose factors were rounded to bf16 on the way in (the
    /// tensor-core GEMMs over F32 activations), against the same sum of the unrounded F32 factors summed in fp32
    /// elsewhere (the CPU backend). Round to nearest moves a factor by at most 2^-8 of itself (half of
    /// <see cref="Bf16Epsilon"/>), so a product with <paramref name="roundedFactors"/> (1 or 2) rounded factors moves
    /// by at most (1 + 2^-8)^r - 1 of itself; each side's fp32 sum of k + 1 terms (the products and the accumulated
    /// output) is off by at most gamma = (k + 1) 2^-24 / (1 - (k + 1) 2^-24) of the sum of their magnitudes.
    /// Returns f such that |got - ref| &lt;= f * sum_i |a_i b_i| is guaranteed; a missing or wrong term of the order
    /// of its peers exceeds it whenever k is well below 2^8 / r.
    /// </summary>
    public static double Bf16StagedSumFactor(int k, int roundedFactors)
    {
        if (roundedFactors is not (1 or 2)) throw new ArgumentOutOfRangeException(nameof(roundedFactors), roundedFactors, "1 or 2");
        double u = Bf16Epsilon / 2.0, staged = Math.Pow(1 + u, roundedFactors) - 1;
        double u32 = Math.ScaleB(1.0, -24), gamma = (k + 1) * u32 / (1 - (k + 1) * u32);
        return staged + gamma * (2 + staged);
    }

    /// <summary>As the scalar form, with an allowance per element: element i passes when |got - ref| &lt;= atol[i] + rtol * |ref|.</summary>
    public static Comparison Compare(ReadOnlySpan<float> got, ReadOnlySpan<float> reference, ReadOnlySpan<double> atol, float rtol)
    {
        if (atol.Length != reference.Length)
            throw new ArgumentException($"{atol.Length} allowances for a reference of {reference.Length}");
        return Compare(got, reference, 0f, atol, rtol);
    }

    public static Comparison Compare(ReadOnlySpan<float> got, ReadOnlySpan<float> reference, float atol, float rtol) =>
        Compare(got, reference, atol, [], rtol);

    private static Comparison Compare(ReadOnlySpan<float> got, ReadOnlySpan<float> reference, float scalarAtol, ReadOnlySpan<double> atolPer, float rtol)
    {
        if (got.Length != reference.Length)
            throw new ArgumentException($"comparing {got.Length} values against a reference of {reference.Length}");
        double worstRatio = -1, maxError = 0;
        int worst = -1, failures = 0;
        for (int i = 0; i < got.Length; i++)
        {
            float r = reference[i], g = got[i];
            if (!float.IsFinite(r))
            {
                bool same = float.IsNaN(r) ? float.IsNaN(g) : g == r;
                if (!same)
                {
                    failures++;
                    if (worstRatio < double.PositiveInfinity) { worstRatio = double.PositiveInfinity; worst = i; }
                }
                continue;
            }
            double err = Math.Abs((double)g - r);
            if (double.IsNaN(err)) err = double.PositiveInfinity;
            double allowed = (atolPer.IsEmpty ? scalarAtol : atolPer[i]) + rtol * Math.Abs((double)r);
            double ratio = allowed > 0 ? err / allowed : (err > 0 ? double.PositiveInfinity : 0);
            if (err > allowed) failures++;
            if (err > maxError) maxError = err;
            if (ratio > worstRatio) { worstRatio = ratio; worst = i; }
        }
        double worstAtol = atolPer.IsEmpty ? scalarAtol : worst >= 0 ? atolPer[worst] : 0;
        return new Comparison(got.Length, failures, maxError, worst,
            worst >= 0 ? got[worst] : 0, worst >= 0 ? reference[worst] : 0,
            worst >= 0 && float.IsFinite(reference[worst]) ? worstAtol + rtol * Math.Abs(reference[worst]) : worstAtol);
    }

    /// <summary>Integer results (token ids, indices) compared exactly.</summary>
    public static Comparison CompareExact(ReadOnlySpan<int> got, ReadOnlySpan<int> reference)
    {
        if (got.Length != reference.Length)
            throw new ArgumentException($"comparing {got.Length} values against a reference of {reference.Length}");
        int failures = 0, worst = -1;
        double maxError = 0;
        for (int i = 0; i < got.Length; i++)
        {
            if (got[i] == reference[i]) continue;
            failures++;
            double e = Math.Abs((double)got[i] - reference[i]);
            if (e > maxError) { maxError = e; worst = i; }
        }
        return new Comparison(got.Length, failures, maxError, worst, worst >= 0 ? got[worst] : 0, worst >= 0 ? reference[worst] : 0, 0);
    }
}

/// <summary>The outcome of one comparison: counts, the largest absolute error and the worst element.</summary>
public readonly record struct Comparison(int Count, int Failures, double MaxError, int WorstIndex, float WorstGot, float WorstReference, double WorstAllowed)
{
    public bool Passed => Failures == 0;

    public override string ToString() => WorstIndex < 0
        ? $"{Count} values, all equal"
        : $"{Failures} of {Count} outside tolerance; max |error| {MaxError:G4}; worst at [{WorstIndex}]: got {WorstGot:G9}, reference {WorstReference:G9}, allowed {WorstAllowed:G4}";

    /// <summary>Combines two comparisons of one check (e.g. two outputs).</summary>
    public Comparison And(Comparison other)
    {
        bool otherWorse = other.Failures > 0 && Failures == 0 || other.MaxError > MaxError && other.Failures >= Failures;
        var w = otherWorse ? other : this;
        return new Comparison(Count + other.Count, Failures + other.Failures, Math.Max(MaxError, other.MaxError),
            w.WorstIndex, w.WorstGot, w.WorstReference, w.WorstAllowed);
    }
}
