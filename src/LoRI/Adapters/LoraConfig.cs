using System.Text.RegularExpressions;
using LoRI.Model;

namespace LoRI.Adapters;

/// <summary>
/// The parts of a peft LoraConfig (adapter_config.json) that decide what an adapter computes:
/// y = W x + s * B (A x) with s = lora_alpha / r, or lora_alpha / sqrt(r) when use_rslora.
/// rank_pattern / alpha_pattern override r / lora_alpha per module: a key applies to a module whose full
/// name (e.g. `model.layers.3.self_attn.q_proj`) matches the regular expression `.*\.{key}$` from its start,
/// the first matching key in file order winning (peft's get_pattern_key).
/// </summary>
public sealed record LoraConfig
{
    public int R { get; init; } = 8;
    public double LoraAlpha { get; init; } = 8;
    public bool UseRslora { get; init; }
    public double LoraDropout { get; init; }
    /// <summary>Pattern key -> rank, in file order.</summary>
    public IReadOnlyList<KeyValuePair<string, int>> RankPattern { get; init; } = [];
    /// <summary>Pattern key -> alpha, in file order.</summary>
    public IReadOnlyList<KeyValuePair<string, double>> AlphaPattern { get; init; } = [];
    /// <summary>Module names (q_proj ...) as the file lists them.</summary>
    public IReadOnlyList<string> TargetModules { get; init; } = [];
    public string? BaseModelName { get; init; }
    public string TaskType { get; init; } = "CAUSAL_LM";

    /// <summary>The module's full name as peft matches patterns against it: model.layers.{i}.{block}.{proj}.</summary>
    public static string ModuleKey(int layer, Proj p) => p.HfPrefix(layer);

    /// <summary>
    /// The rank_pattern / alpha_pattern key we write for one module: `layers.{i}.{block}.{proj}`. The full name
    /// would not match under peft 0.12's rule (it needs a dot before the key); this form matches there and in
    /// later peft versions.
    /// </summary>
    public static string PatternKey(int layer, Proj p) => $"layers.{layer}.{p.Block()}.{p.ModuleName()}";

    public int RankFor(int layer, Proj p) => Lookup(RankPattern, ModuleKey(layer, p), R);
    public double AlphaFor(int layer, Proj p) => Lookup(AlphaPattern, ModuleKey(layer, p), LoraAlpha);

    public double ScaleFor(int layer, Proj p) => Scale(AlphaFor(layer, p), RankFor(layer, p), UseRslora);

    public static double Scale(double alpha, int rank, bool rslora) => rslora ? alpha / Math.Sqrt(rank) : alpha / rank;

    private static T Lookup<T>(IReadOnlyList<KeyValuePair<string, T>> pattern, string module, T fallback)
    {
        foreach (var (key, value) in pattern)
            if (PatternMatches(key, module)) return value;
        return fallback;
    }

    /// <summary>peft's rule: re.match(rf".*\.{key}$", module).</summary>
    public static bool PatternMatches(string key, string module)
    {
        try
        {
            return Regex.IsMatch(module, @"\A(?:.*\." + key + "$)", RegexOptions.CultureInvariant, TimeSpan.FromSeconds(1));
        }
        catch (ArgumentException e)
        {
            throw new LoRIException($"pattern key '{key}' is not a valid regular expression: {e.Message}", e);
        }
    }

    /// <summary>
    /// A config describing modules whose (rank, alpha) pairs are given: r and lora_alpha are the most common
    /// pair, other modules get full-name entries in rank_pattern / alpha_pattern.
    /// </summary>
    public static LoraConfig Describe(IEnumerable<(int Layer, Proj Proj, int Rank, double Alpha)> modules, bool useRslora,
                                      string? baseModel, double dropout = 0)
    {
        var list = modules.ToList();
        if (list.Count == 0) throw new ArgumentException("an adapter needs at least one module");
        var common = list.GroupBy(m => (m.Rank, m.Alpha)).OrderByDescending(g => g.Count()).ThenByDescending(g => g.Key.Rank).First().Key;
        var ranks = new List<KeyValuePair<string, int>>();
        var alphas = new List<KeyValuePair<string, double>>();
        foreach (var m in list.OrderBy(m => m.Layer).ThenBy(m => m.Proj))
        {
            string key = PatternKey(m.Layer, m.Proj);
            if (m.Rank != common.Rank) ranks.Add(new(key, m.Rank));
            if (m.Alpha != common.Alpha) alphas.Add(new(key, m.Alpha));
        }
        return new LoraConfig
        {
            R = common.Rank,
            LoraAlpha = common.Alpha,
            UseRslora = useRslora,
            LoraDropout = dropout,
            RankPattern = ranks,
            AlphaPattern = alphas,
            TargetModules = list.Select(m => m.Proj).Distinct().Order().Select(p => p.ModuleName()).ToList(),
            BaseModelName = baseModel,
        };
    }
}
