using System.Buffers;
using System.Text;

namespace LoRI.IO;

/// <summary>
/// Writes a GGUF v3 file (ggml's container for llama.cpp models and adapters):
/// <code>
/// u32 magic "GGUF" | u32 version 3 | u64 tensor count | u64 metadata count
/// metadata: string key, u32 value type, value  (strings: u64 byte length + UTF-8; arrays: u32 element type, u64 count, elements)
/// tensor infos: string name, u32 n_dims, u64 ne[n_dims] (fastest dimension first), u32 ggml type, u64 data offset
/// padding to the alignment, then each tensor's data at its offset (offsets multiples of the alignment)
/// </code>
/// All numbers little-endian. Shapes are given here row-major ([rows, cols], as safetensors and the rest of
/// this code base write them) and stored reversed as ggml's ne ({cols, rows}). The alignment is
/// `general.alignment` when set (a power of two), else 32. Tensor data is streamed through
/// <see cref="TensorFill"/> in chunks; the file is written to `path.tmp`, flushed, then renamed.
/// </summary>
public sealed class GgufWriter
{
    public const int ChunkBytes = 4 << 20;

    private readonly List<(string Key, GgufValue Value)> _meta = new();
    private readonly Dictionary<string, int> _metaIndex = new(StringComparer.Ordinal);
    private readonly List<Item> _tensors = new();
    private readonly HashSet<string> _names = new(StringComparer.Ordinal);

    private sealed record Item(string Name, GgmlType Type, long[] Ne, long Bytes, TensorFill Fill);

    public int TensorCount => _tensors.Count;
    public IEnumerable<(string Key, GgufValue Value)> Metadata => _meta;

    /// <summary>Sets a metadata value (a later call with the same key replaces it in place).</summary>
    public GgufWriter Set(string key, GgufValue value)
    {
        if (string.IsNullOrEmpty(key)) throw new ArgumentException("GGUF metadata key must not be empty");
        Check(value, key);
        if (_metaIndex.TryGetValue(key, out int i)) _meta[i] = (key, value);
        else
        {
            _metaIndex[key] = _meta.Count;
            _meta.Add((key, value));
        }
        return this;
    }

    public GgufWriter Set(string key, string v) => Set(key, GgufValue.Of(v));
    public GgufWriter Set(string key, uint v) => Set(key, GgufValue.Of(v));
    public GgufWriter Set(string key, int v) => Set(key, GgufValue.Of(v));
    public GgufWriter Set(string key, float v) => Set(key, GgufValue.Of(v));
    public GgufWriter Set(string key, bool v) => Set(key, GgufValue.Of(v));
    public GgufWriter Set(string key, string[] v) => Set(key, GgufValue.Of(v));
    public GgufWriter Set(string key, int[] v) => Set(key, GgufValue.Of(v));
    public GgufWriter Set(string key, float[] v) => Set(key, GgufValue.Of(v));

    /// <summary>Declares a tensor of row-major <paramref name="shape"/> whose bytes <paramref name="fill"/> produces when the file is written.</summary>
    public GgufWriter AddTensor(string name, GgmlType type, int[] shape, TensorFill fill)
    {
        ArgumentNullException.ThrowIfNull(fill);
        if (string.IsNullOrEmpty(name) || Encoding.UTF8.GetByteCount(name) > 63)
            throw new ArgumentException($"GGUF tensor name '{name}' must be 1..63 bytes (ggml's limit)");
        if (shape.Length is 0 or > 4) throw new ArgumentException($"tensor '{name}': GGUF tensors have 1 to 4 dimensions, got {shape.Length}");
        long n = 1;
        foreach (var d in shape)
        {
            if (d <= 0) throw new ArgumentException($"tensor '{name}': dimension {d} in shape [{string.Join(", ", shape)}] is not positive");
            n = checked(n * d);
        }
        if (!_names.Add(name)) throw new ArgumentException($"tensor '{name}' is declared twice");
        var ne = shape.Reverse().Select(d => (long)d).ToArray();
        _tensors.Add(new Item(name, type, ne, checked(n * type.Size()), fill));
        return this;
    }

