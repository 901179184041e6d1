using LoRI.Adapters;
using LoRI.Cuda.Backend;
using LoRI.Generation;
using LoRI.Model;
using LoRI.Tensors;
using LoRI.Tests.Support;

namespace LoRI.Tests.Cuda;

/// <summary>
/// The Generator on the CUDA emulator, where it decodes through CudaDeviceDecoder (graph-captured steps, token
/// chosen on the device), against the same Generator on the CPU backend (host sampling); and the on-device
/// sampling kernel's distribution against the softmax it is asked for.
/// </summary>
public class DeviceDecodingTests
{
    private static readonly int[] PromptA = [3, 14, 15, 92, 65, 35, 89, 79], PromptB = [2, 71, 82], PromptC = [27, 18, 28, 18, 28];

    private sealed class Pair : IDisposable
    {
        public readonly LlamaModel Cpu, Dev;
        public readonly CudaBackend Be;

        public Pair(ulong seed = 7)
        {
            var c = TestModels.Tiny();
            Cpu = TestModels.Create(c, seed, DType.BF16);
            Be = CudaBackend.CreateEmulated();
            Dev = TestModels.Create(c, seed, DType.BF16, Be);
        }

        public void Dispose()
        {
            Cpu.Dispose();
            Dev.Dispose();
            Be.Dispose();
        }
    }

    private static GenerationResult[] Gen(LlamaModel m, int batch, IReadOnlyList<int[]> prompts, GenerationOptions o, out DecodeStats stats,
                                          Func<int, int, bool>? onToken = null)
    {
        using var g = new Generator(m, batch, 64);
        var r = g.Generate(prompts, o, onToken);
        stats = g.LastStats;
        return r;
    }

    [Test]
    public void Greedy_MatchesTheCpu_AndReplaysTheCapturedStep()
    {
        using var p = new Pair();
        var o = new GenerationOptions { MaxNewTokens = 12 };
        var cpu = Gen(p.Cpu, 1, [PromptA], o, out var cpuStats)[0];
        var dev = Gen(p.Dev, 1, [PromptA], o, out var st)[0];
        TestContext.Out.WriteLine($"cpu {string.Join(',', cpu.Tokens)}; cuda-emu {string.Join(',', dev.Tokens)}; {st}");
        Assert.That(cpuStats.Path, Is.EqualTo("host"));
        Assert.That(dev.Tokens, Is.EqualTo(cpu.Tokens));
        Assert.That(dev.Finish, Is.EqualTo(cpu.Finish));
        Assert.That(st.Path, Is.EqualTo(CudaDeviceDecoder.PathName));
        // 12 tokens: the first from the prefill, then 11 steps; the first step runs op by op, the second is captured and launched.
        Assert.That(st.Steps, Is.EqualTo(11));
        Assert.That(st.GraphCaptures, Is.EqualTo(1));
        Assert.That(st.GraphReplays, Is.EqualTo(10));
        Assert.That(st.LaunchesPerStep, Is.GreaterThan(p.Dev.Config.NumLayers * 10));
    }

    [Test]
    public void HostPath_CanBeForced_OnTheCudaBackend()
    {
        using var p = new Pair();
        using var g = new Generator(p.Dev, 1, 64) { UseDeviceDecoder = false };
        var r = g.Generate([PromptA], new GenerationOptions { MaxNewTokens = 6 })[0];
        Assert.That(g.LastStats, Is.EqualTo(DecodeStats.Host(5)));
        Assert.That(r.Tokens, Is.EqualTo(Gen(p.Cpu, 1, [PromptA], new GenerationOptions { MaxNewTokens = 6 }, out _)[0].Tokens));
    }

