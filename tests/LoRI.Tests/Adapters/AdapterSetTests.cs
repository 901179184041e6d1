using LoRI.Adapters;
using LoRI.Backend;
using LoRI.Model;
using LoRI.Tensors;
using LoRI.Tests.Support;

namespace LoRI.Tests.Adapters;

/// <summary>Adapters applied unmerged (hook) and merged (weights), switching and removing them.</summary>
public class AdapterSetTests
{
    private static readonly int[] Ids = [3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46];

    private static float[] Logits(LlamaModel m)
    {
        using var cache = new KvCache(m.Backend, m.Config, 1, 64);
        int n = Ids.Length;
        var logits = new float[n * m.Config.VocabSize];
        var pos = Enumerable.Range(0, n).ToArray();
        m.Forward(Ids, new int[n], pos, pos, cache, logits);
        return logits;
    }

    private static LoraAdapter Adapter(LlamaConfig c, ulong seed, double sparsity = 0, int rank = 4, IEnumerable<Proj>? projs = null) =>
        LoraAdapter.CreateRandom(c, rank, 2 * rank, seed, sparsity, projs, bStd: 0.2f);

    [TestCase(0.0, null), TestCase(0.9, null), TestCase(0.9, LoraBForm.Compact), TestCase(0.0, LoraBForm.Compact)]
    public void MergedAndUnmergedLogits_Agree(double sparsity, LoraBForm? form)
    {
        using var m = TestModels.Create(TestModels.Tiny());
        var base0 = Logits(m);
        var adapters = new List<(LoraAdapter, float)> { (Adapter(m.Config, 7, sparsity), 0.7f), (Adapter(m.Config, 8, sparsity, 3, [Proj.Q, Proj.Down]), 0.4f) };
        float[] unmerged, merged;
        using (AdapterSet.Attach(m, adapters, merge: false, form)) unmerged = Logits(m);
        using (AdapterSet.Attach(m, adapters, merge: true)) merged = Logits(m);
        Assert.That(Close.MaxError(unmerged, base0), Is.GreaterThan(1e-2), "the adapters change the logits");
        // F32 weights: the two paths differ only in fp32 summation order (W x + s B A x vs (W + s B A) x):
        // logits of magnitude ~1-10 agree to 1e-4 relative + 1e-4 absolute.
        Close.Assert(merged, unmerged, 1e-4f, 1e-4f, "merged vs unmerged");
        Close.Assert(Logits(m), base0, 0, 0, "base after detaching");
    }

    [Test]
    public void Unmerge_RestoresOriginalWeights_BitForBit([Values(DType.F32, DType.BF16, DType.F16)] DType dtype)
    {
        using var m = TestModels.Create(TestModels.Tiny(), dtype: dtype);
        var before = new Dictionary<(int, Proj), (Tensor T, byte[] Bytes)>();
        for (int l = 0; l < m.Config.NumLayers; l++)
            foreach (var p in Projs.All)
            {
                var t = m.Weights.Layers[l][p];
                var bytes = new byte[t.ByteSize];
                m.Backend.Download<byte>(t, bytes);
                before[(l, p)] = (t, bytes);
            }
        var set = AdapterSet.Attach(m, [(Adapter(m.Config, 9), 1f)], merge: true);
        Assert.That(m.Weights.Layers[1][Proj.Up], Is.Not.SameAs(before[(1, Proj.Up)].T), "merging swaps in a new tensor");
        set.Detach();
        foreach (var ((l, p), (t, bytes)) in before)
        {
            Assert.That(m.Weights.Layers[l][p], Is.SameAs(t), $"layer {l} {p}: original tensor back");
            var now = new byte[t.ByteSize];
            m.Backend.Download<byte>(t, now);
            Assert.That(now, Is.EqualTo(bytes), $"layer {l} {p}: bytes unchanged");
        }
    }

    [Test]
    public void MergedWeight_IsFp32SumRoundedOnceToTheWeightDtype([Values(DType.BF16, DType.F16, DType.F32)] DType dtype)
    {
        using var m = TestModels.Create(TestModels.Tiny(), dtype: dtype);
        var a = Adapter(m.Config, 10);
        var w = m.Weights.Layers[0][Proj.K];
        var wf = new float[w.Length];
        var raw = new byte[w.ByteSize];
        m.Backend.Download<byte>(w, raw);
        unsafe { fixed (byte* p = raw) LoRI.Backend.Cpu.CpuOps.ToFloat(dtype, (nint)p, 0, wf); }
        using var set = AdapterSet.Attach(m, [(a, 0.5f)], merge: true);
        var merged = m.Weights.Layers[0][Proj.K];
        Assert.That(merged.DType, Is.EqualTo(dtype));
        var got = new float[merged.Length];
        var mraw = new byte[merged.ByteSize];
        m.Backend.Download<byte>(merged, mraw);
        unsafe { fixed (byte* p = mraw) LoRI.Backend.Cpu.CpuOps.ToFloat(dtype, (nint)p, 0, got); }
        var mod = a[0, Proj.K]!;
        var want = new float[got.Length];
        for (int o = 0; o < mod.Out; o++)
            for (int i = 0; i < mod.In; i++)
            {
                double d = 0;
                for (int j = 0; j < mod.Rank; j++) d += (double)mod.B[o * mod.Rank + j] * mod.A[j * mod.In + i];
                float v = (float)(wf[o * mod.In + i] + 0.5 * mod.Scale * d);
                want[o * mod.In + i] = dtype switch { DType.BF16 => Bf16.Round(v), DType.F16 => (float)(Half)v, _ => v };
            }
        // One rounding to the dtype: equal up to one unit of the dtype where fp32 and double sums straddle a rounding boundary.
        float rtol = dtype switch { DType.BF16 => Close.Bf16Eps, DType.F16 => Close.F16Eps, _ => 1e-6f };
        Close.Assert(got, want, 1e-7f, rtol, $"merged {dtype} weight");
    }

