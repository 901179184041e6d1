using System.Text;
using LoRI.IO;
using LoRI.Model;
using LoRI.Plotting;
using LoRI.Tensors;

namespace LoRI.Adapters;

/// <summary>Over which B elements one magnitude threshold is computed.</summary>
public enum MaskScope
{
    /// <summary>One threshold over all B matrices of the adapter (the LoRI reference rule).</summary>
    Global,
    /// <summary>One threshold per decoder layer (its up to seven B matrices pooled).</summary>
    Layer,
    /// <summary>One threshold per projection type (e.g. all q_proj B matrices across layers pooled).</summary>
    Module,
    /// <summary>One threshold per B matrix.</summary>
    Matrix,
}

/// <summary>The mask of one B matrix: Keep [Out, Rank], 1 = trainable / kept, 0 = held at zero.</summary>
public sealed record MaskEntry(int Layer, Proj Proj, int Out, int Rank, byte[] Keep)
{
    public long Kept
    {
        get
        {
            long n = 0;
            foreach (var b in Keep) n += b;
            return n;
        }
    }

    public double Density => (double)Kept / Keep.Length;

    /// <summary>The key in a mask file: the B key of the adapter file (no `.default`).</summary>
    public string Key => LoraModule.PeftKey(Layer, Proj, 'B');
}

/// <summary>
/// LoRI's sparsity masks over B (method doc, section 2): pool |B| over a scope, keep the top
/// k = floor((1 - sparsity) * N) magnitudes: threshold = the k-th largest |B|, mask = |B| >= threshold, so
/// ties at the threshold are all kept and a mask may keep more than k. k = 0 keeps nothing. The threshold is
/// found exactly by a two-pass radix select on the float bits (|B| as an unsigned integer orders like the
/// float), with no copy of the pooled values.
/// </summary>
public sealed class LoraMask
{
    private readonly SortedDictionary<(int Layer, Proj Proj), MaskEntry> _entries = new();

    public LoraMask(IEnumerable<MaskEntry> entries)
    {
        foreach (var e in entries)
        {
            if (e.Keep.Length != (long)e.Out * e.Rank) throw new ArgumentException($"mask {e.Key}: {e.Keep.Length} values for [{e.Out}, {e.Rank}]");
            if (!_entries.TryAdd((e.Layer, e.Proj), e)) throw new ArgumentException($"mask {e.Key} given twice");
        }
    }

    public IEnumerable<MaskEntry> Entries => _entries.Values;

    /// <summary>Per pooled group (one for the global scope): its name, N, k and threshold (+inf when k = 0).</summary>
    public List<(string Group, long N, long K, float Threshold)> Thresholds { get; } = new();
    public MaskEntry? this[int layer, Proj p] => _entries.TryGetValue((layer, p), out var e) ? e : null;
    public long Kept => _entries.Values.Sum(e => e.Kept);
    public long Total => _entries.Values.Sum(e => (long)e.Keep.Length);
    public double Density => (double)Kept / Total;

    /// <summary>k = floor((1 - sparsity) * n), computed in double as the reference's Python does.</summary>
    public static long KeepCount(double sparsity, long n)
    {
        if (!(sparsity >= 0 && sparsity <= 1)) throw new ArgumentOutOfRangeException(nameof(sparsity), $"sparsity must be in [0, 1], found {sparsity}");
        return Math.Clamp((long)Math.Floor((1 - sparsity) * n), 0, n);
    }

