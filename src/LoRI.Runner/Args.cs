using System.Globalization;

namespace LoRI.Runner;

/// <summary>Thrown for a bad command line; the CLI prints it with the verb's usage and exits 2.</summary>
public sealed class UsageException(string message) : Exception(message);

/// <summary>
/// A small command-line parser: `--name value`, `--name=value`, boolean `--flag`, repeatable options and
/// positional words. Every option a verb does not read is reported as unknown (a typo never passes silently).
/// </summary>
public sealed class Args
{
    private readonly List<(string Name, string? Value)> _options = new();
    private readonly HashSet<string> _used = new();
    public List<string> Positional { get; } = new();

    public Args(IEnumerable<string> argv)
    {
        var list = argv.ToList();
        for (int i = 0; i < list.Count; i++)
        {
            var a = list[i];
            if (a.StartsWith("--", StringComparison.Ordinal) && a.Length > 2)
            {
                var eq = a.IndexOf('=');
                if (eq > 0) { _options.Add((a[2..eq], a[(eq + 1)..])); continue; }
                var name = a[2..];
                // A following word that is not itself an option is this option's value.
                if (i + 1 < list.Count && !(list[i + 1].StartsWith("--", StringComparison.Ordinal) && list[i + 1].Length > 2))
                    _options.Add((name, list[++i]));
                else
                    _options.Add((name, null));
            }
            else Positional.Add(a);
        }
    }

    public bool Flag(string name)
    {
        _used.Add(name);
        foreach (var (n, v) in _options)
            if (n == name)
            {
                if (v is null || v is "true" or "1") return true;
                if (v is "false" or "0") return false;
                throw new UsageException($"--{name} takes no value (found '{v}')");
            }
        return false;
    }

    public string? Get(string name)
    {
        _used.Add(name);
        string? found = null;
        int count = 0;
        foreach (var (n, v) in _options)
            if (n == name) { found = v ?? throw new UsageException($"--{name} needs a value"); count++; }
        if (count > 1) throw new UsageException($"--{name} given {count} times; it takes one value");
        return found;
    }

    public IReadOnlyList<string> GetAll(string name)
    {
        _used.Add(name);
        var r = new List<string>();
        foreach (var (n, v) in _options)
            if (n == name) r.Add(v ?? throw new UsageException($"--{name} needs a value"));
        return r;
    }

    public string Require(string name) => Get(name) ?? throw new UsageException($"--{name} is required");

    public int GetInt(string name, int fallback)
    {
        var s = Get(name);
        if (s is null) return fallback;
        if (!int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v))
            throw new UsageException($"--{name}: expected an integer, found '{s}'");
        return v;
    }

    public long GetLong(string name, long fallback)
    {
        var s = Get(name);
        if (s is null) return fallback;
        if (!long.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v))
            throw new UsageException($"--{name}: expected an integer, found '{s}'");
        return v;
    }

    public float GetFloat(string name, float fallback)
    {
        var s = Get(name);
        if (s is null) return fallback;
        if (!float.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) || !float.IsFinite(v))
            throw new UsageException($"--{name}: expected a number, found '{s}'");
        return v;
    }

    /// <summary>Throws for any option given on the command line that the verb never asked about.</summary>
    public void EnsureAllUsed()
    {
        foreach (var (n, _) in _options)
            if (!_used.Contains(n)) throw new UsageException($"unknown option --{n}");
    }
}
