using LoRI.IO;
using LoRI.Model;
using LoRI.Tests.IO;
using LoRI.Tests.Support;
using LoRI.Text;

namespace LoRI.Tests.Gguf;

/// <summary>The exported model file read back: metadata, names, shapes, the q/k row order, rope factors, dtypes.</summary>
public class GgufExportTests
{
    [Test]
    public void PermutedSourceRow_InterleavesTheHalvesOfEachHead()
    {
        // head dim 4: llama.cpp rows (0,1) rotate together and must be HF rows (0,2); (2,3) are HF (1,3).
        Assert.That(Enumerable.Range(0, 8).Select(n => GgufExport.PermutedSourceRow(n, 4)), Is.EqualTo(new[] { 0, 2, 1, 3, 4, 6, 5, 7 }));
        // The converter's reshape(heads, 2, d/2).swapaxes(1, 2), written as "HF row (h, t, j) lands at h*d + 2j + t".
        int d = 16, heads = 3;
        var expected = new int[heads * d];
        for (int h = 0; h < heads; h++)
            for (int t = 0; t < 2; t++)
                for (int j = 0; j < d / 2; j++)
                    expected[h * d + 2 * j + t] = h * d + t * (d / 2) + j;
        Assert.That(Enumerable.Range(0, heads * d).Select(n => GgufExport.PermutedSourceRow(n, d)), Is.EqualTo(expected));
    }

    [Test]
    public void RopeFactors_AreUnscaledOverScaledFrequencies()
    {
        var c = TestModels.Tiny(scaling: GgufTestModels.Llama3Scaling) with { HeadDim = 16, RopeTheta = 10000f };
        var f = GgufExport.RopeFactors(c)!;
        var scaled = c.RopeInvFreq();
        var plain = (c with { RopeScaling = null }).RopeInvFreq();
        Assert.That(f, Has.Length.EqualTo(8));
        for (int i = 0; i < 8; i++) Assert.That(f[i], Is.EqualTo(plain[i] / scaled[i]).Within(3e-5).Percent, $"pair {i}");
        // every regime is present: kept (1), blended, divided by the factor (8)
        Assert.That(f[0], Is.EqualTo(1f));
        Assert.That(f.Any(x => x > 1.01f && x < 7.99f), Is.True);
        Assert.That(f[^1], Is.EqualTo(8f));
        Assert.That(GgufExport.RopeFactors(c with { RopeScaling = null }), Is.Null);
    }

    [TestCase(false, false)]
    [TestCase(true, true)]
    public void Model_MetadataNamesShapesAndWeights(bool tied, bool scaling)
    {
        using var tmp = new TempDir();
        var dir = tmp.File("m");
        var c = GgufTestModels.Write(dir, kvHeads: 2, tied, scaling);
        var path = tmp.File("m.gguf");
        GgufExport.WriteModel(dir, path);
        var f = GgufFile.Read(path);

        Assert.That(f["general.architecture"].AsString(), Is.EqualTo("llama"));
        Assert.That(f["general.file_type"].AsLong(), Is.EqualTo(0));
        Assert.That(f["llama.context_length"].AsLong(), Is.EqualTo(256));
        Assert.That(f["llama.embedding_length"].AsLong(), Is.EqualTo(64));
        Assert.That(f["llama.block_count"].AsLong(), Is.EqualTo(2));
        Assert.That(f["llama.feed_forward_length"].AsLong(), Is.EqualTo(96));
        Assert.That(f["llama.attention.head_count"].AsLong(), Is.EqualTo(4));
        Assert.That(f["llama.attention.head_count_kv"].AsLong(), Is.EqualTo(2));
        Assert.That(f["llama.rope.dimension_count"].AsLong(), Is.EqualTo(16));
        Assert.That(f["llama.rope.freq_base"].AsFloat(), Is.EqualTo(10000f));
        Assert.That(f["llama.attention.layer_norm_rms_epsilon"].AsFloat(), Is.EqualTo(1e-5f));
        Assert.That(f["llama.vocab_size"].AsLong(), Is.EqualTo(c.VocabSize));

        var tok = LlamaTokenizer.Load(dir);
        Assert.That(f["tokenizer.ggml.model"].AsString(), Is.EqualTo("gpt2"));
        Assert.That(f["tokenizer.ggml.pre"].AsString(), Is.EqualTo("llama-bpe"));
        var tokens = f["tokenizer.ggml.tokens"].AsStrings();
        var types = f["tokenizer.ggml.token_type"].AsInts();
        Assert.That(tokens, Has.Length.EqualTo(c.VocabSize));
        Assert.That(tokens[0x20], Is.EqualTo("Ġ"), "byte-level spelling of the space byte");
        int bos = tok.BosId!.Value;
        Assert.That(tokens[bos], Is.EqualTo("<|begin_of_text|>"));
        Assert.That(types[bos], Is.EqualTo(GgufExport.TokenControl));
        Assert.That(types[65], Is.EqualTo(GgufExport.TokenNormal));
        Assert.That(f["tokenizer.ggml.bos_token_id"].AsLong(), Is.EqualTo(bos));
        Assert.That(f["tokenizer.ggml.eos_token_id"].AsLong(), Is.EqualTo(c.EosTokenIds[0]));
        Assert.That(f["tokenizer.ggml.eot_token_id"].AsLong(), Is.EqualTo(tok.TokenToId("<|eot_id|>")));
        Assert.That(f["tokenizer.ggml.merges"].AsStrings(), Is.EqualTo(tok.Merges.ToArray()));

        int expectedTensors = 1 + c.NumLayers * 9 + 1 + (tied ? 0 : 1) + (scaling ? 1 : 0);
        Assert.That(f.Tensors, Has.Count.EqualTo(expectedTensors));
        Assert.That(f.TryGetTensor("output.weight", out _), Is.EqualTo(!tied));
        Assert.That(f.TryGetTensor("rope_freqs.weight", out _), Is.EqualTo(scaling));
        Assert.That(f.Tensor("token_embd.weight").Ne, Is.EqualTo(new long[] { 64, c.VocabSize }));
        Assert.That(f.Tensor("blk.1.attn_k.weight").Ne, Is.EqualTo(new long[] { 64, 32 }));
        Assert.That(f.Tensor("blk.1.ffn_down.weight").Ne, Is.EqualTo(new long[] { 96, 64 }));
        Assert.That(f.Tensor("blk.0.attn_norm.weight").Ne, Is.EqualTo(new long[] { 64 }));

        using var ckpt = Checkpoint.Open(dir);
        Assert.That(f.ReadFloats("blk.1.ffn_norm.weight"), Is.EqualTo(ckpt.ReadFloat32("model.layers.1.post_attention_layernorm.weight")));
        Assert.That(f.ReadFloats("blk.0.attn_v.weight"), Is.EqualTo(ckpt.ReadFloat32("model.layers.0.self_attn.v_proj.weight")));
        Assert.That(f.ReadFloats("token_embd.weight"), Is.EqualTo(ckpt.ReadFloat32("model.embed_tokens.weight")));
        foreach (var (p, rows) in new[] { (Proj.Q, 64), (Proj.K, 32) })
        {
            var hf = ckpt.ReadFloat32(p.HfPrefix(1) + ".weight");
            var g = f.ReadFloats(GgufExport.TensorName(p, 1));
            for (int n = 0; n < rows; n++)
                Assert.That(g.AsSpan(n * 64, 64).ToArray(), Is.EqualTo(hf.AsSpan(GgufExport.PermutedSourceRow(n, 16) * 64, 64).ToArray()), $"{p} row {n}");
        }
    }

