using LoRI.Adapters;
using LoRI.Backend.Cpu;
using LoRI.IO;
using LoRI.Model;
using LoRI.Tensors;
using LoRI.Tests.IO;
using LoRI.Tests.Support;
using LoRI.Text;

namespace LoRI.Tests.Adapters;

/// <summary>The adapter CLI verbs, run in-process through Program.Main on a random model folder.</summary>
[NonParallelizable]
public class AdapterVerbsTests
{
    private static (int Code, string Out, string Err) Run(params string[] args)
    {
        var (o, e) = (Console.Out, Console.Error);
        var so = new StringWriter();
        var se = new StringWriter();
        Console.SetOut(so);
        Console.SetError(se);
        try { return (LoRI.Runner.Program.Main(args), so.ToString(), se.ToString()); }
        finally { Console.SetOut(o); Console.SetError(e); }
    }

    /// <summary>A HF-layout folder: config.json, model.safetensors (random weights), byte-level tokenizer files.</summary>
    private static LlamaConfig MakeModel(string dir, DType dtype)
    {
        var v = TokenizerFiles.WriteByteLevel(dir);
        var c = TestModels.Tiny() with { VocabSize = v.VocabSize, BosTokenId = v.BosId, EosTokenIds = [v.EosId], TorchDtype = dtype == DType.BF16 ? "bfloat16" : "float32" };
        LlamaModel.Save(dir, c, RandomWeights.Create(c, 5, dtype, 0.2f));
        return c;
    }

    private static float[] Logits(LlamaModel m, int[] ids)
    {
        using var cache = new KvCache(m.Backend, m.Config, 1, 64);
        var logits = new float[ids.Length * m.Config.VocabSize];
        var pos = Enumerable.Range(0, ids.Length).ToArray();
        m.Forward(ids, new int[ids.Length], pos, pos, cache, logits);
        return logits;
    }

    [Test]
    public void AdapterInfo_PrintsCountsAndSparsity()
    {
        using var dir = new TempDir();
        var a = LoraAdapter.CreateRandom(TestModels.Tiny(), 4, 8, 3, 0.9, baseModel: "base");
        PeftAdapter.Save(a, dir.Path);
        var (code, output, err) = Run("adapter-info", dir.Path);
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(output, Does.Contain("r = 4"));
        Assert.That(output, Does.Contain("scale        2"));
        Assert.That(output, Does.Contain($"trainable    {a.TrainableParameterCount:N0}"));
        Assert.That(output, Does.Contain($"non-zero B   {a.NonZeroB:N0}"));
        Assert.That(output, Does.Contain($"B sparsity   {100 * a.BSparsity:F2}%"));
        Assert.That(output, Does.Contain("q_proj k_proj v_proj o_proj gate_proj up_proj down_proj in 2 layers (14 adapted projections)"));
        var (code2, json, _) = Run("adapter-info", dir.Path, "--json");
        Assert.That(code2, Is.EqualTo(0));
        Assert.That(json, Does.Contain($"\"nonzero_b\": {a.NonZeroB}"));
    }

    [Test]
    public void Mask_WritesMaskTableAndPlot()
    {
        using var dir = new TempDir();
        var a = LoraAdapter.CreateRandom(TestModels.Tiny(), 4, 8, 3);
        PeftAdapter.Save(a, dir.File("ad"));
        var (code, output, err) = Run("mask", "--adapter", dir.File("ad"), "--sparsity", "0.9", "--out", dir.File("m/mask.safetensors"), "--plot", dir.File("m/density.png"));
        Assert.That(code, Is.EqualTo(0), err);
        var mask = LoraMask.Load(dir.File("m/mask.safetensors"));
        Assert.That(mask.Kept, Is.EqualTo(LoraMask.KeepCount(0.9, a.TrainableParameterCount)));
        Assert.That(output, Does.Contain($"kept         {mask.Kept:N0} of {mask.Total:N0}"));
        Assert.That(output, Does.Contain("layer    q_proj"));
        Assert.That(output, Does.Contain($"threshold    |B| >= {mask.Entries.SelectMany((e, i) => a.Modules.ElementAt(i).B.Where((v, j) => e.Keep[j] == 1)).Min(MathF.Abs):G9}"));
        Assert.That(File.ReadAllBytes(dir.File("m/density.png")).AsSpan(1, 3).ToArray(), Is.EqualTo("PNG"u8.ToArray()));
        var (scoped, _, _) = Run("mask", "--adapter", dir.File("ad"), "--sparsity", "0.5", "--scope", "matrix", "--out", dir.File("m2.safetensors"));
        Assert.That(scoped, Is.EqualTo(0));
        foreach (var e in LoraMask.Load(dir.File("m2.safetensors")).Entries) Assert.That(e.Kept, Is.EqualTo(e.Keep.Length / 2), e.Key);
        var (bad, _, berr) = Run("mask", "--adapter", dir.File("ad"), "--sparsity", "1.5", "--out", dir.File("x"));
        Assert.That(bad, Is.EqualTo(2));
        Assert.That(berr, Does.Contain("--sparsity: expected a number from 0 to 1"));
        var (bad2, _, berr2) = Run("mask", "--adapter", dir.File("ad"), "--sparsity", "0.5", "--scope", "row", "--out", dir.File("x"));
        Assert.That(bad2, Is.EqualTo(2));
        Assert.That(berr2, Does.Contain("--scope: expected global, layer, module or matrix"));
    }