    [Test]
    public void SeveralAdapters_WeightsSwitchWithoutReload()
    {
        using var m = TestModels.Create(TestModels.Tiny());
        var a1 = Adapter(m.Config, 11);
        var a2 = Adapter(m.Config, 12, 0.9);
        float[] only1, only2, both;
        using (AdapterSet.Attach(m, [(a1, 0.6f)], false)) only1 = Logits(m);
        using (AdapterSet.Attach(m, [(a2, 0.3f)], false)) only2 = Logits(m);
        using (AdapterSet.Attach(m, [(a1, 0.6f), (a2, 0.3f)], true)) both = Logits(m);
        using var set = AdapterSet.Attach(m, [(a1, 0.6f), (a2, 0.3f)], false);
        Close.Assert(Logits(m), both, 1e-4f, 1e-4f, "both unmerged vs both merged");
        set.SetWeight(1, 0);
        Close.Assert(Logits(m), only1, 1e-5f, 1e-5f, "second adapter weighted 0");
        set.SetWeight(1, 0.3f);
        set.SetWeight(0, 0);
        Close.Assert(Logits(m), only2, 1e-5f, 1e-5f, "first adapter weighted 0");
    }

    [Test]
    public void Attach_RefusesASecondSet_AndShapesThatDoNotFit()
    {
        using var m = TestModels.Create(TestModels.Tiny());
        using (AdapterSet.Attach(m, [(Adapter(m.Config, 1), 1f)], false))
            Assert.That(() => AdapterSet.Attach(m, [(Adapter(m.Config, 2), 1f)], false),
                Throws.InvalidOperationException.With.Message.Contains("already has adapters"));
        using (AdapterSet.Attach(m, [(Adapter(m.Config, 1), 1f)], true))
            Assert.That(() => AdapterSet.Attach(m, [(Adapter(m.Config, 2), 1f)], true),
                Throws.InvalidOperationException.With.Message.Contains("already has adapters"), "merges do not stack");
        var other = TestModels.Tiny() with { IntermediateSize = 40 };
        var bad = Adapter(other, 3, projs: [Proj.Down]);
        Assert.That(() => AdapterSet.Attach(m, [(bad, 1f)], false), Throws.TypeOf<ShapeMismatchException>().With.Message.EqualTo(
            "tensor 'base_model.model.model.layers.0.mlp.down_proj.lora_A.weight' has shape [4, 40], the model needs [4, 48]"));
        var deep = Adapter(TestModels.Tiny() with { NumLayers = 3 }, 4, projs: [Proj.Q]);
        Assert.That(() => AdapterSet.Attach(m, [(deep, 1f)], false), Throws.TypeOf<ShapeMismatchException>().With.Message.Contains("layer 2, the model has 2 layers"));
        Assert.That(m.Hook, Is.Null);
    }

    [Test]
    public void Counts_ParametersTrainableNonZero()
    {
        var c = TestModels.Tiny();
        var a = LoraAdapter.CreateRandom(c, 4, 8, 1, 0.0);
        // Per layer: q [32,32] k,v [16,32] o [32,32] gate,up [48,32] down [32,48]; r (in + out) summed.
        long perLayer = 4L * ((32 + 32) + 2 * (32 + 16) + (32 + 32) + 2 * (32 + 48) + (48 + 32));
        Assert.That(a.ParameterCount, Is.EqualTo(2 * perLayer));
        long bPerLayer = 4L * (32 + 16 + 16 + 32 + 48 + 48 + 32);
        Assert.That(a.TrainableParameterCount, Is.EqualTo(2 * bPerLayer));
        Assert.That(a.NonZeroB, Is.EqualTo(a.TrainableParameterCount));
        a[0, Proj.Q]!.B[5] = 0;
        Assert.That(a.NonZeroB, Is.EqualTo(a.TrainableParameterCount - 1));
        Assert.That(a.BSparsity, Is.EqualTo(1.0 / a.TrainableParameterCount).Within(1e-12));
        Assert.That(a[0, Proj.Q]!.Scale, Is.EqualTo(2f));
        var s = LoraAdapter.CreateRandom(c, 4, 8, 1, 0.9);
        Assert.That(s.BSparsity, Is.InRange(0.85, 0.95));
        foreach (var mod in s.Modules)
            foreach (var v in mod.A) Assert.That(Math.Abs(v), Is.LessThanOrEqualTo(1 / Math.Sqrt(mod.In)));
    }

