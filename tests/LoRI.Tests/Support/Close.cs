namespace LoRI.Tests.Support;

/// <summary>
/// The one tolerance rule of the test suite: |got - ref| &lt;= atol + rtol * |ref| element-wise, non-finite
/// reference values skipped explicitly, and on failure the worst element named with both values.
/// Tolerances for bf16 outputs derive from its epsilon: Bf16Eps = 2^-7 (rtol = k * Bf16Eps, k stated where used).
/// </summary>
public static class Close
{
    public const float Bf16Eps = 1f / 128;
    public const float F16Eps = 1f / 1024;

    public static void Assert(ReadOnlySpan<float> got, ReadOnlySpan<float> reference, float atol, float rtol, string what)
    {
        NUnit.Framework.Assert.That(got.Length, Is.EqualTo(reference.Length), $"{what}: length");
        int worst = -1;
        double worstExcess = 0, worstErr = 0;
        for (int i = 0; i < got.Length; i++)
        {
            if (!float.IsFinite(reference[i])) continue;
            double err = Math.Abs((double)got[i] - reference[i]);
            double allowed = atol + rtol * Math.Abs(reference[i]);
            if (double.IsNaN(err) || err > allowed)
            {
                double excess = double.IsNaN(err) ? double.PositiveInfinity : err - allowed;
                if (worst < 0 || excess > worstExcess) { worst = i; worstExcess = excess; worstErr = err; }
            }
        }
        if (worst >= 0)
            NUnit.Framework.Assert.Fail($"{what}: element {worst} is {got[worst]}, reference {reference[worst]} " +
                                        $"(error {worstErr:G4} > {atol:G3} + {rtol:G3} * |ref|)");
    }

    /// <summary>The largest |got - ref| over finite reference values (for reporting).</summary>
    public static double MaxError(ReadOnlySpan<float> got, ReadOnlySpan<float> reference)
    {
        double m = 0;
        for (int i = 0; i < got.Length; i++)
            if (float.IsFinite(reference[i])) m = Math.Max(m, Math.Abs((double)got[i] - reference[i]));
        return m;
    }
}
