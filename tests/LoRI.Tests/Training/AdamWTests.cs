using LoRI.Training;

namespace LoRI.Tests.Training;

/// <summary>AdamW, clipping and schedules against the textbook formulas evaluated by hand in double.</summary>
public class AdamWTests
{
    // The textbook AdamW (Loshchilov & Hutter, as torch documents it), in double:
    // p <- p (1 - lr wd); m <- b1 m + (1 - b1) g; v <- b2 v + (1 - b2) g^2;
    // p <- p - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).
    private static void Textbook(double[] p, double[] m, double[] v, double[] g, int t, double lr, double wd,
                                 double b1 = 0.9, double b2 = 0.999, double eps = 1e-8)
    {
        for (int i = 0; i < p.Length; i++)
        {
            p[i] *= 1 - lr * wd;
            m[i] = b1 * m[i] + (1 - b1) * g[i];
            v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
            double mhat = m[i] / (1 - Math.Pow(b1, t)), vhat = v[i] / (1 - Math.Pow(b2, t));
            p[i] -= lr * mhat / (Math.Sqrt(vhat) + eps);
        }
    }

    [Test]
    public void FirstStep_OfOneElement_IsLrTimesSignOfGradient()
    {
        // t = 1: mhat = g, vhat = g^2, so the update is lr * g / (|g| + eps) = 0.1 * 0.5 / (0.5 + 1e-8).
        var p = new[] { 1f };
        var st = new AdamWState(1);
        AdamW.Step(p, [0.5f], st, 0.1, new AdamWOptions());
        double expected = 1 - 0.1 * 0.5 / (0.5 + 1e-8);
        Assert.That(p[0], Is.EqualTo((float)expected).Within(1e-7));
        Assert.That(st.Step, Is.EqualTo(1));
        Assert.That(st.M[0], Is.EqualTo(0.05f).Within(1e-9));
        Assert.That(st.V[0], Is.EqualTo(0.00025f).Within(1e-11));
    }

    [Test]
    public void FiveSteps_WithWeightDecay_MatchTheFormulas()
    {
        var rng = new Random(3);
        int n = 37; // a SIMD body and a scalar tail
        double lr = 1e-2, wd = 0.1;
        var pd = GradCheck.RoundToFloat(GradCheck.Random(rng, n));
        var md = new double[n]; var vd = new double[n];
        var p = GradCheck.F(pd);
        var st = new AdamWState(n);
        var opt = new AdamWOptions { WeightDecay = wd };
        for (int t = 1; t <= 5; t++)
        {
            var g = GradCheck.RoundToFloat(GradCheck.Random(rng, n, t));
            Textbook(pd, md, vd, g, t, lr, wd);
            AdamW.Step(p, GradCheck.F(g), st, lr, opt);
        }
        for (int i = 0; i < n; i++) Assert.That(p[i], Is.EqualTo(pd[i]).Within(2e-6 * Math.Max(1, Math.Abs(pd[i]))), $"p[{i}]");
        for (int i = 0; i < n; i++) Assert.That(st.V[i], Is.EqualTo(vd[i]).Within(1e-5 * vd[i]), $"v[{i}]");
    }

    [Test]
    public void EpsilonSitsOutsideTheSquareRoot()
    {
        // A gradient of 1e-8: with eps outside, the first update is lr * 1e-8 / (1e-8 + 1e-8) = lr / 2;
        // eps inside the root would give lr * 1e-8 / sqrt(1e-16 + 1e-8) ~ lr * 1e-4.
        var p = new[] { 0f };
        AdamW.Step(p, [1e-8f], new AdamWState(1), 1.0, new AdamWOptions());
        Assert.That(p[0], Is.EqualTo(-0.5f).Within(1e-6));
    }

    [Test]
    public void VectorAndScalarPaths_AreBitIdentical()
    {
        // The compact path updates entry by entry with the scalar code; dense uses SIMD. Same bits required.
        var rng = new Random(4);
        int n = 100;
        var p0 = GradCheck.F(GradCheck.Random(rng, n));
        var dense = (float[])p0.Clone();
        var compact = (float[])p0.Clone();
        var sd = new AdamWState(n);
        var sc = new AdamWState(n, Enumerable.Range(0, n).ToArray());
        var opt = new AdamWOptions { WeightDecay = 0.01 };
        for (int t = 0; t < 4; t++)
        {
            var g = GradCheck.F(GradCheck.Random(rng, n));
            AdamW.Step(dense, g, sd, 3e-3, opt);
            AdamW.Step(compact, g, sc, 3e-3, opt);
        }
        Assert.That(compact, Is.EqualTo(dense));
        Assert.That(sc.M, Is.EqualTo(sd.M));
        Assert.That(sc.V, Is.EqualTo(sd.V));
    }

