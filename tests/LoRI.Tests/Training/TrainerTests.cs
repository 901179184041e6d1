using System.Text.Json;
using LoRI.Adapters;
using LoRI.Model;
using LoRI.Tensors;
using LoRI.Tests.IO;
using LoRI.Tests.Support;
using LoRI.Training;
using LoRI.Training.Data;

namespace LoRI.Tests.Training;

public class TrainerTests
{
    private static List<TrainingExample> Examples(int count, ulong seed = 3)
    {
        var rng = new Rng(seed);
        return Enumerable.Range(0, count).Select(i =>
        {
            int len = 4 + rng.NextInt(6);
            return new TrainingExample(Enumerable.Range(0, len).Select(_ => 2 + rng.NextInt(95)).ToArray(), 1 + rng.NextInt(3), i + 1);
        }).ToList();
    }

    private static TrainOptions Opts(TrainMethod m) => new()
    {
        Method = m, Rank = 4, Alpha = 8, Lr = 1e-2, Epochs = 2, BatchSize = 3, Seed = 17,
    };

    private static byte[] StateBytes(Trainer t) =>
        t.Graph.Params.SelectMany(p => p.Value.Concat(p.State.M).Concat(p.State.V)).SelectMany(BitConverter.GetBytes).ToArray();

    [TestCase(TrainMethod.LoriD)]
    [TestCase(TrainMethod.Lora)]
    [TestCase(TrainMethod.Full)]
    public void Resume_GivesTheSameResultBitForBit(TrainMethod method)
    {
        // 10 examples, batch 3, last partial batch dropped: 3 steps per epoch, 6 in all.
        var data = Examples(10);
        using var dirA = new TempDir();
        using var dirB = new TempDir();
        byte[] straight;
        using (var model = TestModels.Create(TestModels.Tiny()))
        using (var t = new Trainer(model, data, Opts(method), dirA.Path))
        {
            Assert.That(t.TotalSteps, Is.EqualTo(6));
            t.Run();
            straight = StateBytes(t);
        }
        using (var model = TestModels.Create(TestModels.Tiny()))
        using (var t = new Trainer(model, data, Opts(method), dirB.Path))
            t.Run(checkpointEvery: 2, maxSteps: 4);   // stops mid-epoch 1 and checkpoints
        byte[] resumed;
        using (var model = TestModels.Create(TestModels.Tiny()))
        using (var t = new Trainer(model, data, Opts(method), dirB.Path))
        {
            Assert.That(t.LoadCheckpoint(), Is.EqualTo(4));
            t.Run();
            Assert.That(t.Step, Is.EqualTo(6));
            resumed = StateBytes(t);
        }
        Assert.That(resumed, Is.EqualTo(straight));
        var lines = File.ReadAllLines(Path.Combine(dirB.Path, Trainer.MetricsFileName));
        Assert.That(lines.Select(l => JsonDocument.Parse(l).RootElement.GetProperty("step").GetInt64()), Is.EqualTo(new long[] { 1, 2, 3, 4, 5, 6 }));
        var losses = File.ReadAllLines(Path.Combine(dirA.Path, Trainer.MetricsFileName)).Select(l => JsonDocument.Parse(l).RootElement.GetProperty("loss").GetDouble());
        Assert.That(lines.Select(l => JsonDocument.Parse(l).RootElement.GetProperty("loss").GetDouble()), Is.EqualTo(losses), "same losses step by step");
    }

    [Test]
    public void Resume_RefusesOtherOptions()
    {
        var data = Examples(10);
        using var dir = new TempDir();
        using (var model = TestModels.Create(TestModels.Tiny()))
        using (var t = new Trainer(model, data, Opts(TrainMethod.LoriD), dir.Path))
            t.Run(maxSteps: 1);
        using var model2 = TestModels.Create(TestModels.Tiny());
        using var t2 = new Trainer(model2, data, Opts(TrainMethod.LoriD) with { Lr = 2e-2 }, dir.Path);
        var e = Assert.Throws<InvalidFileException>(() => t2.LoadCheckpoint())!;
        Assert.That(e.Message, Does.Contain("other options"));
    }

    [Test]
    public void MetricsHaveTheRequiredFields_AndTheAdapterSavesAsPeft()
    {
        var data = Examples(9);
        using var dir = new TempDir();
        using var model = TestModels.Create(TestModels.Tiny());
        using var t = new Trainer(model, data, Opts(TrainMethod.LoriD) with { Epochs = 1 }, dir.Path);
        var seen = new List<StepInfo>();
        t.Run(onStep: seen.Add);
        t.SaveResult();
        Assert.That(seen.Select(s => s.Step), Is.EqualTo(new long[] { 1, 2, 3 }));
        foreach (var line in File.ReadAllLines(dir.File(Trainer.MetricsFileName)))
        {
            var o = JsonDocument.Parse(line).RootElement;
            foreach (var k in new[] { "step", "loss", "lr", "tokens_per_s" }) Assert.That(o.TryGetProperty(k, out _), k);
            Assert.That(o.GetProperty("lr").GetDouble(), Is.EqualTo(1e-2));
        }
        var png = File.ReadAllBytes(dir.File(Trainer.LossCurveFileName));
        Assert.That(png.Take(8), Is.EqualTo(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G', 13, 10, 26, 10 }), "a PNG loss curve");
        var loaded = PeftAdapter.Load(dir.Path, model.Config);
        Assert.That(loaded.ModuleCount, Is.EqualTo(2 * 7));
        foreach (var m in loaded.Modules)
        {
            var mine = t.Adapter![m.Layer, m.Proj]!;
            Assert.That(m.A, Is.EqualTo(mine.A));
            Assert.That(m.B, Is.EqualTo(mine.B));
            Assert.That(m.Scale, Is.EqualTo(2f));
        }
    }

    [Test]
    public void LoriS_DrawsANewA_FromTheSameSeed()
    {
        var c = TestModels.Tiny();
        var d = LoriSetup.CreateAdapter(c, 4, 8, Projs.All, AInit.Uniform, Trainer.ASeed(17, TrainMethod.LoriD));
        var s = LoriSetup.CreateAdapter(c, 4, 8, Projs.All, AInit.Uniform, Trainer.ASeed(17, TrainMethod.LoriS));
        Assert.That(s[0, Proj.Q]!.A, Is.Not.EqualTo(d[0, Proj.Q]!.A));
    }
}
