using System.Text;

namespace LoRI.IO;

/// <summary>A tensor as a GGUF file declares it: ne is ggml's order (fastest dimension first), Offset is relative to the data section.</summary>
public sealed record GgufTensorInfo(string Name, GgmlType Type, long[] Ne, long Offset)
{
    /// <summary>The row-major shape (ne reversed).</summary>
    public int[] Shape => Ne.Reverse().Select(d => (int)d).ToArray();
    public long ElementCount => Ne.Aggregate(1L, (a, b) => a * b);
    public long ByteLength => ElementCount * Type.Size();
}

/// <summary>
/// A GGUF v2/v3 file read with every count, length and offset checked against the file's size before anything
/// is allocated: metadata and tensor infos in memory, tensor data read on demand. Supports the value types of
/// the format (arrays of scalars or strings) and the tensor types F32, F16 and BF16.
/// </summary>
public sealed class GgufFile
{
    public const int MaxDims = 4;
    public const long MaxStringBytes = 16L << 20;
    public const long MaxCount = 1L << 24;

    public string Path { get; }
    public uint Version { get; }
    public int Alignment { get; }
    /// <summary>Byte offset of the data section in the file.</summary>
    public long DataOffset { get; }
    public long FileLength { get; }
    /// <summary>Metadata in file order.</summary>
    public IReadOnlyList<(string Key, GgufValue Value)> MetadataList { get; }
    public IReadOnlyDictionary<string, GgufValue> Metadata { get; }
    public IReadOnlyList<GgufTensorInfo> Tensors { get; }
    private readonly Dictionary<string, GgufTensorInfo> _byName;

    private GgufFile(string path, uint version, int alignment, long dataOffset, long fileLength,
                     List<(string, GgufValue)> meta, List<GgufTensorInfo> tensors)
    {
        Path = path;
        Version = version;
        Alignment = alignment;
        DataOffset = dataOffset;
        FileLength = fileLength;
        MetadataList = meta;
        var dict = new Dictionary<string, GgufValue>(StringComparer.Ordinal);
        foreach (var (k, v) in meta)
            if (!dict.TryAdd(k, v)) throw new InvalidFileException(path, $"metadata key '{k}' appears twice");
        Metadata = dict;
        Tensors = tensors;
        _byName = new Dictionary<string, GgufTensorInfo>(StringComparer.Ordinal);
        foreach (var t in tensors)
            if (!_byName.TryAdd(t.Name, t)) throw new InvalidFileException(path, $"tensor '{t.Name}' appears twice");
    }

    public GgufValue this[string key] =>
        Metadata.TryGetValue(key, out var v) ? v : throw new InvalidFileException(Path, $"metadata key '{key}' is missing");

    public bool TryGetTensor(string name, out GgufTensorInfo info) => _byName.TryGetValue(name, out info!);

    public GgufTensorInfo Tensor(string name) =>
        _byName.TryGetValue(name, out var t) ? t : throw new InvalidFileException(Path, $"tensor '{name}' is missing");

    /// <summary>A tensor's values as floats (row-major).</summary>
    public float[] ReadFloats(string name)
    {
        var t = Tensor(name);
        if (t.ElementCount > Array.MaxLength) throw new InvalidFileException(Path, $"tensor '{name}' has {t.ElementCount} elements, too many to read into one array");
        var bytes = new byte[t.ByteLength];
        using (var fs = new FileStream(Path, FileMode.Open, FileAccess.Read, FileShare.Read))
        {
            fs.Position = DataOffset + t.Offset;
            fs.ReadExactly(bytes);
        }
        var f = new float[t.ElementCount];
        switch (t.Type)
        {
            case GgmlType.F32: Buffer.BlockCopy(bytes, 0, f, 0, bytes.Length); break;
            case GgmlType.F16: LoRI.Tensors.F16.ToFloat(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(bytes), f); break;
            case GgmlType.BF16: LoRI.Tensors.Bf16.ToFloat(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(bytes), f); break;
        }
        return f;
    }

