using LoRI.Adapters;
using LoRI.Model;

namespace LoRI.Runner.Verbs;

/// <summary>`merge-into-model`: a standalone HF model folder with adapters folded into its weights.</summary>
public static class MergeIntoModelVerb
{
    public static readonly Verb Verb = new("merge-into-model", "write a standalone model with adapters merged into its weights",
        "merge-into-model --model DIR --adapter DIR[:WEIGHT] [--adapter ...] --out DIR", Run);

    private static int Run(Args a)
    {
        var model = a.Require("model");
        var specs = a.GetAll("adapter").Select(s =>
        {
            try { return AdapterSpec.Parse(s); }
            catch (ArgumentException e) { throw new UsageException($"--adapter: {e.Message}"); }
        }).ToList();
        if (specs.Count == 0) throw new UsageException("--adapter is required");
        var outDir = a.Require("out");
        a.EnsureAllUsed();
        var config = LlamaConfig.Load(model);
        var adapters = specs.Select(s => (PeftAdapter.Load(s.Dir, config), s.Weight)).ToList();
        MergedModel.Write(model, adapters, outDir);
        Console.Out.WriteLine($"wrote        {outDir} ({adapters.Sum(x => x.Item1.ModuleCount)} adapted projections merged)");
        return 0;
    }
}
