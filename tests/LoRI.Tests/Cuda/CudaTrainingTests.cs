using LoRI.Adapters;
using LoRI.Backend;
using LoRI.Cuda.Backend;
using LoRI.Model;
using LoRI.Tensors;
using LoRI.Tests.Support;
using LoRI.Training;
using LoRI.Training.Data;

namespace LoRI.Tests.Cuda;

/// <summary>
/// The training graph on the CUDA emulator against the CPU backend, on the tiny model: the loss and the gradient of
/// every trained tensor for each method, one optimizer step from the same gradients (bit for bit: the AdamW kernel
/// does the CPU's arithmetic), and a short run whose losses follow the CPU's. The CPU graph itself is held against
/// finite differences in double (Training/TrainingGraphTests), so this closes the chain for the kernels.
/// </summary>
public class CudaTrainingTests
{
    // Both sides are fp32 with different summation orders (tiled GEMMs, flash attention, warp reductions): a
    // gradient entry agrees to a few float ulps of the largest terms summed into it. The bound is relative to the
    // tensor's largest gradient, so it stays meaningful for entries that nearly cancel, and it still fails on any
    // missing or wrong term (those are of the order of the gradient itself).
    private const float GradRtol = 1e-4f, GradAtolOfMax = 2e-5f;

    internal static Batch TestBatch() => new(
        [new TrainingExample([3, 17, 42, 8, 91, 1, 55, 23, 9], PromptLength: 2, Line: 1),
         new TrainingExample([5, 60, 2, 1], PromptLength: 1, Line: 2),
         new TrainingExample([7, 70, 13, 64, 28, 1], PromptLength: 3, Line: 3)], padId: 0, LossReduction.SumTokensMeanSequences);

    private static LoraAdapter Adapter(LlamaConfig c)
    {
        var a = LoriSetup.CreateAdapter(c, 4, 8, Projs.All, AInit.Uniform, 3);
        var rng = new Rng(11);
        foreach (var m in a.Modules) for (int i = 0; i < m.B.Length; i++) m.B[i] = (float)((rng.NextDouble() * 2 - 1) * 0.3);
        return a;
    }

    /// <summary>About 15% kept, and nothing at all in the first module (a global mask can empty a module).</summary>
    private static LoraMask Mask(LoraAdapter a)
    {
        var rng = new Rng(2);
        var first = a.Modules.First();
        return new LoraMask(a.Modules.Select(m =>
            new MaskEntry(m.Layer, m.Proj, m.Out, m.Rank, m.B.Select(_ => rng.NextDouble() < 0.15 && m != first ? (byte)1 : (byte)0).ToArray())));
    }

    /// <summary>The same graph on the CPU and on cuda-emu: the same weights, each with its own copy of the same adapter.</summary>
    internal sealed class Pair : IDisposable
    {
        public readonly LlamaModel CpuModel, DevModel;
        public readonly CudaBackend Be;
        public readonly TrainingGraph Cpu, Dev;

        public Pair(TrainMethod method, bool tied = false, DType dtype = DType.F32, bool compact = true)
        {
            var c = TestModels.Tiny(tied);
            CpuModel = TestModels.Create(c, 5, dtype);
            Be = CudaBackend.CreateEmulated();
            DevModel = TestModels.Create(c, 5, dtype, Be);
            LoraAdapter? a1 = null, a2 = null;
            LoraMask? mask = null;
            if (method != TrainMethod.Full)
            {
                a1 = Adapter(c);
                a2 = Adapter(c);
                if (method == TrainMethod.LoriS) mask = Mask(a1);
            }
            Cpu = new TrainingGraph(CpuModel, method, a1, 64, mask, compact);
            Dev = new TrainingGraph(DevModel, method, a2, 64, mask, compact);
        }

        public void Dispose()
        {
            Cpu.Dispose(); Dev.Dispose();
            CpuModel.Dispose(); DevModel.Dispose();
            Be.Dispose();
        }
    }