    [Test]
    public void Batch_WithSequencesEndingAtDifferentSteps_MatchesTheCpu()
    {
        using var p = new Pair();
        int[][] prompts = [PromptA, PromptB, PromptC];
        var free = Gen(p.Cpu, 3, prompts, new GenerationOptions { MaxNewTokens = 10 }, out _);
        // B ends at a stop id (a token of its own output found in neither other output), C from the callback after 5
        // tokens, A runs to the length limit: the live batch shrinks 3 -> 2 -> 1 and the survivors are compacted.
        var others = free[0].Tokens.Concat(free[2].Tokens).ToHashSet();
        int k = Array.FindIndex(free[1].Tokens, t => !others.Contains(t) && Array.IndexOf(free[1].Tokens, t) >= 1);
        Assume.That(k, Is.GreaterThanOrEqualTo(1), "B's output has no token of its own to stop at");
        var o = new GenerationOptions { MaxNewTokens = 10, StopIds = [free[1].Tokens[k]] };
        bool StopC(int seq, int _, int[] count) => seq != 2 || ++count[0] < 5;
        int[] cpuCount = [0], devCount = [0];
        var cpu = Gen(p.Cpu, 3, prompts, o, out _, (s, t) => StopC(s, t, cpuCount));
        var dev = Gen(p.Dev, 3, prompts, o, out var st, (s, t) => StopC(s, t, devCount));
        TestContext.Out.WriteLine(st.ToString());
        for (int i = 0; i < 3; i++)
        {
            TestContext.Out.WriteLine($"[{i}] cpu {string.Join(',', cpu[i].Tokens)} {cpu[i].Finish}; cuda-emu {string.Join(',', dev[i].Tokens)} {dev[i].Finish}");
            Assert.That(dev[i].Tokens, Is.EqualTo(cpu[i].Tokens), $"sequence {i}");
            Assert.That(dev[i].Finish, Is.EqualTo(cpu[i].Finish), $"sequence {i}");
        }
        Assert.That(cpu.Select(r => r.Finish), Is.EqualTo(new[] { FinishReason.Length, FinishReason.Eos, FinishReason.Stop }));
        Assert.That(cpu[1].Tokens, Has.Length.EqualTo(k));
        Assert.That(cpu[2].Tokens, Has.Length.EqualTo(5));
        // Live counts 3, 2 and 1 each get a warm-up step; those that last more than two steps are captured and replayed.
        Assert.That(st.Steps, Is.EqualTo(9));
        Assert.That(st.GraphCaptures, Is.GreaterThanOrEqualTo(1));
        Assert.That(st.GraphReplays, Is.GreaterThan(0));
    }

    [Test]
    public void Streaming_AndStopFromTheCallback_AsOnTheCpu()
    {
        using var p = new Pair();
        var o = new GenerationOptions { MaxNewTokens = 10 };
        var free = Gen(p.Dev, 1, [PromptA], o, out _)[0].Tokens;
        var seen = new List<int>();
        var r = Gen(p.Dev, 1, [PromptA], o, out _, (_, t) => { seen.Add(t); return seen.Count < 4; })[0];
        Assert.That(r.Finish, Is.EqualTo(FinishReason.Stop));
        Assert.That(r.Tokens, Is.EqualTo(free.Take(4).ToArray()));
        Assert.That(seen, Is.EqualTo(free.Take(4).ToArray()));
    }

    [Test]
    public void Sampling_IsReproducibleForASeed_SeedsDiffer_AndTopK1IsGreedy()
    {
        using var p = new Pair(seed: 3);
        GenerationOptions O(ulong seed, int topK = 0, float topP = 1f) => new()
        {
            MaxNewTokens = 16, Sampling = new SamplingOptions { Temperature = 1.5f, TopK = topK, TopP = topP, Seed = seed },
        };
        var a = Gen(p.Dev, 1, [PromptA], O(1), out var st)[0].Tokens;
        Assert.That(st.Path, Is.EqualTo(CudaDeviceDecoder.PathName));
        Assert.That(st.GraphReplays, Is.EqualTo(14));
        Assert.That(Gen(p.Dev, 1, [PromptA], O(1), out _)[0].Tokens, Is.EqualTo(a));
        Assert.That(Gen(p.Dev, 1, [PromptA], O(2), out _)[0].Tokens, Is.Not.EqualTo(a));
        // A sequence draws its numbers from (seed, slot, position): alone or in a batch, slot 0 samples the same tokens.
        var batch = Gen(p.Dev, 2, [PromptA, PromptB], O(1), out _);
        Assert.That(batch[0].Tokens, Is.EqualTo(a));
        var greedy = Gen(p.Cpu, 1, [PromptA], new GenerationOptions { MaxNewTokens = 16 }, out _)[0].Tokens;
        Assert.That(Gen(p.Dev, 1, [PromptA], O(5, topK: 1), out _)[0].Tokens, Is.EqualTo(greedy));
        Assert.That(Gen(p.Dev, 1, [PromptA], O(5, topP: 1e-6f), out _)[0].Tokens, Is.EqualTo(greedy));
    }

