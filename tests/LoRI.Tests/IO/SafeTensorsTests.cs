using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using LoRI.IO;
using LoRI.Tensors;

namespace LoRI.Tests.IO;

public class SafeTensorsTests
{
    private static readonly DType[] AllDTypes = Enum.GetValues<DType>();

    private static byte[] RandomBytes(int n, int seed)
    {
        var b = new byte[n];
        new Random(seed).NextBytes(b);
        return b;
    }

    [Test]
    public void RoundTrip_EveryDType_BitExact()
    {
        using var dir = new TempDir();
        var path = dir.File("all.safetensors");
        var w = new SafeTensorsWriter();
        var expected = new Dictionary<string, (DType, int[], byte[])>();
        int seed = 0;
        foreach (var dt in AllDTypes)
        {
            // Odd shapes so offsets are not all multiples of 8; random bits include NaNs and denormals.
            int[] shape = [3, 5];
            var bytes = RandomBytes(15 * dt.Size(), ++seed);
            if (dt == DType.Bool) for (int i = 0; i < bytes.Length; i++) bytes[i] &= 1;
            var name = "t." + dt.SafetensorsName();
            w.Add(name, dt, shape, bytes);
            expected[name] = (dt, shape, bytes);
        }
        w.Add("scalar", DType.F32, [], BitConverter.GetBytes(2.5f));
        w.Add("empty", DType.I64, [0, 4], Array.Empty<byte>());
        w.Metadata["format"] = "pt";
        w.Write(path);

        Assert.That(File.Exists(path + ".tmp"), Is.False, "the temporary file is renamed away");
        using var f = SafeTensorsFile.Open(path);
        Assert.That(f.Tensors.Select(t => t.Name), Is.EqualTo(expected.Keys.Append("scalar").Append("empty")));
        Assert.That(f.Metadata["format"], Is.EqualTo("pt"));
        Assert.That((8 + f.HeaderLength) % 8, Is.EqualTo(0), "data section starts 8-aligned");
        foreach (var (name, (dt, shape, bytes)) in expected)
        {
            var e = f[name];
            Assert.That(e.DType, Is.EqualTo(dt), name);
            Assert.That(e.Shape, Is.EqualTo(shape), name);
            Assert.That(f.Bytes(e).ToArray(), Is.EqualTo(bytes), name);
            var viaPointer = new byte[bytes.Length];
            Marshal.Copy(f.Pointer(e), viaPointer, 0, bytes.Length);
            Assert.That(viaPointer, Is.EqualTo(bytes), name + " via Pointer");
        }
        Assert.That(f.ReadFloat32("scalar"), Is.EqualTo(new[] { 2.5f }));
        Assert.That(f["empty"].Shape, Is.EqualTo(new[] { 0, 4 }));
        Assert.That(f.Bytes(f["empty"]).Length, Is.EqualTo(0));
    }

    [Test]
    public void ReadFloat32_ConvertsEachFloatDType()
    {
        using var dir = new TempDir();
        var path = dir.File("f.safetensors");
        // Hand-picked encodings: F16 0x3C00 = 1, 0xC000 = -2, 0x3555 ~ 0.33325195, 0x7C00 = +inf.
        ushort[] f16 = [0x3C00, 0xC000, 0x3555, 0x7C00];
        float[] f16Expected = [1f, -2f, 0.333251953125f, float.PositiveInfinity];
        // BF16 is the top half of a float32: 0x3F80 = 1, 0xC040 = -3, 0x4049 = 3.140625.
        ushort[] bf16 = [0x3F80, 0xC040, 0x4049, 0x0000];
        float[] bf16Expected = [1f, -3f, 3.140625f, 0f];
        double[] f64 = [0.1, -1e300, 1.5, 65504.0];
        float[] f32 = [0.1f, -7f, float.Epsilon, 3e38f];
        new SafeTensorsWriter()
            .Add("f16", DType.F16, [2, 2], f16)
            .Add("bf16", DType.BF16, [4], bf16)
            .Add("f64", DType.F64, [4], f64)
            .Add("f32", DType.F32, [4], f32)
            .Add("i32", DType.I32, [1], new[] { 7 })
            .Write(path);
        using var f = SafeTensorsFile.Open(path);
        Assert.That(f.ReadFloat32("f16"), Is.EqualTo(f16Expected));
        Assert.That(f.ReadFloat32("bf16"), Is.EqualTo(bf16Expected));
        Assert.That(f.ReadFloat32("f64"), Is.EqualTo(new[] { 0.1f, float.NegativeInfinity, 1.5f, 65504f }));
        Assert.That(f.ReadFloat32("f32"), Is.EqualTo(f32));
        var span = new float[4];
        f.ReadFloat32("bf16", span);
        Assert.That(span, Is.EqualTo(bf16Expected));
        var e = Assert.Throws<InvalidFileException>(() => f.ReadFloat32("i32"))!;
        Assert.That(e.Message, Does.Contain("'i32'").And.Contain("I32"));
        Assert.Throws<ArgumentException>(() => f.ReadFloat32("f32", new float[3]));
    }