    public static GgufFile Read(string path)
    {
        using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        var r = new Reader(fs, path);
        uint magic = r.U32("magic");
        if (magic != Gguf.Magic) throw new InvalidFileException(path, $"not a GGUF file: magic 0x{magic:X8}, expected 0x{Gguf.Magic:X8} (\"GGUF\")");
        uint version = r.U32("version");
        if (version is not (2 or 3)) throw new InvalidFileException(path, $"GGUF version {version}, expected 2 or 3");
        long nTensors = r.Count("tensor count", 8 + 4 + 8 + 4 + 8);
        long nKv = r.Count("metadata count", 8 + 4 + 1);

        var meta = new List<(string, GgufValue)>((int)nKv);
        for (long i = 0; i < nKv; i++)
        {
            var key = r.Str($"metadata key {i}");
            var type = (GgufValueType)r.U32($"type of '{key}'");
            meta.Add((key, r.Value(type, key)));
        }
        int alignment = Gguf.DefaultAlignment;
        foreach (var (k, v) in meta)
        {
            if (k != Gguf.AlignmentKey) continue;
            if (v.Type != GgufValueType.UInt32 || (uint)v.Value is 0 or > (1u << 20) || ((uint)v.Value & ((uint)v.Value - 1)) != 0)
                throw new InvalidFileException(path, $"{Gguf.AlignmentKey}: found {v.Type} {v}, expected a uint32 power of two");
            alignment = (int)(uint)v.Value;
        }

        var infos = new List<(string Name, GgmlType Type, long[] Ne, long Offset, long Bytes)>((int)nTensors);
        for (long i = 0; i < nTensors; i++)
        {
            var name = r.Str($"tensor name {i}");
            uint nd = r.U32($"n_dims of tensor '{name}'");
            if (nd is 0 or > MaxDims) throw new InvalidFileException(path, $"tensor '{name}': {nd} dimensions, expected 1..{MaxDims}");
            var ne = new long[nd];
            long n = 1;
            for (int d = 0; d < nd; d++)
            {
                ulong x = r.U64($"ne[{d}] of tensor '{name}'");
                if (x == 0 || x > int.MaxValue) throw new InvalidFileException(path, $"tensor '{name}': ne[{d}] = {x}, expected 1..{int.MaxValue}");
                ne[d] = (long)x;
                n = n > long.MaxValue / ne[d] ? throw new InvalidFileException(path, $"tensor '{name}': element count overflows") : n * ne[d];
            }
            uint t = r.U32($"type of tensor '{name}'");
            if (t is not ((uint)GgmlType.F32 or (uint)GgmlType.F16 or (uint)GgmlType.BF16))
                throw new UnsupportedException($"{path}: tensor '{name}' has ggml type {t}; only F32 (0), F16 (1) and BF16 (30) are read");
            var type = (GgmlType)t;
            ulong off = r.U64($"offset of tensor '{name}'");
            if (off % (ulong)alignment != 0) throw new InvalidFileException(path, $"tensor '{name}': offset {off} is not a multiple of the alignment {alignment}");
            if (off > (ulong)fs.Length) throw new InvalidFileException(path, $"tensor '{name}': offset {off} is past the end of the file ({fs.Length} bytes)");
            if (n > fs.Length / type.Size()) throw new InvalidFileException(path, $"tensor '{name}': {n} elements cannot fit in a file of {fs.Length} bytes");
            infos.Add((name, type, ne, (long)off, n * type.Size()));
        }
        long dataOffset = (fs.Position + alignment - 1) / alignment * alignment;
        var tensors = new List<GgufTensorInfo>(infos.Count);
        foreach (var (name, type, ne, off, bytes) in infos)
        {
            if (dataOffset + off + bytes > fs.Length)
                throw new InvalidFileException(path, $"tensor '{name}': bytes [{off}, {off + bytes}) of the data section run past the end of the file ({fs.Length - dataOffset} data bytes)");
            tensors.Add(new GgufTensorInfo(name, type, ne, off));
        }
        return new GgufFile(path, version, alignment, dataOffset, fs.Length, meta, tensors);
    }

    /// <summary>Little-endian primitives over the stream, each checked against the bytes left.</summary>
    private sealed class Reader(FileStream fs, string path)
    {
        private readonly byte[] _b = new byte[8];

        private Span<byte> Take(int n, string what)
        {
            if (fs.Length - fs.Position < n)
                throw new InvalidFileException(path, $"truncated at byte {fs.Position} while reading {what}: {n} bytes needed, {fs.Length - fs.Position} left");
            fs.ReadExactly(_b, 0, n);
            return _b.AsSpan(0, n);
        }

        public long Left => fs.Length - fs.Position;
        public uint U32(string what) => BitConverter.ToUInt32(Take(4, what));
        public ulong U64(string what) => BitConverter.ToUInt64(Take(8, what));

        /// <summary>A count whose items take at least <paramref name="minBytes"/> each: bounded by what the file can hold.</summary>
        public long Count(string what, int minBytes)
        {
            ulong c = U64(what);
            if (c > (ulong)MaxCount || (long)c * minBytes > Left)
                throw new InvalidFileException(path, $"{what} is {c}: more than the {Left} bytes left can hold (or the limit {MaxCount})");
            return (long)c;
        }