    /// <summary>Declares a tensor from floats in memory, stored as <paramref name="type"/> (F16/BF16 rounded to nearest even).</summary>
    public GgufWriter AddTensor(string name, GgmlType type, int[] shape, float[] data)
    {
        long n = 1;
        foreach (var d in shape) n *= d;
        if (data.LongLength != n) throw new ArgumentException($"tensor '{name}': shape [{string.Join(", ", shape)}] needs {n} values, got {data.LongLength}");
        return AddTensor(name, type, shape, (dst, offset) => GgufEncode.Floats(data, type, offset, dst));
    }

    private int Alignment()
    {
        if (!_metaIndex.TryGetValue(Gguf.AlignmentKey, out int i)) return Gguf.DefaultAlignment;
        var v = _meta[i].Value;
        if (v.Type != GgufValueType.UInt32) throw new ArgumentException($"{Gguf.AlignmentKey} must be a uint32, found {v.Type}");
        uint a = (uint)v.Value;
        if (a == 0 || (a & (a - 1)) != 0 || a > 1 << 20) throw new ArgumentException($"{Gguf.AlignmentKey} must be a power of two up to 2^20, found {a}");
        return (int)a;
    }

    /// <summary>Writes the file atomically: `path.tmp` first, flushed to disk, then renamed over <paramref name="path"/>.</summary>
    public void Write(string path)
    {
        int align = Alignment();
        var header = BuildHeader(align, out var offsets);
        string tmp = path + ".tmp";
        try
        {
            using (var fs = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16))
            {
                fs.Write(header);
                long pos = header.Length;
                var buf = ArrayPool<byte>.Shared.Rent(ChunkBytes);
                try
                {
                    for (int t = 0; t < _tensors.Count; t++)
                    {
                        long start = header.Length + offsets[t];
                        WriteZeros(fs, start - pos);
                        var item = _tensors[t];
                        for (long done = 0; done < item.Bytes;)
                        {
                            int n = (int)Math.Min(ChunkBytes, item.Bytes - done);
                            var span = buf.AsSpan(0, n);
                            item.Fill(span, done);
                            fs.Write(span);
                            done += n;
                        }
                        pos = start + item.Bytes;
                    }
                    // The data section ends padded too, as ggml's own writer leaves it.
                    WriteZeros(fs, Pad(pos, align) - pos);
                }
                finally { ArrayPool<byte>.Shared.Return(buf); }
                fs.Flush(flushToDisk: true);
            }
            File.Move(tmp, path, overwrite: true);
        }
        catch
        {
            try { File.Delete(tmp); } catch (IOException) { }
            throw;
        }
    }

    private byte[] BuildHeader(int align, out long[] offsets)
    {
        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms, Encoding.UTF8, leaveOpen: true))
        {
            w.Write(Gguf.Magic);
            w.Write(Gguf.Version);
            w.Write((ulong)_tensors.Count);
            w.Write((ulong)_meta.Count);
            foreach (var (key, value) in _meta)
            {
                WriteString(w, key);
                w.Write((uint)value.Type);
                WriteValue(w, value);
            }
            offsets = new long[_tensors.Count];
            long off = 0;
            for (int t = 0; t < _tensors.Count; t++)
            {
                var it = _tensors[t];
                WriteString(w, it.Name);
                w.Write((uint)it.Ne.Length);
                foreach (var d in it.Ne) w.Write((ulong)d);
                w.Write((uint)it.Type);
                w.Write((ulong)off);
                offsets[t] = off;
                off = Pad(off + it.Bytes, align);
            }
        }
        long len = Pad(ms.Length, align);
        ms.SetLength(len);
        return ms.ToArray();
    }

    private static long Pad(long x, int align) => (x + align - 1) / align * align;

    private static void WriteZeros(Stream s, long n)
    {
        Span<byte> z = stackalloc byte[256];
        z.Clear();
        while (n > 0)
        {
            int k = (int)Math.Min(n, z.Length);
            s.Write(z[..k]);
            n -= k;
        }
    }

    private static void WriteString(BinaryWriter w, string s)
    {
        var b = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)b.Length);
        w.Write(b);
    }

    private static void WriteValue(BinaryWriter w, GgufValue v)
    {
        if (v.Type != GgufValueType.Array)
        {
            WriteScalar(w, v.Type, v.Value);
            return;
        }
        var a = (Array)v.Value;
        w.Write((uint)v.ElementType);
        w.Write((ulong)a.Length);
        foreach (var e in a) WriteScalar(w, v.ElementType, e!);
    }

    private static void WriteScalar(BinaryWriter w, GgufValueType t, object o)
    {
        switch (t)
        {
            case GgufValueType.UInt8: w.Write((byte)o); break;
            case GgufValueType.Int8: w.Write((sbyte)o); break;
            case GgufValueType.UInt16: w.Write((ushort)o); break;
            case GgufValueType.Int16: w.Write((short)o); break;
            case GgufValueType.UInt32: w.Write((uint)o); break;
            case GgufValueType.Int32: w.Write((int)o); break;
            case GgufValueType.Float32: w.Write((float)o); break;
            case GgufValueType.Bool: w.Write((bool)o ? (byte)1 : (byte)0); break;
            case GgufValueType.String: WriteString(w, (string)o); break;
            case GgufValueType.UInt64: w.Write((ulong)o); break;
            case GgufValueType.Int64: w.Write((long)o); break;
            case GgufValueType.Float64: w.Write((double)o); break;
            default: throw new ArgumentException($"GGUF value type {t} cannot be written as a scalar");
        }
    }

    /// <summary>Checks that the CLR type held matches the declared GGUF type, so Write cannot fail halfway.</summary>
    private static void Check(GgufValue v, string key)
    {
        static bool Scalar(GgufValueType t, object o) => (t, o) switch
        {
            (GgufValueType.UInt8, byte) or (GgufValueType.Int8, sbyte) or (GgufValueType.UInt16, ushort)
                or (GgufValueType.Int16, short) or (GgufValueType.UInt32, uint) or (GgufValueType.Int32, int)
                or (GgufValueType.Float32, float) or (GgufValueType.Bool, bool) or (GgufValueType.String, string)
                or (GgufValueType.UInt64, ulong) or (GgufValueType.Int64, long) or (GgufValueType.Float64, double) => true,
            _ => false,
        };
        bool ok = v.Type == GgufValueType.Array
            ? v.Value is Array a && v.ElementType != GgufValueType.Array && a.Rank == 1
              && a.Cast<object?>().All(e => e is not null && Scalar(v.ElementType, e))
            : Scalar(v.Type, v.Value);
        if (!ok)
            throw new ArgumentException($"metadata '{key}': declared {v.Type}{(v.Type == GgufValueType.Array ? $" of {v.ElementType}" : "")}, but holds a {v.Value.GetType().Name}");
    }
}

