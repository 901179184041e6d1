namespace LoRI.Tests.Training;

/// <summary>
/// Finite-difference gradient checking in double precision, and the one tolerance rule the backward
/// tests use: |got - ref| &lt;= atol + rtol |ref| with atol = atolFactor * max|ref| (float kernels against
/// double references: their sums carry ~1e-6 relative error; central differences with h = 1e-5 carry
/// O(h^2) truncation and ~1e-11 rounding).
/// </summary>
internal static class GradCheck
{
    public const double Rtol = 1e-3;
    public const double AtolFactor = 1e-4;

    /// <summary>Central differences of f at x, one coordinate at a time: (f(x + h e_i) - f(x - h e_i)) / 2h.</summary>
    public static double[] Numeric(Func<double[], double> f, double[] x, double h = 1e-5)
    {
        var g = new double[x.Length];
        var xp = (double[])x.Clone();
        for (int i = 0; i < x.Length; i++)
        {
            double old = xp[i];
            xp[i] = old + h; double fp = f(xp);
            xp[i] = old - h; double fm = f(xp);
            xp[i] = old;
            g[i] = (fp - fm) / (2 * h);
        }
        return g;
    }

    public static void AssertClose(ReadOnlySpan<float> got, double[] expected, string what, double rtol = Rtol, double atolFactor = AtolFactor)
    {
        Assert.That(got.Length, Is.EqualTo(expected.Length), $"{what}: length");
        double scale = 0;
        foreach (var e in expected) if (double.IsFinite(e)) scale = Math.Max(scale, Math.Abs(e));
        Assert.That(scale, Is.GreaterThan(0), $"{what}: the reference is all zero, so the check would prove nothing");
        double atol = atolFactor * scale;
        int worst = -1; double worstExcess = double.NegativeInfinity;
        for (int i = 0; i < got.Length; i++)
        {
            if (!double.IsFinite(expected[i])) continue;
            double excess = Math.Abs(got[i] - expected[i]) - (atol + rtol * Math.Abs(expected[i]));
            if (excess > worstExcess) { worstExcess = excess; worst = i; }
        }
        Assert.That(worstExcess, Is.LessThanOrEqualTo(0),
            $"{what}: worst element {worst}: got {(worst >= 0 ? got[worst] : 0)}, expected {(worst >= 0 ? expected[worst] : 0)} (atol {atol:g3}, rtol {rtol:g3})");
    }

    public static double[] Random(Random rng, int n, double scale = 1)
    {
        var a = new double[n];
        for (int i = 0; i < n; i++) a[i] = (rng.NextDouble() * 2 - 1) * scale;
        return a;
    }

    /// <summary>Rounds to float and back, so the double reference sees exactly what the float kernel sees.</summary>
    public static double[] RoundToFloat(double[] a) => a.Select(v => (double)(float)v).ToArray();

    public static float[] F(double[] a) => a.Select(v => (float)v).ToArray();

    public static double Dot(double[] a, double[] b)
    {
        double s = 0;
        for (int i = 0; i < a.Length; i++) s += a[i] * b[i];
        return s;
    }
}
