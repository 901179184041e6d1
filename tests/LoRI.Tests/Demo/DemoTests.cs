using System.IO.Compression;
using System.Text.Json;
using LoRI.Adapters;
using LoRI.Demo;
using LoRI.Tests.IO;
using LoRI.Tests.Support;

namespace LoRI.Tests.Demo;

/// <summary>
/// `demo --quick --json` through the CLI, once: the report it prints, the files it promises, and the claims of
/// the method doc that the files must satisfy (LoRI-S sparsity, its non-zeros inside the mask, |A| bounds).
/// </summary>
public class DemoTests
{
    /// <summary>How far above the base model every adapter must score on its own task (absolute accuracy).</summary>
    public const double Margin = 0.3;

    private TempDir _dir = null!;
    private Cli.Result _run = null!;
    private JsonElement _json;
    private JsonDocument _doc = null!;

    [OneTimeSetUp]
    public void Setup()
    {
        _dir = new TempDir();
        _run = Cli.Run("demo", "--quick", "--json", "--out", _dir.Path, "--device", "cpu");
        Assert.That(_run.ExitCode, Is.Zero, _run.Err);
        _doc = JsonDocument.Parse(_run.Out);
        _json = _doc.RootElement;
    }

    [OneTimeTearDown]
    public void Clean()
    {
        _doc?.Dispose();
        _dir.Dispose();
    }

    private Dictionary<string, double> BaseAccuracy() =>
        _json.GetProperty("tasks").EnumerateArray().ToDictionary(t => t.GetProperty("name").GetString()!, t => t.GetProperty("base_accuracy").GetDouble());

    [Test]
    public void Every_adapter_beats_the_base_model_on_its_own_task_by_the_margin()
    {
        var baseAcc = BaseAccuracy();
        Assert.That(baseAcc, Has.Count.EqualTo(3));
        var adapters = _json.GetProperty("adapters").EnumerateArray().ToList();
        Assert.That(adapters, Has.Count.EqualTo(9), "three methods for each of three tasks");
        Assert.Multiple(() =>
        {
            foreach (var a in adapters)
            {
                string task = a.GetProperty("task").GetString()!, method = a.GetProperty("method").GetString()!;
                double acc = a.GetProperty("accuracy").GetDouble();
                Assert.That(acc, Is.GreaterThanOrEqualTo(baseAcc[task] + Margin), $"{method} on {task}: {acc:P0} vs base {baseAcc[task]:P0}");
            }
        });
    }

    [Test]
    public void The_base_model_learned_to_copy_and_does_not_solve_the_tasks()
    {
        Assert.That(_json.GetProperty("model").GetProperty("copy_accuracy").GetDouble(), Is.GreaterThan(0.8));
        foreach (var (task, acc) in BaseAccuracy()) Assert.That(acc, Is.LessThan(0.2), task);
    }

    [Test]
    public void Report_has_merges_for_every_method_and_continual_rows_with_consistent_forgetting()
    {
        var merges = _json.GetProperty("merges").EnumerateArray().Select(m => (m.GetProperty("method").GetString(), m.GetProperty("merge").GetString())).ToList();
        Assert.That(merges, Is.EquivalentTo(new[] { ("lora", "cat"), ("lora", "linear"), ("lori-d", "cat"), ("lori-d", "linear"), ("lori-s", "cat"), ("lori-s", "linear") }));
        var alone = _json.GetProperty("adapters").EnumerateArray()
            .ToDictionary(a => (a.GetProperty("task").GetString(), a.GetProperty("method").GetString()), a => a.GetProperty("accuracy").GetDouble());
        foreach (var c in _json.GetProperty("continual").EnumerateArray())
        {
            var key = (c.GetProperty("task1").GetString(), c.GetProperty("method").GetString());
            double before = c.GetProperty("task1_before").GetDouble(), after = c.GetProperty("task1_after").GetDouble();
            Assert.That(before, Is.EqualTo(alone[key]));
            Assert.That(c.GetProperty("forgetting").GetDouble(), Is.EqualTo(before - after).Within(1e-5));
        }
        Assert.That(_json.GetProperty("continual").GetArrayLength(), Is.EqualTo(3));
    }

