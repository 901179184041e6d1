using System.Text.Json;
using System.Text.Json.Nodes;
using LoRI.IO;
using LoRI.Model;
using LoRI.Tensors;

namespace LoRI.Tests.IO;

public class LlamaConfigTests
{
    // The config.json of Llama-3.1-8B as HF publishes it (field for field).
    private const string Llama31_8B = """
    {
      "architectures": ["LlamaForCausalLM"],
      "attention_bias": false,
      "attention_dropout": 0.0,
      "bos_token_id": 128000,
      "eos_token_id": [128001, 128008, 128009],
      "hidden_act": "silu",
      "hidden_size": 4096,
      "initializer_range": 0.02,
      "intermediate_size": 14336,
      "max_position_embeddings": 131072,
      "mlp_bias": false,
      "model_type": "llama",
      "num_attention_heads": 32,
      "num_hidden_layers": 32,
      "num_key_value_heads": 8,
      "pretraining_tp": 1,
      "rms_norm_eps": 1e-05,
      "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                       "original_max_position_embeddings": 8192, "rope_type": "llama3"},
      "rope_theta": 500000.0,
      "tie_word_embeddings": false,
      "torch_dtype": "bfloat16",
      "transformers_version": "4.43.0.dev0",
      "use_cache": true,
      "vocab_size": 128256
    }
    """;

    private static string WriteConfig(TempDir dir, string json)
    {
        File.WriteAllText(dir.File("config.json"), json);
        return dir.Path;
    }

    private static string Mutate(Action<JsonObject> change)
    {
        var o = JsonNode.Parse(Llama31_8B)!.AsObject();
        change(o);
        return o.ToJsonString();
    }

    [Test]
    public void Load_Llama31_8B()
    {
        using var dir = new TempDir();
        var c = LlamaConfig.Load(WriteConfig(dir, Llama31_8B));
        Assert.That((c.HiddenSize, c.IntermediateSize, c.NumLayers, c.NumHeads, c.NumKvHeads, c.HeadDim),
            Is.EqualTo((4096, 14336, 32, 32, 8, 128)));
        Assert.That(c.RmsNormEps, Is.EqualTo(1e-5f));
        Assert.That(c.RopeTheta, Is.EqualTo(500000f));
        Assert.That(c.RopeScaling, Is.EqualTo(new RopeScaling(8f, 1f, 4f, 8192)));
        Assert.That((c.VocabSize, c.MaxPositionEmbeddings, c.TieWordEmbeddings), Is.EqualTo((128256, 131072, false)));
        Assert.That(c.BosTokenId, Is.EqualTo(128000));
        Assert.That(c.EosTokenIds, Is.EqualTo(new[] { 128001, 128008, 128009 }));
        Assert.That(c.TorchDtype, Is.EqualTo("bfloat16"));
        // The published size of Llama-3.1-8B.
        Assert.That(c.ParameterCount, Is.EqualTo(8_030_261_248L));
    }

    [Test]
    public void Load_AppliesHfDefaults_AndMergesGenerationConfig()
    {
        using var dir = new TempDir();
        WriteConfig(dir, """
            {"model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
             "num_attention_heads": 32, "vocab_size": 128256, "tie_word_embeddings": true, "eos_token_id": 128001}
            """);
        File.WriteAllText(dir.File("generation_config.json"),
            """{"bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "do_sample": true}""");
        var c = LlamaConfig.Load(dir.Path);
        Assert.That(c.NumKvHeads, Is.EqualTo(32), "num_key_value_heads defaults to num_attention_heads");
        Assert.That(c.HeadDim, Is.EqualTo(64), "head_dim defaults to hidden_size / num_attention_heads");
        Assert.That(c.RmsNormEps, Is.EqualTo(1e-6f), "transformers' default");
        Assert.That(c.RopeTheta, Is.EqualTo(10000f), "transformers' default");
        Assert.That(c.MaxPositionEmbeddings, Is.EqualTo(2048), "transformers' default");
        Assert.That(c.RopeScaling, Is.Null);
        Assert.That(c.EosTokenIds, Is.EqualTo(new[] { 128001, 128008, 128009 }));
        Assert.That(c.BosTokenId, Is.EqualTo(128000));
        Assert.That(c.TieWordEmbeddings, Is.True);
    }