    [Test]
    public void Adapters_UnmergedSparseAndWeighted_AndMerged_MatchTheCpu()
    {
        var c = TestModels.Tiny();
        var loriS = LoraAdapter.CreateRandom(c, 4, 8, 11, bSparsity: 0.9, bStd: 0.8f);
        var dense = LoraAdapter.CreateRandom(c, 8, 16, 12, bStd: 0.3f);
        var o = new GenerationOptions { MaxNewTokens = 10 };
        using var p = new Pair();
        var plain = Gen(p.Cpu, 2, [PromptA, PromptC], o, out _);
        foreach (bool merge in new[] { false, true })
        {
            using var cpuSet = AdapterSet.Attach(p.Cpu, [(loriS, 0.6f), (dense, 0.4f)], merge);
            using var devSet = AdapterSet.Attach(p.Dev, [(loriS, 0.6f), (dense, 0.4f)], merge);
            var cpu = Gen(p.Cpu, 2, [PromptA, PromptC], o, out _);
            var dev = Gen(p.Dev, 2, [PromptA, PromptC], o, out var st);
            TestContext.Out.WriteLine($"merge {merge}: cpu {string.Join(',', cpu[0].Tokens)}; cuda-emu {string.Join(',', dev[0].Tokens)}; {st}");
            Assert.That(cpu[0].Tokens.Concat(cpu[1].Tokens), Is.Not.EqualTo(plain[0].Tokens.Concat(plain[1].Tokens)), "the adapters must change the output");
            for (int i = 0; i < 2; i++) Assert.That(dev[i].Tokens, Is.EqualTo(cpu[i].Tokens), $"merge {merge}, sequence {i}");
            Assert.That(st.GraphReplays, Is.GreaterThan(0), "the adapters ran inside the captured graph");
        }
    }

