using System.Buffers;
using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text.Encodings.Web;
using System.Text.Json;
using LoRI.Tensors;

namespace LoRI.IO;

/// <summary>
/// Fills <paramref name="destination"/> with the tensor's bytes starting at byte <paramref name="offset"/> of the
/// tensor. The writer calls it with consecutive chunks, so a tensor never has to exist whole in memory.
/// </summary>
public delegate void TensorFill(Span<byte> destination, long offset);

/// <summary>
/// Writes a safetensors file: tensors are declared first (name, dtype, shape, and where the bytes come from),
/// then <see cref="Write"/> lays out the 8-byte header length, the JSON header padded with spaces to a
/// multiple of 8 bytes (so the data section starts 8-aligned), and the data of each tensor in the order added.
/// Data is streamed in chunks of <see cref="ChunkBytes"/>. The file is written to `path.tmp`, flushed, then
/// renamed over `path`.
/// </summary>
public sealed class SafeTensorsWriter
{
    public const int ChunkBytes = 4 << 20;

    private readonly List<Item> _items = new();
    private readonly HashSet<string> _names = new(StringComparer.Ordinal);

    /// <summary>Written as the header's "__metadata__" when not empty.</summary>
    public Dictionary<string, string> Metadata { get; } = new(StringComparer.Ordinal);

    public int Count => _items.Count;

    private sealed record Item(string Name, DType DType, int[] Shape, long ByteLength, ReadOnlyMemory<byte> Data, TensorFill? Fill);

    /// <summary>Adds a tensor whose bytes (little-endian, row-major) are already in memory.</summary>
    public SafeTensorsWriter Add(string name, DType dtype, int[] shape, ReadOnlyMemory<byte> data)
    {
        long bytes = Declare(name, dtype, shape);
        if (data.Length != bytes)
            throw new ArgumentException($"tensor '{name}': shape {DTypes.ShapeString(shape)} of {dtype.SafetensorsName()} needs {bytes} bytes, got {data.Length}");
        _items.Add(new Item(name, dtype, (int[])shape.Clone(), bytes, data, null));
        return this;
    }

    /// <summary>Adds a tensor whose bytes a callback produces chunk by chunk when the file is written.</summary>
    public SafeTensorsWriter Add(string name, DType dtype, int[] shape, TensorFill fill)
    {
        ArgumentNullException.ThrowIfNull(fill);
        long bytes = Declare(name, dtype, shape);
        _items.Add(new Item(name, dtype, (int[])shape.Clone(), bytes, default, fill));
        return this;
    }

    /// <summary>Adds a tensor of unmanaged elements (float, int, Half ...) stored as <paramref name="dtype"/> bit for bit.</summary>
    public SafeTensorsWriter Add<T>(string name, DType dtype, int[] shape, T[] data) where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(data);
        long need = checked(DTypes.ElementCount(shape) * dtype.Size());
        long have = (long)data.Length * Unsafe.SizeOf<T>();
        if (have != need)
            throw new ArgumentException($"tensor '{name}': shape {DTypes.ShapeString(shape)} of {dtype.SafetensorsName()} needs {need} bytes, got {have}");
        return Add(name, dtype, shape, (dst, offset) =>
            MemoryMarshal.AsBytes(data.AsSpan()).Slice((int)offset, dst.Length).CopyTo(dst));
    }

    /// <summary>Adds float32 values converted on the fly to <paramref name="dtype"/> (F32, F16, BF16 or F64).</summary>
    public SafeTensorsWriter AddFloats(string name, DType dtype, int[] shape, ReadOnlyMemory<float> values)
    {
        if (!dtype.IsFloat()) throw new ArgumentException($"tensor '{name}': AddFloats converts to a float dtype, not {dtype}");
        long n = DTypes.ElementCount(shape);
        if (values.Length != n)
            throw new ArgumentException($"tensor '{name}': shape {DTypes.ShapeString(shape)} has {n} elements, got {values.Length} values");
        int size = dtype.Size();
        return Add(name, dtype, shape, (dst, offset) =>
        {
            int first = (int)(offset / size);
            int count = dst.Length / size;
            var src = values.Span.Slice(first, count);
            switch (dtype)
            {
                case DType.F32: MemoryMarshal.AsBytes(src).CopyTo(dst); break;
                case DType.F16: F16.FromFloat(src, MemoryMarshal.Cast<byte, ushort>(dst)); break;
                case DType.BF16: Bf16.FromFloat(src, MemoryMarshal.Cast<byte, ushort>(dst)); break;
                case DType.F64:
                    var d = MemoryMarshal.Cast<byte, double>(dst);
                    for (int i = 0; i < count; i++) d[i] = src[i];
                    break;
            }
        });
    }

    private long Declare(string name, DType dtype, int[] shape)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(shape);
        if (name.Length == 0) throw new ArgumentException("tensor name is empty");
        if (name == "__metadata__") throw new ArgumentException("\"__metadata__\" is reserved and cannot name a tensor");
        foreach (var d in shape)
            if (d < 0) throw new ArgumentException($"tensor '{name}': negative dimension in shape {DTypes.ShapeString(shape)}");
        if (_names.Contains(name)) throw new ArgumentException($"tensor '{name}' added twice");
        long bytes = checked(DTypes.ElementCount(shape) * dtype.Size());
        _names.Add(name);
        return bytes;
    }

    /// <summary>The header bytes (JSON padded with spaces to a multiple of 8), as <see cref="Write"/> lays them out.</summary>
    public byte[] BuildHeader()
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartObject();
            if (Metadata.Count > 0)
            {
                w.WriteStartObject("__metadata__");
                foreach (var (k, v) in Metadata) w.WriteString(k, v);
                w.WriteEndObject();
            }
            long offset = 0;
            foreach (var it in _items)
            {
                w.WriteStartObject(it.Name);
                w.WriteString("dtype", it.DType.SafetensorsName());
                w.WriteStartArray("shape");
                foreach (var d in it.Shape) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(offset);
                w.WriteNumberValue(offset + it.ByteLength);
                w.WriteEndArray();
                w.WriteEndObject();
                offset += it.ByteLength;
            }
            w.WriteEndObject();
        }
        int len = buffer.WrittenCount;
        int padded = (len + 7) / 8 * 8;
        var header = new byte[padded];
        buffer.WrittenSpan.CopyTo(header);
        header.AsSpan(len).Fill((byte)' ');
        return header;
    }

    /// <summary>Writes the file atomically (temporary name, then rename).</summary>
    public void Write(string path)
    {
        var header = BuildHeader();
        string tmp = path + ".tmp";
        try
        {
            using (var fs = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16))
            {
                Span<byte> len = stackalloc byte[8];
                BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)header.Length);
                fs.Write(len);
                fs.Write(header);
                byte[]? chunk = null;
                try
                {
                    foreach (var it in _items)
                    {
                        if (it.Fill is null) { fs.Write(it.Data.Span); continue; }
                        chunk ??= ArrayPool<byte>.Shared.Rent(ChunkBytes);
                        // Chunks hold whole elements so a fill callback can convert element-wise.
                        int step = ChunkBytes / it.DType.Size() * it.DType.Size();
                        for (long off = 0; off < it.ByteLength; off += step)
                        {
                            int n = (int)Math.Min(step, it.ByteLength - off);
                            var span = chunk.AsSpan(0, n);
                            it.Fill(span, off);
                            fs.Write(span);
                        }
                    }
                }
                finally
                {
                    if (chunk is not null) ArrayPool<byte>.Shared.Return(chunk);
                }
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
}
