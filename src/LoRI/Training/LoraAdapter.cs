using System.Text;
using System.Text.Json;
using LoRI.IO;
using LoRI.Model;
using LoRI.Tensors;

namespace LoRI.Training;

/// <summary>One adapted projection: y = W x + s B (A x). A [Rank, In], B [Out, Rank], fp32, pinned (the CPU backend aliases them).</summary>
public sealed class LoraModule
{
    public int Layer { get; }
    public Proj Proj { get; }
    public int In { get; }
    public int Out { get; }
    public int Rank { get; }
    public float[] A { get; }
    public float[] B { get; }
    /// <summary>LoRI-S: the entries of B that train (same layout as B), or null when all do.</summary>
    public bool[]? Mask { get; set; }

    public LoraModule(int layer, Proj proj, int inFeatures, int outFeatures, int rank)
    {
        Layer = layer; Proj = proj; In = inFeatures; Out = outFeatures; Rank = rank;
        A = GC.AllocateArray<float>(rank * inFeatures, pinned: true);
        B = GC.AllocateArray<float>(outFeatures * rank, pinned: true);
    }

    /// <summary>"model.layers.{l}.{block}.{proj}": the module's name in PEFT keys and A's seed stream.</summary>
    public string Name => LoriSetup.ModuleName(Layer, Proj);
    public string KeyA => $"base_model.model.{Name}.lora_A.weight";
    public string KeyB => $"base_model.model.{Name}.lora_B.weight";
}

/// <summary>
/// The adapter a training run works on, in the PEFT layout of lori-method.md section 8: adapter_config.json and
/// adapter_model.safetensors with F32 lora_A/lora_B per target module. The scale is alpha / r (alpha / sqrt(r)
/// with rsLoRA).
/// </summary>
public sealed class LoraAdapter
{
    public const string ConfigFileName = "adapter_config.json";
    public const string WeightsFileName = "adapter_model.safetensors";
    public const long MaxConfigBytes = 1 << 20;

    public int Rank { get; }
    public double Alpha { get; }
    public bool UseRslora { get; }
    public float Scale => (float)(UseRslora ? Alpha / Math.Sqrt(Rank) : Alpha / Rank);
    public IReadOnlyList<Proj> Targets { get; }
    /// <summary>[layer][(int)Proj]: the module, or null where the projection is not a target.</summary>
    public LoraModule?[][] ByLayer { get; }
    public IEnumerable<LoraModule> Modules => ByLayer.SelectMany(l => l).OfType<LoraModule>();

    private LoraAdapter(LlamaConfig c, int rank, double alpha, bool rslora, IReadOnlyList<Proj> targets)
    {
        if (rank <= 0) throw new ArgumentException($"rank must be positive, found {rank}");
        if (targets.Count == 0) throw new ArgumentException("an adapter needs at least one target module");
        Rank = rank; Alpha = alpha; UseRslora = rslora; Targets = targets;
        ByLayer = new LoraModule?[c.NumLayers][];
        for (int l = 0; l < c.NumLayers; l++)
        {
            ByLayer[l] = new LoraModule?[7];
            foreach (var p in targets)
            {
                var (o, i) = p.Shape(c);
                ByLayer[l][(int)p] = new LoraModule(l, p, i, o, rank);
            }
        }
    }

    /// <summary>A new adapter: A drawn from the seed per module, B = 0 (peft's init).</summary>
    public static LoraAdapter Create(LlamaConfig c, int rank, double alpha, IReadOnlyList<Proj> targets, AInit init, ulong seed)
    {
        var a = new LoraAdapter(c, rank, alpha, false, targets);
        foreach (var m in a.Modules) LoriSetup.DrawA(m.A, m.Rank, m.In, init, seed, m.Name);
        return a;
    }

    public LoraModule? this[int layer, Proj p] => ByLayer[layer][(int)p];

