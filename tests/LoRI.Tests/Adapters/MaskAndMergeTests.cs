using LoRI.Adapters;
using LoRI.Model;
using LoRI.Tensors;
using LoRI.Tests.Support;

namespace LoRI.Tests.Adapters;

/// <summary>Mask extraction (rule 2 and its scopes) and cat / linear adapter merges (section 6).</summary>
public class MaskAndMergeTests
{
    /// <summary>Four B matrices [2, 3] with hand-chosen values (A is irrelevant to masks).</summary>
    private static LoraAdapter HandMade()
    {
        LoraModule M(int l, Proj p, float[] b) => new(l, p, 3, 1, 2, 3, false, new float[3], b);
        var mods = new[]
        {
            M(0, Proj.Q, [1, -2, 3, 4, -5, 6]),
            M(0, Proj.K, [0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f]),
            M(1, Proj.Q, [10, 0, 0, 0, 0, -20]),
            M(1, Proj.K, [7, 8, 9, -1, -2, -3]),
        };
        return new LoraAdapter(LoraConfig.Describe(mods.Select(m => (m.Layer, m.Proj, m.Rank, m.Alpha)), false, null), mods);
    }

    private static void Expect(LoraMask mask, int layer, Proj p, byte[] keep, string what) =>
        Assert.That(mask[layer, p]!.Keep, Is.EqualTo(keep), $"{what}: layer {layer} {p}");

    [Test]
    public void Global_KeepsTopK_AndAllTiesAtTheThreshold()
    {
        // N = 24, sparsity 0.53: k = floor(0.47 * 24) = 11. |B| sorted: 20 10 9 8 7 6 5 4 3 3 2 2 1 1 ...
        // The 11th largest is 2, and both 2s are kept: 12 elements.
        var mask = LoraMask.Compute(HandMade(), 0.53, MaskScope.Global);
        Assert.That(mask.Kept, Is.EqualTo(12));
        Expect(mask, 0, Proj.Q, [0, 1, 1, 1, 1, 1], "global");
        Expect(mask, 0, Proj.K, [0, 0, 0, 0, 0, 0], "global");
        Expect(mask, 1, Proj.Q, [1, 0, 0, 0, 0, 1], "global");
        Expect(mask, 1, Proj.K, [1, 1, 1, 0, 1, 1], "global");
        Assert.That(LoraMask.KthLargestAbs(HandMade().Modules.Select(m => m.B), 11), Is.EqualTo(2f));
        Assert.That(mask.Thresholds, Is.EqualTo(new[] { ("all", 24L, 11L, 2f) }));
    }

    [Test]
    public void Scopes_Layer_Module_Matrix()
    {
        var a = HandMade();
        // Layer 0 pools 1..6 and six 0.5s: k = 6, threshold 1. Layer 1 pools 20 10 9 8 7 3 ...: threshold 3.
        var layer = LoraMask.Compute(a, 0.5, MaskScope.Layer);
        Expect(layer, 0, Proj.Q, [1, 1, 1, 1, 1, 1], "layer");
        Expect(layer, 0, Proj.K, [0, 0, 0, 0, 0, 0], "layer");
        Expect(layer, 1, Proj.Q, [1, 0, 0, 0, 0, 1], "layer");
        Expect(layer, 1, Proj.K, [1, 1, 1, 0, 0, 1], "layer");
        Assert.That(layer.Thresholds, Is.EqualTo(new[] { ("layer 0", 12L, 6L, 1f), ("layer 1", 12L, 6L, 3f) }));
        // q_proj pools 1..6, 10, 20 and four 0s: threshold 3. k_proj pools six 0.5s and 7 8 9 1 2 3: threshold 1.
        var module = LoraMask.Compute(a, 0.5, MaskScope.Module);
        Expect(module, 0, Proj.Q, [0, 0, 1, 1, 1, 1], "module");
        Expect(module, 1, Proj.Q, [1, 0, 0, 0, 0, 1], "module");
        Expect(module, 0, Proj.K, [0, 0, 0, 0, 0, 0], "module");
        Expect(module, 1, Proj.K, [1, 1, 1, 1, 1, 1], "module");
        // Each matrix alone, k = 3: 6 5 4 -> 4; six ties at 0.5 all kept; 20 10 0 -> threshold 0 keeps everything; 9 8 7.
        var matrix = LoraMask.Compute(a, 0.5, MaskScope.Matrix);
        Expect(matrix, 0, Proj.Q, [0, 0, 0, 1, 1, 1], "matrix");
        Expect(matrix, 0, Proj.K, [1, 1, 1, 1, 1, 1], "matrix");
        Expect(matrix, 1, Proj.Q, [1, 1, 1, 1, 1, 1], "matrix");
        Expect(matrix, 1, Proj.K, [1, 1, 1, 0, 0, 0], "matrix");
    }

