using System.Text.Json;
using LoRI.Backend.Cpu;
using LoRI.Model;
using LoRI.Tests.IO;
using LoRI.Tests.Support;

namespace LoRI.Tests.Runner;

/// <summary>init-model, generate and score through the CLI on a tiny random model.</summary>
public class GenerateScoreCliTests
{
    private TempDir _dir = null!;
    private string Model => _dir.Path;

    [OneTimeSetUp]
    public void MakeModel()
    {
        _dir = new TempDir();
        var r = Cli.Run("init-model", "--preset", "tiny", "--out", Model, "--seed", "7");
        Assert.That(r.ExitCode, Is.Zero, r.Err);
        Assert.That(r.Out, Does.Contain("tiny"));
    }

    [OneTimeTearDown]
    public void Clean() => _dir.Dispose();

    [Test]
    public void InitModel_WritesALoadableHfFolder_SameSeedSameBytes()
    {
        foreach (var f in new[] { "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json" })
            Assert.That(File.Exists(Path.Combine(Model, f)), f);
        using var again = new TempDir();
        Assert.That(Cli.Run("init-model", "--preset", "tiny", "--out", again.Path, "--seed", "7").ExitCode, Is.Zero);
        Assert.That(File.ReadAllBytes(again.File("model.safetensors")), Is.EqualTo(File.ReadAllBytes(Path.Combine(Model, "model.safetensors"))));
        using var m = LlamaModel.Load(Model, new CpuBackend());
        Assert.That(m.Config.NumLayers, Is.EqualTo(2));
    }

    [Test]
    public void Generate_Json_IsDeterministicGreedy_AndBatchMatchesSingle()
    {
        string[] Args(params string[] extra) => ["generate", "--model", Model, "--max-new-tokens", "12", "--json", .. extra];
        var one = Cli.Run(Args("--prompt", "Hello"));
        Assert.That(one.ExitCode, Is.Zero, one.Err);
        using var j1 = JsonDocument.Parse(one.Out);
        var r1 = j1.RootElement.GetProperty("results")[0];
        var ids = r1.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        Assert.That(ids.Length, Is.InRange(1, 12));
        var batch = Cli.Run(Args("--prompt", "Other words", "--prompt", "Hello"));
        using var j2 = JsonDocument.Parse(batch.Out);
        var r2 = j2.RootElement.GetProperty("results")[1];
        Assert.That(r2.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray(), Is.EqualTo(ids));
        Assert.That(r2.GetProperty("text").GetString(), Is.EqualTo(r1.GetProperty("text").GetString()));
        // The prompt gets BOS by default (a base model's convention).
        var bos = ConfigBos();
        Assert.That(r1.GetProperty("prompt_ids")[0].GetInt32(), Is.EqualTo(bos));
    }

