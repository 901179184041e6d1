using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;
using System.Text.Json;
using LoRI.Tensors;

namespace LoRI.IO;

/// <summary>
/// One tensor of a safetensors file. <see cref="Begin"/> and <see cref="End"/> are byte offsets relative to the
/// start of the data section (the byte after the header), as the file's header states them.
/// </summary>
public sealed record TensorEntry(string Name, DType DType, int[] Shape, long Begin, long End)
{
    public long ByteLength => End - Begin;
    public long ElementCount => DTypes.ElementCount(Shape);
}

/// <summary>
/// A safetensors file opened read-only and memory-mapped: weights are never copied by opening.
///
/// Layout (https://github.com/huggingface/safetensors): an 8-byte little-endian unsigned header length N,
/// N bytes of UTF-8 JSON (an object: tensor name -> {dtype, shape, data_offsets: [begin, end]}, plus an
/// optional "__metadata__" object of string -> string), then the data section. The header is untrusted:
/// its length is bounded before anything is allocated, and every entry is checked against the data section
/// (known dtype, non-negative dims, byte size = elements x dtype size, in range, no two tensors overlapping).
/// Gaps between tensors are tolerated.
/// </summary>
public sealed unsafe class SafeTensorsFile : IDisposable
{
    /// <summary>Largest header accepted (the Python library caps it at 100 MB too).</summary>
    public const long MaxHeaderBytes = 100L * 1000 * 1000;

    private readonly MemoryMappedFile _map;
    private readonly MemoryMappedViewAccessor _view;
    private readonly Dictionary<string, TensorEntry> _byName;
    private byte* _base;

    public string Path { get; }
    /// <summary>Tensors in the order the header lists them.</summary>
    public IReadOnlyList<TensorEntry> Tensors { get; }
    /// <summary>The header's "__metadata__" (empty when absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }
    /// <summary>Bytes of the JSON header (without the 8-byte length).</summary>
    public long HeaderLength { get; }
    /// <summary>Bytes of the data section.</summary>
    public long DataLength { get; }
    public long FileLength { get; }

    private SafeTensorsFile(string path, MemoryMappedFile map, MemoryMappedViewAccessor view, byte* basePtr,
        long fileLength, long headerLength, List<TensorEntry> tensors, Dictionary<string, string> metadata)
    {
        Path = path;
        _map = map;
        _view = view;
        _base = basePtr;
        FileLength = fileLength;
        HeaderLength = headerLength;
        DataLength = fileLength - 8 - headerLength;
        Tensors = tensors;
        Metadata = metadata;
        _byName = new Dictionary<string, TensorEntry>(tensors.Count, StringComparer.Ordinal);
        foreach (var t in tensors) _byName[t.Name] = t;
    }

    public static SafeTensorsFile Open(string path)
    {
        if (!BitConverter.IsLittleEndian) throw new UnsupportedException("safetensors reading needs a little-endian CPU");
        FileStream? fs;
        try { fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.RandomAccess); }
        catch (FileNotFoundException e) { throw new InvalidFileException(path, "file not found", e); }
        catch (DirectoryNotFoundException e) { throw new InvalidFileException(path, "file not found", e); }

        MemoryMappedFile? map = null;
        MemoryMappedViewAccessor? view = null;
        bool acquired = false;
        try
        {
            long fileLength = fs.Length;
            if (fileLength < 8)
                throw new InvalidFileException(path,
                    $"truncated file: {fileLength} bytes, too short for the 8-byte header length");
            map = MemoryMappedFile.CreateFromFile(fs, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false);
            fs = null;
            view = map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            byte* basePtr = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref basePtr);
            acquired = true;
            basePtr += view.PointerOffset;

            ulong declared = BinaryPrimitivesReadU64(basePtr);
            if (declared > (ulong)(fileLength - 8))
                throw new InvalidFileException(path,
                    $"header length past end of file: the header claims {declared} bytes but only {fileLength - 8} bytes follow the length field");
            if (declared > MaxHeaderBytes)
                throw new InvalidFileException(path,
                    $"header length {declared} bytes exceeds the limit of {MaxHeaderBytes} bytes");
            long headerLength = (long)declared;
            long dataLength = fileLength - 8 - headerLength;