    [Test]
    public void KeepCount_FloorInDouble_AndEdgeSparsities()
    {
        Assert.That(LoraMask.KeepCount(0.9, 100), Is.EqualTo(9), "(1 - 0.9) * 100 = 9.999999999999998 in double, as in Python");
        Assert.That(LoraMask.KeepCount(0.9, 1000), Is.EqualTo(99), "99.99999999999997 in double");
        Assert.That(LoraMask.KeepCount(0.5, 1001), Is.EqualTo(500));
        Assert.That(LoraMask.KeepCount(0, 24), Is.EqualTo(24));
        Assert.That(LoraMask.KeepCount(1, 24), Is.EqualTo(0));
        Assert.That(LoraMask.Compute(HandMade(), 1.0).Kept, Is.EqualTo(0), "k = 0 keeps nothing");
        Assert.That(LoraMask.Compute(HandMade(), 0.0).Kept, Is.EqualTo(24));
        Assert.Throws<ArgumentOutOfRangeException>(() => LoraMask.Compute(HandMade(), 1.5));
    }

    [Test]
    public void RadixSelect_EqualsSorting()
    {
        var r = new Rng(5);
        var arrays = Enumerable.Range(0, 4).Select(i => Enumerable.Range(0, 1000 + i * 37).Select(_ =>
            r.NextInt(10) == 0 ? 0f : (float)(r.NextGaussian() * Math.Pow(10, r.NextInt(6) - 3))).ToArray()).ToList();
        arrays[1][3] = -0f;
        var sorted = arrays.SelectMany(a => a).Select(MathF.Abs).OrderDescending().ToArray();
        foreach (long k in new long[] { 1, 2, 17, 500, 2000, sorted.Length - 1, sorted.Length })
            Assert.That(LoraMask.KthLargestAbs(arrays, k), Is.EqualTo(sorted[k - 1]), $"k = {k}");
    }

    [Test]
    public void GlobalMask_OnRandomAdapter_KeepsExactlyKWithoutTies()
    {
        var a = LoraAdapter.CreateRandom(TestModels.Tiny(), 8, 16, 3);
        var mask = LoraMask.Compute(a, 0.9);
        Assert.That(mask.Kept, Is.EqualTo(LoraMask.KeepCount(0.9, a.TrainableParameterCount)));
        mask.ApplyTo(a);
        Assert.That(a.NonZeroB, Is.EqualTo(mask.Kept));
        Assert.That(mask.DensityTable(), Does.Contain("q_proj"));
    }

    private static double[] DeltaW(LoraModule m, double scale)
    {
        var d = new double[m.Out * m.In];
        for (int o = 0; o < m.Out; o++)
            for (int i = 0; i < m.In; i++)
            {
                double s = 0;
                for (int j = 0; j < m.Rank; j++) s += (double)m.B[o * m.Rank + j] * m.A[j * m.In + i];
                d[o * m.In + i] = scale * s;
            }
        return d;
    }

