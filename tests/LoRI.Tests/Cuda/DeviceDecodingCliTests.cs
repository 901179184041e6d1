using System.Text.Json;
using LoRI.Adapters;
using LoRI.Model;
using LoRI.Tests.IO;
using LoRI.Tests.Support;

namespace LoRI.Tests.Cuda;

/// <summary>
/// `generate` and `eval` with --device cuda-emu (the on-device decode path) against --device cpu, through the CLI, on an
/// init-model tiny model with bf16 weights: the same greedy ids and predictions, with and without adapters, and the path
/// that ran reported in the JSON timings and on stderr under --verbose.
/// </summary>
public class DeviceDecodingCliTests
{
    private TempDir _dir = null!;
    private string Model => _dir.File("model");
    private string LoriS => _dir.File("lori-s");
    private string Dense => _dir.File("dense");
    private string Data => _dir.File("data.jsonl");

    [OneTimeSetUp]
    public void Setup()
    {
        _dir = new TempDir();
        var r = Cli.Run("init-model", "--preset", "tiny", "--out", Model, "--seed", "5", "--dtype", "bf16");
        Assert.That(r.ExitCode, Is.Zero, r.Err);
        var c = LlamaConfigReader(Model);
        PeftAdapter.Save(LoraAdapter.CreateRandom(c, 4, 8, 21, bSparsity: 0.9, bStd: 0.8f), LoriS);
        PeftAdapter.Save(LoraAdapter.CreateRandom(c, 8, 16, 22, bStd: 0.3f), Dense);
        File.WriteAllLines(Data, Enumerable.Range(0, 5).Select(i =>
            $"{{\"instruction\": \"Repeat {i} {i + 1} {i * 3}.\", \"output\": \"{i} {i + 1} {i * 3}\"}}"));
    }

    private static LlamaConfig LlamaConfigReader(string dir)
    {
        using var m = LlamaModel.Load(dir, new LoRI.Backend.Cpu.CpuBackend());
        return m.Config;
    }

    [OneTimeTearDown]
    public void Clean() => _dir.Dispose();

