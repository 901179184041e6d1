using System.Globalization;
using LoRI.Model;

namespace LoRI.Adapters;

/// <summary>An adapter folder and its weight, as `--adapter DIR[:WEIGHT]` writes it (weight 1 when omitted).</summary>
public sealed record AdapterSpec(string Dir, float Weight)
{
    /// <summary>Parses `DIR` or `DIR:WEIGHT`; the text after the last ':' is a weight only when it is a finite number.</summary>
    public static AdapterSpec Parse(string s)
    {
        if (string.IsNullOrWhiteSpace(s)) throw new ArgumentException("an adapter needs a folder (DIR or DIR:WEIGHT)");
        int colon = s.LastIndexOf(':');
        if (colon > 0 && float.TryParse(s[(colon + 1)..], NumberStyles.Float, CultureInfo.InvariantCulture, out var w))
        {
            if (!float.IsFinite(w)) throw new ArgumentException($"adapter weight in '{s}' is not a finite number");
            return new AdapterSpec(s[..colon], w);
        }
        return new AdapterSpec(s, 1f);
    }

    /// <summary>Loads every adapter (checked against the model) and attaches them unmerged or merged.</summary>
    public static AdapterSet Attach(LlamaModel model, IEnumerable<AdapterSpec> specs, bool merge)
    {
        var list = specs.Select(s => (PeftAdapter.Load(s.Dir, model.Config), s.Weight)).ToList();
        return AdapterSet.Attach(model, list, merge);
    }
}