/// <summary>Float values to the bytes of a ggml tensor type, for a byte range of the tensor.</summary>
public static class GgufEncode
{
    /// <summary>Writes bytes [byteOffset, byteOffset + dst.Length) of <paramref name="src"/> encoded as <paramref name="type"/>.</summary>
    public static void Floats(ReadOnlySpan<float> src, GgmlType type, long byteOffset, Span<byte> dst)
    {
        int es = type.Size();
        long first = byteOffset / es;
        long last = (byteOffset + dst.Length + es - 1) / es; // exclusive
        int skip = (int)(byteOffset - first * es);
        Span<byte> tmp = stackalloc byte[4];
        int w = 0;
        // Whole elements through a vectorised path; a partial element at either end byte by byte.
        if (skip == 0 && dst.Length % es == 0)
        {
            EncodeRange(src.Slice((int)first, (int)(last - first)), type, dst);
            return;
        }
        for (long i = first; i < last; i++)
        {
            EncodeRange(src.Slice((int)i, 1), type, tmp[..es]);
            int from = i == first ? skip : 0;
            int take = Math.Min(es - from, dst.Length - w);
            tmp.Slice(from, take).CopyTo(dst.Slice(w));
            w += take;
        }
    }

    /// <summary>Encodes every element of <paramref name="src"/> into <paramref name="dst"/> (src.Length * size bytes).</summary>
    public static void EncodeRange(ReadOnlySpan<float> src, GgmlType type, Span<byte> dst)
    {
        switch (type)
        {
            case GgmlType.F32:
                System.Runtime.InteropServices.MemoryMarshal.AsBytes(src).CopyTo(dst);
                break;
            case GgmlType.BF16:
                Tensors.Bf16.FromFloat(src, System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(dst[..(src.Length * 2)]));
                break;
            case GgmlType.F16:
                Tensors.F16.FromFloat(src, System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(dst[..(src.Length * 2)]));
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(type));
        }
    }
}
