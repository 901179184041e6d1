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
    public void CreateAdapter_DrawsEachModulesAFromItsName_BStartsAtZero()
    {
        var c = new LlamaConfig { HiddenSize = 16, IntermediateSize = 24, NumLayers = 2, NumHeads = 2, NumKvHeads = 1, HeadDim = 8, VocabSize = 11 };
        var a = LoriSetup.CreateAdapter(c, 4, 8, [Proj.V, Proj.Down], AInit.Uniform, 21);
        Assert.That(a.ModuleCount, Is.EqualTo(4));
        Assert.That(a.Config.TargetModules, Is.EqualTo(new[] { "v_proj", "down_proj" }));
        var m = a[1, Proj.Down]!;
        Assert.That((m.Rank, m.In, m.Out, m.Scale), Is.EqualTo((4, 24, 16, 2f)));
        Assert.That(m.B, Is.All.EqualTo(0f));
        var expected = new float[4 * 24];
        LoriSetup.DrawA(expected, 4, 24, AInit.Uniform, 21, "model.layers.1.mlp.down_proj");
        Assert.That(m.A, Is.EqualTo(expected));
    }
}