    private static float MaxAbs(float[] a) => a.Length == 0 ? 0f : a.Max(MathF.Abs);

    private static void AssertGradientsClose(TrainingGraph cpu, TrainingGraph dev, string what)
    {
        dev.SyncGradsToHost();
        Assert.That(dev.Params.Select(p => p.Name), Is.EqualTo(cpu.Params.Select(p => p.Name)));
        for (int i = 0; i < cpu.Params.Count; i++)
        {
            var r = cpu.Params[i].Grad;
            float max = r.Max(MathF.Abs);
            bool empty = cpu.Params[i].Mask is { } mk && !mk.Contains(true);
            Assert.That(max, empty ? Is.EqualTo(0f) : Is.GreaterThan(0f), $"{what}: {cpu.Params[i].Name} has a gradient unless its mask is empty");
            Close.Assert(dev.Params[i].Grad, r, GradAtolOfMax * max, GradRtol, $"{what}: d {cpu.Params[i].Name}");
        }
    }

    [TestCase(TrainMethod.Lora, false)]
    [TestCase(TrainMethod.LoriD, false)]
    [TestCase(TrainMethod.LoriS, false)]
    [TestCase(TrainMethod.Full, false)]
    [TestCase(TrainMethod.Full, true)]
    public void LossAndGradients_MatchTheCpu(TrainMethod method, bool tied)
    {
        using var p = new Pair(method, tied);
        var batch = TestBatch();
        double lc = p.Cpu.Run(batch), ld = p.Dev.Run(batch);
        Assert.That(ld, Is.EqualTo(lc).Within(1e-5 * Math.Abs(lc)), "loss");
        AssertGradientsClose(p.Cpu, p.Dev, $"{method.Name()}{(tied ? " tied" : "")}");
        if (method == TrainMethod.LoriS)
            foreach (var prm in p.Dev.Params)
                for (int i = 0; i < prm.Grad.Length; i++)
                    if (!prm.Mask![i]) Assert.That(prm.Grad[i], Is.EqualTo(0f), $"{prm.Name}[{i}] is masked but has a gradient");
    }

    [Test]
    public void Bf16Weights_FrozenAsStored_GradientsMatchTheCpu()
    {
        // The device reads the bf16 projections as stored (no fp32 copy); the CPU uses exact fp32 copies of the same values.
        using var p = new Pair(TrainMethod.LoriD, dtype: DType.BF16);
        var batch = TestBatch();
        double lc = p.Cpu.Run(batch), ld = p.Dev.Run(batch);
        Assert.That(ld, Is.EqualTo(lc).Within(1e-5 * Math.Abs(lc)));
        AssertGradientsClose(p.Cpu, p.Dev, "lori-d on bf16 weights");
    }

    [Test]
    public void GradientAccumulation_AddsMicroBatches()
    {
        // Two Runs before a step: the device's gradients are the sum, as the CPU's.
        using var p = new Pair(TrainMethod.LoriD);
        var batch = TestBatch();
        p.Cpu.Run(batch); p.Cpu.Run(batch);
        p.Dev.Run(batch); p.Dev.Run(batch);
        AssertGradientsClose(p.Cpu, p.Dev, "two micro-batches");
    }

