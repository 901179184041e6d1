using System.Buffers;
using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using LoRI.IO;
using LoRI.Model;
using LoRI.Tensors;

namespace LoRI.Adapters;

/// <summary>
/// Hugging Face peft's LoRA adapter folder: `adapter_config.json` + `adapter_model.safetensors` with keys
/// `base_model.model.model.layers.{i}.{self_attn|mlp}.{proj}.lora_{A|B}.weight` (a `.default` adapter-name
/// segment before `.weight` is tolerated on load, never written), F32/F16/BF16 (F64 read too).
///
/// Refused, each with its own message: DoRA (use_dora / lora_magnitude_vector), fan_in_fan_out, bias training
/// (bias != "none", lora_bias, B bias tensors), modules_to_save, layer_replication, trainable_token_indices,
/// peft types other than LORA, pickled `adapter_model.bin`, LoRA on embeddings (lora_embedding_A/B).
///
/// Full `embed_tokens` / `lm_head` copies (peft saves them when the vocabulary was resized, as the LoRI reference
/// did by adding a `&lt;PAD&gt;` token) are ignored, with a note on the adapter: the reference never trains them, so
/// their rows for the base vocabulary equal the base model's, and the extra row belongs to a padding token that
/// never occurs in an input. Their width must still match the model's hidden size.
/// </summary>
public static partial class PeftAdapter
{
    public const string ConfigFileName = "adapter_config.json";
    public const string WeightsFileName = "adapter_model.safetensors";
    public const string PickleFileName = "adapter_model.bin";
    public const long MaxConfigBytes = 1L << 20;
    /// <summary>Largest rank accepted from a file (a sanity bound, far above any published adapter).</summary>
    public const int MaxRank = 65536;

    /// <summary>Parses a B key (with or without `.default`) to its layer and projection; false for any other name.</summary>
    public static bool TryParseBKey(string name, out int layer, out Proj proj)
    {
        layer = 0; proj = default;
        var m = KeyPattern().Match(name);
        if (!m.Success || m.Groups[4].Value != "B") return false;
        layer = int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
        return Projs.TryParse(m.Groups[3].Value, out proj) && proj.ModuleName() == m.Groups[3].Value && proj.Block() == m.Groups[2].Value;
    }

    [GeneratedRegex(@"^base_model\.model\.model\.layers\.(\d{1,6})\.(self_attn|mlp)\.([a-z_]+)\.lora_(A|B)(\.default)?\.weight$")]
    private static partial Regex KeyPattern();

    // ---------- load ----------

    /// <summary>Loads an adapter folder; with <paramref name="model"/> given, every module is checked against its shapes.</summary>
    public static LoraAdapter Load(string dir, LlamaConfig? model = null)
    {
        if (!Directory.Exists(dir)) throw new InvalidFileException(dir, "adapter folder not found");
        var configPath = Path.Combine(dir, ConfigFileName);
        var weightsPath = Path.Combine(dir, WeightsFileName);
        if (!File.Exists(configPath)) throw new InvalidFileException(dir, $"no {ConfigFileName}: not a peft adapter folder");
        if (!File.Exists(weightsPath))
        {
            if (File.Exists(Path.Combine(dir, PickleFileName)))
                throw new UnsupportedException($"{dir}: only {PickleFileName} is present; pickled PyTorch weights are not supported (they can run code when loaded). " +
                                               $"Convert them to {WeightsFileName} with peft (save_pretrained(safe_serialization=True)).");
            throw new InvalidFileException(dir, $"no {WeightsFileName}");
        }
        var config = ReadConfig(configPath);
        using var file = SafeTensorsFile.Open(weightsPath);
        var adapter = ReadTensors(weightsPath, file, config, model);
        if (model is not null) adapter.ValidateFor(model);
        return adapter;
    }