    [Test]
    public void Load_Llama32_1B_ParameterCount()
    {
        using var dir = new TempDir();
        var c = LlamaConfig.Load(WriteConfig(dir, Mutate(o =>
        {
            o["hidden_size"] = 2048; o["intermediate_size"] = 8192; o["num_hidden_layers"] = 16;
            o["head_dim"] = 64; o["tie_word_embeddings"] = true;
        })));
        Assert.That(c.ParameterCount, Is.EqualTo(1_235_814_400L));
    }

    private static readonly object[] BadConfigs =
    [
        new object[] { (Action<JsonObject>)(o => o["num_key_value_heads"] = 5), "field num_key_value_heads: found 5, expected a divisor of num_attention_heads (32)" },
        new object[] { (Action<JsonObject>)(o => o["head_dim"] = 63), "field head_dim: found 63, expected an even number" },
        new object[] { (Action<JsonObject>)(o => { o["hidden_size"] = 100; }), "field hidden_size: found 100, expected a multiple of num_attention_heads (32)" },
        new object[] { (Action<JsonObject>)(o => o["hidden_size"] = -4096), "field hidden_size: found -4096, expected an integer in [1, 65536]" },
        new object[] { (Action<JsonObject>)(o => o["num_hidden_layers"] = 100000), "field num_hidden_layers: found 100000, expected an integer in [1, 1024]" },
        new object[] { (Action<JsonObject>)(o => o["vocab_size"] = "128256"), "field vocab_size: found \"128256\", expected an integer" },
        new object[] { (Action<JsonObject>)(o => o["intermediate_size"] = 1.5), "field intermediate_size: found 1.5, expected an integer" },
        new object[] { (Action<JsonObject>)(o => o.Remove("vocab_size")), "field vocab_size: missing" },
        new object[] { (Action<JsonObject>)(o => o["rms_norm_eps"] = 0), "field rms_norm_eps: found 0, expected a value in (0, 1)" },
        new object[] { (Action<JsonObject>)(o => o["rope_theta"] = -1), "field rope_theta: found -1, expected a finite value greater than 1" },
        new object[] { (Action<JsonObject>)(o => o["eos_token_id"] = 200000), "field eos_token_id: found 200000, expected a token id in [0, 128256)" },
        new object[] { (Action<JsonObject>)(o => o["bos_token_id"] = "x"), "field bos_token_id: found \"x\", expected a token id" },
        new object[] { (Action<JsonObject>)(o => o["rope_scaling"]!.AsObject().Remove("factor")), "field rope_scaling.factor: missing" },
        new object[] { (Action<JsonObject>)(o => o["tie_word_embeddings"] = 1), "field tie_word_embeddings: found 1, expected true or false" },
        new object[] { (Action<JsonObject>)(o => o.Remove("model_type")), "field model_type: missing" },
    ];

    [TestCaseSource(nameof(BadConfigs))]
    public void Load_RejectsOutOfRange_NamingFileAndField(Action<JsonObject> change, string expected)
    {
        using var dir = new TempDir();
        var e = Assert.Throws<InvalidFileException>(() => LlamaConfig.Load(WriteConfig(dir, Mutate(change))))!;
        Assert.That(e.Message, Does.StartWith(dir.File("config.json") + ": "));
        Assert.That(e.Message, Does.Contain(expected));
    }

    private static readonly object[] UnsupportedConfigs =
    [
        new object[] { (Action<JsonObject>)(o => o["rope_scaling"] = new JsonObject { ["type"] = "linear", ["factor"] = 2.0 }), "field rope_scaling.rope_type: found \"linear\", only \"llama3\" is supported" },
        new object[] { (Action<JsonObject>)(o => o["rope_scaling"]!["rope_type"] = "yarn"), "field rope_scaling.rope_type: found \"yarn\"" },
        new object[] { (Action<JsonObject>)(o => o["model_type"] = "mistral"), "field model_type: found \"mistral\", expected \"llama\"" },
        new object[] { (Action<JsonObject>)(o => o["architectures"] = new JsonArray("LlamaForSequenceClassification")), "field architectures: found [LlamaForSequenceClassification], expected LlamaForCausalLM" },
        new object[] { (Action<JsonObject>)(o => o["attention_bias"] = true), "field attention_bias: true is not supported" },
        new object[] { (Action<JsonObject>)(o => o["hidden_act"] = "gelu"), "field hidden_act: found \"gelu\"" },
        new object[] { (Action<JsonObject>)(o => o["torch_dtype"] = "float8_e4m3fn"), "field torch_dtype: found \"float8_e4m3fn\"" },
    ];

