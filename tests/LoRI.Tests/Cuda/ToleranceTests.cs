using LoRI.Cuda.Checks;
using LoRI.Tensors;

namespace LoRI.Tests.Cuda;

/// <summary>The kernel checks' comparison rule: the per-element allowance and the bf16-staging bound.</summary>
public class ToleranceTests
{
    [Test]
    public void PerElementAllowance_FailsOnlyWhereItsOwnAllowanceIsExceeded_AndNamesTheWorst()
    {
        float[] reference = [1f, 2f, 3f, 4f];
        float[] got = [1.5f, 2.05f, 3.2f, 4f];
        double[] atol = [0.5, 0.01, 0.1, 0];
        var c = Tolerance.Compare(got, reference, atol, 0f);
        // element 0 sits exactly on its allowance; 1 (0.05 > 0.01) and 2 (0.2 > 0.1) fail, 1 by the larger ratio
        Assert.That(c.Failures, Is.EqualTo(2));
        Assert.That(c.WorstIndex, Is.EqualTo(1));
        Assert.That(c.WorstAllowed, Is.EqualTo(0.01).Within(1e-9));
        Assert.That(c.MaxError, Is.EqualTo(0.5).Within(1e-9));
        Assert.That(Tolerance.Compare(got, reference, [0.5, 0.06, 0.21, 0], 0f).Passed, Is.True);
        Assert.Throws<ArgumentException>(() => Tolerance.Compare(got, reference, [0.5], 0f));
    }

    [Test]
    public void Bf16StagedSumFactor_IsTheHandDerivedBound()
    {
        double u = 1.0 / 256, g2 = 2.0 / (1 << 24) / (1 - 2.0 / (1 << 24));
        Assert.That(Tolerance.Bf16StagedSumFactor(1, 1), Is.EqualTo(u + g2 * (2 + u)).Within(1e-15));
        double s2 = 2 * u + u * u, g65 = 65.0 / (1 << 24) / (1 - 65.0 / (1 << 24));
        Assert.That(Tolerance.Bf16StagedSumFactor(64, 2), Is.EqualTo(s2 + g65 * (2 + s2)).Within(1e-15));
        Assert.Throws<ArgumentOutOfRangeException>(() => Tolerance.Bf16StagedSumFactor(8, 3));
    }

    [Test]
    public void Bf16StagedSumFactor_BoundsRoundedSums_AndADroppedTermExceedsIt()
    {
        var rng = new Random(7);
        const int k = 16;
        for (int trial = 0; trial < 2000; trial++)
        {
            var a = new float[k];
            var b = new float[k];
            for (int i = 0; i < k; i++) { a[i] = (float)(rng.NextDouble() * 2 - 1); b[i] = (float)(rng.NextDouble() * 2 - 1); }
            float exact = 0, staged = 0, dropped = 0;
            double mag = 0;
            for (int i = 0; i < k; i++)
            {
                exact += a[i] * b[i];
                float p = Bf16.Round(a[i]) * Bf16.Round(b[i]);
                staged += p;
                if (i != 3) dropped += p;
                mag += Math.Abs((double)a[i] * b[i]);
            }
            double bound = Tolerance.Bf16StagedSumFactor(k, 2) * mag;
            Assert.That(Math.Abs((double)staged - exact), Is.LessThanOrEqualTo(bound), $"trial {trial}");
            // a term of at least an average magnitude missing from the sum is caught
            if (Math.Abs((double)a[3] * b[3]) >= mag / k)
                Assert.That(Math.Abs((double)dropped - exact), Is.GreaterThan(bound), $"trial {trial}: the dropped term");
        }
    }
}