    [Test]
    public void MaskedEntries_StayExactlyZero_DenseAndCompactAgree()
    {
        var rng = new Random(5);
        int n = 53;
        var mask = Enumerable.Range(0, n).Select(i => rng.NextDouble() < 0.3).ToArray();
        var dense = new float[n];
        var compact = new float[n];
        var sd = new AdamWState(n);
        var sc = AdamWState.ForMask(mask);
        Assert.That(sc.M.Length, Is.EqualTo(mask.Count(m => m)));
        for (int t = 0; t < 6; t++)
        {
            var g = GradCheck.F(GradCheck.Random(rng, n, 10));
            GradClip.ApplyMask(g, mask);
            GradClip.ClipPerTensor(g, 1f);
            AdamW.Step(dense, g, sd, 1e-2, new AdamWOptions());
            AdamW.Step(compact, g, sc, 1e-2, new AdamWOptions());
        }
        for (int i = 0; i < n; i++)
            if (!mask[i]) Assert.That(BitConverter.SingleToInt32Bits(dense[i]), Is.EqualTo(0), $"masked entry {i} moved");
            else Assert.That(dense[i], Is.Not.EqualTo(0f), $"live entry {i} did not train");
        Assert.That(compact, Is.EqualTo(dense));
    }

    [Test]
    public void CompactState_LeavesMaskedEntriesUntouched_EvenWithWeightDecay()
    {
        // Continual learning: entries outside the new mask carry an earlier task's weights and must not move.
        var p = new[] { 0.5f, -0.25f, 2f };
        var st = new AdamWState(3, [1]);
        AdamW.Step(p, [1f, 1f, 1f], st, 0.1, new AdamWOptions { WeightDecay = 0.5 });
        Assert.That(p[0], Is.EqualTo(0.5f));
        Assert.That(p[2], Is.EqualTo(2f));
        Assert.That(p[1], Is.EqualTo((float)(-0.25 * (1 - 0.05) - 0.1 * 1 / (1 + 1e-8))).Within(1e-6));
    }

    [Test]
    public void ClipPerTensor_ScalesToMaxNormWithTorchsEpsilon()
    {
        var g = new[] { 3f, 4f };
        float norm = GradClip.ClipPerTensor(g, 1f);
        Assert.That(norm, Is.EqualTo(5f));
        Assert.That(g[0], Is.EqualTo((float)(3 / (5 + 1e-6))).Within(1e-7));
        Assert.That(g[1], Is.EqualTo((float)(4 / (5 + 1e-6))).Within(1e-7));
        var small = new[] { 0.3f, 0.4f };
        GradClip.ClipPerTensor(small, 1f);
        Assert.That(small, Is.EqualTo(new[] { 0.3f, 0.4f }), "a norm below the bound is left alone");
    }

    [Test]
    public void ClipGlobal_UsesTheNormOfAllTensors()
    {
        var a = new[] { 3f };
        var b = new[] { 0f, 4f };
        float total = GradClip.ClipGlobal([a, b], 2f);
        Assert.That(total, Is.EqualTo(5f));
        Assert.That(a[0], Is.EqualTo((float)(3 * 2 / (5 + 1e-6))).Within(1e-6));
        Assert.That(b[1], Is.EqualTo((float)(4 * 2 / (5 + 1e-6))).Within(1e-6));
    }

    [Test]
    public void Schedules_FollowTheirFormulas()
    {
        Assert.That(LrSchedule.Constant(1e-4).At(12345), Is.EqualTo(1e-4));
        var warm = new LrSchedule(LrScheduleKind.Warmup, 1.0, WarmupSteps: 4, TotalSteps: 10);
        Assert.That(new[] { 0, 1, 3, 4, 9 }.Select(s => warm.At(s)), Is.EqualTo(new[] { 0, 0.25, 0.75, 1, 1 }));
        var lin = new LrSchedule(LrScheduleKind.Linear, 2.0, WarmupSteps: 2, TotalSteps: 10);
        Assert.That(lin.At(1), Is.EqualTo(1.0));
        Assert.That(lin.At(6), Is.EqualTo(2.0 * 4 / 8));
        Assert.That(lin.At(12), Is.EqualTo(0.0));
        var cos = new LrSchedule(LrScheduleKind.Cosine, 1.0, WarmupSteps: 2, TotalSteps: 10);
        Assert.That(cos.At(2), Is.EqualTo(1.0).Within(1e-15));
        Assert.That(cos.At(6), Is.EqualTo(0.5).Within(1e-15));      // halfway: cos(pi/2) = 0
        Assert.That(cos.At(10), Is.EqualTo(0.0).Within(1e-15));
    }
}
