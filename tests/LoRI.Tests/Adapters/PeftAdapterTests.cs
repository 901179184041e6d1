using System.Text;
using LoRI.Adapters;
using LoRI.IO;
using LoRI.Model;
using LoRI.Tensors;
using LoRI.Tests.IO;
using LoRI.Tests.Support;

namespace LoRI.Tests.Adapters;

/// <summary>peft adapter folders: the written format against a fixture of peft 0.12's output, round trips, refusals.</summary>
public class PeftAdapterTests
{
    private static readonly LlamaConfig Tiny = TestModels.Tiny();

    /// <summary>tests/LoRI.Tests/Adapters/Fixtures/NAME, found from the test binaries' folder upwards.</summary>
    internal static string Fixture(string name)
    {
        for (var d = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); d is not null; d = d.Parent)
        {
            var p = Path.Combine(d.FullName, "Adapters", "Fixtures", name);
            if (File.Exists(p)) return p;
            p = Path.Combine(d.FullName, "tests", "LoRI.Tests", "Adapters", "Fixtures", name);
            if (File.Exists(p)) return p;
        }
        Assert.Fail($"fixture {name} not found above {TestContext.CurrentContext.TestDirectory}");
        return null!;
    }

    private static LoraAdapter Lori(double sparsity = 0.9) =>
        LoraAdapter.CreateRandom(Tiny, 4, 8, 21, sparsity, baseModel: "meta-llama/Meta-Llama-3-8B") is var a
            ? new LoraAdapter(a.Config with { LoraDropout = 0.05 }, a.Modules) : null!;

    [Test]
    public void Save_ConfigAndKeys_MatchPeftFixture()
    {
        using var dir = new TempDir();
        PeftAdapter.Save(Lori(), dir.Path);
        Assert.That(File.ReadAllText(dir.File(PeftAdapter.ConfigFileName)), Is.EqualTo(File.ReadAllText(Fixture("peft012_adapter_config.json"))));
        using var f = SafeTensorsFile.Open(dir.File(PeftAdapter.WeightsFileName));
        var keys = f.Tensors.Select(t => $"{t.Name} {t.DType.SafetensorsName()} {DTypes.ShapeString(t.Shape)}\n");
        Assert.That(string.Concat(keys), Is.EqualTo(File.ReadAllText(Fixture("peft012_adapter_keys.txt"))));
        Assert.That(f.Metadata["format"], Is.EqualTo("pt"));
        Assert.That(Directory.GetFiles(dir.Path).Select(Path.GetFileName).Order(), Is.EqualTo(new[] { PeftAdapter.ConfigFileName, PeftAdapter.WeightsFileName }),
            "no temporary files left behind");
    }

    [Test]
    public void Save_PatternsAndFloats_AsPythonWritesThem()
    {
        var cfg = new LoraConfig
        {
            R = 16, LoraAlpha = 2.5, LoraDropout = 1e-05, UseRslora = true, TargetModules = ["q_proj"],
            RankPattern = [new("layers.1.mlp.down_proj", 8)], AlphaPattern = [new("layers.1.mlp.down_proj", 16)],
        };
        var json = Encoding.UTF8.GetString(PeftAdapter.ConfigJson(cfg));
        Assert.That(json, Does.Contain("\"alpha_pattern\": {\n    \"layers.1.mlp.down_proj\": 16\n  },\n"));
        Assert.That(json, Does.Contain("\"base_model_name_or_path\": null,"));
        Assert.That(json, Does.Contain("\"lora_alpha\": 2.5,\n  \"lora_dropout\": 1e-05,"));
        Assert.That(json, Does.Contain("\"rank_pattern\": {\n    \"layers.1.mlp.down_proj\": 8\n  },"));
        Assert.That(json, Does.Contain("\"use_rslora\": true\n}"));
        Assert.That(json, Does.EndWith("}"));
    }

    [Test]
    public void RoundTrip_F32_BitExact_AndF16Bf16_Rounded([Values(DType.F32, DType.BF16, DType.F16)] DType dtype)
    {
        var a = Lori();
        using var dir = new TempDir();
        PeftAdapter.Save(a, dir.Path, dtype);
        var b = PeftAdapter.Load(dir.Path, Tiny);
        Assert.That(b.ModuleCount, Is.EqualTo(a.ModuleCount));
        Assert.That(b.Config.R, Is.EqualTo(4));
        Assert.That(b.Config.LoraAlpha, Is.EqualTo(8));
        Assert.That(b.Config.BaseModelName, Is.EqualTo("meta-llama/Meta-Llama-3-8B"));
        foreach (var m in a.Modules)
        {
            var n = b[m.Layer, m.Proj]!;
            float R(float v) => dtype switch { DType.BF16 => Bf16.Round(v), DType.F16 => (float)(Half)v, _ => v };
            Assert.That(n.A, Is.EqualTo(m.A.Select(R).ToArray()), $"{m.Name()} A");
            Assert.That(n.B, Is.EqualTo(m.B.Select(R).ToArray()), $"{m.Name()} B");
            Assert.That(n.Scale, Is.EqualTo(m.Scale));
        }
        if (dtype == DType.F32)
        {
            using var dir2 = new TempDir();
            PeftAdapter.Save(b, dir2.Path);
            Assert.That(File.ReadAllBytes(dir2.File(PeftAdapter.WeightsFileName)), Is.EqualTo(File.ReadAllBytes(dir.File(PeftAdapter.WeightsFileName))));
            Assert.That(File.ReadAllBytes(dir2.File(PeftAdapter.ConfigFileName)), Is.EqualTo(File.ReadAllBytes(dir.File(PeftAdapter.ConfigFileName))));
        }
    }

    [Test]
    public void RoundTrip_MixedRanks_ThroughRankAndAlphaPatterns()
    {
        var c = Tiny;
        // Rank 4 / alpha 8 everywhere but v_proj, which is rank 2 / alpha 6.
        var mods = LoraAdapter.CreateRandom(c, 4, 8, 1, projections: [Proj.Q, Proj.K, Proj.O]).Modules
            .Concat(LoraAdapter.CreateRandom(c, 2, 6, 2, projections: [Proj.V]).Modules).ToList();
        var merged = new LoraAdapter(LoraConfig.Describe(mods.Select(m => (m.Layer, m.Proj, m.Rank, m.Alpha)), false, null), mods);
        Assert.That(merged.Config.RankPattern.Select(x => x.Key), Is.EqualTo(new[] { "layers.0.self_attn.v_proj", "layers.1.self_attn.v_proj" }));
        using var dir = new TempDir();
        PeftAdapter.Save(merged, dir.Path);
        var back = PeftAdapter.Load(dir.Path, c);
        foreach (var m in merged.Modules)
        {
            Assert.That(back[m.Layer, m.Proj]!.Rank, Is.EqualTo(m.Rank), m.Name());
            Assert.That(back[m.Layer, m.Proj]!.Scale, Is.EqualTo(m.Proj == Proj.V ? 3f : 2f), m.Name());
            Assert.That(back[m.Layer, m.Proj]!.A, Is.EqualTo(m.A), m.Name());
        }
    }

    // ---- hand-written adapter folders ----

    private const string GoodConfig = """{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"], "bias": "none"}""";

    private static void WriteFolder(string dir, string config, Action<SafeTensorsWriter>? tensors = null, bool safetensors = true)
    {
        File.WriteAllText(Path.Combine(dir, PeftAdapter.ConfigFileName), config);
        if (!safetensors) return;
        var w = new SafeTensorsWriter();
        (tensors ?? QTensors())(w);
        w.Write(Path.Combine(dir, PeftAdapter.WeightsFileName));
    }

    private static Action<SafeTensorsWriter> QTensors(string suffix = "", int rank = 2, int inDim = 32, int outDim = 32, DType dtype = DType.F32) => w =>
    {
        w.AddFloats($"base_model.model.model.layers.1.self_attn.q_proj.lora_A{suffix}.weight", dtype, [rank, inDim], TestModels.RandomFloats(rank * inDim, 1));
        w.AddFloats($"base_model.model.model.layers.1.self_attn.q_proj.lora_B{suffix}.weight", dtype, [outDim, rank], TestModels.RandomFloats(outDim * rank, 2));
    };

    [Test]
    public void Load_SubsetOfModules_DefaultSegment_Bf16()
    {
        using var dir = new TempDir();
        WriteFolder(dir.Path, GoodConfig, QTensors(".default", dtype: DType.BF16));
        var a = PeftAdapter.Load(dir.Path, Tiny);
        Assert.That(a.ModuleCount, Is.EqualTo(1));
        var m = a[1, Proj.Q]!;
        Assert.That((m.Rank, m.In, m.Out, m.Scale), Is.EqualTo((2, 32, 32, 2f)));
        Assert.That(m.A[3], Is.EqualTo(Bf16.Round(TestModels.RandomFloats(64, 1)[3])));
    }

    [Test]
    public void Load_EmbeddingCopies_AreIgnoredWithANote()
    {
        using var dir = new TempDir();
        WriteFolder(dir.Path, GoodConfig, w =>
        {
            QTensors()(w);
            w.AddFloats("base_model.model.model.embed_tokens.weight", DType.F32, [98, 32], new float[98 * 32]);
            w.AddFloats("base_model.model.lm_head.weight", DType.F32, [98, 32], new float[98 * 32]);
        });
        var a = PeftAdapter.Load(dir.Path, Tiny);
        Assert.That(a.Notes, Has.Count.EqualTo(2));
        Assert.That(a.Notes[0], Does.Contain("vocabulary resize"));
        WriteFolder(dir.Path, GoodConfig, w =>
        {
            QTensors()(w);
            w.AddFloats("base_model.model.lm_head.weight", DType.F32, [98, 16], new float[98 * 16]);
        });
        Assert.That(() => PeftAdapter.Load(dir.Path, Tiny), Throws.TypeOf<ShapeMismatchException>().With.Message.Contains("lm_head.weight' has shape [98, 16], the model's hidden size is 32"));
    }

    private static string Refusal(string config, Action<SafeTensorsWriter>? tensors = null, bool safetensors = true, bool pickle = false)
    {
        using var dir = new TempDir();
        WriteFolder(dir.Path, config, tensors, safetensors);
        if (pickle) File.WriteAllBytes(dir.File(PeftAdapter.PickleFileName), [0x80, 2]);
        var e = Assert.Catch<LoRIException>(() => PeftAdapter.Load(dir.Path, Tiny))!;
        return e.Message;
    }

    private static string With(string field) => GoodConfig[..^1] + ", " + field + "}";

    [Test]
    public void Refusals_EachSaySo()
    {
        var messages = new List<string>
        {
            Refusal(With("\"use_dora\": true")),
            Refusal(GoodConfig, w => { QTensors()(w); w.AddFloats("base_model.model.model.layers.1.self_attn.q_proj.lora_magnitude_vector", DType.F32, [32], new float[32]); }),
            Refusal(With("\"fan_in_fan_out\": true")),
            Refusal(GoodConfig.Replace("\"none\"", "\"all\"")),
            Refusal(With("\"lora_bias\": true")),
            Refusal(With("\"modules_to_save\": [\"lm_head\"]")),
            Refusal(GoodConfig, safetensors: false, pickle: true),
            Refusal(GoodConfig.Replace("LORA", "IA3")),
            Refusal(GoodConfig, w => { QTensors()(w); w.AddFloats("base_model.model.model.layers.1.self_attn.q_proj.lora_B.bias", DType.F32, [32], new float[32]); }),
            Refusal(GoodConfig, w => { QTensors()(w); w.AddFloats("base_model.model.model.norm.weight", DType.F32, [32], new float[32]); }),
            Refusal(GoodConfig, QTensors(rank: 3)),
            Refusal(GoodConfig, QTensors(outDim: 30)),
            Refusal(GoodConfig, w => w.AddFloats("base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight", DType.F32, [2, 32], new float[64])),
            Refusal("{\"peft_type\": \"LORA\", \"r\": 2,"),
            Refusal(With("\"r\": \"two\"").Replace("\"r\": 2, ", "")),
        };
        Assert.Multiple(() =>
        {
            Assert.That(messages[0], Does.Contain("use_dora is true; DoRA adapters"));
            Assert.That(messages[1], Does.Contain("is a DoRA magnitude vector; DoRA adapters are not supported"));
            Assert.That(messages[2], Does.Contain("fan_in_fan_out is true"));
            Assert.That(messages[3], Does.Contain("bias is \"all\"; adapters that train biases are not supported"));
            Assert.That(messages[4], Does.Contain("lora_bias is true"));
            Assert.That(messages[5], Does.Contain("modules_to_save is set"));
            Assert.That(messages[6], Does.Contain("only adapter_model.bin is present; pickled PyTorch weights are not supported"));
            Assert.That(messages[7], Does.Contain("peft_type is \"IA3\"; only LORA adapters are supported"));
            Assert.That(messages[8], Does.Contain("is a LoRA bias"));
            Assert.That(messages[9], Does.Contain("unexpected tensor 'base_model.model.model.norm.weight'"));
            Assert.That(messages[10], Does.Contain("tensor 'base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight' has shape [3, 32]; the config's rank for this module is 2"));
            Assert.That(messages[11], Does.Contain("tensor 'base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight' has shape [30, 2], the model needs [32, 2]"));
            Assert.That(messages[12], Does.Contain("has no matching 'base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight'"));
            Assert.That(messages[13], Does.Contain("is not valid JSON"));
            Assert.That(messages[14], Does.Contain("field \"r\" must be an integer"));
        });
        Assert.That(messages.Distinct().Count(), Is.EqualTo(messages.Count), "every refusal has its own message");
    }

    [Test]
    public void Load_RefusesOversizedConfig_AndAdapterTooDeepForModel()
    {
        using var dir = new TempDir();
        WriteFolder(dir.Path, GoodConfig[..^1] + ", \"pad\": \"" + new string('x', (int)PeftAdapter.MaxConfigBytes) + "\"}");
        Assert.That(() => PeftAdapter.Load(dir.Path), Throws.TypeOf<InvalidFileException>().With.Message.Contains("more than the limit"));
        WriteFolder(dir.Path, GoodConfig);
        Assert.That(() => PeftAdapter.Load(dir.Path, Tiny with { NumLayers = 1 }), Throws.TypeOf<ShapeMismatchException>().With.Message.Contains("is for layer 1, the model has 1 layers"));
    }

    [Test]
    public void MaskFile_RoundTrip_BoolTensorsUnderBKeys()
    {
        var a = Lori(0);
        var mask = LoraMask.Compute(a, 0.8);
        using var dir = new TempDir();
        var path = dir.File("mask.safetensors");
        mask.Save(path);
        using (var f = SafeTensorsFile.Open(path))
        {
            Assert.That(f.Tensors, Has.Count.EqualTo(a.ModuleCount));
            Assert.That(f.Tensors.All(t => t.DType == DType.Bool && t.Name.EndsWith(".lora_B.weight", StringComparison.Ordinal)));
            Assert.That(f.Tensors.Select(t => t.Name), Is.EqualTo(a.Modules.Select(m => m.Key('B')).Order(StringComparer.Ordinal)));
        }
        var back = LoraMask.Load(path);
        foreach (var e in mask.Entries) Assert.That(back[e.Layer, e.Proj]!.Keep, Is.EqualTo(e.Keep), e.Key);
        Assert.That(back.Kept, Is.EqualTo(mask.Kept));
    }
}
