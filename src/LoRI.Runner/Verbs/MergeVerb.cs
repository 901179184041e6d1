using System.Globalization;
using LoRI.Adapters;
using LoRI.Tensors;

namespace LoRI.Runner.Verbs;

/// <summary>`merge`: several adapters into one peft adapter, by cat (exact) or linear (with cross terms).</summary>
public static class MergeVerb
{
    public static readonly Verb Verb = new("merge", "merge several adapters into one peft adapter (cat or linear)",
        "merge --adapters DIR1,DIR2,... --weights 0.4,0.4,... --method cat|linear --out DIR [--dtype f32|bf16|f16]", Run);

    private static int Run(Args a)
    {
        var dirs = a.Require("adapters").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var ws = a.Require("weights").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var method = a.Require("method") switch
        {
            "cat" => MergeMethod.Cat, "linear" => MergeMethod.Linear,
            var x => throw new UsageException($"--method: expected cat or linear, found '{x}'"),
        };
        var outDir = a.Require("out");
        var dtype = DTypes.ParseFloat(a.Get("dtype") ?? "f32");
        a.EnsureAllUsed();
        if (dirs.Length < 1) throw new UsageException("--adapters: give at least one folder");
        if (ws.Length != dirs.Length) throw new UsageException($"--weights: {ws.Length} weights for {dirs.Length} adapters");
        var weights = ws.Select(w => float.TryParse(w, NumberStyles.Float, CultureInfo.InvariantCulture, out var f) && float.IsFinite(f)
            ? f : throw new UsageException($"--weights: '{w}' is not a number")).ToArray();

        var adapters = dirs.Select((d, i) => (PeftAdapter.Load(d), weights[i])).ToList();
        var merged = AdapterMerge.Merge(adapters, method);
        PeftAdapter.Save(merged, outDir, dtype);
        var o = Console.Out;
        o.WriteLine($"merged       {dirs.Length} adapters by {method.ToString().ToLowerInvariant()} into {outDir}");
        o.WriteLine($"rank         {merged.Config.R}, lora_alpha {merged.Config.LoraAlpha} (scale 1)");
        o.WriteLine($"modules      {merged.ModuleCount}, parameters {merged.ParameterCount:N0}, non-zero B {merged.NonZeroB:N0}");
        return 0;
    }
}
