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

    /// <summary>The unit roundoff of bf16, half its spacing above 1 (2^-8): the largest relative error of rounding to nearest.</summary>
    public const float Bf16UnitRoundoff = Bf16Epsilon / 2;

    /// <summary>
    /// Absolute error allowed to the tensor-core attention forward (flash_attention_tc.cu) against an fp32
    /// reference, for q, k, v that are bf16 values (staging them is then exact, and so is every product
    /// bf16 x bf16 in fp32). The one rounding left is P to bf16 before P.V, with the normaliser summed over the
    /// unrounded P: y = sum_j P_j (1 + e_j) v_j with |e_j| &lt;= u, so |y - y_ref| &lt;= u sum_j P_j |v_j| &lt;= u max|v|
    /// (sum_j P_j = 1). The fp32 allowance of the SIMT kernel (1e-5 + 1e-4 |ref|) covers the order of the sums.
    /// </summary>
    public static float Bf16AttentionForward(float maxAbsV) => Bf16UnitRoundoff * maxAbsV + 1e-5f;

    /// <summary>
    /// The same for q, k, v that are any fp32 values, rounded to bf16 as they are staged. Each product q_d k_d
    /// moves by at most (2u + u^2) |q_d k_d|, so a score by at most ds = scale (2u + u^2) max_ij sum_d |q_id k_jd|
    /// (&lt;= (2u + u^2) sqrt(hd) max|q| max|k|) and each P_j by a factor within [e^-2ds, e^2ds]; with v and P rounded
    /// as well, |y - y_ref| &lt;= max|v| ((1 + u)^2 e^(2 ds) - 1).
    /// </summary>
    public static float Bf16AttentionForwardStaged(float maxAbsV, float maxScoreError) =>
        maxAbsV * ((1 + Bf16UnitRoundoff) * (1 + Bf16UnitRoundoff) * MathF.Exp(2 * maxScoreError) - 1) + 1e-5f;

    /// <summary>The bound on a score's error of <see cref="Bf16AttentionForwardStaged"/> from the largest |q| and |k| and the head dim.</summary>
    public static float Bf16StagedScoreError(float maxAbsQ, float maxAbsK, int headDim) =>
        (2 * Bf16UnitRoundoff + Bf16UnitRoundoff * Bf16UnitRoundoff) * MathF.Sqrt(headDim) * maxAbsQ * maxAbsK;

    /// <summary>
    /// Absolute errors allowed to the tensor-core attention backward (dq, dk, dv) against an fp32 reference, for
    /// q, k, v, dy that are bf16 values and y, lse from the tensor-core forward. With u the bf16 unit roundoff,
    /// M = max |dP_ij| = max |dy_i . v_j| over the pairs that see each other and C = the largest column mass
    /// sum_i P_ij of one key (over the queries and the group's heads that see it):
    ///   D = dy . y inherits y's error sum_j P_j e_j v_j, so |dD| = |sum_j P_j e_j dP_j| &lt;= u M;
    ///   dS_j = P_j (dP_j - D) gets P_j u M from D, then is rounded to bf16 (u |dS_j| &lt;= P_j u (2 + u) M):
    ///   |d dS_j| &lt;= (3 + u) u M P_j;
    ///   dq = scale sum_j dS_j k_j: |d dq| &lt;= scale (3 + u) u M max|k|      (sum_j P_j = 1);
    ///   dk_j = scale sum_i dS_ij q_i: |d dk| &lt;= scale (3 + u) u M max|q| C;
    ///   dv_j = sum_i P_ij (1 + e_ij) dy_i: |d dv| &lt;= u max|dy| C.
    /// Each plus the SIMT kernel's fp32 allowance (2e-5 + 1e-4 |ref|).
    /// </summary>
    public static (float Dq, float Dk, float Dv) Bf16AttentionBackward(float scale, float maxAbsDp, float maxColumnMass,
                                                                        float maxAbsQ, float maxAbsK, float maxAbsDy)
    {
        const float u = Bf16UnitRoundoff;
        float ds = (3 + u) * u * maxAbsDp;
        return (scale * ds * maxAbsK + 2e-5f, scale * ds * maxAbsQ * maxColumnMass + 2e-5f, u * maxAbsDy * maxColumnMass + 2e-5f);
    }


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
