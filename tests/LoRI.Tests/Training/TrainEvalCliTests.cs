using System.Text.Json;
using LoRI.Adapters;
using LoRI.Backend.Cpu;
using LoRI.Evaluation;
using LoRI.Model;
using LoRI.Tests.IO;
using LoRI.Tests.Support;
using LoRI.Training;
using LoRI.Training.Data;

namespace LoRI.Tests.Training;

/// <summary>train -> mask -> train lori-s -> eval through the CLI on an init-model tiny model.</summary>
public class TrainEvalCliTests
{
    private TempDir _dir = null!;
    private string ModelDir => _dir.File("model");
    private string Data => _dir.File("data.jsonl");

    [OneTimeSetUp]
    public void Setup()
    {
        _dir = new TempDir();
        var r = Cli.Run("init-model", "--preset", "tiny", "--out", ModelDir, "--seed", "3");
        Assert.That(r.ExitCode, Is.Zero, r.Err);
        var rng = new Random(1);
        File.WriteAllLines(Data, Enumerable.Range(0, 16).Select(_ =>
        {
            int a = rng.Next(1, 10), b = rng.Next(1, 10);
            return JsonSerializerEscape($"Add {a} and {b}.", $"{a + b}");
        }));
    }

    private static string JsonSerializerEscape(string instruction, string output) =>
        $"{{\"instruction\": {JsonEncodedText.Encode(instruction).ToString().Quote()}, \"output\": {JsonEncodedText.Encode(output).ToString().Quote()}}}";

    [OneTimeTearDown]
    public void Clean() => _dir.Dispose();

    private static double[] Losses(string dir) =>
        File.ReadAllLines(Path.Combine(dir, Trainer.MetricsFileName)).Select(l => JsonDocument.Parse(l).RootElement.GetProperty("loss").GetDouble()).ToArray();

    [Test]
    public void LoriD_Mask_LoriS_Eval_EndToEnd()
    {
        string d = _dir.File("lori-d"), s = _dir.File("lori-s"), maskFile = _dir.File("mask.safetensors");
        string[] common = ["--model", ModelDir, "--data", Data, "--rank", "8", "--lr", "1e-2", "--batch-size", "4", "--max-length", "128", "--quiet"];
        var r = Cli.Run(["train", .. common, "--method", "lori-d", "--out", d, "--epochs", "4", "--json"]);
        Assert.That(r.ExitCode, Is.Zero, r.Err);
        using (var j = JsonDocument.Parse(r.Out))
        {
            Assert.That(j.RootElement.GetProperty("steps").GetInt64(), Is.EqualTo(16));
            Assert.That(j.RootElement.GetProperty("finished").GetBoolean(), Is.True);
        }
        var ld = Losses(d);
        Assert.That(ld.TakeLast(4).Average(), Is.LessThan(ld.Take(4).Average()), "the LoRI-D loss falls");

        var mk = Cli.Run("mask", "--adapter", d, "--sparsity", "0.9", "--out", maskFile);
        Assert.That(mk.ExitCode, Is.Zero, mk.Err);
        r = Cli.Run(["train", .. common, "--method", "lori-s", "--mask", maskFile, "--out", s, "--epochs", "4"]);
        Assert.That(r.ExitCode, Is.Zero, r.Err);
        using (var model = LlamaModel.Load(ModelDir, new CpuBackend()))
        {
            var adapterS = PeftAdapter.Load(s, model.Config);
            var mask = LoraMask.Load(maskFile);
            foreach (var m in adapterS.Modules)
            {
                var keep = mask[m.Layer, m.Proj]!.Keep;
                for (int i = 0; i < m.B.Length; i++)
                    if (keep[i] == 0) Assert.That(m.B[i], Is.EqualTo(0f), $"{m.Name()} B[{i}] outside the mask");
            }
            Assert.That(adapterS.BSparsity, Is.GreaterThanOrEqualTo(0.9));
        }

        var baseEval = Cli.Run("eval", "--model", ModelDir, "--data", Data, "--metric", "perplexity", "--json");
        var sEval = Cli.Run("eval", "--model", ModelDir, "--adapter", s, "--data", Data, "--metric", "perplexity", "--json", "--report", _dir.File("report.json"));
        Assert.That(baseEval.ExitCode, Is.Zero, baseEval.Err);
        Assert.That(sEval.ExitCode, Is.Zero, sEval.Err);
        double pBase = JsonDocument.Parse(baseEval.Out).RootElement.GetProperty("perplexity").GetDouble();
        double pS = JsonDocument.Parse(sEval.Out).RootElement.GetProperty("perplexity").GetDouble();
        Assert.That(pS, Is.LessThan(pBase), "the LoRI-S adapter lowers the training set's perplexity");
        Assert.That(File.Exists(_dir.File("report.json")));

        var exact = Cli.Run("eval", "--model", ModelDir, "--adapter", s, "--data", Data, "--metric", "exact", "--max-new-tokens", "4", "--limit", "3", "--json");
        Assert.That(exact.ExitCode, Is.Zero, exact.Err);
        Assert.That(JsonDocument.Parse(exact.Out).RootElement.GetProperty("examples").GetInt32(), Is.EqualTo(3));

        // The Done-when chain ends in a merge of the trained adapters.
        var merged = _dir.File("merged");
        var mg = Cli.Run("merge", "--adapters", $"{d},{s}", "--weights", "0.5,0.5", "--method", "cat", "--out", merged);
        Assert.That(mg.ExitCode, Is.Zero, mg.Err);
        var mEval = Cli.Run("eval", "--model", ModelDir, "--adapter", merged, "--data", Data, "--metric", "perplexity", "--json");
        Assert.That(mEval.ExitCode, Is.Zero, mEval.Err);
    }