        public string Str(string what)
        {
            ulong len = U64("length of " + what);
            if (len > (ulong)MaxStringBytes || (long)len > Left)
                throw new InvalidFileException(path, $"{what}: string length {len} exceeds the {Math.Min(Left, MaxStringBytes)} bytes allowed here");
            var bytes = new byte[len];
            fs.ReadExactly(bytes);
            try { return new UTF8Encoding(false, true).GetString(bytes); }
            catch (DecoderFallbackException) { throw new InvalidFileException(path, $"{what}: not valid UTF-8"); }
        }

        public GgufValue Value(GgufValueType type, string key)
        {
            if (type != GgufValueType.Array) return new GgufValue(type, Scalar(type, key));
            var et = (GgufValueType)U32($"element type of '{key}'");
            if (et == GgufValueType.Array) throw new UnsupportedException($"{path}: metadata '{key}': nested arrays are not supported");
            int min = ScalarSize(et, key);
            long n = Count($"length of array '{key}'", min);
            Array a = et switch
            {
                GgufValueType.UInt8 => new byte[n], GgufValueType.Int8 => new sbyte[n],
                GgufValueType.UInt16 => new ushort[n], GgufValueType.Int16 => new short[n],
                GgufValueType.UInt32 => new uint[n], GgufValueType.Int32 => new int[n],
                GgufValueType.Float32 => new float[n], GgufValueType.Bool => new bool[n],
                GgufValueType.String => new string[n], GgufValueType.UInt64 => new ulong[n],
                GgufValueType.Int64 => new long[n], _ => new double[n],
            };
            // Switch on the declared type, not on the array: the CLR lets an int[] pass as a uint[] (and so on).
            for (long i = 0; i < n; i++)
            {
                var v = Scalar(et, key);
                switch (et)
                {
                    case GgufValueType.UInt8: ((byte[])a)[i] = (byte)v; break;
                    case GgufValueType.Int8: ((sbyte[])a)[i] = (sbyte)v; break;
                    case GgufValueType.UInt16: ((ushort[])a)[i] = (ushort)v; break;
                    case GgufValueType.Int16: ((short[])a)[i] = (short)v; break;
                    case GgufValueType.UInt32: ((uint[])a)[i] = (uint)v; break;
                    case GgufValueType.Int32: ((int[])a)[i] = (int)v; break;
                    case GgufValueType.Float32: ((float[])a)[i] = (float)v; break;
                    case GgufValueType.Bool: ((bool[])a)[i] = (bool)v; break;
                    case GgufValueType.String: ((string[])a)[i] = (string)v; break;
                    case GgufValueType.UInt64: ((ulong[])a)[i] = (ulong)v; break;
                    case GgufValueType.Int64: ((long[])a)[i] = (long)v; break;
                    default: ((double[])a)[i] = (double)v; break;
                }
            }
            return new GgufValue(GgufValueType.Array, a, et);
        }

        private int ScalarSize(GgufValueType t, string key) => t switch
        {
            GgufValueType.UInt8 or GgufValueType.Int8 or GgufValueType.Bool => 1,
            GgufValueType.UInt16 or GgufValueType.Int16 => 2,
            GgufValueType.UInt32 or GgufValueType.Int32 or GgufValueType.Float32 => 4,
            GgufValueType.UInt64 or GgufValueType.Int64 or GgufValueType.Float64 or GgufValueType.String => 8,
            _ => throw new InvalidFileException(path, $"metadata '{key}': unknown value type {(uint)t}"),
        };

        private object Scalar(GgufValueType t, string key)
        {
            string what = $"value of '{key}'";
            return t switch
            {
                GgufValueType.UInt8 => Take(1, what)[0],
                GgufValueType.Int8 => (sbyte)Take(1, what)[0],
                GgufValueType.UInt16 => BitConverter.ToUInt16(Take(2, what)),
                GgufValueType.Int16 => BitConverter.ToInt16(Take(2, what)),
                GgufValueType.UInt32 => BitConverter.ToUInt32(Take(4, what)),
                GgufValueType.Int32 => BitConverter.ToInt32(Take(4, what)),
                GgufValueType.Float32 => BitConverter.ToSingle(Take(4, what)),
                GgufValueType.Bool => Take(1, what)[0] switch
                {
                    0 => false, 1 => true,
                    var b => throw new InvalidFileException(path, $"metadata '{key}': bool byte {b}, expected 0 or 1"),
                },
                GgufValueType.String => Str(what),
                GgufValueType.UInt64 => BitConverter.ToUInt64(Take(8, what)),
                GgufValueType.Int64 => BitConverter.ToInt64(Take(8, what)),
                GgufValueType.Float64 => BitConverter.ToDouble(Take(8, what)),
                _ => throw new InvalidFileException(path, $"metadata '{key}': unknown value type {(uint)t}"),
            };
        }
    }
}