    [Test]
    public void Report_json_file_matches_stdout_and_lists_only_existing_files()
    {
        var onDisk = File.ReadAllText(Path.Combine(_dir.Path, "report.json"));
        Assert.That(onDisk.Trim(), Is.EqualTo(_run.Out.Trim()));
        var files = _json.GetProperty("files").EnumerateArray().Select(f => f.GetString()!).ToList();
        Assert.That(files, Has.Member("report.json"));
        Assert.That(files, Has.Member("base-model/model.safetensors"));
        Assert.That(files.Count(f => f.EndsWith(".png", StringComparison.Ordinal)), Is.GreaterThanOrEqualTo(5));
        foreach (var f in files) Assert.That(File.Exists(Path.Combine(_dir.Path, f)), f);
    }

    [Test]
    public void Adapters_load_as_peft_and_lori_s_lies_inside_its_mask()
    {
        using var model = LoRI.Model.LlamaModel.Load(Path.Combine(_dir.Path, "base-model"), new LoRI.Backend.Cpu.CpuBackend());
        foreach (var task in BaseAccuracy().Keys)
        {
            var mask = LoraMask.Load(Path.Combine(_dir.Path, "masks", $"{task}_0.9_mask.safetensors"));
            var d = PeftAdapter.Load(Path.Combine(_dir.Path, "adapters", task, "lori-d"), model.Config);
            var s = PeftAdapter.Load(Path.Combine(_dir.Path, "adapters", task, "lori-s"), model.Config);
            var l = PeftAdapter.Load(Path.Combine(_dir.Path, "adapters", task, "lora"), model.Config);
            // The mask is rule 2 on the saved LoRI-D B: recomputing it gives the same bits.
            var again = LoraMask.Compute(d, 0.9);
            foreach (var e in mask.Entries) Assert.That(e.Keep, Is.EqualTo(again[e.Layer, e.Proj]!.Keep), e.Key);
            Assert.That(mask.Kept, Is.EqualTo(LoraMask.KeepCount(0.9, mask.Total)), "no ties expected in trained floats");
            Assert.That(s.BSparsity, Is.GreaterThanOrEqualTo(0.9), $"{task} lori-s");
            Assert.That(d.BSparsity, Is.LessThan(0.01), $"{task} lori-d is dense");
            foreach (var m in s.Modules)
            {
                var keep = mask[m.Layer, m.Proj]!.Keep;
                for (int i = 0; i < m.B.Length; i++)
                    if (m.B[i] != 0) Assert.That(keep[i], Is.EqualTo((byte)1), $"{m.Key('B')}[{i}] is outside the mask");
                float bound = 1 / MathF.Sqrt(m.In);
                Assert.That(m.A.Max(MathF.Abs), Is.LessThanOrEqualTo(bound), $"{m.Key('A')}: |A| <= 1/sqrt(in)");
                // LoRI-S draws its own A: it is not LoRI-D's.
                Assert.That(m.A, Is.Not.EqualTo(d[m.Layer, m.Proj]!.A));
            }
            // LoRA trains A too: its A has left the uniform draw's bound somewhere or changed from it.
            Assert.That(l.Modules.Sum(m => m.NonZeroB()), Is.GreaterThan(0));
        }
    }

    [Test]
    public void Plots_decode_as_png()
    {
        var pngs = Directory.GetFiles(Path.Combine(_dir.Path, "plots"), "*.png");
        Assert.That(pngs, Has.Length.GreaterThanOrEqualTo(5));
        foreach (var p in pngs) PngCheck.Decode(File.ReadAllBytes(p), p);
    }