    [Test]
    public void Cat_ReproducesWeightedSum()
    {
        var c = TestModels.Tiny();
        var a1 = LoraAdapter.CreateRandom(c, 4, 8, 1, 0.5, bStd: 0.3f);
        var a2 = LoraAdapter.CreateRandom(c, 6, 3, 2, 0.9, [Proj.Q, Proj.Up], bStd: 0.3f, useRslora: true);
        var merged = AdapterMerge.Cat([(a1, 0.4f), (a2, 0.7f)]);
        Assert.That(merged.ModuleCount, Is.EqualTo(a1.ModuleCount));
        foreach (var m in merged.Modules)
        {
            var m1 = a1[m.Layer, m.Proj]!;
            var m2 = a2[m.Layer, m.Proj];
            Assert.That(m.Rank, Is.EqualTo(4 + 6), "R = sum of ranks (a missing module still occupies its rank block)");
            Assert.That(m.Scale, Is.EqualTo(1f), "lora_alpha = R");
            var want = DeltaW(m1, 0.4 * m1.Scale);
            if (m2 is not null)
            {
                var d2 = DeltaW(m2, 0.7 * m2.Scale);
                for (int i = 0; i < want.Length; i++) want[i] += d2[i];
            }
            // Exact up to the float rounding of w * s * A: relative 1e-6.
            Close.Assert(DeltaW(m, 1).Select(v => (float)v).ToArray(), want.Select(v => (float)v).ToArray(), 1e-7f, 1e-6f, $"cat {m.Name()}");
        }
        Assert.That(merged.Config.R, Is.EqualTo(10));
        Assert.That(merged.Config.LoraAlpha, Is.EqualTo(10));
        Assert.That(merged.Config.RankPattern, Is.Empty);
    }

    [Test]
    public void Linear_IsWeightedSumPlusCrossTerms()
    {
        var c = TestModels.Tiny();
        var ad = new[] { LoraAdapter.CreateRandom(c, 4, 8, 1, 0.5, bStd: 0.3f), LoraAdapter.CreateRandom(c, 4, 4, 2, 0.0, bStd: 0.3f),
                         LoraAdapter.CreateRandom(c, 4, 16, 3, 0.9, bStd: 0.3f) };
        float[] w = [0.5f, 0.3f, 0.2f];
        var merged = AdapterMerge.Linear(ad.Select((a, i) => (a, w[i])).ToList());
        foreach (var m in merged.Modules)
        {
            Assert.That(m.Rank, Is.EqualTo(4));
            Assert.That(m.Scale, Is.EqualTo(1f));
            var mods = ad.Select(a => a[m.Layer, m.Proj]!).ToArray();
            var cs = mods.Select((x, i) => Math.Sqrt(w[i] * x.Scale)).ToArray();
            var want = new double[m.Out * m.In];
            for (int i = 0; i < mods.Length; i++)
                for (int j = 0; j < mods.Length; j++)
                {
                    // i == j: w_i s_i B_i A_i; i != j: the cross term c_i c_j B_i A_j.
                    var bi = mods[i]; var aj = mods[j];
                    for (int o = 0; o < m.Out; o++)
                        for (int x = 0; x < m.In; x++)
                        {
                            double s = 0;
                            for (int k = 0; k < m.Rank; k++) s += (double)bi.B[o * m.Rank + k] * aj.A[k * m.In + x];
                            want[o * m.In + x] += (i == j ? w[i] * bi.Scale : cs[i] * cs[j]) * s;
                        }
                }
            Close.Assert(DeltaW(m, 1).Select(v => (float)v).ToArray(), want.Select(v => (float)v).ToArray(), 1e-6f, 1e-5f, $"linear {m.Name()}");
        }
        Assert.That(merged.Config.R, Is.EqualTo(4));
        Assert.That(merged.Config.LoraAlpha, Is.EqualTo(4));
    }

    [Test]
    public void Linear_RefusesUnequalRanks()
    {
        var c = TestModels.Tiny();
        Assert.That(() => AdapterMerge.Linear([(LoraAdapter.CreateRandom(c, 4, 8, 1), 1f), (LoraAdapter.CreateRandom(c, 8, 8, 2), 1f)]),
            Throws.TypeOf<ShapeMismatchException>().With.Message.Contains("linear merge needs equal ranks"));
    }
}
