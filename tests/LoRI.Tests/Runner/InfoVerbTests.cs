using System.Text.Json;
using LoRI.IO;
using LoRI.Model;
using LoRI.Tensors;
using LoRI.Tests.IO;

namespace LoRI.Tests.Runner;

public class InfoVerbTests
{
    // hidden 8, ffn 12, 2 layers, 4 heads of dim 4, 2 KV heads, vocab 10, untied. Per layer: q 16x8 + k 8x8 + v 8x8
    // + o 8x16 + 3 x 12x8 + 2 norms of 8 = 688; 2 layers 1376; embeddings 80 + lm_head 80 + final norm 8: 1544.
    private const long Params = 1544;
    // 2 (K and V) x 2 layers x 8 (KV dim) x 4 bytes.
    private const long KvBytes = 128;

    private static LlamaConfig Config() => new()
    {
        HiddenSize = 8, IntermediateSize = 12, NumLayers = 2, NumHeads = 4, NumKvHeads = 2, HeadDim = 4,
        VocabSize = 10, TieWordEmbeddings = false, BosTokenId = 1, EosTokenIds = [2, 3], TorchDtype = "bfloat16",
    };

    private static void WriteCheckpoint(TempDir dir, LlamaConfig c, string? badTensor = null)
    {
        var w = new SafeTensorsWriter();
        foreach (var (name, shape) in c.ExpectedTensors())
        {
            var s = name == badTensor ? [shape[0] + 1, .. shape[1..]] : shape;
            w.Add(name, DType.BF16, s, new byte[DTypes.ElementCount(s) * 2]);
        }
        w.Write(dir.File(Checkpoint.SingleFileName));
    }

    [Test]
    public void Json_ReportsParametersWeightBytesAndKvCache()
    {
        using var dir = new TempDir();
        var c = Config();
        c.Save(dir.Path);
        WriteCheckpoint(dir, c);
        var (exit, stdout, stderr) = CliRunner.Run("info", "--model", dir.Path, "--json");
        Assert.That(exit, Is.EqualTo(0), stderr);
        using var doc = JsonDocument.Parse(stdout);
        var r = doc.RootElement;
        Assert.That(r.GetProperty("parameters").GetInt64(), Is.EqualTo(Params));
        Assert.That(r.GetProperty("weight_bytes").GetInt64(), Is.EqualTo(Params * 2));
        Assert.That(r.GetProperty("weight_bytes_by_dtype").GetProperty("BF16").GetInt64(), Is.EqualTo(Params * 2));
        Assert.That(r.GetProperty("weights_from_checkpoint").GetBoolean(), Is.True);
        Assert.That(r.GetProperty("checkpoint_files").GetInt32(), Is.EqualTo(1));
        Assert.That(r.GetProperty("kv_cache_bytes_per_token").GetInt64(), Is.EqualTo(KvBytes));
        var cfg = r.GetProperty("config");
        Assert.That(cfg.GetProperty("num_key_value_heads").GetInt32(), Is.EqualTo(2));
        Assert.That(cfg.GetProperty("eos_token_id").EnumerateArray().Select(e => e.GetInt32()), Is.EqualTo(new[] { 2, 3 }));
    }

    [Test]
    public void Text_ReportsTheSameNumbers()
    {
        using var dir = new TempDir();
        var c = Config();
        c.Save(dir.Path);
        WriteCheckpoint(dir, c);
        var (exit, stdout, stderr) = CliRunner.Run("info", "--model", dir.Path);
        Assert.That(exit, Is.EqualTo(0), stderr);
        Assert.That(stdout, Does.Contain("parameters      1,544\n"));
        Assert.That(stdout, Does.Contain("weights         3,088 bytes (BF16 3,088) in 1 file\n"));
        Assert.That(stdout, Does.Contain("kv cache        128 bytes per token"));
        Assert.That(stdout, Does.Contain("heads           4 query, 2 key/value, head dim 4"));
        Assert.That(stdout, Does.Contain("rms norm eps    1e-05\n"));
    }

    [Test]
    public void WithoutCheckpoint_EstimatesFromTorchDtype()
    {
        using var dir = new TempDir();
        (Config() with { TorchDtype = "float32" }).Save(dir.Path);
        var (exit, stdout, _) = CliRunner.Run("info", "--model", dir.Path, "--json");
        Assert.That(exit, Is.EqualTo(0));
        using var doc = JsonDocument.Parse(stdout);
        Assert.That(doc.RootElement.GetProperty("weight_bytes").GetInt64(), Is.EqualTo(Params * 4));
        Assert.That(doc.RootElement.GetProperty("weights_from_checkpoint").GetBoolean(), Is.False);
    }

    [Test]
    public void MismatchedCheckpoint_FailsWithOneLineNamingTheTensor()
    {
        using var dir = new TempDir();
        var c = Config();
        c.Save(dir.Path);
        WriteCheckpoint(dir, c, badTensor: "model.layers.0.mlp.up_proj.weight");
        var (exit, stdout, stderr) = CliRunner.Run("info", "--model", dir.Path);
        Assert.That(exit, Is.EqualTo(1));
        Assert.That(stdout, Is.Empty);
        Assert.That(stderr, Does.StartWith("error: ").And.Contain("'model.layers.0.mlp.up_proj.weight' has shape [13, 8], but the config expects [12, 8]"));
    }

    [Test]
    public void MissingFolder_AndUnknownOption()
    {
        using var dir = new TempDir();
        var (exit, _, stderr) = CliRunner.Run("info", "--model", dir.File("nope"));
        Assert.That(exit, Is.EqualTo(1));
        Assert.That(stderr, Does.Contain("config.json not found"));
        (exit, _, stderr) = CliRunner.Run("info", "--model", dir.Path, "--jsn");
        Assert.That(exit, Is.EqualTo(2));
        Assert.That(stderr, Does.Contain("unknown option --jsn"));
    }
}