    [Test]
    public void Tasks_are_deterministic_and_test_sets_are_held_out()
    {
        foreach (var t in DemoTask.Standard(4))
        {
            var (train, test) = t.Split(500, 50, 7);
            var (train2, test2) = t.Split(500, 50, 7);
            Assert.That(train.Select(e => e.Prompt), Is.EqualTo(train2.Select(e => e.Prompt)), t.Name);
            Assert.That(test.Select(e => e.Prompt), Is.EqualTo(test2.Select(e => e.Prompt)), t.Name);
            Assert.That(test.Select(e => e.Prompt).Intersect(train.Select(e => e.Prompt)), Is.Empty, t.Name);
            Assert.That(train.Concat(test).Select(e => e.Prompt).Distinct().Count(), Is.EqualTo(550), t.Name);
        }
        Assert.That(DemoTask.Reverse().Make("abcd"), Is.EqualTo(new DemoExample("rev abcd=", "dcba")));
        Assert.That(DemoTask.Sort().Make("5137"), Is.EqualTo(new DemoExample("sort 5137=", "1357")));
        Assert.That(DemoTask.Shift().Make("abcp"), Is.EqualTo(new DemoExample("next abcp=", "bcda")));
        Assert.That(DemoTask.Index().Make("bjac"), Is.EqualTo(new DemoExample("dig bjac=", "1902")));
        Assert.That(DemoTask.Rotate().Make("abcd"), Is.EqualTo(new DemoExample("rot abcd=", "bcda")));
        Assert.That(DemoTask.Cipher().Make("abop"), Is.EqualTo(new DemoExample("ciph abop=", "poba")));
        Assert.That(DemoTask.Add().Make("23+45"), Is.EqualTo(new DemoExample("add 23+45=", "68")));
    }

    [Test]
    public void Bad_options_are_usage_errors()
    {
        Assert.That(Cli.Run("demo", "--quick", "--full").ExitCode, Is.EqualTo(2));
        Assert.That(Cli.Run("demo", "--tasks", "5").ExitCode, Is.EqualTo(2));
        Assert.That(Cli.Run("demo", "--bogus").ExitCode, Is.EqualTo(2));
        var help = Cli.Run("help");
        Assert.That(help.ExitCode, Is.Zero);
        Assert.That(help.Out, Does.Contain("demo"));
    }
}

/// <summary>An independent PNG reader (chunk CRCs with its own table, zlib via the BCL): enough to say a file decodes.</summary>
public static class PngCheck
{
    private static readonly uint[] Table = Enumerable.Range(0, 256).Select(n =>
    {
        uint c = (uint)n;
        for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        return c;
    }).ToArray();

    private static uint Crc(ReadOnlySpan<byte> b)
    {
        uint c = 0xFFFFFFFFu;
        foreach (var x in b) c = Table[(c ^ x) & 0xFF] ^ (c >> 8);
        return c ^ 0xFFFFFFFFu;
    }

    private static uint U32(ReadOnlySpan<byte> b) => (uint)(b[0] << 24 | b[1] << 16 | b[2] << 8 | b[3]);

    public static (int Width, int Height) Decode(byte[] png, string what)
    {
        byte[] sig = [137, 80, 78, 71, 13, 10, 26, 10];
        Assert.That(png.AsSpan(0, 8).ToArray(), Is.EqualTo(sig), what + ": signature");
        int pos = 8, width = 0, height = 0, colorType = -1;
        var idat = new MemoryStream();
        bool end = false;
        while (!end)
        {
            Assert.That(pos + 12, Is.LessThanOrEqualTo(png.Length), what + ": truncated chunk");
            int len = (int)U32(png.AsSpan(pos));
            string type = System.Text.Encoding.ASCII.GetString(png, pos + 4, 4);
            var body = png.AsSpan(pos + 8, len);
            Assert.That(U32(png.AsSpan(pos + 8 + len)), Is.EqualTo(Crc(png.AsSpan(pos + 4, len + 4))), $"{what}: {type} CRC");
            switch (type)
            {
                case "IHDR":
                    width = (int)U32(body); height = (int)U32(body[4..]);
                    Assert.That(body[8], Is.EqualTo(8), what + ": bit depth");
                    colorType = body[9];
                    break;
                case "IDAT": idat.Write(body); break;
                case "IEND": end = true; break;
            }
            pos += 12 + len;
        }
        int bpp = colorType switch { 2 => 3, 6 => 4, 0 => 1, _ => throw new AssertionException($"{what}: colour type {colorType}") };
        idat.Position = 0;
        using var z = new ZLibStream(idat, CompressionMode.Decompress);
        var raw = new MemoryStream();
        z.CopyTo(raw);
        Assert.That(raw.Length, Is.EqualTo((long)height * (1 + width * bpp)), what + ": pixel data size");
        var bytes = raw.ToArray();
        for (int y = 0; y < height; y++) Assert.That(bytes[y * (1 + width * bpp)], Is.LessThanOrEqualTo(4), what + ": filter byte");
        Assert.That(width, Is.GreaterThan(100));
        Assert.That(height, Is.GreaterThan(100));
        return (width, height);
    }
}