    private static (int[][] Ids, JsonElement Timings) Generate(params string[] args)
    {
        var r = Cli.Run(["generate", .. args, "--json"]);
        Assert.That(r.ExitCode, Is.Zero, r.Err);
        using var j = JsonDocument.Parse(r.Out);
        var ids = j.RootElement.GetProperty("results").EnumerateArray()
            .Select(e => e.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()).ToArray()).ToArray();
        return (ids, j.RootElement.GetProperty("timings").Clone());
    }

    [TestCase(false, false)]
    [TestCase(true, false)]
    [TestCase(true, true)]
    public void Generate_Greedy_CudaEmuEqualsCpu(bool adapters, bool merge)
    {
        string[] common = ["--model", Model, "--prompt", "Hello there", "--prompt", "abc", "--prompt", "The quick brown fox", "--max-new-tokens", "12"];
        if (adapters) common = [.. common, "--adapter", LoriS + ":0.6", "--adapter", Dense + ":0.4"];
        if (merge) common = [.. common, "--merge"];
        var cpu = Generate([.. common, "--device", "cpu"]);
        var dev = Generate([.. common, "--device", "cuda-emu"]);
        for (int i = 0; i < 3; i++) Assert.That(dev.Ids[i], Is.EqualTo(cpu.Ids[i]), $"prompt {i}");
        Assert.That(cpu.Timings.GetProperty("decode_path").GetString(), Is.EqualTo("host"));
        Assert.That(dev.Timings.GetProperty("decode_path").GetString(), Is.EqualTo("cuda-graph"));
        Assert.That(dev.Timings.GetProperty("graph_replays").GetInt32(), Is.GreaterThan(0));
        Assert.That(dev.Timings.GetProperty("launches_per_step").GetInt32(), Is.GreaterThan(0));
        if (adapters && !merge)
        {
            var plain = Generate(["--model", Model, "--prompt", "Hello there", "--prompt", "abc", "--prompt", "The quick brown fox", "--max-new-tokens", "12", "--device", "cpu"]);
            Assert.That(cpu.Ids.SelectMany(x => x), Is.Not.EqualTo(plain.Ids.SelectMany(x => x)), "the adapters must change the output");
        }
    }

    [Test]
    public void Generate_Sampled_ReproducibleOnCudaEmu_AndHostPathSelectable()
    {
        string[] args = ["--model", Model, "--prompt", "Hello", "--max-new-tokens", "10", "--temperature", "1.2", "--top-k", "40", "--top-p", "0.9", "--seed", "9", "--device", "cuda-emu"];
        var a = Generate(args);
        Assert.That(Generate(args).Ids[0], Is.EqualTo(a.Ids[0]));
        Assert.That(a.Timings.GetProperty("decode_path").GetString(), Is.EqualTo("cuda-graph"));
        var host = Generate([.. args, "--decode", "host"]);
        Assert.That(host.Timings.GetProperty("decode_path").GetString(), Is.EqualTo("host"));
        Assert.That(host.Timings.GetProperty("graph_replays").GetInt32(), Is.Zero);
        var bad = Cli.Run(["generate", .. args, "--decode", "gpu"]);
        Assert.That(bad.ExitCode, Is.EqualTo(2));
        Assert.That(bad.Err, Does.Contain("--decode"));
    }

    [Test]
    public void Generate_StopString_CutsTheText_OnCudaEmu()
    {
        string[] args = ["generate", "--model", Model, "--prompt", "abc", "--max-new-tokens", "16", "--json", "--temperature", "1", "--seed", "4", "--device", "cuda-emu"];
        var free = Cli.Run(args);
        Assert.That(free.ExitCode, Is.Zero, free.Err);
        using var j = JsonDocument.Parse(free.Out);
        var text = j.RootElement.GetProperty("results")[0].GetProperty("text").GetString()!;
        Assume.That(text.Length, Is.GreaterThanOrEqualTo(4), "the random model produced too little text to cut");
        var stop = text.Substring(2, 2);
        var cut = Cli.Run([.. args, "--stop", stop]);
        using var jc = JsonDocument.Parse(cut.Out);
        var res = jc.RootElement.GetProperty("results")[0];
        Assert.That(res.GetProperty("text").GetString(), Is.EqualTo(text[..text.IndexOf(stop, StringComparison.Ordinal)]));
        Assert.That(res.GetProperty("finish").GetString(), Is.EqualTo("stop"));
        Assert.That(jc.RootElement.GetProperty("timings").GetProperty("decode_path").GetString(), Is.EqualTo("cuda-graph"));
    }

    [Test]
    public void Generate_Verbose_NamesThePathOnStderr_AndStreams()
    {
        var r = Cli.Run("generate", "--model", Model, "--prompt", "Hello", "--max-new-tokens", "8", "--device", "cuda-emu", "--verbose");
        Assert.That(r.ExitCode, Is.Zero, r.Err);
        Assert.That(r.Err, Does.Contain("decode path cuda-graph: 7 steps, 6 graph replays, 1 captured").And.Contain("on cuda-emu"));
        var json = Cli.Run("generate", "--model", Model, "--prompt", "Hello", "--max-new-tokens", "8", "--device", "cpu", "--json");
        using var j = JsonDocument.Parse(json.Out);
        Assert.That(r.Out.TrimEnd('\n'), Is.EqualTo(j.RootElement.GetProperty("results")[0].GetProperty("text").GetString()));
    }

    [Test]
    public void Eval_Exact_CudaEmuEqualsCpu_WithAdapter()
    {
        JsonElement Eval(string device, params string[] extra)
        {
            var r = Cli.Run(["eval", "--model", Model, "--adapter", LoriS, "--data", Data, "--metric", "exact", "--max-new-tokens", "6",
                             "--batch-size", "3", "--json", "--device", device, .. extra]);
            Assert.That(r.ExitCode, Is.Zero, r.Err);
            if (extra.Contains("--verbose")) Assert.That(r.Err, Does.Contain(device == "cpu" ? "decode path host" : "decode path cuda-graph"));
            using var j = JsonDocument.Parse(r.Out);
            return j.RootElement.Clone();
        }
        var cpu = Eval("cpu", "--verbose");
        var dev = Eval("cuda-emu", "--verbose");
        var predictions = (JsonElement e) => e.GetProperty("items").EnumerateArray().Select(i => i.GetProperty("prediction").GetString()).ToArray();
        Assert.That(predictions(dev), Is.EqualTo(predictions(cpu)));
        Assert.That(predictions(cpu).Length, Is.EqualTo(5));
        Assert.That(predictions(cpu).Any(x => x!.Length > 0), "the model generated some text");
        Assert.That(dev.GetProperty("correct").GetInt32(), Is.EqualTo(cpu.GetProperty("correct").GetInt32()));
        Assert.That(cpu.GetProperty("decode").GetProperty("path").GetString(), Is.EqualTo("host"));
        var decode = dev.GetProperty("decode");
        Assert.That(decode.GetProperty("path").GetString(), Is.EqualTo("cuda-graph"));
        // 5 examples in batches of 3 and 2, up to 6 tokens each: two generate calls, each capturing its own graphs.
        Assert.That(decode.GetProperty("graph_captures").GetInt32(), Is.GreaterThanOrEqualTo(2));
        Assert.That(decode.GetProperty("graph_replays").GetInt32(), Is.GreaterThan(0));
    }
}
