using LoRI.IO;
using LoRI.Tests.IO;
using LoRI.Tests.Support;

namespace LoRI.Tests.Gguf;

/// <summary>
/// Our exported GGUF run by llama.cpp against our CPU backend on the HF folder it came from: the logits of every
/// position of prompts of several lengths, on GQA ratios 1, 2 and 4, tied and untied embeddings, with and without
/// llama3 rope scaling.
/// </summary>
[TestFixture, Category("LlamaCpp")]
public class LlamaCppParityTests
{
    /// <summary>
    /// Both sides compute in float32 with different summation orders; logits here are O(1) (|max| ~ 3). Measured
    /// worst error: ~3e-6. Allowed: 2e-5 + 1e-5 * |ref|, an order of magnitude below what any layout mistake
    /// (a wrong q/k row order, a misplaced norm, a missing rope factor) produces (> 1e-2).
    /// </summary>
    private const float Atol = 2e-5f, Rtol = 1e-5f;

    public static IEnumerable<TestCaseData> Configs()
    {
        foreach (int kv in new[] { 4, 2, 1 })
            foreach (bool tied in new[] { false, true })
                foreach (bool scaling in new[] { false, true })
                    yield return new TestCaseData(kv, tied, scaling).SetName($"Logits_Gqa{4 / kv}_{(tied ? "Tied" : "Untied")}_{(scaling ? "Llama3Rope" : "PlainRope")}");
    }

    [TestCaseSource(nameof(Configs))]
    public void Logits(int kvHeads, bool tied, bool scaling)
    {
        using var tmp = new TempDir();
        var dir = tmp.File("model");
        var c = GgufTestModels.Write(dir, kvHeads, tied, scaling, seed: (ulong)(kvHeads * 4 + (tied ? 2 : 0) + (scaling ? 1 : 0)));
        var gguf = tmp.File("model.gguf");
        GgufExport.WriteModel(dir, gguf);

        using var cpp = LlamaCppPeer.Load(gguf);
        foreach (int len in new[] { 1, 5, 24, 61 })
        {
            var ids = GgufTestModels.Prompt(len, c.VocabSize, (ulong)len);
            var ours = GgufTestModels.OurLogits(dir, ids);
            var theirs = cpp.Logits(ids);
            TestContext.Out.WriteLine($"len {len}: max |ours - llama.cpp| = {Close.MaxError(ours, theirs):G3}");
            Close.Assert(ours, theirs, Atol, Rtol, $"logits, prompt of {len} tokens");
        }
    }
}