    [TestCaseSource(nameof(UnsupportedConfigs))]
    public void Load_RefusesUnsupportedFeatures(Action<JsonObject> change, string expected)
    {
        using var dir = new TempDir();
        var e = Assert.Throws<UnsupportedException>(() => LlamaConfig.Load(WriteConfig(dir, Mutate(change))))!;
        Assert.That(e.Message, Does.Contain("config.json").And.Contain(expected));
    }

    [Test]
    public void Load_AcceptsNullRopeScaling_AndDefaultType()
    {
        using var dir = new TempDir();
        Assert.That(LlamaConfig.Load(WriteConfig(dir, Mutate(o => o["rope_scaling"] = null))).RopeScaling, Is.Null);
        Assert.That(LlamaConfig.Load(WriteConfig(dir, Mutate(o => o["rope_scaling"] = new JsonObject { ["rope_type"] = "default" }))).RopeScaling, Is.Null);
    }

    [Test]
    public void Load_BadJson_NamesFile()
    {
        using var dir = new TempDir();
        var e = Assert.Throws<InvalidFileException>(() => LlamaConfig.Load(WriteConfig(dir, "{\"model_type\": ")))!;
        Assert.That(e.Message, Does.Contain("config.json").And.Contain("not valid JSON"));
        Assert.Throws<InvalidFileException>(() => LlamaConfig.Load(Path.Combine(dir.Path, "nowhere")));
    }

    [Test]
    public void Save_ThenLoad_RoundTrips_AndWritesHfFields()
    {
        using var src = new TempDir();
        var c = LlamaConfig.Load(WriteConfig(src, Llama31_8B));
        using var dst = new TempDir();
        c.Save(dst.Path);
        Assert.That(File.Exists(dst.File("config.json.tmp")), Is.False);
        var back = LlamaConfig.Load(dst.Path);
        Assert.That(back.EosTokenIds, Is.EqualTo(c.EosTokenIds));
        Assert.That(back with { EosTokenIds = c.EosTokenIds }, Is.EqualTo(c));

        using var doc = JsonDocument.Parse(File.ReadAllText(dst.File("config.json")));
        var r = doc.RootElement;
        Assert.That(r.GetProperty("architectures")[0].GetString(), Is.EqualTo("LlamaForCausalLM"));
        Assert.That(r.GetProperty("model_type").GetString(), Is.EqualTo("llama"));
        Assert.That(r.GetProperty("rms_norm_eps").GetRawText(), Is.EqualTo("1e-05"), "shortest float32 text, as Python writes 1e-05");
        Assert.That(r.GetProperty("rope_theta").GetRawText(), Is.EqualTo("500000.0"));
        Assert.That(r.GetProperty("rope_scaling").GetProperty("rope_type").GetString(), Is.EqualTo("llama3"));
        Assert.That(r.GetProperty("rope_scaling").GetProperty("factor").GetRawText(), Is.EqualTo("8.0"));
        Assert.That(r.GetProperty("num_key_value_heads").GetInt32(), Is.EqualTo(8));
        Assert.That(r.GetProperty("head_dim").GetInt32(), Is.EqualTo(128));
        Assert.That(r.GetProperty("hidden_act").GetString(), Is.EqualTo("silu"));
        Assert.That(r.GetProperty("torch_dtype").GetString(), Is.EqualTo("bfloat16"));
        Assert.That(r.GetProperty("tie_word_embeddings").GetBoolean(), Is.False);
    }

    private static LlamaConfig Tiny(bool tied) => new()
    {
        HiddenSize = 8, IntermediateSize = 12, NumLayers = 2, NumHeads = 4, NumKvHeads = 2, HeadDim = 4,
        VocabSize = 10, TieWordEmbeddings = tied,
    };