    [Test]
    public void Train_StopsAndResumes_FromTheCli()
    {
        string a = _dir.File("straight"), b = _dir.File("resumed");
        string[] common = ["--model", ModelDir, "--data", Data, "--method", "lora", "--rank", "4", "--lr", "1e-2", "--batch-size", "4",
                           "--epochs", "2", "--max-length", "128", "--quiet", "--seed", "5"];
        Assert.That(Cli.Run(["train", .. common, "--out", a]).ExitCode, Is.Zero);
        var stop = Cli.Run(["train", .. common, "--out", b, "--max-steps", "3"]);
        Assert.That(stop.ExitCode, Is.Zero, stop.Err);
        Assert.That(stop.Out, Does.Contain("resume with --resume"));
        Assert.That(File.Exists(Path.Combine(b, "adapter_model.safetensors")), Is.False, "no adapter before the run ends");
        var res = Cli.Run(["train", .. common, "--out", b, "--resume"]);
        Assert.That(res.ExitCode, Is.Zero, res.Err);
        Assert.That(File.ReadAllBytes(Path.Combine(b, "adapter_model.safetensors")), Is.EqualTo(File.ReadAllBytes(Path.Combine(a, "adapter_model.safetensors"))));
    }

    [Test]
    public void Train_OnTheCudaEmulator_FollowsTheCpu_AndResumesBitForBit()
    {
        string cpu = _dir.File("emu-cpu"), emu = _dir.File("emu-dev"), emuB = _dir.File("emu-dev-resumed");
        string[] common = ["train", "--model", ModelDir, "--data", Data, "--method", "lori-d", "--rank", "8", "--lr", "1e-2", "--batch-size", "4",
                           "--epochs", "1", "--max-length", "128", "--quiet", "--seed", "9", "--json"];
        var rc = Cli.Run([.. common, "--out", cpu, "--device", "cpu"]);
        var re = Cli.Run([.. common, "--out", emu, "--device", "cuda-emu"]);
        Assert.That(rc.ExitCode, Is.Zero, rc.Err);
        Assert.That(re.ExitCode, Is.Zero, re.Err);
        Assert.That(JsonDocument.Parse(re.Out).RootElement.GetProperty("device").GetString(), Is.EqualTo("cuda-emu"));
        double[] lc = Losses(cpu), le = Losses(emu);
        Assert.That(le, Has.Length.EqualTo(lc.Length));
        for (int i = 0; i < lc.Length; i++) Assert.That(le[i], Is.EqualTo(lc[i]).Within(1e-4 * lc[i]), $"loss at step {i + 1}");

        // Adam moves an entry by about lr * sign(g) per step: an entry whose gradient is at rounding-noise level may
        // step the other way on the other backend. Every other entry agrees to float precision.
        using var model = LlamaModel.Load(ModelDir, new CpuBackend());
        var ac = PeftAdapter.Load(cpu, model.Config);
        var ae = PeftAdapter.Load(emu, model.Config);
        long total = 0, off = 0;
        foreach (var m in ac.Modules)
        {
            var me = ae[m.Layer, m.Proj]!;
            for (int i = 0; i < m.B.Length; i++, total++)
                if (Math.Abs(me.B[i] - m.B[i]) > 1e-5f) off++;
            Assert.That(me.A, Is.EqualTo(m.A), "the same frozen A from the same seed");
        }
        Assert.That(off, Is.LessThanOrEqualTo(total / 200), $"{off} of {total} B entries differ by more than 1e-5");

        // stop after 2 of 4 steps, resume on the device: the same bytes as the uninterrupted device run
        var stop = Cli.Run([.. common, "--out", emuB, "--device", "cuda-emu", "--max-steps", "2"]);
        Assert.That(stop.ExitCode, Is.Zero, stop.Err);
        var res = Cli.Run([.. common, "--out", emuB, "--device", "cuda-emu", "--resume"]);
        Assert.That(res.ExitCode, Is.Zero, res.Err);
        Assert.That(File.ReadAllBytes(Path.Combine(emuB, "adapter_model.safetensors")), Is.EqualTo(File.ReadAllBytes(Path.Combine(emu, "adapter_model.safetensors"))));

        // eval on the device: the same perplexity as on the CPU
        string[] ev = ["eval", "--model", ModelDir, "--adapter", emu, "--data", Data, "--metric", "perplexity", "--json"];
        var pc = Cli.Run([.. ev, "--device", "cpu"]);
        var pe = Cli.Run([.. ev, "--device", "cuda-emu"]);
        Assert.That(pe.ExitCode, Is.Zero, pe.Err);
        Assert.That(JsonDocument.Parse(pe.Out).RootElement.GetProperty("perplexity").GetDouble(),
            Is.EqualTo(JsonDocument.Parse(pc.Out).RootElement.GetProperty("perplexity").GetDouble()).Within(1e-4).Percent);
    }

