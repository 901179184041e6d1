using LoRI.Adapters;
using LoRI.Backend.Cpu;
using LoRI.Model;
using LoRI.Tensors;
using LoRI.Tests.Support;
using LoRI.Training;
using LoRI.Training.Data;

namespace LoRI.Tests.Training;

/// <summary>
/// The whole training graph on the tiny model: gradients of every trained tensor against central finite
/// differences of ReferenceLlama (double), the forward loss against LlamaModel's own logits, and the
/// method invariants (frozen A, masked entries exactly zero, a loss that falls).
/// </summary>
public class TrainingGraphTests
{
    private const ulong Seed = 5;

    private static Batch TestBatch(LossReduction red = LossReduction.SumTokensMeanSequences) => new(
        [new TrainingExample([3, 17, 42, 8, 91, 1], PromptLength: 2, Line: 1),
         new TrainingExample([5, 60, 2, 1], PromptLength: 1, Line: 2)], padId: 0, red);

    private static (LlamaModel Model, List<NamedTensor> Named) Tiny(bool tied = false)
    {
        var c = TestModels.Tiny(tied);
        var named = RandomWeights.Create(c, Seed, DType.F32, 0.2f);
        var w = LlamaWeights.Load(c, new CpuBackend(), RandomWeights.Source(named));
        return (new LlamaModel(c, w.Embed.Backend, w, 64), named);
    }

    private static LoraAdapter RandomAdapter(LlamaConfig c, int rank = 4)
    {
        var a = LoriSetup.CreateAdapter(c, rank, 2.0 * rank, Projs.All, AInit.Uniform, 3);
        var rng = new Rng(11);
        // B = 0 would make dA vanish; a random B exercises every term.
        foreach (var m in a.Modules) for (int i = 0; i < m.B.Length; i++) m.B[i] = (float)((rng.NextDouble() * 2 - 1) * 0.3);
        return a;
    }

    private static ReferenceLlama Reference(LlamaConfig c, List<NamedTensor> named, LoraAdapter? a)
    {
        var r = new ReferenceLlama { Config = c, W = ReferenceLlama.FromNamed(named), Scale = a?.Modules.First().Scale ?? 0, Rank = a?.Config.R ?? 0 };
        if (a is not null)
            foreach (var m in a.Modules)
                r.Adapter[(m.Layer, m.Proj)] = (m.A.Select(v => (double)v).ToArray(), m.B.Select(v => (double)v).ToArray());
        return r;
    }

    // Float forward against a double reference through two layers: gradients agree to ~1e-4 relative; the bound
    // below (rtol 2e-3, atol 2e-3 * max|ref|) leaves room for float accumulation and still fails on any wrong term.
    private const double Rtol = 2e-3, Atol = 2e-3;

    /// <summary>Central differences of loss() in the entries i % stride == 0 of `values` (changed in place, then restored) against grad.</summary>
    private static void CheckSampled(float[] grad, double[] values, int stride, Func<double> loss, string what)
    {
        const double h = 1e-5;
        var idx = Enumerable.Range(0, values.Length).Where(i => i % stride == 0).ToArray();
        var numeric = new double[idx.Length];
        for (int j = 0; j < idx.Length; j++)
        {
            double old = values[idx[j]];
            values[idx[j]] = old + h; double lp = loss();
            values[idx[j]] = old - h; double lm = loss();
            values[idx[j]] = old;
            numeric[j] = (lp - lm) / (2 * h);
        }
        GradCheck.AssertClose(idx.Select(i => grad[i]).ToArray(), numeric, what, Rtol, Atol);
    }

    [TestCase(TrainMethod.LoriD)]
    [TestCase(TrainMethod.Lora)]
    public void AdapterGradients_MatchFiniteDifferences(TrainMethod method)
    {
        var (model, named) = Tiny();
        using var _ = model;
        var adapter = RandomAdapter(model.Config);
        using var g = new TrainingGraph(model, method, adapter, 64);
        var batch = TestBatch();
        double loss = g.Run(batch);
        var reference = Reference(model.Config, named, adapter);
        Assert.That(loss, Is.EqualTo(reference.Loss(batch)).Within(1e-4 * Math.Abs(loss)), "loss");

        foreach (var m in adapter.Modules)
        {
            var (a, b) = reference.Adapter[(m.Layer, m.Proj)];
            var pB = g.Params.Single(p => p.Name == m.Key('B'));
            CheckSampled(pB.Grad, b, 5, () => reference.Loss(batch), $"dB {m.Name()}");
            if (method == TrainMethod.Lora)
                CheckSampled(g.Params.Single(p => p.Name == m.Key('A')).Grad, a, 5, () => reference.Loss(batch), $"dA {m.Name()}");
            else Assert.That(g.Params.Any(p => p.Name == m.Key('A')), Is.False, "LoRI-D does not train A");
        }
    }

    [TestCase(false)]
    [TestCase(true)]
    public void FullGradients_MatchFiniteDifferences(bool tied)
    {
        var (model, named) = Tiny(tied);
        using var _ = model;
        using var g = new TrainingGraph(model, TrainMethod.Full, null, 64);
        var batch = TestBatch(LossReduction.MeanTokens);
        g.Run(batch);
        var reference = Reference(model.Config, named, null);
        foreach (var p in g.Params)
        {
            var w0 = reference.W[p.Name];
            // Every 37th entry of the big tensors and every 3rd of the norms (prime strides, so all rows and columns are visited).
            CheckSampled(p.Grad, w0, w0.Length > 600 ? 37 : 3, () => reference.Loss(batch), $"d {p.Name}");
        }
    }