    public static LoraMask Compute(LoraAdapter adapter, double sparsity, MaskScope scope = MaskScope.Global)
    {
        var modules = adapter.Modules.ToList();
        foreach (var m in modules)
            foreach (var v in m.B)
                if (float.IsNaN(v)) throw new LoRIException($"tensor '{m.Key('B')}' holds NaN: a mask cannot be computed");
        IEnumerable<(string Name, List<LoraModule> Modules)> groups = scope switch
        {
            MaskScope.Global => [("all", modules)],
            MaskScope.Layer => modules.GroupBy(m => m.Layer).Select(g => ($"layer {g.Key}", g.ToList())),
            MaskScope.Module => modules.GroupBy(m => m.Proj).Select(g => (g.Key.ModuleName(), g.ToList())),
            MaskScope.Matrix => modules.Select(m => (m.Name(), new List<LoraModule> { m })),
            _ => throw new ArgumentOutOfRangeException(nameof(scope)),
        };
        var entries = new List<MaskEntry>();
        var thresholds = new List<(string, long, long, float)>();
        foreach (var (name, g) in groups)
        {
            long n = g.Sum(m => (long)m.B.Length);
            long k = KeepCount(sparsity, n);
            uint threshold = k == 0 ? uint.MaxValue : KthLargestAbsBits(g.Select(m => m.B), k);
            thresholds.Add((name, n, k, k == 0 ? float.PositiveInfinity : BitConverter.UInt32BitsToSingle(threshold)));
            foreach (var m in g)
            {
                var keep = new byte[m.B.Length];
                for (int i = 0; i < keep.Length; i++) keep[i] = AbsBits(m.B[i]) >= threshold ? (byte)1 : (byte)0;
                entries.Add(new MaskEntry(m.Layer, m.Proj, m.Out, m.Rank, keep));
            }
        }
        var mask = new LoraMask(entries);
        mask.Thresholds.AddRange(thresholds);
        return mask;
    }

    private static uint AbsBits(float v) => BitConverter.SingleToUInt32Bits(v) & 0x7FFF_FFFF;

    /// <summary>The bits of the k-th largest |v| (1-based) over all arrays; k must be in [1, total count].</summary>
    public static uint KthLargestAbsBits(IEnumerable<float[]> arrays, long k)
    {
        var list = arrays.ToList();
        long n = list.Sum(a => (long)a.Length);
        if (k < 1 || k > n) throw new ArgumentOutOfRangeException(nameof(k), $"k = {k} is outside [1, {n}]");
        var hist = new long[1 << 16];
        foreach (var a in list)
            foreach (var v in a) hist[AbsBits(v) >> 16]++;
        long above = 0;
        int hi = (1 << 16) - 1;
        for (; hi > 0 && above + hist[hi] < k; hi--) above += hist[hi];
        long need = k - above;
        Array.Clear(hist);
        foreach (var a in list)
            foreach (var v in a)
            {
                uint b = AbsBits(v);
                if (b >> 16 == (uint)hi) hist[b & 0xFFFF]++;
            }
        long seen = 0;
        int lo = (1 << 16) - 1;
        for (; lo > 0 && seen + hist[lo] < need; lo--) seen += hist[lo];
        return ((uint)hi << 16) | (uint)lo;
    }

    /// <summary>The threshold value of a pooled set (the k-th largest |B|), for reports and tests.</summary>
    public static float KthLargestAbs(IEnumerable<float[]> arrays, long k) => BitConverter.UInt32BitsToSingle(KthLargestAbsBits(arrays, k));

    /// <summary>Zeroes every B element outside the mask (LoRI-S continuing from LoRI-D weights).</summary>
    public void ApplyTo(LoraAdapter adapter)
    {
        foreach (var m in adapter.Modules)
        {
            var e = this[m.Layer, m.Proj] ?? throw new ShapeMismatchException($"the mask has no entry for {m.Key('B')}");
            if (e.Out != m.Out || e.Rank != m.Rank)
                throw new ShapeMismatchException($"mask {e.Key} is [{e.Out}, {e.Rank}], the adapter's B is [{m.Out}, {m.Rank}]");
            for (int i = 0; i < m.B.Length; i++) if (e.Keep[i] == 0) m.B[i] = 0;
        }
    }

    /// <summary>Density (kept fraction) per layer and projection; NaN where the adapter has no such module.</summary>
    public double[,] DensityGrid(out int[] layers, out Proj[] projs)
    {
        layers = _entries.Keys.Select(k => k.Layer).Distinct().Order().ToArray();
        projs = _entries.Keys.Select(k => k.Proj).Distinct().Order().ToArray();
        var g = new double[layers.Length, projs.Length];
        for (int i = 0; i < layers.Length; i++)
            for (int j = 0; j < projs.Length; j++)
                g[i, j] = this[layers[i], projs[j]]?.Density ?? double.NaN;
        return g;
    }

