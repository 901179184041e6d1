using LoRI.IO;
using LoRI.Tensors;

namespace LoRI.Tests.IO;

public class CheckpointTests
{
    private static void WriteShards(TempDir dir)
    {
        new SafeTensorsWriter()
            .Add("a", DType.F32, [2], new[] { 1f, 2f })
            .Add("b", DType.BF16, [1], new ushort[] { 0x4040 })
            .Write(dir.File("model-00001-of-00002.safetensors"));
        new SafeTensorsWriter()
            .Add("c", DType.F16, [2, 1], new ushort[] { 0x3C00, 0x4000 })
            .Add("unlisted", DType.U8, [1], new byte[] { 1 })
            .Write(dir.File("model-00002-of-00002.safetensors"));
    }

    private static void WriteIndex(TempDir dir, string weightMap) =>
        File.WriteAllText(dir.File(Checkpoint.IndexFileName), "{\"metadata\":{\"total_size\":14},\"weight_map\":{" + weightMap + "}}");

    private const string GoodMap =
        "\"a\":\"model-00001-of-00002.safetensors\",\"c\":\"model-00002-of-00002.safetensors\",\"b\":\"model-00001-of-00002.safetensors\"";

    [Test]
    public void Sharded_LoadsThroughIndex()
    {
        using var dir = new TempDir();
        WriteShards(dir);
        WriteIndex(dir, GoodMap);
        using var ck = Checkpoint.Open(dir.Path);
        Assert.That(ck.Names, Is.EqualTo(new[] { "a", "c", "b" }));
        Assert.That(ck.Files, Has.Count.EqualTo(2));
        Assert.That(ck.TryGet("c", out var file, out var entry), Is.True);
        Assert.That(Path.GetFileName(file.Path), Is.EqualTo("model-00002-of-00002.safetensors"));
        Assert.That(entry.Shape, Is.EqualTo(new[] { 2, 1 }));
        Assert.That(ck.ReadFloat32("c"), Is.EqualTo(new[] { 1f, 2f }));
        Assert.That(ck.ReadFloat32("b"), Is.EqualTo(new[] { 3f }));
        Assert.That(ck.ReadFloat32("a"), Is.EqualTo(new[] { 1f, 2f }));
        Assert.That(ck.TryGet("unlisted", out _, out _), Is.False, "only the weight_map's tensors are exposed");
        Assert.That(ck.TotalBytes, Is.EqualTo(8 + 2 + 4));
    }

    [Test]
    public void Single_LoadsModelSafetensors()
    {
        using var dir = new TempDir();
        new SafeTensorsWriter().Add("x", DType.F32, [1], new[] { 5f }).Write(dir.File(Checkpoint.SingleFileName));
        using var ck = Checkpoint.Open(dir.Path);
        Assert.That(ck.Names, Is.EqualTo(new[] { "x" }));
        Assert.That(ck.ReadFloat32("x"), Is.EqualTo(new[] { 5f }));
        using var direct = Checkpoint.Open(dir.File(Checkpoint.SingleFileName));
        Assert.That(direct.Names, Is.EqualTo(new[] { "x" }));
    }

    [Test]
    public void Rejects_MissingShard()
    {
        using var dir = new TempDir();
        WriteShards(dir);
        WriteIndex(dir, "\"a\":\"model-00001-of-00002.safetensors\",\"z\":\"model-00009-of-00009.safetensors\"");
        var m = Assert.Throws<InvalidFileException>(() => Checkpoint.Open(dir.Path))!.Message;
        Assert.That(m, Does.Contain(Checkpoint.IndexFileName).And.Contain("shard 'model-00009-of-00009.safetensors' (holding tensor 'z') does not exist"));
    }

    [Test]
    public void Rejects_TensorNotInItsShard()
    {
        using var dir = new TempDir();
        WriteShards(dir);
        WriteIndex(dir, "\"a\":\"model-00002-of-00002.safetensors\"");
        var m = Assert.Throws<InvalidFileException>(() => Checkpoint.Open(dir.Path))!.Message;
        Assert.That(m, Does.Contain("tensor 'a' is mapped to shard 'model-00002-of-00002.safetensors', which does not contain it"));
    }

    [TestCase("../outside.safetensors")]
    [TestCase("/etc/passwd")]
    [TestCase("..")]
    public void Rejects_ShardPathsOutsideTheFolder(string shard)
    {
        using var dir = new TempDir();
        WriteIndex(dir, $"\"a\":\"{shard}\"");
        var m = Assert.Throws<InvalidFileException>(() => Checkpoint.Open(dir.Path))!.Message;
        Assert.That(m, Does.Contain("is not a plain file name"));
    }

    [TestCase("{\"weight_map\": [1]}", "missing object field \"weight_map\"")]
    [TestCase("{\"weight_map\": {\"a\": 3}}", "weight_map['a'] must be a shard file name")]
    [TestCase("{\"weight_map\": {}}", "weight_map is empty")]
    [TestCase("{\"weight_map\": {", "not valid JSON")]
    public void Rejects_BadIndex(string json, string expected)
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File(Checkpoint.IndexFileName), json);
        var m = Assert.Throws<InvalidFileException>(() => Checkpoint.Open(dir.Path))!.Message;
        Assert.That(m, Does.Contain(Checkpoint.IndexFileName).And.Contain(expected));
    }

    [Test]
    public void Rejects_FolderWithoutWeights()
    {
        using var dir = new TempDir();
        var m = Assert.Throws<InvalidFileException>(() => Checkpoint.Open(dir.Path))!.Message;
        Assert.That(m, Does.Contain("no weights found"));
    }
}