    [Test]
    public void ForwardLoss_MatchesTheModelsOwnLogits()
    {
        // The training forward (batch attention with LSE) against LlamaModel.Forward (KV cache): same NLL per token.
        var (model, _) = Tiny();
        using var _m = model;
        var adapter = RandomAdapter(model.Config);
        var batch = TestBatch(LossReduction.MeanTokens);
        using var g = new TrainingGraph(model, TrainMethod.LoriD, adapter, 64);
        double loss = g.Run(batch, backward: false);

        model.Hook = new AdapterHook(adapter);
        int v = model.Config.VocabSize;
        double expected = 0;
        using var cache = new KvCache(model.Backend, model.Config, 2, 16);
        for (int b = 0; b < batch.Size; b++)
        {
            int len = batch.Lengths[b];
            var ids = batch.Tokens.AsSpan(b * batch.SeqLen, len).ToArray();
            var logits = new float[len * v];
            model.Forward(ids, Enumerable.Repeat(b, len).ToArray(), Enumerable.Range(0, len).ToArray(), Enumerable.Range(0, len).ToArray(), cache, logits);
            for (int t = 0; t < len; t++)
            {
                int target = batch.Targets[b * batch.SeqLen + t];
                if (target < 0) continue;
                var row = logits.AsSpan(t * v, v);
                double max = double.NegativeInfinity; foreach (var x in row) max = Math.Max(max, x);
                double sum = 0; foreach (var x in row) sum += Math.Exp(x - max);
                expected += batch.Weights[b * batch.SeqLen + t] * (max + Math.Log(sum) - row[target]);
            }
        }
        Assert.That(loss, Is.EqualTo(expected).Within(1e-5 * Math.Abs(expected)));
    }

    /// <summary>Applies a LoraAdapter through the model's hook: y += s B (A x).</summary>
    private sealed class AdapterHook(LoraAdapter a) : ILinearHook
    {
        public void Apply(int layer, Proj proj, LoRI.Backend.Tensor x, LoRI.Backend.Tensor y)
        {
            if (a[layer, proj] is not { } m) return;
            var be = x.Backend;
            using var u = be.Allocate(DType.F32, x.Rows, m.Rank);
            unsafe
            {
                fixed (float* pa = m.A, pb = m.B)
                {
                    be.MatMul(x, be.FromHost((nint)pa, DType.F32, [m.Rank, m.In], null), u);
                    be.MatMul(u, be.FromHost((nint)pb, DType.F32, [m.Out, m.Rank], null), y, m.Scale, accumulate: true);
                }
            }
        }
    }

    [Test]
    public void LoriS_MaskedEntriesStayExactlyZero_AndLoriD_AIsUntouched()
    {
        var (model, _) = Tiny();
        using var _m = model;
        var adapter = LoriSetup.CreateAdapter(model.Config, 4, 8, Projs.All, AInit.Uniform, 9);
        var aBefore = adapter.Modules.Select(m => (float[])m.A.Clone()).ToList();
        var rng = new Rng(2);
        var mask = new LoraMask(adapter.Modules.Select(m =>
            new MaskEntry(m.Layer, m.Proj, m.Out, m.Rank, m.B.Select(_ => rng.NextDouble() < 0.1 ? (byte)1 : (byte)0).ToArray())));
        using var g = new TrainingGraph(model, TrainMethod.LoriS, adapter, 64, mask);
        var batch = TestBatch();
        for (int s = 0; s < 5; s++) { g.Run(batch); g.OptimizerStep(1e-2, new AdamWOptions()); }
        int live = 0;
        foreach (var m in adapter.Modules)
        {
            var keep = mask[m.Layer, m.Proj]!.Keep;
            for (int i = 0; i < m.B.Length; i++)
                if (keep[i] == 0) Assert.That(BitConverter.SingleToInt32Bits(m.B[i]), Is.EqualTo(0), $"{m.Name()} B[{i}] is masked but moved");
                else if (m.B[i] != 0) live++;
        }
        Assert.That(live, Is.GreaterThan(0), "the live entries trained");
        var mods = adapter.Modules.ToList();
        for (int i = 0; i < mods.Count; i++) Assert.That(mods[i].A, Is.EqualTo(aBefore[i]), $"A of {mods[i].Name()} changed");
    }

    [TestCase(TrainMethod.LoriD, 1e-2, 0.5)]
    [TestCase(TrainMethod.Lora, 1e-2, 0.5)]
    [TestCase(TrainMethod.Full, 3e-3, 0.5)]
    public void TinyModel_OverfitsFourExamples(TrainMethod method, double lr, double bound)
    {
        // Four fixed examples, one batch, repeated: the mean token NLL starts near ln(97) = 4.6 and must end below `bound`.
        var (model, _) = Tiny();
        using var _m = model;
        var adapter = method == TrainMethod.Full ? null : LoriSetup.CreateAdapter(model.Config, 8, 16, Projs.All, AInit.Uniform, 4);
        using var g = new TrainingGraph(model, method, adapter, 64);
        var rng = new Rng(8);
        var examples = Enumerable.Range(0, 4).Select(i =>
            new TrainingExample(Enumerable.Range(0, 10).Select(_ => 2 + rng.NextInt(95)).ToArray(), PromptLength: 3, Line: i)).ToList();
        var batch = new Batch(examples, 0, LossReduction.MeanTokens);
        double first = g.Run(batch);
        g.OptimizerStep(lr, new AdamWOptions());
        double last = first;
        for (int s = 0; s < 150; s++) { last = g.Run(batch); g.OptimizerStep(lr, new AdamWOptions()); }
        TestContext.Out.WriteLine($"{method}: loss {first:F3} -> {last:F3}");
        Assert.That(first, Is.GreaterThan(3.5));
        Assert.That(last, Is.LessThan(bound));
    }
}
