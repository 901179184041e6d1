using System.Buffers;
using System.Globalization;
using System.Text.Json;
using LoRI.IO;
using LoRI.Tensors;

namespace LoRI.Model;

/// <summary>
/// config.json / generation_config.json of a LlamaForCausalLM (HF transformers' LlamaConfig), read and written
/// with JsonDocument / Utf8JsonWriter (no reflection). Only the fields that change the computation are read;
/// fields asking for something this engine does not do (biases, another activation, a rope scaling other
/// than "llama3") are refused with UnsupportedException rather than ignored.
/// </summary>
public sealed partial record LlamaConfig
{
    public const string ConfigFileName = "config.json";
    public const string GenerationConfigFileName = "generation_config.json";
    public const long MaxConfigBytes = 4L << 20;

    // Caps well above any released Llama (405B: hidden 16384, ffn 53248, 126 layers, 128 heads, vocab 128256).
    private const int MaxHidden = 65536, MaxIntermediate = 262144, MaxLayers = 1024, MaxHeads = 1024,
        MaxHeadDim = 1024, MaxVocab = 4 << 20, MaxPositions = 1 << 24;

    /// <summary>Reads config.json (and generation_config.json when present) from a model folder.</summary>
    public static LlamaConfig Load(string modelDir)
    {
        var path = Path.Combine(modelDir, ConfigFileName);
        if (!File.Exists(path)) throw new InvalidFileException(path, "config.json not found in the model folder");
        LlamaConfig cfg;
        using (var doc = ReadJson(path))
            cfg = Parse(path, doc.RootElement);

        var genPath = Path.Combine(modelDir, GenerationConfigFileName);
        if (File.Exists(genPath))
        {
            using var gen = ReadJson(genPath);
            var root = gen.RootElement;
            var eos = new List<int>(cfg.EosTokenIds);
            if (root.TryGetProperty("eos_token_id", out var ge))
                foreach (var id in ReadIdList(genPath, "eos_token_id", ge, cfg.VocabSize))
                    if (!eos.Contains(id)) eos.Add(id);
            int? bos = cfg.BosTokenId;
            if (bos is null && root.TryGetProperty("bos_token_id", out var gb) && gb.ValueKind != JsonValueKind.Null)
                bos = ReadTokenId(genPath, "bos_token_id", gb, cfg.VocabSize);
            cfg = cfg with { EosTokenIds = eos.ToArray(), BosTokenId = bos };
        }
        return cfg;
    }

    private static JsonDocument ReadJson(string path)
    {
        var doc = JsonFile.Read(path, MaxConfigBytes);
        if (doc.RootElement.ValueKind != JsonValueKind.Object)
        {
            var kind = doc.RootElement.ValueKind;
            doc.Dispose();
            throw new InvalidFileException(path, $"expected a JSON object, found {kind}");
        }
        return doc;
    }