    [Test]
    public void Merge_Cat_WritesAPeftAdapterWithTheWeightedSum()
    {
        using var dir = new TempDir();
        var c = TestModels.Tiny();
        var a1 = LoraAdapter.CreateRandom(c, 4, 8, 1, 0.9);
        var a2 = LoraAdapter.CreateRandom(c, 4, 8, 2, 0.9);
        PeftAdapter.Save(a1, dir.File("a1"));
        PeftAdapter.Save(a2, dir.File("a2"));
        var (code, output, err) = Run("merge", "--adapters", $"{dir.File("a1")},{dir.File("a2")}", "--weights", "0.4,0.4", "--method", "cat", "--out", dir.File("m"));
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(output, Does.Contain("rank         8, lora_alpha 8"));
        var m = PeftAdapter.Load(dir.File("m"), c);
        var direct = AdapterMerge.Cat([(a1, 0.4f), (a2, 0.4f)]);
        foreach (var mod in direct.Modules)
        {
            Assert.That(m[mod.Layer, mod.Proj]!.A, Is.EqualTo(mod.A));
            Assert.That(m[mod.Layer, mod.Proj]!.B, Is.EqualTo(mod.B));
        }
        var (lin, _, _) = Run("merge", "--adapters", $"{dir.File("a1")},{dir.File("a2")}", "--weights", "0.5,0.3", "--method", "linear", "--out", dir.File("l"));
        Assert.That(lin, Is.EqualTo(0));
        Assert.That(PeftAdapter.Load(dir.File("l")).Config.R, Is.EqualTo(4));
        var (bad, _, berr) = Run("merge", "--adapters", dir.File("a1"), "--weights", "0.5,0.3", "--method", "cat", "--out", dir.File("x"));
        Assert.That(bad, Is.EqualTo(2));
        Assert.That(berr, Does.Contain("2 weights for 1 adapters"));
    }

    [Test]
    public void MergeIntoModel_EqualsInMemoryMerge_AndUnmergedLogits([Values(DType.F32, DType.BF16)] DType dtype)
    {
        using var dir = new TempDir();
        var c = MakeModel(dir.File("model"), dtype);
        var a = LoraAdapter.CreateRandom(c, 4, 8, 7, 0.9, bStd: 0.2f);
        PeftAdapter.Save(a, dir.File("ad"));
        var (code, _, err) = Run("merge-into-model", "--model", dir.File("model"), "--adapter", dir.File("ad") + ":0.8", "--out", dir.File("merged"));
        Assert.That(code, Is.EqualTo(0), err);
        foreach (var f in new[] { "tokenizer.json", "tokenizer_config.json", "config.json", "model.safetensors" })
            Assert.That(File.Exists(Path.Combine(dir.File("merged"), f)), f);

        int[] ids = [1, 50, 99, 7, 200, 31];
        using var original = LlamaModel.Load(dir.File("model"), new CpuBackend());
        using var merged = LlamaModel.Load(dir.File("merged"), new CpuBackend());
        float[] unmergedLogits, inMemoryLogits;
        using (AdapterSet.Attach(original, [(a, 0.8f)], merge: false)) unmergedLogits = Logits(original, ids);
        using (AdapterSet.Attach(original, [(a, 0.8f)], merge: true))
        {
            inMemoryLogits = Logits(original, ids);
            // The written weights are the in-memory merge's, bit for bit (same fp32 sum, same rounding).
            for (int l = 0; l < c.NumLayers; l++)
                foreach (var p in Projs.All)
                {
                    var x = original.Weights.Layers[l][p]; var y = merged.Weights.Layers[l][p];
                    var bx = new byte[x.ByteSize]; var by = new byte[y.ByteSize];
                    original.Backend.Download<byte>(x, bx); merged.Backend.Download<byte>(y, by);
                    Assert.That(by, Is.EqualTo(bx), $"layer {l} {p}");
                }
        }
        Assert.That(merged.Weights.Layers[0][Proj.Q].DType, Is.EqualTo(dtype));
        Close.Assert(Logits(merged, ids), inMemoryLogits, 0, 0, "merged folder vs in-memory merge");
        // F32: only summation order differs (1e-4). BF16: the merged weights are rounded to bf16 once more than
        // the unmerged path's (which adds s B A x in fp32), so logits differ by bf16 rounding of W + dW:
        // relative 2^-7 per weight, averaging out over 32-64 terms per dot product: 8 x Bf16Eps absolute on
        // logits of magnitude ~1.
        float tol = dtype == DType.F32 ? 1e-4f : 8 * Close.Bf16Eps;
        Close.Assert(inMemoryLogits, unmergedLogits, tol, tol, "merged vs unmerged");

        var (same, _, serr) = Run("merge-into-model", "--model", dir.File("model"), "--adapter", dir.File("ad"), "--out", dir.File("model"));
        Assert.That(same, Is.EqualTo(1));
        Assert.That(serr, Does.Contain("must differ from the model folder"));
    }
}
