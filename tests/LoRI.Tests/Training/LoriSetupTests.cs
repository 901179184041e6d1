using LoRI.Model;
using LoRI.Training;

namespace LoRI.Tests.Training;

public class LoriSetupTests
{
    private static readonly LlamaConfig Llama3_8B = new()
    {
        HiddenSize = 4096, IntermediateSize = 14336, NumLayers = 32, NumHeads = 32, NumKvHeads = 8, HeadDim = 128,
        VocabSize = 128256, TieWordEmbeddings = false,
    };

    // The numbers of lori-method.md section 1.
    [TestCase(64, TrainMethod.Lora, 167_772_160L)]
    [TestCase(64, TrainMethod.LoriD, 88_080_384L)]
    [TestCase(32, TrainMethod.Lora, 83_886_080L)]
    [TestCase(32, TrainMethod.LoriD, 44_040_192L)]
    public void TrainableParameters_OnLlama3_8B_MatchTheMethodDoc(int rank, TrainMethod m, long expected) =>
        Assert.That(LoriSetup.TrainableParameters(Llama3_8B, m, rank, Projs.All), Is.EqualTo(expected));

    [Test]
    public void TrainableParameters_LoriS_IsTenPercentOfLoriD_And525PercentOfLora()
    {
        long s64 = LoriSetup.TrainableParameters(Llama3_8B, TrainMethod.LoriS, 64, Projs.All);
        Assert.That(s64, Is.EqualTo(8_808_038L));                      // floor(0.1 * 88,080,384): "~8.81M"
        Assert.That(Math.Round(100.0 * s64 / 167_772_160, 2), Is.EqualTo(5.25));
        Assert.That(LoriSetup.TrainableParameters(Llama3_8B, TrainMethod.LoriS, 32, Projs.All), Is.EqualTo(4_404_019L)); // "~4.40M"
        Assert.That(LoriSetup.TrainableParameters(Llama3_8B, TrainMethod.Full, 64, Projs.All), Is.EqualTo(8_030_261_248L));
    }

    [Test]
    public void DrawA_Uniform_IsBoundedReproducibleAndPerModule()
    {
        int r = 8, inF = 100;
        var a = new float[r * inF];
        LoriSetup.DrawA(a, r, inF, AInit.Uniform, 7, "model.layers.0.self_attn.q_proj");
        Assert.That(a.Max(v => Math.Abs(v)), Is.LessThanOrEqualTo(0.1f));
        Assert.That(a.Max(v => Math.Abs(v)), Is.GreaterThan(0.09f), "the draw should span the interval");
        double mean = a.Average(v => (double)v), var = a.Average(v => (double)v * v);
        Assert.That(mean, Is.EqualTo(0).Within(0.01));
        Assert.That(var, Is.EqualTo(0.01 / 3).Within(0.0005), "U(-b, b) has variance b^2 / 3");
        var again = new float[a.Length];
        LoriSetup.DrawA(again, r, inF, AInit.Uniform, 7, "model.layers.0.self_attn.q_proj");
        Assert.That(again, Is.EqualTo(a));
        var other = new float[a.Length];
        LoriSetup.DrawA(other, r, inF, AInit.Uniform, 7, "model.layers.0.self_attn.k_proj");
        Assert.That(other, Is.Not.EqualTo(a));
        LoriSetup.DrawA(other, r, inF, AInit.Uniform, 8, "model.layers.0.self_attn.q_proj");
        Assert.That(other, Is.Not.EqualTo(a));
    }

    [Test]
    public void DrawA_Gaussian_HasStdOneOverRank()
    {
        int r = 4, inF = 2000;
        var a = new float[r * inF];
        LoriSetup.DrawA(a, r, inF, AInit.Gaussian, 1, "m");
        double std = Math.Sqrt(a.Average(v => (double)v * v));
        Assert.That(std, Is.EqualTo(0.25).Within(0.01));
    }

    [Test]
    public void MagnitudeMask_PoolsAllMatrices_KeepsTies()
    {
        // N = 10, sparsity 0.7 -> k = floor(0.3 * 10) = 3. |B| sorted: 9, 5, 4, 4, 3, ... threshold = 4, and both 4s are kept.
        float[] b1 = [0.5f, -9f, 4f, 1f];
        float[] b2 = [-4f, 3f, 0f, 5f, -2f, 0.25f];
        var m1 = new bool[4]; var m2 = new bool[6];
        float thr = LoriSetup.MagnitudeMask([b1, b2], 0.7, [m1, m2]);
        Assert.That(thr, Is.EqualTo(4f));
        Assert.That(m1, Is.EqualTo(new[] { false, true, true, false }));
        Assert.That(m2, Is.EqualTo(new[] { true, false, false, true, false, false }));
    }

    [Test]
    public void MagnitudeMask_MatchesASortOnRandomData()
    {
        var rng = new Random(9);
        var bs = Enumerable.Range(0, 3).Select(i => Enumerable.Range(0, 1000 + 17 * i).Select(_ => (float)(rng.NextDouble() - 0.5) * 1e-3f).ToArray()).ToArray();
        var masks = bs.Select(b => new bool[b.Length]).ToArray();
        float thr = LoriSetup.MagnitudeMask(bs.Select(b => (ReadOnlyMemory<float>)b).ToList(), 0.9, masks.Select(m => (Memory<bool>)m).ToList());
        var sorted = bs.SelectMany(b => b).Select(MathF.Abs).OrderByDescending(v => v).ToArray();
        long k = (long)Math.Floor(0.1 * sorted.Length);
        Assert.That(thr, Is.EqualTo(sorted[k - 1]));
        Assert.That(masks.Sum(m => m.Count(x => x)), Is.EqualTo(sorted.Count(v => v >= thr)));
        Assert.That(masks.Sum(m => m.Count(x => x)), Is.EqualTo(k), "no ties in random data");
    }

    [Test]
    public void MagnitudeMask_FullSparsityKeepsNothing()
    {
        var m = new bool[3];
        LoriSetup.MagnitudeMask([new float[] { 1, 2, 3 }], 1.0, [m]);
        Assert.That(m, Is.All.False);
    }
}