    /// <summary>Parses the root object of a config.json; <paramref name="path"/> names the file in errors.</summary>
    public static LlamaConfig Parse(string path, JsonElement root)
    {
        var modelType = OptString(path, root, "model_type")
            ?? throw new InvalidFileException(path, "field model_type: missing (expected \"llama\")");
        if (modelType != "llama")
            throw new UnsupportedException($"{path}: field model_type: found \"{modelType}\", expected \"llama\"");
        if (root.TryGetProperty("architectures", out var arch) && arch.ValueKind == JsonValueKind.Array)
        {
            var names = arch.EnumerateArray().Select(a => a.ValueKind == JsonValueKind.String ? a.GetString()! : a.GetRawText()).ToList();
            if (!names.Contains("LlamaForCausalLM"))
                throw new UnsupportedException($"{path}: field architectures: found [{string.Join(", ", names)}], expected LlamaForCausalLM");
        }
        var act = OptString(path, root, "hidden_act");
        if (act is not null && act != "silu")
            throw new UnsupportedException($"{path}: field hidden_act: found \"{act}\", only \"silu\" is supported");
        foreach (var biasField in new[] { "attention_bias", "mlp_bias" })
            if (root.TryGetProperty(biasField, out var b) && b.ValueKind == JsonValueKind.True)
                throw new UnsupportedException($"{path}: field {biasField}: true is not supported (Llama-3 has no biases)");

        int hidden = ReqInt(path, root, "hidden_size", 1, MaxHidden);
        int inter = ReqInt(path, root, "intermediate_size", 1, MaxIntermediate);
        int layers = ReqInt(path, root, "num_hidden_layers", 1, MaxLayers);
        int heads = ReqInt(path, root, "num_attention_heads", 1, MaxHeads);
        int kvHeads = OptInt(path, root, "num_key_value_heads", 1, MaxHeads) ?? heads;
        if (heads % kvHeads != 0)
            throw new InvalidFileException(path, $"field num_key_value_heads: found {kvHeads}, expected a divisor of num_attention_heads ({heads})");
        int? headDimField = OptInt(path, root, "head_dim", 1, MaxHeadDim);
        if (headDimField is null && hidden % heads != 0)
            throw new InvalidFileException(path, $"field hidden_size: found {hidden}, expected a multiple of num_attention_heads ({heads}) when head_dim is absent");
        int headDim = headDimField ?? hidden / heads;
        if (headDim % 2 != 0)
            throw new InvalidFileException(path, $"field head_dim: found {headDim}{(headDimField is null ? " (hidden_size / num_attention_heads)" : "")}, expected an even number (rotary pairs)");
        if (headDim > MaxHeadDim)
            throw new InvalidFileException(path, $"field head_dim: found {headDim}, expected at most {MaxHeadDim}");

        float eps = OptFloat(path, root, "rms_norm_eps") ?? 1e-6f;
        if (!(eps > 0 && eps < 1))
            throw new InvalidFileException(path, $"field rms_norm_eps: found {eps.ToString("R", CultureInfo.InvariantCulture)}, expected a value in (0, 1)");
        float theta = OptFloat(path, root, "rope_theta") ?? 10000f;
        if (!(theta > 1 && float.IsFinite(theta)))
            throw new InvalidFileException(path, $"field rope_theta: found {theta.ToString("R", CultureInfo.InvariantCulture)}, expected a finite value greater than 1");

        int vocab = ReqInt(path, root, "vocab_size", 1, MaxVocab);
        int maxPos = OptInt(path, root, "max_position_embeddings", 1, MaxPositions) ?? 2048;
        var scaling = ParseRopeScaling(path, root);
        bool tie = false;
        if (root.TryGetProperty("tie_word_embeddings", out var tw))
        {
            if (tw.ValueKind is not (JsonValueKind.True or JsonValueKind.False or JsonValueKind.Null))
                throw new InvalidFileException(path, $"field tie_word_embeddings: found {tw.GetRawText()}, expected true or false");
            tie = tw.ValueKind == JsonValueKind.True;
        }
        int? bos = root.TryGetProperty("bos_token_id", out var be) && be.ValueKind != JsonValueKind.Null
            ? ReadTokenId(path, "bos_token_id", be, vocab) : null;
        int[] eos = root.TryGetProperty("eos_token_id", out var ee) ? ReadIdList(path, "eos_token_id", ee, vocab).Distinct().ToArray() : [];

        var dtype = OptString(path, root, "torch_dtype") ?? OptString(path, root, "dtype") ?? "float32";
        if (dtype is not ("float32" or "float16" or "bfloat16"))
            throw new UnsupportedException($"{path}: field torch_dtype: found \"{dtype}\", expected float32, float16 or bfloat16");

        return new LlamaConfig
        {
            HiddenSize = hidden,
            IntermediateSize = inter,
            NumLayers = layers,
            NumHeads = heads,
            NumKvHeads = kvHeads,
            HeadDim = headDim,
            RmsNormEps = eps,
            RopeTheta = theta,
            RopeScaling = scaling,
            VocabSize = vocab,
            MaxPositionEmbeddings = maxPos,
            TieWordEmbeddings = tie,
            BosTokenId = bos,
            EosTokenIds = eos,
            TorchDtype = dtype,
        };
    }