    [TestCase("--method", "lori-s", "needs --mask")]
    [TestCase("--method", "dora", "unknown method 'dora'")]
    public void Train_UsageErrors(string opt, string value, string message)
    {
        var r = Cli.Run("train", "--model", ModelDir, "--data", Data, "--out", _dir.File("x"), opt, value);
        Assert.That(r.ExitCode, Is.EqualTo(2));
        Assert.That(r.Err, Does.Contain(message));
    }

    [Test]
    public void Perplexity_MatchesTheTrainingGraphsTokenMeanLoss()
    {
        using var model = TestModels.Create(TestModels.Tiny());
        var examples = new List<TrainingExample>
        {
            new([3, 17, 42, 8, 91, 1], 2, 1),
            new([5, 60, 2, 1], 1, 2),
        };
        var report = Evaluator.Perplexity(model, examples);
        using var g = new TrainingGraph(model, TrainMethod.Full, null, 64);
        double loss = g.Run(new Batch(examples, 0, LossReduction.MeanTokens), backward: false);
        Assert.That(report.Tokens, Is.EqualTo(7));   // 4 response tokens + 3
        Assert.That(report.MeanNll, Is.EqualTo(loss).Within(1e-5 * loss));
        Assert.That(report.Perplexity, Is.EqualTo(Math.Exp(report.MeanNll)));
    }
}

internal static class StringQuote
{
    public static string Quote(this string s) => "\"" + s + "\"";
}
