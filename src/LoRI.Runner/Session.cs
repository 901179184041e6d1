using System.Text;
using System.Text.Json;
using LoRI.Adapters;
using LoRI.Backend;
using LoRI.Model;
using LoRI.Text;

namespace LoRI.Runner;

/// <summary>What the computing verbs share: the device option, loading a model with its tokenizer, JSON output.</summary>
public sealed class Session : IDisposable
{
    public required LlamaModel Model { get; init; }
    public required LlamaTokenizer Tokenizer { get; init; }
    public required string Device { get; init; }

    public const string DeviceUsage = "[--device cpu|cuda|cuda:N|cuda-emu|auto]";
    public const string AdapterUsage = "[--adapter DIR[:WEIGHT] ...] [--merge]";

    /// <summary>The adapters attached to the model (unmerged as its hook, or merged into its weights), or null.</summary>
    public AdapterSet? Adapters { get; private init; }

    /// <summary>Reads --model and --device and loads both; the caller reads its other options first or after.</summary>
    public static Session Open(Args a, int maxTokensPerForward = 512)
    {
        var dir = a.Require("model");
        var specs = new List<AdapterSpec>();
        foreach (var spec in a.GetAll("adapter"))
        {
            try { specs.Add(AdapterSpec.Parse(spec)); }
            catch (ArgumentException e) { throw new UsageException($"--adapter: {e.Message}"); }
        }
        bool merge = a.Flag("merge");
        if (merge && specs.Count == 0) throw new UsageException("--merge needs at least one --adapter");
        var tokenizer = LlamaTokenizer.Load(dir);
        var backend = CreateBackend(a.Get("device") ?? "auto");
        LlamaModel? model = null;
        try
        {
            model = LlamaModel.Load(dir, backend, maxTokensPerForward);
            if (tokenizer.VocabSize > model.Config.VocabSize)
                throw new LoRIException($"{dir}: the tokenizer has {tokenizer.VocabSize} tokens but the model's vocab_size is {model.Config.VocabSize}");
            var adapters = specs.Count > 0 ? AdapterSpec.Attach(model, specs, merge) : null;
            return new Session { Model = model, Tokenizer = tokenizer, Device = backend.Name, Adapters = adapters };
        }
        catch
        {
            model?.Dispose();
            backend.Dispose();
            throw;
        }
    }

    public static IBackend CreateBackend(string device)
    {
        try { return Cuda.Devices.Create(device); }
        catch (ArgumentException e) { throw new UsageException("--device: " + e.Message); }
    }

    /// <summary>The stop ids of the model: config/generation_config eos ids, else the tokenizer's.</summary>
    public int[] EosIds => Model.Config.EosTokenIds.Length > 0 ? Model.Config.EosTokenIds : Tokenizer.EosIds.ToArray();

    /// <summary>Writes one JSON object to Console.Out (indented, non-ASCII kept as is) and a final newline.</summary>
    public static void WriteJson(Action<Utf8JsonWriter> body)
    {
        var buffer = new System.Buffers.ArrayBufferWriter<byte>();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartObject();
            body(w);
            w.WriteEndObject();
        }
        Console.Out.WriteLine(Utf8.GetString(buffer.WrittenSpan));
    }

    public static void WriteIds(Utf8JsonWriter w, string name, ReadOnlySpan<int> ids)
    {
        w.WriteStartArray(name);
        foreach (var id in ids) w.WriteNumberValue(id);
        w.WriteEndArray();
    }

    /// <summary>Parses "1,2,3" into ids (for --ids).</summary>
    public static int[] ParseIds(string s, string option)
    {
        var parts = s.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var ids = new int[parts.Length];
        for (int i = 0; i < parts.Length; i++)
            if (!int.TryParse(parts[i], out ids[i]) || ids[i] < 0)
                throw new UsageException($"--{option}: '{parts[i]}' is not a token id");
        if (ids.Length == 0) throw new UsageException($"--{option}: no ids given");
        return ids;
    }

    public void Dispose()
    {
        Adapters?.Dispose();
        var be = Model.Backend;
        Model.Dispose();
        be.Dispose();
    }

    internal static Encoding Utf8 { get; } = new UTF8Encoding(false);
}