    [Test]
    public void AddFloats_ConvertsToTargetDType()
    {
        using var dir = new TempDir();
        var path = dir.File("c.safetensors");
        float[] v = [1f, 1.00390625f, -2.5f, 1e-3f];
        new SafeTensorsWriter()
            .AddFloats("b", DType.BF16, [4], v)
            .AddFloats("h", DType.F16, [4], v)
            .AddFloats("d", DType.F64, [4], v)
            .Write(path);
        using var f = SafeTensorsFile.Open(path);
        Assert.That(MemoryMarshal.Cast<byte, ushort>(f.Bytes(f["b"])).ToArray(),
            Is.EqualTo(v.Select(Bf16.FromFloat).ToArray()));
        Assert.That(MemoryMarshal.Cast<byte, ushort>(f.Bytes(f["h"])).ToArray(),
            Is.EqualTo(v.Select(x => BitConverter.HalfToUInt16Bits((Half)x)).ToArray()));
        Assert.That(MemoryMarshal.Cast<byte, double>(f.Bytes(f["d"])).ToArray(), Is.EqualTo(v.Select(x => (double)x).ToArray()));
    }

    [Test]
    public void Writer_StreamsLargeTensorThroughCallbackInChunks()
    {
        using var dir = new TempDir();
        var path = dir.File("big.safetensors");
        int n = SafeTensorsWriter.ChunkBytes * 2 + 12345;
        var offsets = new List<(long Offset, int Length)>();
        new SafeTensorsWriter()
            .Add("small", DType.U8, [3], new byte[] { 1, 2, 3 })
            .Add("big", DType.U8, [n], (dst, offset) =>
            {
                offsets.Add((offset, dst.Length));
                for (int i = 0; i < dst.Length; i++) dst[i] = (byte)((offset + i) % 251);
            })
            .Write(path);
        Assert.That(offsets, Is.EqualTo(new[]
        {
            (0L, SafeTensorsWriter.ChunkBytes),
            ((long)SafeTensorsWriter.ChunkBytes, SafeTensorsWriter.ChunkBytes),
            (2L * SafeTensorsWriter.ChunkBytes, 12345),
        }));
        using var f = SafeTensorsFile.Open(path);
        var b = f.Bytes(f["big"]);
        Assert.That(b.Length, Is.EqualTo(n));
        for (int i = 0; i < n; i += 4099) Assert.That(b[i], Is.EqualTo((byte)(i % 251)), $"byte {i}");
        Assert.That(b[n - 1], Is.EqualTo((byte)((n - 1) % 251)));
        Assert.That(f["big"].Begin, Is.EqualTo(3));
    }

    [Test]
    public void Writer_RejectsBadDeclarations()
    {
        var w = new SafeTensorsWriter().Add("a", DType.F32, [2], new byte[8]);
        Assert.Throws<ArgumentException>(() => w.Add("a", DType.F32, [2], new byte[8]));
        Assert.Throws<ArgumentException>(() => w.Add("b", DType.F32, [3], new byte[8]));
        Assert.Throws<ArgumentException>(() => w.Add("__metadata__", DType.U8, [1], new byte[1]));
        Assert.Throws<ArgumentException>(() => w.Add("c", DType.U8, [-1], new byte[0]));
    }

