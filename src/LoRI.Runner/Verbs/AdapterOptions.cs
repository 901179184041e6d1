using LoRI.Adapters;
using LoRI.Model;

namespace LoRI.Runner.Verbs;

/// <summary>
/// The adapter options of the computing verbs (generate, score, eval): `--adapter DIR[:WEIGHT]` (repeatable)
/// and `--merge`. Usage: `using var adapters = AdapterOptions.Attach(args, session.Model);` after loading.
/// </summary>
public static class AdapterOptions
{
    public const string Usage = "[--adapter DIR[:WEIGHT] ...] [--merge]";

    public static IReadOnlyList<AdapterSpec> Read(Args a, out bool merge)
    {
        var specs = new List<AdapterSpec>();
        foreach (var s in a.GetAll("adapter"))
        {
            try { specs.Add(AdapterSpec.Parse(s)); }
            catch (ArgumentException e) { throw new UsageException($"--adapter: {e.Message}"); }
        }
        merge = a.Flag("merge");
        if (merge && specs.Count == 0) throw new UsageException("--merge needs at least one --adapter");
        return specs;
    }

    /// <summary>Reads the options and attaches the adapters to the model; null when no --adapter was given.</summary>
    public static AdapterSet? Attach(Args a, LlamaModel model)
    {
        var specs = Read(a, out bool merge);
        return specs.Count == 0 ? null : AdapterSpec.Attach(model, specs, merge);
    }
}