    [Test]
    public void ReplayedStep_AllocatesNothing()
    {
        using var p = new Pair();
        using var cache = new KvCache(p.Be, p.Dev.Config, 2, 64);
        using var dec = (CudaDeviceDecoder)p.Be.CreateDecoder(p.Dev, cache, 2)!;
        foreach (var sampling in new[] { new SamplingOptions(), new SamplingOptions { Temperature = 0.9f, TopK = 20, TopP = 0.9f, Seed = 4 } })
        {
            dec.Begin(sampling);
            var first = new int[2];
            dec.Prefill([5, 6, 7, 8], [0, 0, 1, 1], [0, 1, 0, 1], [1, 3], first);
            int[] ids = [first[0], first[1]], slots = [0, 1], pos = [2, 2], next = new int[2];
            for (int t = 0; t < 3; t++)
            {
                dec.Step(ids, slots, pos, next);
                (ids[0], ids[1]) = (next[0], next[1]);
                pos[0]++; pos[1]++;
            }
            Assert.That(dec.Stats.GraphReplays, Is.EqualTo(2));
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int t = 0; t < 10; t++)
            {
                dec.Step(ids, slots, pos, next);
                (ids[0], ids[1]) = (next[0], next[1]);
                pos[0]++; pos[1]++;
            }
            long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            Assert.That(dec.Stats.GraphReplays, Is.EqualTo(12));
            Assert.That(allocated, Is.Zero, $"sampling {sampling}");
        }
    }

    [Test]
    public void GraphIsDroppedWhenTheScratchItUsesIsReallocated()
    {
        using var p = new Pair();
        // An unmerged adapter's shrink goes to backend scratch (lora_t), so the captured step holds a scratch pointer.
        var adapter = LoraAdapter.CreateRandom(p.Dev.Config, 4, 8, 11, bStd: 0.5f);
        using var cpuSet = AdapterSet.Attach(p.Cpu, [(adapter, 1f)], merge: false);
        using var devSet = AdapterSet.Attach(p.Dev, [(adapter, 1f)], merge: false);
        using var cache = new KvCache(p.Be, p.Dev.Config, 1, 64);
        using var dec = (CudaDeviceDecoder)p.Be.CreateDecoder(p.Dev, cache, 1)!;
        dec.Begin(new SamplingOptions());
        var first = new int[1];
        dec.Prefill(PromptA, new int[PromptA.Length], Enumerable.Range(0, PromptA.Length).ToArray(), [PromptA.Length - 1], first);
        var got = new List<int> { first[0] };
        int[] next = new int[1];
        for (int t = 0; t < 6; t++)
        {
            if (t == 3) p.Be.ReleaseScratch();
            dec.Step([got[^1]], [0], [PromptA.Length + t], next);
            got.Add(next[0]);
        }
        // steps 0 op by op, 1 captured, 2 replayed; scratch released: 3 op by op, 4 captured, 5 replayed.
        Assert.That(dec.Stats.GraphCaptures, Is.EqualTo(2));
        Assert.That(dec.Stats.GraphReplays, Is.EqualTo(4));
        var cpu = Gen(p.Cpu, 1, [PromptA], new GenerationOptions { MaxNewTokens = 7 }, out _)[0].Tokens;
        Assert.That(got, Is.EqualTo(cpu));
    }

    /// <summary>
    /// Draws from sample_rows over many rows holding the same logits, each with its own (slot, position) and so its
    /// own random number; the counts against the probabilities the options ask for (softmax at the temperature,
    /// restricted to the top-k / nucleus and renormalised) by Pearson's chi-square.
    /// </summary>
    [TestCase(0.7f, 0, 1f)]
    [TestCase(1.3f, 4, 1f)]
    [TestCase(1f, 0, 0.8f)]
    [TestCase(1f, 5, 0.95f)]
    public void SampleRows_DrawsTheAskedDistribution(float temperature, int topK, float topP)
    {
        float[] logits = [0.3f, 1.1f, -0.4f, 0.9f, 2.0f, -1.5f, 0.0f, 1.6f];
        int v = logits.Length;
        const int draws = 3000;
        var expected = Expected(logits, temperature, topK, topP);
        using var be = CudaBackend.CreateEmulated();
        be.BlockSize = 32;
        var counts = Draw(be, logits, draws, temperature, topK, topP, seed: 42, out var ids);
        Draw(be, logits, 256, temperature, topK, topP, seed: 42, out var again);
        Assert.That(again, Is.EqualTo(ids.Take(256)), "the same seed, slots and positions draw the same tokens");
        double chi2 = 0;
        int dof = -1;
        for (int i = 0; i < v; i++)
        {
            if (expected[i] == 0)
            {
                Assert.That(counts[i], Is.Zero, $"token {i} lies outside top-k {topK} / top-p {topP}");
                continue;
            }
            double e = expected[i] * draws;
            chi2 += (counts[i] - e) * (counts[i] - e) / e;
            dof++;
        }
        TestContext.Out.WriteLine($"counts {string.Join(',', counts)}; expected {string.Join(',', expected.Select(x => (x * draws).ToString("F0")))}; chi2 {chi2:F2} on {dof} dof");
        Assert.That(dof, Is.GreaterThanOrEqualTo(1));
        Assert.That(chi2, Is.LessThan(ChiSquareCritical999(dof)), "the counts do not follow the asked distribution (p < 0.001)");
        Draw(be, logits, 256, temperature, topK, topP, seed: 43, out var otherIds);
        Assert.That(otherIds, Is.Not.EqualTo(ids.Take(256)), "another seed draws other numbers");
    }

    private static int[] Draw(CudaBackend be, float[] logits, int rows, float temperature, int topK, float topP, ulong seed, out int[] ids)
    {
        int v = logits.Length;
        var all = new float[rows * v];
        for (int r = 0; r < rows; r++) logits.CopyTo(all, r * v);
        var slots = new int[rows];
        var positions = new int[rows];
        for (int r = 0; r < rows; r++) { slots[r] = r % 4; positions[r] = r / 4; }
        using var tl = be.Allocate(DType.F32, rows, v);
        using var ts = be.Allocate(DType.I32, rows);
        using var tp = be.Allocate(DType.I32, rows);
        using var ti = be.Allocate(DType.I32, rows);
        be.Upload<float>(all, tl);
        be.Upload<int>(slots, ts);
        be.Upload<int>(positions, tp);
        be.SampleRows(tl, temperature, topK, topP, seed, ts, tp, ti);
        ids = new int[rows];
        be.Download<int>(ti, ids);
        var counts = new int[v];
        foreach (var id in ids) counts[id]++;
        return counts;
    }

    /// <summary>The asked distribution in double precision: softmax(l / T), top-k, then the smallest nucleus holding top-p, renormalised.</summary>
    private static double[] Expected(float[] logits, float temperature, int topK, float topP)
    {
        int v = logits.Length;
        double max = logits.Max();
        var p = logits.Select(l => Math.Exp((l - max) / temperature)).ToArray();
        var order = Enumerable.Range(0, v).OrderByDescending(i => p[i]).ToArray();
        int keep = topK > 0 && topK < v ? topK : v;
        double kept = order.Take(keep).Sum(i => p[i]);
        if (topP < 1)
        {
            double cum = 0;
            int n = 0;
            while (n < keep)
            {
                cum += p[order[n++]];
                if (cum >= topP * kept) break;
            }
            keep = n;
        }
        var q = new double[v];
        double total = order.Take(keep).Sum(i => p[i]);
        foreach (var i in order.Take(keep)) q[i] = p[i] / total;
        return q;
    }

    /// <summary>The 0.999 quantile of chi-square with 1..7 degrees of freedom.</summary>
    private static double ChiSquareCritical999(int dof) => dof switch
    {
        1 => 10.828, 2 => 13.816, 3 => 16.266, 4 => 18.467, 5 => 20.515, 6 => 22.458, 7 => 24.322,
        _ => throw new ArgumentOutOfRangeException(nameof(dof)),
    };
}