    /// <summary>Parses and validates adapter_config.json (size-bounded; unknown fields ignored).</summary>
    public static LoraConfig ReadConfig(string path)
    {
        using var doc = JsonFile.Read(path, MaxConfigBytes, "adapter config");
        var root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object) throw new InvalidFileException(path, $"expected a JSON object, found {root.ValueKind}");

        string? Str(string name)
        {
            if (!root.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
            if (v.ValueKind != JsonValueKind.String) throw new InvalidFileException(path, $"field \"{name}\" must be a string, found {v.ValueKind}");
            return v.GetString();
        }
        bool Bool(string name)
        {
            if (!root.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return false;
            if (v.ValueKind is not (JsonValueKind.True or JsonValueKind.False)) throw new InvalidFileException(path, $"field \"{name}\" must be true or false, found {v.ValueKind}");
            return v.GetBoolean();
        }
        bool Present(string name) => root.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null
                                     && !(v.ValueKind == JsonValueKind.Array && v.GetArrayLength() == 0);

        var peftType = Str("peft_type") ?? throw new InvalidFileException(path, "missing field \"peft_type\" (expected \"LORA\")");
        if (peftType != "LORA") throw new UnsupportedException($"{path}: peft_type is \"{peftType}\"; only LORA adapters are supported");
        if (Bool("use_dora")) throw new UnsupportedException($"{path}: use_dora is true; DoRA adapters (a learned magnitude vector per weight) are not supported");
        if (Bool("fan_in_fan_out")) throw new UnsupportedException($"{path}: fan_in_fan_out is true; only Llama-style [out, in] linear weights are supported (GPT-2 Conv1D layout is not)");
        var bias = Str("bias") ?? "none";
        if (bias != "none") throw new UnsupportedException($"{path}: bias is \"{bias}\"; adapters that train biases are not supported (expected \"none\")");
        if (Bool("lora_bias")) throw new UnsupportedException($"{path}: lora_bias is true; adapters that train biases are not supported");
        if (Present("modules_to_save")) throw new UnsupportedException($"{path}: modules_to_save is set; adapters carrying fully trained extra modules are not supported");
        if (Present("layer_replication")) throw new UnsupportedException($"{path}: layer_replication is set; replicated layers are not supported");
        if (Present("trainable_token_indices")) throw new UnsupportedException($"{path}: trainable_token_indices is set; trained embedding rows are not supported");

        int r = Int(path, root, "r") ?? throw new InvalidFileException(path, "missing field \"r\"");
        if (r < 1 || r > MaxRank) throw new InvalidFileException(path, $"\"r\" is {r}; expected 1 to {MaxRank}");
        double alpha = Num(path, root, "lora_alpha") ?? 8;  // peft's default
        double dropout = Num(path, root, "lora_dropout") ?? 0;

        var targets = new List<string>();
        if (root.TryGetProperty("target_modules", out var tm))
        {
            if (tm.ValueKind == JsonValueKind.Array)
            {
                foreach (var e in tm.EnumerateArray())
                {
                    if (e.ValueKind != JsonValueKind.String) throw new InvalidFileException(path, $"\"target_modules\" must hold strings, found {e.ValueKind}");
                    targets.Add(e.GetString()!);
                }
            }
            else if (tm.ValueKind == JsonValueKind.String) targets.Add(tm.GetString()!);
            else if (tm.ValueKind != JsonValueKind.Null) throw new InvalidFileException(path, $"\"target_modules\" must be a list or a string, found {tm.ValueKind}");
        }

        var ranks = new List<KeyValuePair<string, int>>();
        foreach (var (k, v) in Pattern(path, root, "rank_pattern"))
        {
            if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out int rv) || rv < 1 || rv > MaxRank)
                throw new InvalidFileException(path, $"rank_pattern[\"{k}\"] must be an integer from 1 to {MaxRank}, found {v}");
            ranks.Add(new(k, rv));
        }
        var alphas = new List<KeyValuePair<string, double>>();
        foreach (var (k, v) in Pattern(path, root, "alpha_pattern"))
        {
            if (v.ValueKind != JsonValueKind.Number || !double.IsFinite(v.GetDouble()))
                throw new InvalidFileException(path, $"alpha_pattern[\"{k}\"] must be a number, found {v}");
            alphas.Add(new(k, v.GetDouble()));
        }
        var config = new LoraConfig
        {
            R = r, LoraAlpha = alpha, UseRslora = Bool("use_rslora"), LoraDropout = dropout,
            RankPattern = ranks, AlphaPattern = alphas, TargetModules = targets,
            BaseModelName = Str("base_model_name_or_path"), TaskType = Str("task_type") ?? "CAUSAL_LM",
        };
        foreach (var (k, _) in ranks.Select(x => (x.Key, 0)).Concat(alphas.Select(x => (x.Key, 0))))
            try { LoraConfig.PatternMatches(k, "model.layers.0.self_attn.q_proj"); }
            catch (LoRIException e) { throw new InvalidFileException(path, e.Message, e); }
        return config;
    }

    private static int? Int(string path, JsonElement root, string name)
    {
        if (!root.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out int i)) throw new InvalidFileException(path, $"field \"{name}\" must be an integer, found {v}");
        return i;
    }

    private static double? Num(string path, JsonElement root, string name)
    {
        if (!root.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind != JsonValueKind.Number || !double.IsFinite(v.GetDouble())) throw new InvalidFileException(path, $"field \"{name}\" must be a number, found {v}");
        return v.GetDouble();
    }

    private static IEnumerable<(string, JsonElement)> Pattern(string path, JsonElement root, string name)
    {
        if (!root.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return [];
        if (v.ValueKind != JsonValueKind.Object) throw new InvalidFileException(path, $"field \"{name}\" must be an object, found {v.ValueKind}");
        return v.EnumerateObject().Select(p => (p.Name, p.Value)).ToList();
    }

    private static LoraAdapter ReadTensors(string path, SafeTensorsFile file, LoraConfig config, LlamaConfig? model)
    {
        var found = new Dictionary<(int, Proj), (TensorEntry? A, TensorEntry? B)>();
        var notes = new List<string>();
        foreach (var e in file.Tensors)
        {
            var name = e.Name;
            var m = KeyPattern().Match(name);
            if (m.Success)
            {
                int layer = int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
                if (!Projs.TryParse(m.Groups[3].Value, out var p) || p.ModuleName() != m.Groups[3].Value || p.Block() != m.Groups[2].Value)
                    throw new UnsupportedException($"{path}: tensor '{name}' adapts '{m.Groups[2].Value}.{m.Groups[3].Value}', which is not one of the seven Llama projections");
                if (e.Shape.Length != 2) throw new InvalidFileException(path, $"tensor '{name}' has shape {DTypes.ShapeString(e.Shape)}; expected a matrix");
                if (!(e.DType is DType.F32 or DType.F16 or DType.BF16 or DType.F64))
                    throw new InvalidFileException(path, $"tensor '{name}' is {e.DType.SafetensorsName()}; expected F32, F16 or BF16");
                found.TryGetValue((layer, p), out var ab);
                bool isA = m.Groups[4].Value == "A";
                if ((isA ? ab.A : ab.B) is not null) throw new InvalidFileException(path, $"tensor '{name}' appears twice (with and without '.default')");
                found[(layer, p)] = isA ? (e, ab.B) : (ab.A, e);
                continue;
            }
            if (name.Contains("lora_magnitude_vector", StringComparison.Ordinal))
                throw new UnsupportedException($"{path}: tensor '{name}' is a DoRA magnitude vector; DoRA adapters are not supported");
            if (name.Contains(".lora_", StringComparison.Ordinal) && name.EndsWith(".bias", StringComparison.Ordinal))
                throw new UnsupportedException($"{path}: tensor '{name}' is a LoRA bias; adapters that train biases are not supported");
            if (name.Contains("lora_embedding_", StringComparison.Ordinal))
                throw new UnsupportedException($"{path}: tensor '{name}' is LoRA on the embeddings; only the seven projections are supported");
            if (name is "base_model.model.model.embed_tokens.weight" or "base_model.model.lm_head.weight")
            {
                if (e.Shape.Length != 2 || (model is not null && e.Shape[1] != model.HiddenSize))
                    throw new ShapeMismatchException($"{path}: tensor '{name}' has shape {DTypes.ShapeString(e.Shape)}, the model's hidden size is {model?.HiddenSize}");
                notes.Add($"ignored '{name}' {DTypes.ShapeString(e.Shape)}: a full copy saved by peft after a vocabulary resize; the LoRI reference trains no " +
                          "embeddings, so the base model's rows are used (the added padding row never occurs in an input)");
                continue;
            }
            throw new InvalidFileException(path, $"unexpected tensor '{name}': expected base_model.model.model.layers.{{i}}.{{self_attn|mlp}}.{{proj}}.lora_{{A|B}}.weight");
        }
        if (found.Count == 0) throw new InvalidFileException(path, "no lora_A / lora_B tensors");

        var modules = new List<LoraModule>();
        foreach (var ((layer, p), (ea, eb)) in found.OrderBy(kv => kv.Key))
        {
            string keyA = LoraModule.PeftKey(layer, p, 'A'), keyB = LoraModule.PeftKey(layer, p, 'B');
            if (ea is null) throw new InvalidFileException(path, $"'{keyB}' has no matching '{keyA}'");
            if (eb is null) throw new InvalidFileException(path, $"'{keyA}' has no matching '{keyB}'");
            int r = config.RankFor(layer, p);
            int inDim = ea.Shape[1], outDim = eb.Shape[0];
            if (ea.Shape[0] != r)
                throw new ShapeMismatchException($"{path}: tensor '{ea.Name}' has shape {DTypes.ShapeString(ea.Shape)}; the config's rank for this module is {r}, so it should be [{r}, {inDim}]");
            if (eb.Shape[1] != r)
                throw new ShapeMismatchException($"{path}: tensor '{eb.Name}' has shape {DTypes.ShapeString(eb.Shape)}; the config's rank for this module is {r}, so it should be [{outDim}, {r}]");
            if (model is not null)
            {
                if (layer >= model.NumLayers)
                    throw new ShapeMismatchException($"{path}: tensor '{ea.Name}' is for layer {layer}, the model has {model.NumLayers} layers");
                var (o, i) = p.Shape(model);
                if (inDim != i) throw new ShapeMismatchException($"{path}: tensor '{ea.Name}' has shape {DTypes.ShapeString(ea.Shape)}, the model needs [{r}, {i}]");
                if (outDim != o) throw new ShapeMismatchException($"{path}: tensor '{eb.Name}' has shape {DTypes.ShapeString(eb.Shape)}, the model needs [{o}, {r}]");
            }
            var a = new float[ea.ElementCount];
            file.ReadFloat32(ea, a);
            var b = new float[eb.ElementCount];
            file.ReadFloat32(eb, b);
            modules.Add(new LoraModule(layer, p, r, inDim, outDim, config.AlphaFor(layer, p), config.UseRslora, a, b));
        }
        var adapter = new LoraAdapter(config, modules);
        adapter.Notes.AddRange(notes);
        return adapter;
    }

    // ---------- save ----------

    /// <summary>
    /// Writes the adapter as peft 0.12 does: adapter_config.json (its 24 fields, sorted, 2-space indent, no final
    /// newline) and adapter_model.safetensors (keys sorted, metadata {"format": "pt"}), each atomically.
    /// </summary>
    public static void Save(LoraAdapter adapter, string dir, DType dtype = DType.F32)
    {
        if (!(dtype is DType.F32 or DType.F16 or DType.BF16)) throw new ArgumentException($"adapter weights are saved as F32, F16 or BF16, not {dtype}");
        Directory.CreateDirectory(dir);
        var w = new SafeTensorsWriter();
        w.Metadata["format"] = "pt";
        var tensors = new List<(string Key, int[] Shape, float[] Data)>();
        foreach (var m in adapter.Modules)
        {
            tensors.Add((m.Key('A'), [m.Rank, m.In], m.A));
            tensors.Add((m.Key('B'), [m.Out, m.Rank], m.B));
        }
        foreach (var (key, shape, data) in tensors.OrderBy(t => t.Key, StringComparer.Ordinal))
            w.AddFloats(key, dtype, shape, data);
        w.Write(Path.Combine(dir, WeightsFileName));
        AtomicFile.Write(Path.Combine(dir, ConfigFileName), ConfigJson(adapter.Config));
    }

    /// <summary>adapter_config.json's bytes, field for field what peft 0.12's save_pretrained writes.</summary>
    public static byte[] ConfigJson(LoraConfig c)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true, NewLine = "\n", Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartObject();
            w.WriteStartObject("alpha_pattern");
            foreach (var (k, v) in c.AlphaPattern.OrderBy(x => x.Key, StringComparer.Ordinal)) PyNumber(w, k, v);
            w.WriteEndObject();
            w.WriteNull("auto_mapping");
            if (c.BaseModelName is null) w.WriteNull("base_model_name_or_path"); else w.WriteString("base_model_name_or_path", c.BaseModelName);
            w.WriteString("bias", "none");
            w.WriteBoolean("fan_in_fan_out", false);
            w.WriteBoolean("inference_mode", true);
            w.WriteBoolean("init_lora_weights", true);
            w.WriteNull("layer_replication");
            w.WriteNull("layers_pattern");
            w.WriteNull("layers_to_transform");
            w.WriteStartObject("loftq_config");
            w.WriteEndObject();
            PyNumber(w, "lora_alpha", c.LoraAlpha);
            PyFloat(w, "lora_dropout", c.LoraDropout);
            w.WriteNull("megatron_config");
            w.WriteString("megatron_core", "megatron.core");
            w.WriteNull("modules_to_save");
            w.WriteString("peft_type", "LORA");
            w.WriteNumber("r", c.R);
            w.WriteStartObject("rank_pattern");
            foreach (var (k, v) in c.RankPattern.OrderBy(x => x.Key, StringComparer.Ordinal)) w.WriteNumber(k, v);
            w.WriteEndObject();
            w.WriteNull("revision");
            w.WriteStartArray("target_modules");
            foreach (var t in c.TargetModules) w.WriteStringValue(t);
            w.WriteEndArray();
            w.WriteString("task_type", c.TaskType);
            w.WriteBoolean("use_dora", false);
            w.WriteBoolean("use_rslora", c.UseRslora);
            w.WriteEndObject();
        }
        return buffer.WrittenSpan.ToArray();
    }

    /// <summary>An integral value as an integer (peft keeps lora_alpha an int), otherwise as Python prints a float.</summary>
    private static void PyNumber(Utf8JsonWriter w, string name, double v)
    {
        if (v == Math.Floor(v) && Math.Abs(v) < 1e15) w.WriteNumber(name, (long)v);
        else PyFloat(w, name, v);
    }

    /// <summary>Python's repr of a float: shortest round-trip digits, ".0" on whole numbers, "e-05" exponents.</summary>
    private static void PyFloat(Utf8JsonWriter w, string name, double v)
    {
        var s = v.ToString("R", CultureInfo.InvariantCulture);
        int e = s.IndexOf('E');
        if (e >= 0)
        {
            var mant = s[..e];
            var exp = int.Parse(s[(e + 1)..], CultureInfo.InvariantCulture);
            s = mant + "e" + (exp < 0 ? "-" : "+") + Math.Abs(exp).ToString("00", CultureInfo.InvariantCulture);
        }
        else if (!s.Contains('.')) s += ".0";
        w.WritePropertyName(name);
        w.WriteRawValue(s);
    }
}