    [TestCase("f16")]
    [TestCase("bf16")]
    public void Cli_ExportsHalfPrecision_NormsStayF32(string dtype)
    {
        using var tmp = new TempDir();
        var dir = tmp.File("m");
        GgufTestModels.Write(dir, kvHeads: 4, tied: false, scaling: false);
        var path = tmp.File("m.gguf");
        var r = Cli.Run("export-gguf", "--model", dir, "--out", path, "--dtype", dtype);
        Assert.That(r.ExitCode, Is.EqualTo(0), r.Err);
        Assert.That(r.Out, Does.Contain(path));
        var f = GgufFile.Read(path);
        var want = dtype == "f16" ? GgmlType.F16 : GgmlType.BF16;
        Assert.That(f["general.file_type"].AsLong(), Is.EqualTo(want.FileType()));
        Assert.That(f.Tensor("output.weight").Type, Is.EqualTo(want));
        Assert.That(f.Tensor("blk.0.ffn_up.weight").Type, Is.EqualTo(want));
        Assert.That(f.Tensor("output_norm.weight").Type, Is.EqualTo(GgmlType.F32));
        using var ckpt = Checkpoint.Open(dir);
        var hf = ckpt.ReadFloat32("model.layers.0.mlp.up_proj.weight");
        var rounded = hf.Select(x => want == GgmlType.F16 ? (float)(Half)x : LoRI.Tensors.Bf16.Round(x)).ToArray();
        Assert.That(f.ReadFloats("blk.0.ffn_up.weight"), Is.EqualTo(rounded));
    }

    [Test]
    public void Cli_BadDtype_IsAUsageError()
    {
        var r = Cli.Run("export-gguf", "--model", "x", "--out", "y", "--dtype", "q4");
        Assert.That(r.ExitCode, Is.EqualTo(2));
        Assert.That(r.Err, Does.Contain("--dtype"));
    }

    [Test]
    public void Model_TokenizerLargerThanVocab_IsRefusedNamingTheFile()
    {
        using var tmp = new TempDir();
        var dir = tmp.File("m");
        var c = GgufTestModels.Write(dir, kvHeads: 4, tied: true, scaling: false);
        var smaller = c with { VocabSize = c.VocabSize - 1 };
        LlamaModel.Save(dir, smaller, RandomWeights.Create(smaller, 1, LoRI.Tensors.DType.F32));
        var e = Assert.Throws<ShapeMismatchException>(() => GgufExport.WriteModel(dir, tmp.File("x.gguf")));
        Assert.That(e!.Message, Does.Contain("tokenizer.json").And.Contain($"vocab_size {c.VocabSize - 1}"));
        Assert.That(File.Exists(tmp.File("x.gguf")), Is.False);
    }
}

