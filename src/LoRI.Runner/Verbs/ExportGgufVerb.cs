using LoRI.IO;

namespace LoRI.Runner.Verbs;

/// <summary>`export-gguf`: a model (optionally with adapters merged) or an adapter, as llama.cpp GGUF.</summary>
public static class ExportGgufVerb
{
    public static readonly Verb Verb = new("export-gguf", "write a model or an adapter as GGUF for llama.cpp / Ollama / LM Studio",
        "export-gguf --model DIR --out FILE [--dtype f32|f16|bf16]", Run);

    private static int Run(Args a)
    {
        var model = a.Require("model");
        var outPath = a.Require("out");
        GgmlType type;
        try { type = GgmlTypes.Parse(a.Get("dtype") ?? "f32"); }
        catch (ArgumentException e) { throw new UsageException("--dtype: " + e.Message); }
        a.EnsureAllUsed();
        GgufExport.WriteModel(model, outPath, type);
        Console.WriteLine($"wrote {outPath} ({new FileInfo(outPath).Length:N0} bytes, {type})");
        return 0;
    }
}