    private static RopeScaling? ParseRopeScaling(string path, JsonElement root)
    {
        if (!root.TryGetProperty("rope_scaling", out var rs) || rs.ValueKind == JsonValueKind.Null) return null;
        if (rs.ValueKind != JsonValueKind.Object)
            throw new InvalidFileException(path, $"field rope_scaling: found {rs.GetRawText()}, expected an object or null");
        string? type = OptString(path, rs, "rope_type", "rope_scaling.") ?? OptString(path, rs, "type", "rope_scaling.");
        // "default" is transformers' name for plain rotary embeddings: the same as no scaling.
        if (type == "default") return null;
        if (type != "llama3")
            throw new UnsupportedException($"{path}: field rope_scaling.rope_type: found {(type is null ? "nothing" : $"\"{type}\"")}, only \"llama3\" is supported");
        float factor = OptFloat(path, rs, "factor", "rope_scaling.") ?? throw Missing("factor");
        float low = OptFloat(path, rs, "low_freq_factor", "rope_scaling.") ?? throw Missing("low_freq_factor");
        float high = OptFloat(path, rs, "high_freq_factor", "rope_scaling.") ?? throw Missing("high_freq_factor");
        int orig = OptInt(path, rs, "original_max_position_embeddings", 1, MaxPositions, "rope_scaling.") ?? throw Missing("original_max_position_embeddings");
        if (!(factor >= 1 && float.IsFinite(factor)))
            throw new InvalidFileException(path, $"field rope_scaling.factor: found {factor.ToString("R", CultureInfo.InvariantCulture)}, expected a finite value >= 1");
        if (!(low > 0 && high > low && float.IsFinite(high)))
            throw new InvalidFileException(path,
                $"field rope_scaling.high_freq_factor: found low_freq_factor {low.ToString("R", CultureInfo.InvariantCulture)} and high_freq_factor {high.ToString("R", CultureInfo.InvariantCulture)}, expected 0 < low < high");
        return new RopeScaling(factor, low, high, orig);

        InvalidFileException Missing(string f) => new(path, $"field rope_scaling.{f}: missing (required for rope_type llama3)");
    }

    private static string? OptString(string path, JsonElement obj, string field, string prefix = "")
    {
        if (!obj.TryGetProperty(field, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind != JsonValueKind.String)
            throw new InvalidFileException(path, $"field {prefix}{field}: found {v.GetRawText()}, expected a string");
        return v.GetString();
    }

    private static int ReqInt(string path, JsonElement obj, string field, int min, int max) =>
        OptInt(path, obj, field, min, max) ?? throw new InvalidFileException(path, $"field {field}: missing (expected an integer in [{min}, {max}])");

    private static int? OptInt(string path, JsonElement obj, string field, int min, int max, string prefix = "")
    {
        if (!obj.TryGetProperty(field, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt64(out long x))
            throw new InvalidFileException(path, $"field {prefix}{field}: found {v.GetRawText()}, expected an integer in [{min}, {max}]");
        if (x < min || x > max)
            throw new InvalidFileException(path, $"field {prefix}{field}: found {x}, expected an integer in [{min}, {max}]");
        return (int)x;
    }

    private static float? OptFloat(string path, JsonElement obj, string field, string prefix = "")
    {
        if (!obj.TryGetProperty(field, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetDouble(out double d) || !double.IsFinite(d))
            throw new InvalidFileException(path, $"field {prefix}{field}: found {v.GetRawText()}, expected a number");
        return (float)d;
    }

    private static int ReadTokenId(string path, string field, JsonElement v, int vocab)
    {
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt64(out long x))
            throw new InvalidFileException(path, $"field {field}: found {v.GetRawText()}, expected a token id");
        if (x < 0 || (vocab > 0 && x >= vocab))
            throw new InvalidFileException(path, $"field {field}: found {x}, expected a token id in [0, {vocab})");
        return (int)x;
    }

    private static List<int> ReadIdList(string path, string field, JsonElement v, int vocab)
    {
        var r = new List<int>();
        switch (v.ValueKind)
        {
            case JsonValueKind.Null: break;
            case JsonValueKind.Number: r.Add(ReadTokenId(path, field, v, vocab)); break;
            case JsonValueKind.Array:
                foreach (var e in v.EnumerateArray()) r.Add(ReadTokenId(path, field, e, vocab));
                break;
            default:
                throw new InvalidFileException(path, $"field {field}: found {v.GetRawText()}, expected a token id or a list of them");
        }
        return r;
    }

    /// <summary>
    /// Writes config.json (atomically) in the form HF transformers' LlamaConfig loads: every field it reads,
    /// with architectures and model_type. Floats are written with their shortest round-trip text
    /// (1e-05, not 9.99999974737875e-06).
    /// </summary>
    public void Save(string modelDir)
    {
        Directory.CreateDirectory(modelDir);
        var path = Path.Combine(modelDir, ConfigFileName);
        var buffer = new ArrayBufferWriter<byte>();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteStartArray("architectures");
            w.WriteStringValue("LlamaForCausalLM");
            w.WriteEndArray();
            w.WriteString("model_type", "llama");
            w.WriteBoolean("attention_bias", false);
            w.WriteNumber("attention_dropout", 0);
            if (BosTokenId is int bos) w.WriteNumber("bos_token_id", bos); else w.WriteNull("bos_token_id");
            if (EosTokenIds.Length == 1) w.WriteNumber("eos_token_id", EosTokenIds[0]);
            else if (EosTokenIds.Length == 0) w.WriteNull("eos_token_id");
            else
            {
                w.WriteStartArray("eos_token_id");
                foreach (var e in EosTokenIds) w.WriteNumberValue(e);
                w.WriteEndArray();
            }
            w.WriteNumber("head_dim", HeadDim);
            w.WriteString("hidden_act", "silu");
            w.WriteNumber("hidden_size", HiddenSize);
            w.WriteNumber("initializer_range", 0.02);
            w.WriteNumber("intermediate_size", IntermediateSize);
            w.WriteNumber("max_position_embeddings", MaxPositionEmbeddings);
            w.WriteBoolean("mlp_bias", false);
            w.WriteNumber("num_attention_heads", NumHeads);
            w.WriteNumber("num_hidden_layers", NumLayers);
            w.WriteNumber("num_key_value_heads", NumKvHeads);
            w.WriteNumber("pretraining_tp", 1);
            WriteFloat(w, "rms_norm_eps", RmsNormEps);
            if (RopeScaling is { } s)
            {
                w.WriteStartObject("rope_scaling");
                WriteFloat(w, "factor", s.Factor);
                WriteFloat(w, "high_freq_factor", s.HighFreqFactor);
                WriteFloat(w, "low_freq_factor", s.LowFreqFactor);
                w.WriteNumber("original_max_position_embeddings", s.OriginalMaxPositionEmbeddings);
                w.WriteString("rope_type", "llama3");
                w.WriteEndObject();
            }
            else w.WriteNull("rope_scaling");
            WriteFloat(w, "rope_theta", RopeTheta);
            w.WriteBoolean("tie_word_embeddings", TieWordEmbeddings);
            w.WriteString("torch_dtype", TorchDtype);
            w.WriteBoolean("use_cache", true);
            w.WriteNumber("vocab_size", VocabSize);
            w.WriteEndObject();
        }
        AtomicFile.Write(path, buffer.WrittenSpan);
    }

    private static void WriteFloat(Utf8JsonWriter w, string name, float v)
    {
        // Shortest text that round-trips the float32, spelled as JSON (and Python) read it: "1e-05", "500000.0".
        var s = v.ToString("R", CultureInfo.InvariantCulture);
        if (!s.Contains('E') && !s.Contains('.')) s += ".0";
        s = s.Replace("E", "e");
        w.WritePropertyName(name);
        w.WriteRawValue(s);
    }

    /// <summary>
    /// The tensors a LlamaForCausalLM checkpoint holds, with HF names and shapes ([out, in] for projections),
    /// in the order HF lists them. lm_head.weight is omitted when the embeddings are tied.
    /// </summary>
    public IReadOnlyList<(string Name, int[] Shape)> ExpectedTensors()
    {
        int d = HiddenSize, f = IntermediateSize;
        var r = new List<(string, int[])>(NumLayers * 9 + 3) { ("model.embed_tokens.weight", [VocabSize, d]) };
        for (int i = 0; i < NumLayers; i++)
        {
            var p = $"model.layers.{i}.";
            r.Add((p + "self_attn.q_proj.weight", [QDim, d]));
            r.Add((p + "self_attn.k_proj.weight", [KvDim, d]));
            r.Add((p + "self_attn.v_proj.weight", [KvDim, d]));
            r.Add((p + "self_attn.o_proj.weight", [d, QDim]));
            r.Add((p + "mlp.gate_proj.weight", [f, d]));
            r.Add((p + "mlp.up_proj.weight", [f, d]));
            r.Add((p + "mlp.down_proj.weight", [d, f]));
            r.Add((p + "input_layernorm.weight", [d]));
            r.Add((p + "post_attention_layernorm.weight", [d]));
        }
        r.Add(("model.norm.weight", [d]));
        if (!TieWordEmbeddings) r.Add(("lm_head.weight", [VocabSize, d]));
        return r;
    }

    /// <summary>
    /// Checks that the checkpoint holds every expected tensor with the expected shape and a float dtype.
    /// Extra tensors (e.g. a tied lm_head.weight, rotary buffers) are allowed.
    /// </summary>
    public void Validate(Checkpoint ckpt)
    {
        foreach (var (name, shape) in ExpectedTensors())
        {
            if (!ckpt.TryGet(name, out var file, out var entry))
                throw new ShapeMismatchException($"{ckpt.Path}: missing tensor '{name}' (expected shape {DTypes.ShapeString(shape)})");
            if (!entry.Shape.AsSpan().SequenceEqual(shape))
                throw new ShapeMismatchException(
                    $"{file.Path}: tensor '{name}' has shape {DTypes.ShapeString(entry.Shape)}, but the config expects {DTypes.ShapeString(shape)}");
            if (!entry.DType.IsFloat())
                throw new ShapeMismatchException(
                    $"{file.Path}: tensor '{name}' has dtype {entry.DType.SafetensorsName()}, expected a float dtype (F32, F16, BF16 or F64)");
        }
    }
}