/// <summary>The exported adapter file read back: metadata, tensor names, ne order, B's q/k rows, per-module scales folded.</summary>
public class GgufAdapterExportTests
{
    [Test]
    public void Adapter_MetadataNamesNeOrderAndPermutedB()
    {
        var c = TestModels.Tiny(kvHeads: 2) with { HiddenSize = 64, NumHeads = 4, HeadDim = 16 };
        var adapter = LoRI.Adapters.LoraAdapter.CreateRandom(c, rank: 4, alpha: 8, seed: 9, bStd: 0.3f);
        using var tmp = new TempDir();
        var path = tmp.File("a.gguf");
        GgufExport.WriteAdapter(c, [(GgufLoraModule.From(adapter), 1f)], path, name: "math");
        var f = GgufFile.Read(path);
        Assert.That(f["general.architecture"].AsString(), Is.EqualTo("llama"));
        Assert.That(f["general.type"].AsString(), Is.EqualTo("adapter"));
        Assert.That(f["general.name"].AsString(), Is.EqualTo("math"));
        Assert.That(f["adapter.type"].AsString(), Is.EqualTo("lora"));
        Assert.That(f["adapter.lora.alpha"].AsFloat(), Is.EqualTo(8f));
        Assert.That(f.Tensors, Has.Count.EqualTo(c.NumLayers * 7 * 2));

        foreach (var m in adapter.Modules)
        {
            var name = GgufExport.TensorName(m.Proj, m.Layer);
            var ta = f.Tensor(name + ".lora_a");
            var tb = f.Tensor(name + ".lora_b");
            Assert.That(ta.Ne, Is.EqualTo(new long[] { m.In, 4 }), $"{name}.lora_a ne = {{in, r}}");
            Assert.That(tb.Ne, Is.EqualTo(new long[] { 4, m.Out }), $"{name}.lora_b ne = {{r, out}}");
            Assert.That(f.ReadFloats(name + ".lora_a"), Is.EqualTo(m.A));
            var b = f.ReadFloats(name + ".lora_b");
            bool permuted = m.Proj is Proj.Q or Proj.K;
            for (int n = 0; n < m.Out; n++)
            {
                int src = permuted ? GgufExport.PermutedSourceRow(n, 16) : n;
                Assert.That(b.AsSpan(n * 4, 4).ToArray(), Is.EqualTo(m.B.AsSpan(src * 4, 4).ToArray()), $"{name} B row {n}");
            }
        }
    }

    [Test]
    public void Adapter_ModuleScalesOtherThanTheFilesAlpha_AreFoldedIntoB()
    {
        var c = TestModels.Tiny();
        int i = c.HiddenSize, o = c.KvDim;
        var a = TestModels.RandomFloats(2 * i, 1);
        var b1 = TestModels.RandomFloats(o * 2, 2);
        var a2 = TestModels.RandomFloats(4 * i, 3);
        var b2 = TestModels.RandomFloats(o * 4, 4);
        // module 1: rank 2, alpha 4 (scale 2) sets the file's alpha; module 2: rank 4, alpha 2 (scale 0.5) must be
        // written with B * 0.5 / (4 / 4) so that llama.cpp's alpha / r = 1 gives 0.5 * B A.
        var mods = new List<GgufLoraModule> { new(0, Proj.V, 2, 4f, a, b1), new(1, Proj.V, 4, 2f, a2, b2) };
        using var tmp = new TempDir();
        var path = tmp.File("a.gguf");
        GgufExport.WriteAdapter(c, [(mods, 1f)], path);
        var f = GgufFile.Read(path);
        Assert.That(f["adapter.lora.alpha"].AsFloat(), Is.EqualTo(4f));
        Assert.That(f.ReadFloats("blk.0.attn_v.weight.lora_b"), Is.EqualTo(b1));
        Assert.That(f.ReadFloats("blk.1.attn_v.weight.lora_b"), Is.EqualTo(b2.Select(x => x * 0.5f).ToArray()));
    }

    [Test]
    public void Adapter_WrongShapes_AreRefusedNamingTheModule()
    {
        var c = TestModels.Tiny();
        var bad = new GgufLoraModule(1, Proj.Down, 2, 4f, new float[2 * c.HiddenSize], new float[c.HiddenSize * 2]);
        using var tmp = new TempDir();
        var e = Assert.Throws<ShapeMismatchException>(() => GgufExport.WriteAdapter(c, [([bad], 1f)], tmp.File("x.gguf")));
        Assert.That(e!.Message, Does.Contain("layers.1.down_proj").And.Contain("A holds"));
        Assert.That(File.Exists(tmp.File("x.gguf")), Is.False);
    }

    [Test]
    public void Cli_MergeWithoutAdapter_IsAUsageError()
    {
        var r = Cli.Run("export-gguf", "--model", "m", "--merge", "--out", "x.gguf");
        Assert.That(r.ExitCode, Is.EqualTo(2));
        Assert.That(r.Err, Does.Contain("--merge needs"));
    }
}