    public void Save(string dir, string baseModel)
    {
        Directory.CreateDirectory(dir);
        var w = new SafeTensorsWriter();
        w.Metadata["format"] = "pt";
        foreach (var m in Modules)
        {
            w.Add(m.KeyA, DType.F32, [m.Rank, m.In], m.A);
            w.Add(m.KeyB, DType.F32, [m.Out, m.Rank], m.B);
        }
        w.Write(Path.Combine(dir, WeightsFileName));
        AtomicFile.Write(Path.Combine(dir, ConfigFileName), ConfigJson(baseModel));
    }

    private byte[] ConfigJson(string baseModel)
    {
        using var ms = new MemoryStream();
        using (var j = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true }))
        {
            j.WriteStartObject();
            j.WriteString("peft_type", "LORA");
            j.WriteString("task_type", "CAUSAL_LM");
            j.WriteNumber("r", Rank);
            j.WriteNumber("lora_alpha", Alpha);
            j.WriteNumber("lora_dropout", 0.05);
            j.WriteStartArray("target_modules");
            foreach (var p in Targets) j.WriteStringValue(p.ModuleName());
            j.WriteEndArray();
            j.WriteString("bias", "none");
            j.WriteBoolean("fan_in_fan_out", false);
            j.WriteBoolean("use_rslora", UseRslora);
            j.WriteBoolean("use_dora", false);
            j.WriteBoolean("init_lora_weights", true);
            j.WriteNull("modules_to_save");
            j.WriteStartObject("rank_pattern"); j.WriteEndObject();
            j.WriteStartObject("alpha_pattern"); j.WriteEndObject();
            j.WriteNull("layers_to_transform");
            j.WriteNull("layers_pattern");
            j.WriteBoolean("inference_mode", true);
            j.WriteString("base_model_name_or_path", baseModel);
            j.WriteNull("revision");
            j.WriteEndObject();
        }
        return ms.ToArray();
    }

    /// <summary>
    /// Loads a PEFT LoRA adapter for a model. Tensors other than lora_A/lora_B of the targets (a published
    /// adapter's resized embed_tokens / lm_head) are ignored: training continues B with A frozen and never
    /// touches the base vocabulary. Every target module must be present with the configured shapes.
    /// </summary>
    public static LoraAdapter Load(string dir, LlamaConfig c)
    {
        var cfgPath = Path.Combine(dir, ConfigFileName);
        if (!File.Exists(cfgPath)) throw new InvalidFileException(cfgPath, "no adapter_config.json in the adapter folder");
        var bytes = File.ReadAllBytes(cfgPath);
        if (bytes.Length > MaxConfigBytes) throw new InvalidFileException(cfgPath, $"is {bytes.Length} bytes, more than {MaxConfigBytes}");
        int rank; double alpha; bool rslora = false; var targets = new List<Proj>();
        try
        {
            using var doc = JsonDocument.Parse(bytes);
            var o = doc.RootElement;
            if (o.TryGetProperty("peft_type", out var pt) && pt.GetString() != "LORA")
                throw new UnsupportedException($"{cfgPath}: peft_type is '{pt.GetString()}', only LORA is supported");
            if (o.TryGetProperty("use_dora", out var dora) && dora.ValueKind == JsonValueKind.True)
                throw new UnsupportedException($"{cfgPath}: use_dora is true; DoRA adapters are not supported");
            rank = o.GetProperty("r").GetInt32();
            alpha = o.GetProperty("lora_alpha").GetDouble();
            if (o.TryGetProperty("use_rslora", out var rs)) rslora = rs.ValueKind == JsonValueKind.True;
            var tm = o.GetProperty("target_modules");
            if (tm.ValueKind != JsonValueKind.Array) throw new InvalidFileException(cfgPath, "target_modules must be a list of module names");
            foreach (var t in tm.EnumerateArray())
            {
                if (!Projs.TryParse(t.GetString() ?? "", out var p))
                    throw new UnsupportedException($"{cfgPath}: target module '{t.GetString()}' is not one of q_proj k_proj v_proj o_proj gate_proj up_proj down_proj");
                targets.Add(p);
            }
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw new InvalidFileException(cfgPath, $"not a valid PEFT LoRA config: {e.Message}", e);
        }
        var a = new LoraAdapter(c, rank, alpha, rslora, targets.OrderBy(p => p).ToList());
        var wPath = Path.Combine(dir, WeightsFileName);
        if (!File.Exists(wPath)) throw new InvalidFileException(wPath, "no adapter_model.safetensors in the adapter folder");
        using var f = SafeTensorsFile.Open(wPath);
        foreach (var m in a.Modules)
        {
            Read(f, m.KeyA, [m.Rank, m.In], m.A);
            Read(f, m.KeyB, [m.Out, m.Rank], m.B);
        }
        return a;
    }

    private static void Read(SafeTensorsFile f, string key, int[] shape, float[] dst)
    {
        // PEFT files from older versions keep the adapter name in the key.
        string k = f.Contains(key) ? key : key.Replace(".weight", ".default.weight");
        if (!f.TryGet(k, out var e)) throw new InvalidFileException(f.Path, $"tensor '{key}' is missing");
        if (!e.Shape.AsSpan().SequenceEqual(shape))
            throw new ShapeMismatchException($"{f.Path}: tensor '{key}' has shape {DTypes.ShapeString(e.Shape)}, the model needs {DTypes.ShapeString(shape)}");
        f.ReadFloat32(e, dst);
    }

    /// <summary>
    /// Loads a LoRI mask (safetensors, keys = the lora_B keys, BOOL or U8 tensors shaped like B) onto the modules.
    /// A module without a mask entry is an error: a LoRI-S run must not silently train a dense B.
    /// </summary>
    public void LoadMask(string path)
    {
        using var f = SafeTensorsFile.Open(path);
        foreach (var m in Modules)
        {
            string k = f.Contains(m.KeyB) ? m.KeyB : m.KeyB.Replace(".weight", ".default.weight");
            if (!f.TryGet(k, out var e)) throw new InvalidFileException(path, $"mask '{m.KeyB}' is missing");
            if (!e.Shape.AsSpan().SequenceEqual([m.Out, m.Rank]))
                throw new ShapeMismatchException($"{path}: mask '{m.KeyB}' has shape {DTypes.ShapeString(e.Shape)}, B is [{m.Out}, {m.Rank}]");
            if (e.DType is not (DType.Bool or DType.U8))
                throw new InvalidFileException(path, $"mask '{m.KeyB}' is {e.DType.SafetensorsName()}, expected BOOL or U8");
            var bytes = f.Bytes(e);
            var mask = new bool[bytes.Length];
            for (int i = 0; i < bytes.Length; i++) mask[i] = bytes[i] != 0;
            m.Mask = mask;
        }
    }

    /// <summary>Writes the modules' masks as a safetensors file of BOOL tensors under the lora_B keys.</summary>
    public void SaveMask(string path)
    {
        var w = new SafeTensorsWriter();
        foreach (var m in Modules)
        {
            var mask = m.Mask ?? throw new InvalidOperationException($"module {m.Name} has no mask");
            w.Add(m.KeyB, DType.Bool, [m.Out, m.Rank], mask.Select(b => b ? (byte)1 : (byte)0).ToArray());
        }
        w.Write(path);
    }

    /// <summary>Sets every module's mask by the global magnitude rule over all B (lori-method.md section 2); returns the threshold.</summary>
    public float ComputeMask(double sparsity)
    {
        var mods = Modules.ToList();
        foreach (var m in mods) m.Mask = new bool[m.B.Length];
        return LoriSetup.MagnitudeMask(mods.Select(m => (ReadOnlyMemory<float>)m.B).ToList(), sparsity,
                                       mods.Select(m => (Memory<bool>)m.Mask!).ToList());
    }

    public static IReadOnlyList<Proj> ParseTargets(string list)
    {
        var r = new List<Proj>();
        foreach (var s in list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (!Projs.TryParse(s, out var p) && !Projs.TryParse(s + "_proj", out p))
                throw new ArgumentException($"unknown target '{s}': expected q, k, v, o, gate, up, down (or their _proj names)");
            if (!r.Contains(p)) r.Add(p);
        }
        if (r.Count == 0) throw new ArgumentException("no target modules given");
        return r.OrderBy(p => p).ToList();
    }
}