    [TestCase(TrainMethod.LoriS, ClipMode.PerTensor, true)]
    [TestCase(TrainMethod.LoriS, ClipMode.Global, false)]
    [TestCase(TrainMethod.Lora, ClipMode.None, true)]
    [TestCase(TrainMethod.Full, ClipMode.PerTensor, true)]
    public void OptimizerStep_FromTheSameGradients_MatchesBitForBit(TrainMethod method, ClipMode clip, bool compact)
    {
        using var p = new Pair(method, compact: compact);
        var batch = TestBatch();
        p.Cpu.Run(batch);
        p.Dev.Run(batch);
        // the CPU's gradients on both sides, so the step alone is compared
        for (int i = 0; i < p.Cpu.Params.Count; i++) p.Be.Upload<float>(p.Cpu.Params[i].Grad, p.Dev.Params[i].GradTensor);
        var opt = new AdamWOptions { WeightDecay = 0.01 };
        float nc = p.Cpu.OptimizerStep(1e-2, opt, clip, 0.5f);
        float nd = p.Dev.OptimizerStep(1e-2, opt, clip, 0.5f);
        Assert.That(nd, Is.EqualTo(nc).Within(1e-6 * nc), "gradient norm (double sums on both, in other orders)");
        p.Dev.SyncToHost();
        for (int i = 0; i < p.Cpu.Params.Count; i++)
        {
            var (c, d) = (p.Cpu.Params[i], p.Dev.Params[i]);
            Assert.That(d.State.Step, Is.EqualTo(1));
            // Without clipping the step is bit for bit the CPU's. With clipping the coefficient comes from a norm
            // summed in another order and may differ in its last bit: allow a millionth of each tensor's largest value.
            float exact = clip == ClipMode.None ? 0f : 1f;
            Close.Assert(d.Value, c.Value, exact * 1e-6f * MaxAbs(c.Value), 0f, $"{c.Name} after one step");
            Close.Assert(d.State.M, c.State.M, exact * 1e-6f * MaxAbs(c.State.M), 0f, $"{c.Name} first moment");
            Close.Assert(d.State.V, c.State.V, exact * 1e-6f * MaxAbs(c.State.V), 0f, $"{c.Name} second moment");
        }
        // the gradients were zeroed for the next step
        p.Dev.SyncGradsToHost();
        Assert.That(p.Dev.Params.All(q => q.Grad.All(g => g == 0f)), Is.True);
    }

    [TestCase(TrainMethod.LoriS)]
    [TestCase(TrainMethod.Lora)]
    public void TenSteps_LossesFollowTheCpu(TrainMethod method)
    {
        using var p = new Pair(method);
        var batch = TestBatch();
        var opt = new AdamWOptions();
        var lc = new List<double>();
        var ld = new List<double>();
        for (int s = 0; s < 10; s++)
        {
            lc.Add(p.Cpu.Run(batch)); p.Cpu.OptimizerStep(3e-3, opt);
            ld.Add(p.Dev.Run(batch)); p.Dev.OptimizerStep(3e-3, opt);
        }
        TestContext.Out.WriteLine($"cpu {string.Join(" ", lc.Select(x => x.ToString("F5")))}\ndev {string.Join(" ", ld.Select(x => x.ToString("F5")))}");
        Assert.That(lc[^1], Is.LessThan(lc[0]), "the loss falls");
        for (int s = 0; s < lc.Count; s++) Assert.That(ld[s], Is.EqualTo(lc[s]).Within(1e-4 * lc[s]), $"loss at step {s + 1}");
        p.Dev.SyncToHost();
        if (method == TrainMethod.LoriS)
            foreach (var prm in p.Dev.Params)
                for (int i = 0; i < prm.Value.Length; i++)
                    if (!prm.Mask![i]) Assert.That(prm.Value[i], Is.EqualTo(p.Cpu.Params.Single(q => q.Name == prm.Name).Value[i]), "masked entries never move");
    }

    [Test]
    public void OutOfVocabularyIds_AreAnErrorOnBothBackends()
    {
        using var p = new Pair(TrainMethod.LoriD);
        var bad = new Batch([new TrainingExample([3, 17, 97, 8], PromptLength: 1, Line: 1)], padId: 0, LossReduction.SumTokensMeanSequences);
        foreach (var g in new[] { p.Cpu, p.Dev })
        {
            var e = Assert.Throws<ArgumentOutOfRangeException>(() => g.Run(bad))!;
            Assert.That(e.Message, Does.Contain("97").And.Contain("[0, 97)"));
        }
    }
}
