using LoRI.Adapters;
using LoRI.IO;
using LoRI.Model;

namespace LoRI.Runner.Verbs;

/// <summary>
/// `export-gguf`: for llama.cpp (and Ollama, LM Studio, LLamaSharp). Without --adapter: the model. With --adapter and
/// --merge: the model with the adapters folded into its weights. With --adapter alone: a GGUF LoRA adapter for
/// `llama-cli --lora` (the model supplies the head layout; several adapters are combined exactly by concatenation).
/// </summary>
public static class ExportGgufVerb
{
    public static readonly Verb Verb = new("export-gguf", "write a model, a merged model or an adapter as GGUF for llama.cpp",
        "export-gguf --model DIR [--adapter DIR[:WEIGHT] ...] [--merge] --out FILE [--dtype f32|f16|bf16]", Run);

    private static int Run(Args a)
    {
        var model = a.Require("model");
        var outPath = a.Require("out");
        GgmlType type;
        try { type = GgmlTypes.Parse(a.Get("dtype") ?? "f32"); }
        catch (ArgumentException e) { throw new UsageException("--dtype: " + e.Message); }
        List<AdapterSpec> specs;
        try { specs = a.GetAll("adapter").Select(AdapterSpec.Parse).ToList(); }
        catch (ArgumentException e) { throw new UsageException("--adapter: " + e.Message); }
        bool merge = a.Flag("merge");
        a.EnsureAllUsed();
        if (merge && specs.Count == 0) throw new UsageException("--merge needs at least one --adapter");

        var config = LlamaConfig.Load(model);
        var adapters = specs.Select(s => ((IReadOnlyList<GgufLoraModule>)GgufLoraModule.From(PeftAdapter.Load(s.Dir, config)), s.Weight)).ToList();
        string what;
        if (specs.Count == 0)
        {
            GgufExport.WriteModel(model, outPath, type);
            what = "model";
        }
        else if (merge)
        {
            GgufExport.WriteModel(model, outPath, type, adapters);
            what = $"model with {specs.Count} adapter(s) merged";
        }
        else
        {
            GgufExport.WriteAdapter(config, adapters, outPath, type, Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(specs[0].Dir))));
            what = $"LoRA adapter ({(specs.Count == 1 ? "1 adapter" : $"{specs.Count} adapters concatenated")})";
        }
        Console.WriteLine($"wrote {outPath}: {what}, {type}, {new FileInfo(outPath).Length:N0} bytes");
        return 0;
    }
}