    /// <summary>
    /// The bytes the Python library writes for save_file({"weight": [[1, 2], [3, 4]] float32, "ids": [7, -1, 300] int64},
    /// metadata={"format": "pt"}): metadata first, tensors ordered by alignment then name, compact JSON padded
    /// with spaces to a multiple of 8. Built by hand here, independent of our writer.
    /// </summary>
    [Test]
    public void ReadsFileLaidOutAsThePythonLibraryDoes()
    {
        const string json = "{\"__metadata__\":{\"format\":\"pt\"},\"ids\":{\"dtype\":\"I64\",\"shape\":[3],\"data_offsets\":[0,24]}," +
                            "\"weight\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[24,40]}}";
        var header = Encoding.UTF8.GetBytes(json);
        int padded = (header.Length + 7) / 8 * 8;
        var bytes = new List<byte>();
        var len = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)padded);
        bytes.AddRange(len);
        bytes.AddRange(header);
        bytes.AddRange(Enumerable.Repeat((byte)' ', padded - header.Length));
        foreach (long v in new long[] { 7, -1, 300 }) bytes.AddRange(BitConverter.GetBytes(v));
        foreach (float v in new[] { 1f, 2f, 3f, 4f }) bytes.AddRange(BitConverter.GetBytes(v));

        using var dir = new TempDir();
        var path = dir.File("py.safetensors");
        File.WriteAllBytes(path, bytes.ToArray());
        using var f = SafeTensorsFile.Open(path);
        Assert.That(f.Metadata, Is.EquivalentTo(new Dictionary<string, string> { ["format"] = "pt" }));
        Assert.That(f.Tensors.Select(t => t.Name), Is.EqualTo(new[] { "ids", "weight" }));
        Assert.That((f["weight"].DType, f["weight"].Begin, f["weight"].End), Is.EqualTo((DType.F32, 24L, 40L)));
        Assert.That((f["ids"].DType, f["ids"].Begin, f["ids"].End), Is.EqualTo((DType.I64, 0L, 24L)));
        Assert.That(f["weight"].Shape, Is.EqualTo(new[] { 2, 2 }));
        Assert.That(f.ReadFloat32("weight"), Is.EqualTo(new[] { 1f, 2f, 3f, 4f }));
        Assert.That(MemoryMarshal.Cast<byte, long>(f.Bytes(f["ids"])).ToArray(), Is.EqualTo(new long[] { 7, -1, 300 }));
        Assert.That(f.DataLength, Is.EqualTo(40));
        Assert.That(f.TryGet("nope", out _), Is.False);
        Assert.That(Assert.Throws<InvalidFileException>(() => _ = f["nope"])!.Message, Does.Contain("no tensor named 'nope'"));
    }

    private static string WriteRaw(TempDir dir, string json, int dataBytes, ulong? declaredLength = null)
    {
        var header = Encoding.UTF8.GetBytes(json);
        var bytes = new byte[8 + header.Length + dataBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, declaredLength ?? (ulong)header.Length);
        header.CopyTo(bytes, 8);
        var path = dir.File("bad.safetensors");
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private static string OpenError(string path) =>
        Assert.Throws<InvalidFileException>(() => SafeTensorsFile.Open(path).Dispose())!.Message;

    [Test]
    public void Rejects_TruncatedFile()
    {
        using var dir = new TempDir();
        var path = dir.File("short.safetensors");
        File.WriteAllBytes(path, [1, 2, 3, 4, 5]);
        var m = OpenError(path);
        Assert.That(m, Does.StartWith(path).And.Contain("truncated file").And.Contain("5 bytes"));
    }

    [Test]
    public void Rejects_HeaderLengthPastEnd()
    {
        using var dir = new TempDir();
        var path = WriteRaw(dir, "{}", 4, declaredLength: 1000);
        var m = OpenError(path);
        Assert.That(m, Does.StartWith(path).And.Contain("header length past end").And.Contain("1000").And.Contain("6 bytes follow"));
    }

    [Test]
    public void Rejects_HeaderLongerThanCap_WithoutReadingIt()
    {
        using var dir = new TempDir();
        var path = dir.File("huge.safetensors");
        using (var fs = new FileStream(path, FileMode.Create))
        {
            // A sparse file bigger than the cap, whose declared header length is inside the file but above the cap.
            fs.SetLength(SafeTensorsFile.MaxHeaderBytes + 1000);
            var len = new byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)SafeTensorsFile.MaxHeaderBytes + 1);
            fs.Write(len);
        }
        var m = OpenError(path);
        Assert.That(m, Does.Contain("exceeds the limit").And.Contain((SafeTensorsFile.MaxHeaderBytes + 1).ToString()));
    }

    [TestCase("{\"a\": {\"dtype\": \"F32\"", "not valid JSON")]
    [TestCase("[1, 2, 3]", "expected an object at the top level")]
    [TestCase("", "not valid JSON")]
    public void Rejects_BadJson(string json, string expected)
    {
        using var dir = new TempDir();
        var m = OpenError(WriteRaw(dir, json, 0));
        Assert.That(m, Does.Contain("header is not valid JSON").And.Contain(expected));
    }

    [Test]
    public void Rejects_InvalidUtf8InHeader()
    {
        using var dir = new TempDir();
        var path = dir.File("utf8.safetensors");
        byte[] header = [.. "{\"a"u8, 0xFF, 0xFE, .. "\":{}}"u8];
        var bytes = new byte[8 + header.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)header.Length);
        header.CopyTo(bytes, 8);
        File.WriteAllBytes(path, bytes);
        Assert.That(OpenError(path), Does.Contain("header is not valid JSON: invalid UTF-8 at byte 3"));
    }

    [TestCase("{\"w\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2, "tensor 'w': unknown dtype 'F8_E4M3'")]
    [TestCase("{\"w\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, "tensor 'w': shape[0] is negative (-2)")]
    [TestCase("{\"w\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", 8, "tensor 'w': shape[0] is not an integer")]
    [TestCase("{\"w\":{\"dtype\":\"U8\",\"shape\":[2147483647,2147483647,2147483647],\"data_offsets\":[0,8]}}", 8, "tensor 'w': shape [2147483647, 2147483647, 2147483647] has an element count that overflows")]
    [TestCase("{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 12, "tensor 'w': data offsets out of range: end 16 is past the data section of 12 bytes")]
    [TestCase("{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", 12, "tensor 'w': data offsets out of range: begin 8 is after end 4")]
    [TestCase("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 12, "tensor 'w': data offsets out of range: begin is not a non-negative integer")]
    [TestCase("{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "tensor 'w': size mismatch: shape [3] of F32 needs 12 bytes but data_offsets [0, 8] span 8")]
    [TestCase("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "tensors 'a' [0, 8) and 'b' [4, 12) are overlapping")]
    [TestCase("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 2, "tensor 'a' is listed twice")]
    [TestCase("{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "tensor 'w': missing field \"data_offsets\"")]
    [TestCase("{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor 'w': missing string field \"dtype\"")]
    [TestCase("{\"w\":[1,2]}", 4, "tensor 'w': expected an object")]
    [TestCase("{\"__metadata__\":{\"k\":3}}", 0, "\"__metadata__\" entry 'k' must be a string")]
    public void Rejects_MalformedEntry_WithItsOwnMessage(string json, int dataBytes, string expected)
    {
        using var dir = new TempDir();
        var path = WriteRaw(dir, json, dataBytes);
        var m = OpenError(path);
        Assert.That(m, Does.StartWith(path + ": "));
        Assert.That(m, Does.Contain(expected));
    }

    [Test]
    public void AllowsEmptyTensorsAtTheSameOffset_AndGaps()
    {
        using var dir = new TempDir();
        var path = WriteRaw(dir,
            "{\"e1\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},\"e2\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[4,4]}," +
            "\"x\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},\"y\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[6,8]}}", 8);
        using var f = SafeTensorsFile.Open(path);
        Assert.That(f.Tensors, Has.Count.EqualTo(4));
    }

    [Test]
    public void Open_MissingFile_NamesIt()
    {
        using var dir = new TempDir();
        var m = OpenError(dir.File("none.safetensors"));
        Assert.That(m, Does.Contain("none.safetensors").And.Contain("not found"));
    }

    [Test]
    public void Disposed_FileRefusesAccess()
    {
        using var dir = new TempDir();
        var path = dir.File("d.safetensors");
        new SafeTensorsWriter().Add("a", DType.U8, [1], new byte[] { 9 }).Write(path);
        var f = SafeTensorsFile.Open(path);
        var e = f["a"];
        f.Dispose();
        Assert.Throws<ObjectDisposedException>(() => f.Pointer(e));
    }
}
