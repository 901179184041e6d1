using LoRI.Model;
using LoRI.Tensors;
using LoRI.Tests.Support;

namespace LoRI.Tests.Model;

public class LlamaModelTests
{
    private static int[] Seq(int n, int start = 0) => Enumerable.Range(start, n).Select(i => (i * 7 + 3) % 97).ToArray();

    /// <summary>Logits for every position of one sequence, in a single forward (slot 0).</summary>
    private static float[] FullForward(LlamaModel m, int[] ids)
    {
        using var cache = new KvCache(m.Backend, m.Config, 1, 64);
        var logits = new float[ids.Length * m.Config.VocabSize];
        m.Forward(ids, new int[ids.Length], Enumerable.Range(0, ids.Length).ToArray(),
            Enumerable.Range(0, ids.Length).ToArray(), cache, logits);
        return logits;
    }

    [TestCase(1), TestCase(2), TestCase(4)]
    public void DecodeWithKvCache_EqualsFullRecompute(int kvHeads)
    {
        foreach (var scaling in new RopeScaling?[] { null, new RopeScaling(8, 1, 4, 16) })
        {
            using var m = TestModels.Create(TestModels.Tiny(kvHeads: kvHeads, scaling: scaling));
            var ids = Seq(12);
            var full = FullForward(m, ids);
            int v = m.Config.VocabSize;
            using var cache = new KvCache(m.Backend, m.Config, 1, 64);
            var step = new float[v];
            // A 5-token prefill, then one token at a time.
            var pre = new float[v];
            m.Forward(ids.AsSpan(0, 5), new int[5], [0, 1, 2, 3, 4], [4], cache, pre);
            Close.Assert(pre, full.AsSpan(4 * v, v), 1e-5f, 1e-4f, "prefill last row");
            for (int t = 5; t < ids.Length; t++)
            {
                m.Forward(ids.AsSpan(t, 1), [0], [t], [0], cache, step);
                Close.Assert(step, full.AsSpan(t * v, v), 1e-5f, 1e-4f, $"kv {kvHeads} scaling {scaling is not null} position {t}");
            }
        }
    }

    [Test]
    public void CausalMask_EarlierLogitsIgnoreLaterTokens()
    {
        using var m = TestModels.Create(TestModels.Tiny());
        var a = Seq(8);
        var b = (int[])a.Clone();
        b[6] = (b[6] + 1) % 97;
        int v = m.Config.VocabSize;
        var la = FullForward(m, a);
        var lb = FullForward(m, b);
        Close.Assert(la.AsSpan(0, 6 * v), lb.AsSpan(0, 6 * v), 0, 0, "rows before the change");
        Assert.That(Close.MaxError(la.AsSpan(6 * v, v), lb.AsSpan(6 * v, v)), Is.GreaterThan(1e-4), "row of the changed token");
    }

    [Test]
    public void TwoSequencesInOneBatch_EqualEachAlone()
    {
        using var m = TestModels.Create(TestModels.Tiny(tied: true));
        int v = m.Config.VocabSize;
        var a = Seq(6);
        var b = Seq(9, 11);
        var fa = FullForward(m, a);
        var fb = FullForward(m, b);
        using var cache = new KvCache(m.Backend, m.Config, 2, 64);
        var ids = a.Concat(b).ToArray();
        var slots = Enumerable.Repeat(0, 6).Concat(Enumerable.Repeat(1, 9)).ToArray();
        var pos = Enumerable.Range(0, 6).Concat(Enumerable.Range(0, 9)).ToArray();
        var logits = new float[2 * v];
        m.Forward(ids, slots, pos, [5, 14], cache, logits);
        Close.Assert(logits.AsSpan(0, v), fa.AsSpan(5 * v, v), 1e-5f, 1e-4f, "sequence a");
        Close.Assert(logits.AsSpan(v, v), fb.AsSpan(8 * v, v), 1e-5f, 1e-4f, "sequence b");
    }

    [Test]
    public void Bf16Weights_UsedAsStored_CloseToF32Model()
    {
        // Same random draw, once stored as F32 and once rounded to BF16: logits differ only by the weight rounding.
        using var f32 = TestModels.Create(TestModels.Tiny(), dtype: DType.F32);
        using var bf16 = TestModels.Create(TestModels.Tiny(), dtype: DType.BF16);
        Assert.That(bf16.Weights.Layers[0][Proj.Q].DType, Is.EqualTo(DType.BF16), "weights stay bf16 in memory");
        var ids = Seq(7);
        var a = FullForward(f32, ids);
        var b = FullForward(bf16, ids);
        double scale = a.Max(Math.Abs);
        // bf16 keeps 8 bits: relative weight error 2^-9 on average; over two layers the logits move by a few percent of their scale.
        Assert.That(Close.MaxError(b, a), Is.LessThan(0.05 * scale).And.GreaterThan(0));
    }

    [Test]
    public void DecodeStep_AllocatesNothing()
    {
        using var m = TestModels.Create(TestModels.Tiny());
        using var cache = new KvCache(m.Backend, m.Config, 1, 64);
        var logits = new float[m.Config.VocabSize];
        int[] id = [5], slot = [0], pos = [0], rows = [0];
        for (int t = 0; t < 3; t++) { pos[0] = t; m.Forward(id, slot, pos, rows, cache, logits); }
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int t = 3; t < 20; t++) { pos[0] = t; m.Forward(id, slot, pos, rows, cache, logits); }
        Assert.That(GC.GetAllocatedBytesForCurrentThread() - before, Is.Zero);
    }

    [Test]
    public void WrongWeightShape_NamesTensorAndShapes()
    {
        var c = TestModels.Tiny();
        var tensors = RandomWeights.Create(c, 1, DType.F32);
        var bad = RandomWeights.Create(c with { IntermediateSize = 40 }, 1, DType.F32).First(t => t.Name == "model.layers.1.mlp.up_proj.weight");
        tensors[tensors.FindIndex(t => t.Name == bad.Name)] = bad;
        var e = Assert.Throws<ShapeMismatchException>(() =>
            LlamaWeights.Load(c, new LoRI.Backend.Cpu.CpuBackend(), RandomWeights.Source(tensors)));
        Assert.That(e!.Message, Does.Contain("model.layers.1.mlp.up_proj.weight").And.Contain("[40, 32]").And.Contain("[48, 32]"));
    }

    [Test]
    public void ParameterCount_Llama3_8B()
    {
        var c = new LlamaConfig
        {
            HiddenSize = 4096, IntermediateSize = 14336, NumLayers = 32, NumHeads = 32, NumKvHeads = 8, HeadDim = 128,
            VocabSize = 128256,
        };
        Assert.That(c.ParameterCount, Is.EqualTo(8_030_261_248L));
    }
}
