using System.Text.Json;

namespace LoRI.IO;

/// <summary>
/// The weights of a Hugging Face model folder: either one `model.safetensors`, or shards listed by
/// `model.safetensors.index.json` ({"metadata": ..., "weight_map": {tensor name: shard file name}}).
/// The index is untrusted: it is size-bounded, shard names must be plain file names inside the folder, every
/// shard must exist and every mapped tensor must be in the shard the map names. Tensors a shard holds but the
/// map does not list are not exposed. A path to a single `.safetensors` file is accepted too.
/// </summary>
public sealed class Checkpoint : IDisposable
{
    public const string SingleFileName = "model.safetensors";
    public const string IndexFileName = "model.safetensors.index.json";
    public const long MaxIndexBytes = 64L << 20;

    private readonly Dictionary<string, (SafeTensorsFile File, TensorEntry Entry)> _map;
    private readonly List<string> _names;

    /// <summary>The model folder (or the single file when opened from one).</summary>
    public string Path { get; }
    public IReadOnlyList<SafeTensorsFile> Files { get; }
    /// <summary>Tensor names, in the order of the index's weight_map (or the single file's header).</summary>
    public IReadOnlyList<string> Names => _names;

    private Checkpoint(string path, List<SafeTensorsFile> files, Dictionary<string, (SafeTensorsFile, TensorEntry)> map, List<string> names)
    {
        Path = path;
        Files = files;
        _map = map;
        _names = names;
    }

    /// <summary>True when <paramref name="dir"/> holds model.safetensors or model.safetensors.index.json.</summary>
    public static bool Exists(string dir) =>
        File.Exists(System.IO.Path.Combine(dir, IndexFileName)) || File.Exists(System.IO.Path.Combine(dir, SingleFileName));

    public static Checkpoint Open(string path)
    {
        if (File.Exists(path) && path.EndsWith(".safetensors", StringComparison.Ordinal))
            return FromSingle(path, path);
        if (!Directory.Exists(path))
            throw new InvalidFileException(path, "model folder not found");
        var index = System.IO.Path.Combine(path, IndexFileName);
        if (File.Exists(index)) return FromIndex(path, index);
        var single = System.IO.Path.Combine(path, SingleFileName);
        if (File.Exists(single)) return FromSingle(path, single);
        throw new InvalidFileException(path, $"no weights found: expected {SingleFileName} or {IndexFileName}");
    }

    private static Checkpoint FromSingle(string path, string file)
    {
        var f = SafeTensorsFile.Open(file);
        var map = new Dictionary<string, (SafeTensorsFile, TensorEntry)>(StringComparer.Ordinal);
        var names = new List<string>();
        foreach (var t in f.Tensors) { map[t.Name] = (f, t); names.Add(t.Name); }
        return new Checkpoint(path, [f], map, names);
    }

    private static Checkpoint FromIndex(string dir, string index)
    {
        var weightMap = ReadWeightMap(index);
        var files = new List<SafeTensorsFile>();
        var byShard = new Dictionary<string, SafeTensorsFile>(StringComparer.Ordinal);
        try
        {
            var map = new Dictionary<string, (SafeTensorsFile, TensorEntry)>(StringComparer.Ordinal);
            var names = new List<string>();
            foreach (var (tensor, shard) in weightMap)
            {
                if (!byShard.TryGetValue(shard, out var f))
                {
                    var shardPath = System.IO.Path.Combine(dir, shard);
                    if (!File.Exists(shardPath))
                        throw new InvalidFileException(index, $"shard '{shard}' (holding tensor '{tensor}') does not exist in {dir}");
                    f = SafeTensorsFile.Open(shardPath);
                    files.Add(f);
                    byShard[shard] = f;
                }
                if (!f.TryGet(tensor, out var entry))
                    throw new InvalidFileException(index, $"tensor '{tensor}' is mapped to shard '{shard}', which does not contain it");
                map[tensor] = (f, entry);
                names.Add(tensor);
            }
            return new Checkpoint(dir, files, map, names);
        }
        catch
        {
            foreach (var f in files) f.Dispose();
            throw;
        }
    }

    private static List<(string Tensor, string Shard)> ReadWeightMap(string index)
    {
        var doc = JsonFile.Read(index, MaxIndexBytes, "index");
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new InvalidFileException(index, $"expected a JSON object, found {doc.RootElement.ValueKind}");
            if (!doc.RootElement.TryGetProperty("weight_map", out var wm) || wm.ValueKind != JsonValueKind.Object)
                throw new InvalidFileException(index, "missing object field \"weight_map\"");
            var list = new List<(string, string)>();
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var p in wm.EnumerateObject())
            {
                if (p.Value.ValueKind != JsonValueKind.String)
                    throw new InvalidFileException(index, $"weight_map['{p.Name}'] must be a shard file name, found {p.Value.ValueKind}");
                var shard = p.Value.GetString()!;
                if (shard.Length == 0 || shard != System.IO.Path.GetFileName(shard) || shard is "." or ".." || shard.Contains('\\'))
                    throw new InvalidFileException(index, $"weight_map['{p.Name}'] = '{shard}' is not a plain file name in the model folder");
                if (!seen.Add(p.Name))
                    throw new InvalidFileException(index, $"weight_map lists tensor '{p.Name}' twice");
                list.Add((p.Name, shard));
            }
            if (list.Count == 0) throw new InvalidFileException(index, "weight_map is empty");
            return list;
        }
    }

    public bool Contains(string name) => _map.ContainsKey(name);

    public bool TryGet(string name, out SafeTensorsFile file, out TensorEntry entry)
    {
        if (_map.TryGetValue(name, out var v)) { file = v.File; entry = v.Entry; return true; }
        file = null!;
        entry = null!;
        return false;
    }

    /// <summary>The named tensor and the file holding it; throws naming the checkpoint when absent.</summary>
    public (SafeTensorsFile File, TensorEntry Entry) Get(string name) =>
        _map.TryGetValue(name, out var v) ? v : throw new InvalidFileException(Path, $"no tensor named '{name}'");

    public float[] ReadFloat32(string name)
    {
        var (f, e) = Get(name);
        return f.ReadFloat32(e.Name);
    }

    /// <summary>Bytes of all tensors the checkpoint exposes.</summary>
    public long TotalBytes
    {
        get
        {
            long s = 0;
            foreach (var (_, e) in _map.Values) s += e.ByteLength;
            return s;
        }
    }

    public void Dispose()
    {
        foreach (var f in Files) f.Dispose();
    }
}
