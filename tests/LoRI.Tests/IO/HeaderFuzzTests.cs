using System.Text.Json.Nodes;
using LoRI.IO;
using LoRI.Model;
using LoRI.Tensors;

namespace LoRI.Tests.IO;

/// <summary>
/// Random corruptions of valid files must either load or fail with the typed, file-naming exception: never an
/// ArgumentOutOfRange, Overflow, InvalidOperation or a crash from reading past the data.
/// </summary>
public class HeaderFuzzTests
{
    [Test]
    public void CorruptedSafetensors_OnlyEverThrowInvalidFileException()
    {
        using var dir = new TempDir();
        var good = dir.File("good.safetensors");
        new SafeTensorsWriter()
            .Add("a", DType.F32, [2, 3], new float[6])
            .Add("b", DType.BF16, [5], new ushort[5])
            .Add("c", DType.I64, [1], new long[1])
            .Write(good);
        var original = File.ReadAllBytes(good);
        int headerEnd = 8 + (int)BitConverter.ToUInt64(original, 0);
        var rng = new Random(17);
        var bad = dir.File("bad.safetensors");
        int loaded = 0, rejected = 0;
        for (int trial = 0; trial < 1000; trial++)
        {
            var bytes = (byte[])original.Clone();
            int edits = rng.Next(1, 4);
            for (int e = 0; e < edits; e++)
            {
                // Mostly the JSON, sometimes the length field; digits and structural characters make deeper parses.
                int pos = rng.Next(5) == 0 ? rng.Next(0, 8) : rng.Next(8, headerEnd);
                bytes[pos] = rng.Next(3) switch
                {
                    0 => (byte)"0123456789-[]{},:\"eE."[rng.Next(20)],
                    1 => (byte)rng.Next(256),
                    _ => (byte)' ',
                };
            }
            if (rng.Next(10) == 0) Array.Resize(ref bytes, rng.Next(0, bytes.Length));
            File.WriteAllBytes(bad, bytes);
            try
            {
                using var f = SafeTensorsFile.Open(bad);
                foreach (var t in f.Tensors)
                {
                    Assert.That(t.End, Is.LessThanOrEqualTo(f.DataLength));
                    _ = f.Bytes(t).Length;
                    if (t.DType.IsFloat()) f.ReadFloat32(t.Name);
                }
                loaded++;
            }
            catch (InvalidFileException e)
            {
                Assert.That(e.Message, Does.StartWith(bad));
                rejected++;
            }
        }
        Assert.That(rejected, Is.GreaterThan(300), "most corruptions are caught");
        Assert.That(loaded, Is.GreaterThan(0), "some corruptions (spaces, digits in harmless places) still load");
    }

    [Test]
    public void CorruptedConfig_OnlyEverThrowsTypedExceptions()
    {
        using var dir = new TempDir();
        new LlamaConfig
        {
            HiddenSize = 64, IntermediateSize = 128, NumLayers = 2, NumHeads = 4, NumKvHeads = 2, HeadDim = 16, VocabSize = 300,
            BosTokenId = 1, EosTokenIds = [2, 3], RopeScaling = new RopeScaling(8, 1, 4, 8192),
        }.Save(dir.Path);
        var path = dir.File("config.json");
        var original = File.ReadAllText(path);
        var rng = new Random(23);
        for (int trial = 0; trial < 600; trial++)
        {
            var chars = original.ToCharArray();
            for (int e = rng.Next(1, 3); e > 0; e--)
                chars[rng.Next(chars.Length)] = "0123456789-[]{},:\"eE. ntf"[rng.Next(25)];
            File.WriteAllText(path, new string(chars));
            try { LlamaConfig.Load(dir.Path); }
            catch (InvalidFileException e) { Assert.That(e.Message, Does.StartWith(path)); }
            catch (UnsupportedException e) { Assert.That(e.Message, Does.StartWith(path)); }
        }
    }

    [Test]
    public void CorruptedIndex_OnlyEverThrowsInvalidFileException()
    {
        using var dir = new TempDir();
        new SafeTensorsWriter().Add("a", DType.U8, [1], new byte[] { 1 }).Write(dir.File("s1.safetensors"));
        var index = new JsonObject { ["metadata"] = new JsonObject(), ["weight_map"] = new JsonObject { ["a"] = "s1.safetensors" } }.ToJsonString();
        var rng = new Random(29);
        for (int trial = 0; trial < 300; trial++)
        {
            var chars = index.ToCharArray();
            chars[rng.Next(chars.Length)] = "0123456789-[]{},:\"./ "[rng.Next(21)];
            File.WriteAllText(dir.File(Checkpoint.IndexFileName), new string(chars));
            try { Checkpoint.Open(dir.Path).Dispose(); }
            catch (InvalidFileException) { }
        }
    }
}
