using LoRI.Adapters;
using LoRI.Model;

namespace LoRI.Runner.Verbs;

/// <summary>`adapter-info DIR`: rank, alpha, scale, modules, parameter counts and B sparsity of a peft adapter.</summary>
public static class AdapterInfoVerb
{
    public static readonly Verb Verb = new("adapter-info", "rank, alpha, scale, modules, parameter counts and sparsity of an adapter",
        "adapter-info DIR [--json]", Run);

    private static int Run(Args a)
    {
        bool json = a.Flag("json");
        a.EnsureAllUsed();
        if (a.Positional.Count != 1) throw new UsageException("give exactly one adapter folder");
        var dir = a.Positional[0];
        var ad = PeftAdapter.Load(dir);
        var c = ad.Config;
        var scales = ad.Modules.Select(m => m.Scale).Distinct().Order().ToList();
        var ranks = ad.Modules.Select(m => m.Rank).Distinct().Order().ToList();
        var layers = ad.Modules.Select(m => m.Layer).Distinct().Order().ToList();
        if (json)
        {
            Session.WriteJson(w =>
            {
                w.WriteString("adapter", dir);
                w.WriteNumber("r", c.R);
                w.WriteNumber("lora_alpha", c.LoraAlpha);
                w.WriteBoolean("use_rslora", c.UseRslora);
                w.WriteStartArray("ranks"); foreach (var r in ranks) w.WriteNumberValue(r); w.WriteEndArray();
                w.WriteStartArray("scales"); foreach (var s in scales) w.WriteNumberValue(s); w.WriteEndArray();
                w.WriteStartArray("modules"); foreach (var p in ad.Projections) w.WriteStringValue(p.ModuleName()); w.WriteEndArray();
                w.WriteNumber("layers", layers.Count);
                w.WriteNumber("module_count", ad.ModuleCount);
                w.WriteNumber("parameters", ad.ParameterCount);
                w.WriteNumber("trainable_parameters", ad.TrainableParameterCount);
                w.WriteNumber("nonzero_b", ad.NonZeroB);
                w.WriteNumber("b_sparsity", ad.BSparsity);
                if (c.BaseModelName is null) w.WriteNull("base_model"); else w.WriteString("base_model", c.BaseModelName);
                w.WriteStartArray("notes"); foreach (var n in ad.Notes) w.WriteStringValue(n); w.WriteEndArray();
            });
            return 0;
        }
        var o = Console.Out;
        o.WriteLine($"adapter      {dir}");
        o.WriteLine($"base model   {c.BaseModelName ?? "(not stated)"}");
        o.WriteLine($"rank         r = {c.R}" + (ranks.Count > 1 || ranks[0] != c.R ? $" (modules: {string.Join(", ", ranks)})" : ""));
        o.WriteLine($"alpha        {c.LoraAlpha}{(c.UseRslora ? " (rsLoRA: s = alpha / sqrt(r))" : "")}");
        o.WriteLine($"scale        {string.Join(", ", scales)}");
        o.WriteLine($"modules      {string.Join(" ", ad.Projections.Select(p => p.ModuleName()))} in {layers.Count} layers ({ad.ModuleCount} adapted projections)");
        o.WriteLine($"parameters   {ad.ParameterCount:N0} (A and B)");
        o.WriteLine($"trainable    {ad.TrainableParameterCount:N0} (B only, as LoRI trains it)");
        o.WriteLine($"non-zero B   {ad.NonZeroB:N0}");
        o.WriteLine($"B sparsity   {100 * ad.BSparsity:F2}%");
        foreach (var n in ad.Notes) o.WriteLine($"note         {n}");
        return 0;
    }
}
