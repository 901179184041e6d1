using LoRI.Adapters;
using LoRI.IO;
using LoRI.Model;
using LoRI.Tests.IO;
using LoRI.Tests.Support;

namespace LoRI.Tests.Gguf;

/// <summary>
/// Adapters exported as GGUF LoRA adapters and applied by llama.cpp (LoadLoraFromFile / SetLoraAdapters), held
/// against our unmerged adapter path (AdapterSet as the model's hook) on the HF folders: LoRA, LoRI-D and LoRI-S on
/// every model configuration of the parity tests; merged exports; several weighted adapters.
/// </summary>
[TestFixture, Category("LlamaCpp")]
public class LlamaCppAdapterTests
{
    /// <summary>Same rule as the base-model parity (float32 on both sides, different summation orders); measured worst ~1e-5.</summary>
    private const float Atol = 3e-5f, Rtol = 1e-5f;

    /// <summary>The three adapter kinds: LoRA (r 8, alpha 16), LoRI-D (r 4, alpha 8), LoRI-S (r 8, alpha 16, 90% of B zero).</summary>
    public static LoraAdapter Kind(string kind, LlamaConfig c, ulong seed) => kind switch
    {
        "LoRA" => LoraAdapter.CreateRandom(c, rank: 8, alpha: 16, seed, bStd: 0.2f),
        "LoRI-D" => LoraAdapter.CreateRandom(c, rank: 4, alpha: 8, seed, bStd: 0.2f),
        "LoRI-S" => LoraAdapter.CreateRandom(c, rank: 8, alpha: 16, seed, bSparsity: 0.9, bStd: 0.5f),
        _ => throw new ArgumentException(kind),
    };

    private static readonly string[] Kinds = ["LoRA", "LoRI-D", "LoRI-S"];

    public static IEnumerable<TestCaseData> Configs()
    {
        foreach (int kv in new[] { 4, 2, 1 })
            foreach (bool tied in new[] { false, true })
                foreach (bool scaling in new[] { false, true })
                    yield return new TestCaseData(kv, tied, scaling).SetName($"Adapters_Gqa{4 / kv}_{(tied ? "Tied" : "Untied")}_{(scaling ? "Llama3Rope" : "PlainRope")}");
    }

    [TestCaseSource(nameof(Configs))]
    public void Adapters(int kvHeads, bool tied, bool scaling)
    {
        using var tmp = new TempDir();
        var dir = tmp.File("model");
        var c = GgufTestModels.Write(dir, kvHeads, tied, scaling, seed: (ulong)(100 + kvHeads * 4 + (tied ? 2 : 0) + (scaling ? 1 : 0)));
        var gguf = tmp.File("model.gguf");
        GgufExport.WriteModel(dir, gguf);
        using var cpp = LlamaCppPeer.Load(gguf);

        for (int k = 0; k < Kinds.Length; k++)
        {
            var adapterDir = tmp.File(Kinds[k]);
            PeftAdapter.Save(Kind(Kinds[k], c, (ulong)(k + 1)), adapterDir);
            var adapterGguf = tmp.File(Kinds[k] + ".gguf");
            var r = Cli.Run("export-gguf", "--model", dir, "--adapter", adapterDir, "--out", adapterGguf);
            Assert.That(r.ExitCode, Is.EqualTo(0), r.Err);
            var adapter = PeftAdapter.Load(adapterDir, c);

            foreach (int len in new[] { 3, 40 })
            {
                var ids = GgufTestModels.Prompt(len, c.VocabSize, (ulong)(len + k));
                var ours = GgufTestModels.OurLogits(dir, ids, [(adapter, 1f)]);
                var theirs = cpp.Logits(ids, [(adapterGguf, 1f)]);
                TestContext.Out.WriteLine($"{Kinds[k]} len {len}: max |ours - llama.cpp| = {Close.MaxError(ours, theirs):G3}");
                Close.Assert(ours, theirs, Atol, Rtol, $"{Kinds[k]} adapter, prompt of {len} tokens");
                // The adapter must matter, or the comparison above proves nothing about it.
                var baseLogits = GgufTestModels.OurLogits(dir, ids);
                Assert.That(Close.MaxError(ours, baseLogits), Is.GreaterThan(0.05), $"{Kinds[k]}: the adapter barely changes the logits");
            }
        }
    }

    [Test]
    public void WeightedAdapters_MergedModelAndConcatenatedAdapter_MatchOurUnmergedPath()
    {
        using var tmp = new TempDir();
        var dir = tmp.File("model");
        var c = GgufTestModels.Write(dir, kvHeads: 2, tied: false, scaling: true, seed: 31);
        var aDir = tmp.File("a");
        var bDir = tmp.File("b");
        PeftAdapter.Save(Kind("LoRI-D", c, 11), aDir);
        PeftAdapter.Save(Kind("LoRI-S", c, 12), bDir);
        var a = PeftAdapter.Load(aDir, c);
        var b = PeftAdapter.Load(bDir, c);
        var ids = GgufTestModels.Prompt(33, c.VocabSize, 5);
        var ours = GgufTestModels.OurLogits(dir, ids, [(a, 0.5f), (b, 0.7f)]);

        var merged = tmp.File("merged.gguf");
        var r = Cli.Run("export-gguf", "--model", dir, "--adapter", aDir + ":0.5", "--adapter", bDir + ":0.7", "--merge", "--out", merged);
        Assert.That(r.ExitCode, Is.EqualTo(0), r.Err);
        Assert.That(r.Out, Does.Contain("merged"));
        var fromMerged = LlamaCppPeer.Logits(merged, ids);
        TestContext.Out.WriteLine($"merged: max |ours - llama.cpp| = {Close.MaxError(ours, fromMerged):G3}");
        Close.Assert(ours, fromMerged, Atol, Rtol, "model with two adapters merged");

        var base_ = tmp.File("base.gguf");
        GgufExport.WriteModel(dir, base_);
        var cat = tmp.File("cat.gguf");
        r = Cli.Run("export-gguf", "--model", dir, "--adapter", aDir + ":0.5", "--adapter", bDir + ":0.7", "--out", cat);
        Assert.That(r.ExitCode, Is.EqualTo(0), r.Err);
        var catFile = GgufFile.Read(cat);
        Assert.That(catFile.Tensor("blk.0.attn_q.weight.lora_a").Ne, Is.EqualTo(new long[] { 64, 4 + 8 }), "ranks concatenated");
        using var cpp = LlamaCppPeer.Load(base_);
        var fromCat = cpp.Logits(ids, [(cat, 1f)]);
        TestContext.Out.WriteLine($"concatenated: max |ours - llama.cpp| = {Close.MaxError(ours, fromCat):G3}");
        Close.Assert(ours, fromCat, Atol, Rtol, "two adapters concatenated into one GGUF adapter");

        // The same two adapters as separate GGUF files with llama.cpp's own per-adapter scales.
        var aG = tmp.File("a.gguf");
        var bG = tmp.File("b.gguf");
        GgufExport.WriteAdapter(c, [(GgufLoraModule.From(a), 1f)], aG);
        GgufExport.WriteAdapter(c, [(GgufLoraModule.From(b), 1f)], bG);
        var fromTwo = cpp.Logits(ids, [(aG, 0.5f), (bG, 0.7f)]);
        Close.Assert(ours, fromTwo, Atol, Rtol, "two GGUF adapters with scales 0.5 and 0.7");
    }
}