    [Test]
    public void ExpectedTensors_HfNamesAndShapes()
    {
        var t = Tiny(tied: false).ExpectedTensors();
        Assert.That(t, Has.Count.EqualTo(2 * 9 + 3));
        var d = t.ToDictionary(x => x.Name, x => x.Shape);
        Assert.That(d["model.embed_tokens.weight"], Is.EqualTo(new[] { 10, 8 }));
        Assert.That(d["model.layers.1.self_attn.q_proj.weight"], Is.EqualTo(new[] { 16, 8 }));
        Assert.That(d["model.layers.1.self_attn.k_proj.weight"], Is.EqualTo(new[] { 8, 8 }));
        Assert.That(d["model.layers.0.self_attn.v_proj.weight"], Is.EqualTo(new[] { 8, 8 }));
        Assert.That(d["model.layers.0.self_attn.o_proj.weight"], Is.EqualTo(new[] { 8, 16 }));
        Assert.That(d["model.layers.0.mlp.gate_proj.weight"], Is.EqualTo(new[] { 12, 8 }));
        Assert.That(d["model.layers.0.mlp.up_proj.weight"], Is.EqualTo(new[] { 12, 8 }));
        Assert.That(d["model.layers.0.mlp.down_proj.weight"], Is.EqualTo(new[] { 8, 12 }));
        Assert.That(d["model.layers.1.input_layernorm.weight"], Is.EqualTo(new[] { 8 }));
        Assert.That(d["model.layers.1.post_attention_layernorm.weight"], Is.EqualTo(new[] { 8 }));
        Assert.That(d["model.norm.weight"], Is.EqualTo(new[] { 8 }));
        Assert.That(d["lm_head.weight"], Is.EqualTo(new[] { 10, 8 }));
        Assert.That(t.Sum(x => DTypes.ElementCount(x.Shape)), Is.EqualTo(Tiny(false).ParameterCount));

        var tied = Tiny(tied: true).ExpectedTensors();
        Assert.That(tied.Select(x => x.Name), Does.Not.Contain("lm_head.weight"));
        Assert.That(tied.Sum(x => DTypes.ElementCount(x.Shape)), Is.EqualTo(Tiny(true).ParameterCount));
    }

    private static void WriteModel(TempDir dir, LlamaConfig c, Func<string, int[], (DType, int[])?> alter)
    {
        var w = new SafeTensorsWriter();
        foreach (var (name, shape) in c.ExpectedTensors())
        {
            var r = alter(name, shape);
            if (r is null) continue;
            var (dt, s) = r.Value;
            w.Add(name, dt, s, new byte[DTypes.ElementCount(s) * dt.Size()]);
        }
        w.Write(dir.File(Checkpoint.SingleFileName));
    }

    [Test]
    public void Validate_AcceptsMatchingCheckpoint_IncludingTiedWithExtraLmHead()
    {
        using var dir = new TempDir();
        var c = Tiny(tied: false);
        WriteModel(dir, c, (n, s) => (DType.BF16, s));
        using (var ck = Checkpoint.Open(dir.Path))
        {
            Assert.DoesNotThrow(() => c.Validate(ck));
            Assert.DoesNotThrow(() => (c with { TieWordEmbeddings = true }).Validate(ck));
        }
    }

    [Test]
    public void Validate_RejectsWrongShape_NamingTensorAndBothShapes()
    {
        using var dir = new TempDir();
        var c = Tiny(tied: false);
        WriteModel(dir, c, (n, s) => n == "model.layers.1.self_attn.k_proj.weight" ? (DType.F32, new[] { 16, 8 }) : (DType.F32, s));
        using var ck = Checkpoint.Open(dir.Path);
        var m = Assert.Throws<ShapeMismatchException>(() => c.Validate(ck))!.Message;
        Assert.That(m, Does.Contain("'model.layers.1.self_attn.k_proj.weight' has shape [16, 8], but the config expects [8, 8]"));
    }

    [Test]
    public void Validate_RejectsMissingTensor()
    {
        using var dir = new TempDir();
        var c = Tiny(tied: false);
        WriteModel(dir, c, (n, s) => n == "lm_head.weight" ? null : (DType.F16, s));
        using var ck = Checkpoint.Open(dir.Path);
        var m = Assert.Throws<ShapeMismatchException>(() => c.Validate(ck))!.Message;
        Assert.That(m, Does.Contain("missing tensor 'lm_head.weight' (expected shape [10, 8])"));
        Assert.DoesNotThrow(() => (c with { TieWordEmbeddings = true }).Validate(ck));
    }

    [Test]
    public void Validate_RejectsNonFloatDType()
    {
        using var dir = new TempDir();
        var c = Tiny(tied: true);
        WriteModel(dir, c, (n, s) => n == "model.norm.weight" ? (DType.I32, s) : (DType.F32, s));
        using var ck = Checkpoint.Open(dir.Path);
        var m = Assert.Throws<ShapeMismatchException>(() => c.Validate(ck))!.Message;
        Assert.That(m, Does.Contain("'model.norm.weight' has dtype I32, expected a float dtype"));
    }
}