    /// <summary>A heatmap of the kept fraction per layer (rows) and projection (columns), coloured from 0 to the highest density.</summary>
    public Canvas DensityPlot(string title)
    {
        var g = DensityGrid(out var layers, out var projs);
        double max = 0;
        foreach (var v in g) if (!double.IsNaN(v)) max = Math.Max(max, v);
        return Charts.Heatmap(g, layers.Select(l => $"L{l}").ToList(), projs.Select(p => p.ModuleName()[..^5]).ToList(), title,
            0, max > 0 ? max : 1, "kept");
    }

    /// <summary>A text table of kept percentages: one row per layer, one column per projection, plus totals.</summary>
    public string DensityTable()
    {
        var g = DensityGrid(out var layers, out var projs);
        var sb = new StringBuilder();
        sb.Append("layer");
        foreach (var p in projs) sb.Append($" {p.ModuleName(),9}");
        sb.AppendLine($" {"all",9}");
        for (int i = 0; i < layers.Length; i++)
        {
            sb.Append($"{layers[i],5}");
            for (int j = 0; j < projs.Length; j++) sb.Append(double.IsNaN(g[i, j]) ? $" {"-",9}" : $" {100 * g[i, j],8:F2}%");
            var row = _entries.Values.Where(e => e.Layer == layers[i]).ToList();
            sb.AppendLine($" {100.0 * row.Sum(e => e.Kept) / row.Sum(e => (long)e.Keep.Length),8:F2}%");
        }
        sb.Append("  all");
        foreach (var p in projs)
        {
            var col = _entries.Values.Where(e => e.Proj == p).ToList();
            sb.Append($" {100.0 * col.Sum(e => e.Kept) / col.Sum(e => (long)e.Keep.Length),8:F2}%");
        }
        sb.AppendLine($" {100 * Density,8:F2}%");
        return sb.ToString();
    }

    /// <summary>
    /// Writes one BOOL tensor [Out, Rank] per B key (the adapter file's keys, no `.default`), sorted, atomically.
    /// </summary>
    public void Save(string path)
    {
        var w = new SafeTensorsWriter();
        w.Metadata["format"] = "pt";
        foreach (var e in _entries.Values.OrderBy(e => e.Key, StringComparer.Ordinal))
            w.Add(e.Key, DType.Bool, [e.Out, e.Rank], e.Keep);
        var dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir is not null) Directory.CreateDirectory(dir);
        w.Write(path);
    }

    /// <summary>Reads a mask file: BOOL or U8 tensors of 0/1 under B keys (`.default` tolerated).</summary>
    public static LoraMask Load(string path)
    {
        if (!File.Exists(path)) throw new InvalidFileException(path, "mask file not found");
        using var f = SafeTensorsFile.Open(path);
        var entries = new List<MaskEntry>();
        foreach (var t in f.Tensors)
        {
            if (!PeftAdapter.TryParseBKey(t.Name, out int layer, out var p))
                throw new InvalidFileException(path, $"tensor '{t.Name}' is not a lora_B key (base_model.model.model.layers.{{i}}.{{self_attn|mlp}}.{{proj}}.lora_B.weight)");
            if (t.DType is not (DType.Bool or DType.U8))
                throw new InvalidFileException(path, $"mask '{t.Name}' is {t.DType.SafetensorsName()}; expected BOOL or U8");
            if (t.Shape.Length != 2) throw new InvalidFileException(path, $"mask '{t.Name}' has shape {DTypes.ShapeString(t.Shape)}; expected [out, rank]");
            var keep = f.Bytes(t).ToArray();
            for (int i = 0; i < keep.Length; i++)
                if (keep[i] > 1) throw new InvalidFileException(path, $"mask '{t.Name}' holds {keep[i]} at element {i}; expected 0 or 1");
            if (entries.Any(e => e.Layer == layer && e.Proj == p)) throw new InvalidFileException(path, $"mask for '{t.Name}' appears twice");
            entries.Add(new MaskEntry(layer, p, t.Shape[0], t.Shape[1], keep));
        }
        if (entries.Count == 0) throw new InvalidFileException(path, "the mask file holds no tensors");
        return new LoraMask(entries);
    }
}
