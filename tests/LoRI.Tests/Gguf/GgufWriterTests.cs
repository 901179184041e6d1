using System.Buffers.Binary;
using System.Text;
using LoRI.IO;
using LoRI.Tests.IO;

namespace LoRI.Tests.Gguf;

public class GgufWriterTests
{
    [Test]
    public void Header_BytesAreAsTheFormatSays()
    {
        using var tmp = new TempDir();
        var path = tmp.File("a.gguf");
        new GgufWriter().Set("k", 7u).AddTensor("t", GgmlType.F32, [3], [1f, 2f, 3f]).Write(path);
        var b = File.ReadAllBytes(path);
        // magic, version 3, 1 tensor, 1 kv
        Assert.That(Encoding.ASCII.GetString(b, 0, 4), Is.EqualTo("GGUF"));
        Assert.That(BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(4)), Is.EqualTo(3u));
        Assert.That(BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(8)), Is.EqualTo(1ul));
        Assert.That(BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(16)), Is.EqualTo(1ul));
        // kv: u64 len 1, "k", u32 type 4 (uint32), u32 7
        Assert.That(BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(24)), Is.EqualTo(1ul));
        Assert.That(b[32], Is.EqualTo((byte)'k'));
        Assert.That(BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(33)), Is.EqualTo(4u));
        Assert.That(BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(37)), Is.EqualTo(7u));
        // tensor info at 41: u64 len 1, "t", u32 n_dims 1, u64 ne 3, u32 type 0, u64 offset 0 -> ends at 41+8+1+4+8+4+8 = 74
        Assert.That(BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(41)), Is.EqualTo(1ul));
        Assert.That(b[49], Is.EqualTo((byte)'t'));
        Assert.That(BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(50)), Is.EqualTo(1u));
        Assert.That(BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(54)), Is.EqualTo(3ul));
        Assert.That(BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(62)), Is.EqualTo(0u));
        Assert.That(BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(66)), Is.EqualTo(0ul));
        // data at the next multiple of 32 (96), padding zero, file padded to 128
        Assert.That(b.AsSpan(74, 96 - 74).ToArray(), Is.All.EqualTo((byte)0));
        Assert.That(BitConverter.ToSingle(b, 96), Is.EqualTo(1f));
        Assert.That(BitConverter.ToSingle(b, 104), Is.EqualTo(3f));
        Assert.That(b.Length, Is.EqualTo(128));
        Assert.That(File.Exists(path + ".tmp"), Is.False);
    }

    [Test]
    public void RoundTrip_AllValueTypesAndTensors()
    {
        using var tmp = new TempDir();
        var path = tmp.File("b.gguf");
        var w = new GgufWriter()
            .Set("u8", new GgufValue(GgufValueType.UInt8, (byte)200))
            .Set("i8", new GgufValue(GgufValueType.Int8, (sbyte)-5))
            .Set("u16", new GgufValue(GgufValueType.UInt16, (ushort)65000))
            .Set("i16", new GgufValue(GgufValueType.Int16, (short)-300))
            .Set("u32", 4000000000u)
            .Set("i32", -7)
            .Set("f32", 1.5e-5f)
            .Set("bool", true)
            .Set("str", "héllo ĠĊ")
            .Set("u64", GgufValue.Of(ulong.MaxValue))
            .Set("i64", GgufValue.Of(long.MinValue))
            .Set("f64", GgufValue.Of(Math.PI))
            .Set("strs", ["a", "", "Ġthe", "<|eot_id|>"])
            .Set("ints", [1, -2, 3])
            .Set("floats", [0.5f, -0.25f])
            .Set(LoRI.IO.Gguf.AlignmentKey, 64u);
        var m = new float[] { 1, 2, 3, 4, 5, 6 };
        var v = new float[] { 0.1f, -2.5f, 3.25f, 1e-3f, 7 };
        w.AddTensor("m", GgmlType.F32, [2, 3], m);
        w.AddTensor("v16", GgmlType.F16, [5], v);
        w.AddTensor("vbf", GgmlType.BF16, [5], v);
        w.Write(path);

        var f = GgufFile.Read(path);
        Assert.That(f.Version, Is.EqualTo(3u));
        Assert.That(f.Alignment, Is.EqualTo(64));
        Assert.That(f.DataOffset % 64, Is.EqualTo(0));
        Assert.That(f["u8"].AsLong(), Is.EqualTo(200));
        Assert.That(f["i8"].AsLong(), Is.EqualTo(-5));
        Assert.That(f["u16"].AsLong(), Is.EqualTo(65000));
        Assert.That(f["i16"].AsLong(), Is.EqualTo(-300));
        Assert.That(f["u32"].AsLong(), Is.EqualTo(4000000000L));
        Assert.That(f["i32"].AsLong(), Is.EqualTo(-7));
        Assert.That(f["f32"].AsFloat(), Is.EqualTo(1.5e-5f));
        Assert.That(f["bool"].AsBool(), Is.True);
        Assert.That(f["str"].AsString(), Is.EqualTo("héllo ĠĊ"));
        Assert.That(f["u64"].Value, Is.EqualTo(ulong.MaxValue));
        Assert.That(f["i64"].AsLong(), Is.EqualTo(long.MinValue));
        Assert.That(f["f64"].Value, Is.EqualTo(Math.PI));
        Assert.That(f["strs"].AsStrings(), Is.EqualTo(new[] { "a", "", "Ġthe", "<|eot_id|>" }));
        Assert.That(f["ints"].AsInts(), Is.EqualTo(new[] { 1, -2, 3 }));
        Assert.That(f["floats"].AsFloats(), Is.EqualTo(new[] { 0.5f, -0.25f }));
        Assert.That(f.MetadataList.Select(x => x.Key).First(), Is.EqualTo("u8"), "metadata keeps insertion order");

        var tm = f.Tensor("m");
        Assert.That(tm.Ne, Is.EqualTo(new long[] { 3, 2 }), "ne is the row-major shape reversed");
        Assert.That(tm.Shape, Is.EqualTo(new[] { 2, 3 }));
        Assert.That(f.ReadFloats("m"), Is.EqualTo(m));
        foreach (var t in f.Tensors) Assert.That(t.Offset % 64, Is.EqualTo(0), t.Name);
        Assert.That(f.ReadFloats("v16"), Is.EqualTo(v.Select(x => (float)(Half)x).ToArray()));
        Assert.That(f.ReadFloats("vbf"), Is.EqualTo(v.Select(LoRI.Tensors.Bf16.Round).ToArray()));
    }

    [Test]
    public void LargeTensor_StreamsInChunksWithRowsSplitAcrossThem()
    {
        using var tmp = new TempDir();
        var path = tmp.File("c.gguf");
        int n = GgufWriter.ChunkBytes / 2 + 3; // F16: one chunk and a bit, odd element count
        var data = new float[n];
        for (int i = 0; i < n; i++) data[i] = (i % 2048) - 1024;
        new GgufWriter().AddTensor("big", GgmlType.F16, [n], data).AddTensor("after", GgmlType.F32, [1], [42f]).Write(path);
        var f = GgufFile.Read(path);
        Assert.That(f.ReadFloats("big"), Is.EqualTo(data));
        Assert.That(f.ReadFloats("after"), Is.EqualTo(new[] { 42f }));
    }

    [Test]
    public void Encode_ByteRangeStartingMidElement()
    {
        var src = new float[] { 1.5f, -2f, 3.25f };
        var whole = new byte[12];
        GgufEncode.Floats(src, GgmlType.F32, 0, whole);
        var part = new byte[7];
        GgufEncode.Floats(src, GgmlType.F32, 3, part);
        Assert.That(part, Is.EqualTo(whole.AsSpan(3, 7).ToArray()));
    }

    [Test]
    public void Writer_RejectsBadInput()
    {
        Assert.Throws<ArgumentException>(() => new GgufWriter().Set("x", new GgufValue(GgufValueType.UInt32, 5)));
        Assert.Throws<ArgumentException>(() => new GgufWriter().Set("x", new GgufValue(GgufValueType.Array, new[] { 1, 2 }, GgufValueType.String)));
        Assert.Throws<ArgumentException>(() => new GgufWriter().AddTensor("t", GgmlType.F32, [2, 2], new float[3]));
        Assert.Throws<ArgumentException>(() => new GgufWriter().AddTensor(new string('n', 64), GgmlType.F32, [1], new float[1]));
        var w = new GgufWriter().AddTensor("t", GgmlType.F32, [1], new float[1]);
        Assert.Throws<ArgumentException>(() => w.AddTensor("t", GgmlType.F32, [1], new float[1]));
        using var tmp = new TempDir();
        Assert.Throws<ArgumentException>(() => new GgufWriter().Set(LoRI.IO.Gguf.AlignmentKey, 48u).Write(tmp.File("x.gguf")));
        Assert.That(File.Exists(tmp.File("x.gguf")), Is.False);
    }

    [Test]
    public void Reader_RejectsCorruptFiles_NamingTheProblem()
    {
        using var tmp = new TempDir();
        var path = tmp.File("d.gguf");
        new GgufWriter().Set("s", "value").Set("arr", [1, 2, 3]).AddTensor("t", GgmlType.F32, [4], new float[4]).Write(path);
        var good = File.ReadAllBytes(path);

        void Expect(byte[] bytes, string contains)
        {
            var p = tmp.File("bad.gguf");
            File.WriteAllBytes(p, bytes);
            var e = Assert.Throws<InvalidFileException>(() => GgufFile.Read(p));
            Assert.That(e!.Message, Does.Contain(contains).And.Contain("bad.gguf"));
        }

        var b = (byte[])good.Clone();
        b[0] = (byte)'X';
        Expect(b, "magic");
        b = (byte[])good.Clone();
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(4), 9);
        Expect(b, "version 9");
        b = (byte[])good.Clone();
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(16), 1UL << 40); // metadata count
        Expect(b, "metadata count");
        b = (byte[])good.Clone();
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(24), 1UL << 50); // first key length
        Expect(b, "string length");
        Expect(good[..(IndexOf(good, [1, 0, 0, 0, 0, 0, 0, 0, (byte)'t']) + 12)], "truncated");
        // the data of the tensor cut off: its infos are fine, its bytes run past the end
        Expect(good[..(good.Length - 32)], "past the end");
        // an array count larger than the file
        int arr = IndexOf(good, "arr"u8.ToArray()) + 3 + 4;
        b = (byte[])good.Clone();
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(arr + 4), 1UL << 30);
        Expect(b, "length of array 'arr'");
    }

    private static int IndexOf(byte[] hay, byte[] needle) => hay.AsSpan().IndexOf(needle);
}