            var header = new ReadOnlySpan<byte>(basePtr + 8, (int)headerLength).ToArray();
            var (tensors, metadata) = ParseHeader(path, header, dataLength);
            return new SafeTensorsFile(path, map, view, basePtr, fileLength, headerLength, tensors, metadata);
        }
        catch
        {
            if (acquired) view!.SafeMemoryMappedViewHandle.ReleasePointer();
            view?.Dispose();
            map?.Dispose();
            fs?.Dispose();
            throw;
        }
    }

    private static ulong BinaryPrimitivesReadU64(byte* p) =>
        System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(new ReadOnlySpan<byte>(p, 8));

    /// <summary>Parses and checks a header against a data section of <paramref name="dataLength"/> bytes.</summary>
    internal static (List<TensorEntry> Tensors, Dictionary<string, string> Metadata) ParseHeader(
        string path, byte[] header, long dataLength)
    {
        var doc = JsonFile.Parse(path, header, "header");
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw new InvalidFileException(path, $"header is not valid JSON: expected an object at the top level, found {root.ValueKind}");

            var tensors = new List<TensorEntry>();
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            var seen = new HashSet<string>(StringComparer.Ordinal);
            bool sawMetadata = false;
            foreach (var prop in root.EnumerateObject())
            {
                if (prop.Name == "__metadata__")
                {
                    if (sawMetadata) throw new InvalidFileException(path, "header has two \"__metadata__\" entries");
                    sawMetadata = true;
                    if (prop.Value.ValueKind == JsonValueKind.Null) continue;
                    if (prop.Value.ValueKind != JsonValueKind.Object)
                        throw new InvalidFileException(path, $"\"__metadata__\" must be an object of strings, found {prop.Value.ValueKind}");
                    foreach (var m in prop.Value.EnumerateObject())
                    {
                        if (m.Value.ValueKind != JsonValueKind.String)
                            throw new InvalidFileException(path, $"\"__metadata__\" entry '{m.Name}' must be a string, found {m.Value.ValueKind}");
                        if (!metadata.TryAdd(m.Name, m.Value.GetString()!))
                            throw new InvalidFileException(path, $"\"__metadata__\" has key '{m.Name}' twice");
                    }
                    continue;
                }
                if (!seen.Add(prop.Name))
                    throw new InvalidFileException(path, $"tensor '{prop.Name}' is listed twice in the header");
                tensors.Add(ParseEntry(path, prop.Name, prop.Value, dataLength));
            }
            CheckNoOverlap(path, tensors);
            return (tensors, metadata);
        }
    }

    private static TensorEntry ParseEntry(string path, string name, JsonElement e, long dataLength)
    {
        if (e.ValueKind != JsonValueKind.Object)
            throw new InvalidFileException(path, $"tensor '{name}': expected an object with dtype, shape and data_offsets, found {e.ValueKind}");

        if (!e.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String)
            throw new InvalidFileException(path, $"tensor '{name}': missing string field \"dtype\"");
        var dtName = dt.GetString()!;
        if (!DTypes.TryParseSafetensors(dtName, out var dtype))
            throw new InvalidFileException(path, $"tensor '{name}': unknown dtype '{dtName}' (expected one of F32, F16, BF16, F64, I8, I16, I32, I64, U8, U16, U32, U64, BOOL)");

        if (!e.TryGetProperty("shape", out var sh) || sh.ValueKind != JsonValueKind.Array)
            throw new InvalidFileException(path, $"tensor '{name}': missing array field \"shape\"");
        int rank = sh.GetArrayLength();
        if (rank > 16)
            throw new InvalidFileException(path, $"tensor '{name}': shape has {rank} dimensions, more than the 16 supported");
        var shape = new int[rank];
        int k = 0;
        foreach (var d in sh.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long v))
                throw new InvalidFileException(path, $"tensor '{name}': shape[{k}] is not an integer ({d.GetRawText()})");
            if (v < 0)
                throw new InvalidFileException(path, $"tensor '{name}': shape[{k}] is negative ({v})");
            if (v > int.MaxValue)
                throw new InvalidFileException(path, $"tensor '{name}': shape[{k}] = {v} exceeds {int.MaxValue}");
            shape[k++] = (int)v;
        }
        long elements = 1;
        foreach (long v in shape)
        {
            if (v == 0) { elements = 0; break; }
            // Keeps elements x 8 (the widest dtype) inside a long.
            if (elements > long.MaxValue / 8 / v)
                throw new InvalidFileException(path, $"tensor '{name}': shape {DTypes.ShapeString(shape)} has an element count that overflows");
            elements *= v;
        }
        long byteSize = elements * dtype.Size();

        if (!e.TryGetProperty("data_offsets", out var off) || off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2)
            throw new InvalidFileException(path, $"tensor '{name}': missing field \"data_offsets\" (an array [begin, end])");
        long begin = ReadOffset(path, name, off[0], "begin");
        long end = ReadOffset(path, name, off[1], "end");
        if (begin > end)
            throw new InvalidFileException(path, $"tensor '{name}': data offsets out of range: begin {begin} is after end {end}");
        if (end > dataLength)
            throw new InvalidFileException(path, $"tensor '{name}': data offsets out of range: end {end} is past the data section of {dataLength} bytes (truncated file?)");
        if (end - begin != byteSize)
            throw new InvalidFileException(path,
                $"tensor '{name}': size mismatch: shape {DTypes.ShapeString(shape)} of {dtName} needs {byteSize} bytes but data_offsets [{begin}, {end}] span {end - begin}");
        return new TensorEntry(name, dtype, shape, begin, end);
    }

    private static long ReadOffset(string path, string name, JsonElement v, string which)
    {
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt64(out long x) || x < 0)
            throw new InvalidFileException(path, $"tensor '{name}': data offsets out of range: {which} is not a non-negative integer ({v.GetRawText()})");
        return x;
    }

    private static void CheckNoOverlap(string path, List<TensorEntry> tensors)
    {
        var sorted = tensors.Where(t => t.End > t.Begin).OrderBy(t => t.Begin).ThenBy(t => t.End).ToList();
        for (int i = 1; i < sorted.Count; i++)
        {
            var a = sorted[i - 1];
            var b = sorted[i];
            if (b.Begin < a.End)
                throw new InvalidFileException(path,
                    $"tensors '{a.Name}' [{a.Begin}, {a.End}) and '{b.Name}' [{b.Begin}, {b.End}) are overlapping in the data section");
        }
    }

    public TensorEntry this[string name] =>
        _byName.TryGetValue(name, out var e) ? e : throw new InvalidFileException(Path, $"no tensor named '{name}'");

    public bool TryGet(string name, out TensorEntry entry) => _byName.TryGetValue(name, out entry!);

    public bool Contains(string name) => _byName.ContainsKey(name);

    /// <summary>Address of the tensor's first byte. Valid while this file is open; the memory is read-only.</summary>
    public nint Pointer(TensorEntry entry)
    {
        CheckEntry(entry);
        return (nint)(_base + 8 + HeaderLength + entry.Begin);
    }

    /// <summary>The tensor's bytes (tensors of 2 GiB and more: use <see cref="Pointer"/>).</summary>
    public ReadOnlySpan<byte> Bytes(TensorEntry entry)
    {
        CheckEntry(entry);
        if (entry.ByteLength > int.MaxValue)
            throw new UnsupportedException($"{Path}: tensor '{entry.Name}' is {entry.ByteLength} bytes, too large for a span; use Pointer()");
        return new ReadOnlySpan<byte>(_base + 8 + HeaderLength + entry.Begin, (int)entry.ByteLength);
    }

    private void CheckEntry(TensorEntry entry)
    {
        ObjectDisposedException.ThrowIf(_base == null, this);
        if (entry.Begin < 0 || entry.End < entry.Begin || entry.End > DataLength)
            throw new ArgumentException($"{Path}: tensor entry '{entry.Name}' [{entry.Begin}, {entry.End}) does not lie in this file's data section of {DataLength} bytes");
    }

    /// <summary>The named tensor converted to float32 (from F32, F16, BF16 or F64).</summary>
    public float[] ReadFloat32(string name)
    {
        var e = this[name];
        if (e.ElementCount > Array.MaxLength)
            throw new UnsupportedException($"{Path}: tensor '{name}' has {e.ElementCount} elements, too many for one array");
        var dst = new float[e.ElementCount];
        ReadFloat32(e, dst);
        return dst;
    }

    public void ReadFloat32(string name, Span<float> dst) => ReadFloat32(this[name], dst);

    /// <summary>Converts the tensor into <paramref name="dst"/>, whose length must equal the element count.</summary>
    public void ReadFloat32(TensorEntry e, Span<float> dst)
    {
        CheckEntry(e);
        if (!e.DType.IsFloat())
            throw new InvalidFileException(Path, $"tensor '{e.Name}' has dtype {e.DType.SafetensorsName()}; only F32, F16, BF16 and F64 convert to float32");
        if (dst.Length != e.ElementCount)
            throw new ArgumentException($"{Path}: tensor '{e.Name}' has {e.ElementCount} elements but the destination holds {dst.Length}");
        byte* src = _base + 8 + HeaderLength + e.Begin;
        int n = dst.Length;
        switch (e.DType)
        {
            case DType.F32:
                new ReadOnlySpan<float>(src, n).CopyTo(dst);
                break;
            case DType.F16:
                F16.ToFloat(new ReadOnlySpan<ushort>(src, n), dst);
                break;
            case DType.BF16:
                Bf16.ToFloat(new ReadOnlySpan<ushort>(src, n), dst);
                break;
            case DType.F64:
                var d = new ReadOnlySpan<double>(src, n);
                for (int i = 0; i < n; i++) dst[i] = (float)d[i];
                break;
        }
    }

    public void Dispose()
    {
        if (_base == null) return;
        _base = null;
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _map.Dispose();
    }
}