    [Test]
    public void Scale_RsLoraAndPatterns()
    {
        var cfg = new LoraConfig
        {
            R = 16, LoraAlpha = 32, UseRslora = true,
            RankPattern = [new("q_proj", 4), new("layers.1.mlp.down_proj", 8)],
            AlphaPattern = [new("model.layers.1.mlp.down_proj", 100), new("layers.1.mlp.down_proj", 2)],
        };
        Assert.That(cfg.ScaleFor(0, Proj.K), Is.EqualTo(32 / 4.0));
        Assert.That(cfg.RankFor(0, Proj.Q), Is.EqualTo(4));
        Assert.That(cfg.ScaleFor(0, Proj.Q), Is.EqualTo(32 / 2.0));
        Assert.That(cfg.RankFor(1, Proj.Down), Is.EqualTo(8));
        Assert.That(cfg.RankFor(0, Proj.Down), Is.EqualTo(16));
        // peft 0.12 matches `.*\.{key}$`: the full name with "model." has no dot before it and does not match.
        Assert.That(cfg.ScaleFor(1, Proj.Down), Is.EqualTo(2 / Math.Sqrt(8)));
        Assert.That(LoraConfig.Scale(128, 64, false), Is.EqualTo(2.0));
    }
}

/// <summary>The unmerged path in the decode loop allocates nothing once its scratch has grown.</summary>
public class AdapterAllocationTests
{
    [TestCase(null), TestCase(LoraBForm.Dense), TestCase(LoraBForm.Compact)]
    public void DecodeStep_WithAdapters_AllocatesNothing(LoraBForm? form)
    {
        using var m = TestModels.Create(TestModels.Tiny());
        var c = m.Config;
        using var set = AdapterSet.Attach(m, [(LoraAdapter.CreateRandom(c, 4, 8, 1, 0.9), 0.5f), (LoraAdapter.CreateRandom(c, 8, 16, 2), 0.5f)], false, form);
        using var cache = new KvCache(m.Backend, c, 1, 64);
        var logits = new float[c.VocabSize];
        int[] id = [5], slot = [0], pos = [0], rows = [0];
        // Warm up past tiered compilation's call counting (the runtime's own one-time allocations).
        for (int t = 0; t < 40; t++) { pos[0] = t; m.Forward(id, slot, pos, rows, cache, logits); }
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int t = 40; t < 60; t++) { pos[0] = t; m.Forward(id, slot, pos, rows, cache, logits); }
        Assert.That(GC.GetAllocatedBytesForCurrentThread() - before, Is.Zero);
    }

    [Test]
    public void GenericPath_OnABackendWithoutTheFusedOp_MatchesAndAllocatesNothing()
    {
        var c = TestModels.Tiny();
        var adapters = new List<(LoraAdapter, float)> { (LoraAdapter.CreateRandom(c, 4, 8, 1, 0.9, bStd: 0.2f), 0.5f), (LoraAdapter.CreateRandom(c, 8, 16, 2, bStd: 0.2f), 0.7f) };
        using var fused = TestModels.Create(c);
        using var generic = TestModels.Create(c, backend: new LoraApplyTests.MatMulOnly(new LoRI.Backend.Cpu.CpuBackend()));
        using var s1 = AdapterSet.Attach(fused, adapters, false);
        using var s2 = AdapterSet.Attach(generic, adapters, false);
        int[] id = [5], slot = [0], pos = [0], rows = [0];
        var l1 = new float[c.VocabSize];
        var l2 = new float[c.VocabSize];
        void Run(LlamaModel m, int from, int to, KvCache cache, float[] logits)
        {
            for (int t = from; t < to; t++) { pos[0] = t; id[0] = (t * 7 + 3) % c.VocabSize; m.Forward(id, slot, pos, rows, cache, logits); }
        }
        using var k1 = new KvCache(fused.Backend, c, 1, 64);
        using var k2 = new KvCache(generic.Backend, c, 1, 64);
        Run(fused, 0, 40, k1, l1);
        Run(generic, 0, 40, k2, l2);
        Close.Assert(l2, l1, 1e-5f, 1e-5f, "generic vs fused after 40 steps");
        long before = GC.GetAllocatedBytesForCurrentThread();
        Run(generic, 40, 60, k2, l2);
        Assert.That(GC.GetAllocatedBytesForCurrentThread() - before, Is.Zero);
    }
}