    private int ConfigBos()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(Model, "config.json")));
        return doc.RootElement.GetProperty("bos_token_id").GetInt32();
    }

    [Test]
    public void Generate_StopString_CutsTheText()
    {
        var free = Cli.Run("generate", "--model", Model, "--prompt", "abc", "--max-new-tokens", "16", "--json", "--temperature", "1", "--seed", "4");
        using var j = JsonDocument.Parse(free.Out);
        var text = j.RootElement.GetProperty("results")[0].GetProperty("text").GetString()!;
        Assume.That(text.Length, Is.GreaterThanOrEqualTo(4), "the random model produced too little text to cut");
        var stop = text.Substring(2, 2);
        var cut = Cli.Run("generate", "--model", Model, "--prompt", "abc", "--max-new-tokens", "16", "--json", "--temperature", "1", "--seed", "4", "--stop", stop);
        using var jc = JsonDocument.Parse(cut.Out);
        var res = jc.RootElement.GetProperty("results")[0];
        Assert.That(res.GetProperty("text").GetString(), Is.EqualTo(text[..text.IndexOf(stop, StringComparison.Ordinal)]));
        Assert.That(res.GetProperty("finish").GetString(), Is.EqualTo("stop"));
    }

    [Test]
    public void Score_LogProbs_MatchAFullForward_AndDumpHoldsEveryRow()
    {
        using var dump = new TempDir();
        var path = dump.File("logits.bin");
        var r = Cli.Run("score", "--model", Model, "--ids", "3,70,71,72,10,200", "--json", "--top", "3", "--dump-logits", path);
        Assert.That(r.ExitCode, Is.Zero, r.Err);
        using var j = JsonDocument.Parse(r.Out);
        var tokens = j.RootElement.GetProperty("tokens");
        Assert.That(tokens.GetArrayLength(), Is.EqualTo(6));

        using var m = LlamaModel.Load(Model, new CpuBackend());
        int v = m.Config.VocabSize;
        int[] ids = [3, 70, 71, 72, 10, 200];
        using var cache = new KvCache(m.Backend, m.Config, 1, 8);
        var logits = new float[6 * v];
        m.Forward(ids, new int[6], [0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5], cache, logits);
        var bytes = File.ReadAllBytes(path);
        Assert.That(bytes.Length, Is.EqualTo(6 * v * 4));
        Assert.That(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(bytes).ToArray(), Is.EqualTo(logits));
        for (int i = 1; i < 6; i++)
        {
            var row = logits.AsSpan((i - 1) * v, v);
            double max = row.ToArray().Max(), s = 0;
            foreach (var x in row) s += Math.Exp(x - max);
            double expect = row[ids[i]] - (max + Math.Log(s));
            Assert.That(tokens[i].GetProperty("logprob").GetDouble(), Is.EqualTo(expect).Within(1e-6), $"position {i}");
            var top = tokens[i].GetProperty("top");
            Assert.That(top.GetArrayLength(), Is.EqualTo(3));
            Assert.That(top[0].GetProperty("id").GetInt32(), Is.EqualTo(LoRI.Generation.Sampler.Argmax(row)));
        }
        double total = Enumerable.Range(1, 5).Sum(i => tokens[i].GetProperty("logprob").GetDouble());
        Assert.That(j.RootElement.GetProperty("perplexity").GetDouble(), Is.EqualTo(Math.Exp(-total / 5)).Within(1e-9));
    }

    private static double[] LogProbs(string json)
    {
        using var j = JsonDocument.Parse(json);
        return j.RootElement.GetProperty("tokens").EnumerateArray().Skip(1).Select(t => t.GetProperty("logprob").GetDouble()).ToArray();
    }

    [Test]
    public void Score_WithAdapter_UnmergedMatchesMerged_AndWeightZeroIsTheBase()
    {
        using var ad = new TempDir();
        var c = LlamaConfig.Load(Model);
        var adapter = LoRI.Adapters.LoraAdapter.CreateRandom(c, 4, 8, seed: 3, bSparsity: 0.5, bStd: 0.5f);
        LoRI.Adapters.PeftAdapter.Save(adapter, ad.Path);
        string[] Args(params string[] extra) => ["score", "--model", Model, "--ids", "3,70,71,72,10,200", "--json", .. extra];
        var baseLp = LogProbs(Cli.Run(Args()).Out);
        var unmerged = Cli.Run(Args("--adapter", ad.Path));
        Assert.That(unmerged.ExitCode, Is.Zero, unmerged.Err);
        var lpU = LogProbs(unmerged.Out);
        var lpM = LogProbs(Cli.Run(Args("--adapter", ad.Path, "--merge")).Out);
        var lpZ = LogProbs(Cli.Run(Args("--adapter", ad.Path + ":0")).Out);
        Assert.That(lpU.Zip(baseLp).Max(p => Math.Abs(p.First - p.Second)), Is.GreaterThan(1e-3), "the adapter changes the scores");
        // Merged weights are f32 here: the two paths differ only by summation order.
        Assert.That(lpU.Zip(lpM).Max(p => Math.Abs(p.First - p.Second)), Is.LessThan(1e-4));
        Assert.That(lpZ, Is.EqualTo(baseLp).Within(1e-6));
        var merge0 = Cli.Run("score", "--model", Model, "--ids", "1,2", "--merge");
        Assert.That(merge0.ExitCode, Is.EqualTo(2));
        Assert.That(merge0.Err, Does.Contain("--merge needs"));
    }

    [Test]
    public void Score_OnTheCudaEmulator_MatchesTheCpu()
    {
        string[] Args(string device) => ["score", "--model", Model, "--ids", "3,70,71,72,10,200", "--json", "--device", device];
        var cpu = LogProbs(Cli.Run(Args("cpu")).Out);
        var emu = Cli.Run(Args("cuda-emu"));
        Assert.That(emu.ExitCode, Is.Zero, emu.Err);
        Assert.That(LogProbs(emu.Out), Is.EqualTo(cpu).Within(1e-4));
    }

    [Test]
    public void Errors_AreOneLine_WithExitCodes()
    {
        var missing = Cli.Run("generate", "--model", Path.Combine(Model, "nope"), "--prompt", "x");
        Assert.That(missing.ExitCode, Is.EqualTo(1));
        Assert.That(missing.Err, Does.Contain("nope"));
        Assert.That(missing.Err.Trim().Split('\n'), Has.Length.EqualTo(1));
        var unknown = Cli.Run("generate", "--model", Model, "--prompt", "x", "--tempreature", "1");
        Assert.That(unknown.ExitCode, Is.EqualTo(2));
        Assert.That(unknown.Err, Does.Contain("unknown option --tempreature"));
        var badId = Cli.Run("score", "--model", Model, "--ids", "1,99999");
        Assert.That(badId.ExitCode, Is.EqualTo(2));
        Assert.That(badId.Err, Does.Contain("99999"));
        Assert.That(Cli.Run("frobnicate").ExitCode, Is.EqualTo(2));
        var badTopP = Cli.Run("generate", "--model", Model, "--prompt", "x", "--top-p", "0");
        Assert.That(badTopP.ExitCode, Is.EqualTo(2));
    }
}
