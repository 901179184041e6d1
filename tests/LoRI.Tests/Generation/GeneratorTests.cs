using LoRI.Generation;
using LoRI.Model;
using LoRI.Tests.Support;

namespace LoRI.Tests.Generation;

public class GeneratorTests
{
    private static readonly int[] PromptA = [3, 14, 15, 92, 65], PromptB = [2, 71, 82];

    [Test]
    public void Greedy_IsDeterministic_AndFollowsArgmaxOfFullForward()
    {
        using var m = TestModels.Create(TestModels.Tiny());
        using var g = new Generator(m, 1, 64);
        var opts = new GenerationOptions { MaxNewTokens = 10 };
        var r1 = g.Generate([PromptA], opts)[0];
        var r2 = g.Generate([PromptA], opts)[0];
        Assert.That(r1.Tokens, Is.EqualTo(r2.Tokens));
        Assert.That(r1.Tokens, Has.Length.EqualTo(10));
        Assert.That(r1.Finish, Is.EqualTo(FinishReason.Length));
        // Each generated token is the argmax of a fresh full forward over everything before it.
        var seq = PromptA.ToList();
        int v = m.Config.VocabSize;
        foreach (var tok in r1.Tokens)
        {
            using var cache = new KvCache(m.Backend, m.Config, 1, 64);
            var logits = new float[v];
            m.Forward(seq.ToArray(), new int[seq.Count], Enumerable.Range(0, seq.Count).ToArray(), [seq.Count - 1], cache, logits);
            Assert.That(tok, Is.EqualTo(Sampler.Argmax(logits)));
            seq.Add(tok);
        }
    }

    [Test]
    public void Batch_GivesEachPromptWhatItGetsAlone()
    {
        using var m = TestModels.Create(TestModels.Tiny());
        using var g = new Generator(m, 3, 64);
        var opts = new GenerationOptions { MaxNewTokens = 8, Sampling = new SamplingOptions { Temperature = 0.8f, Seed = 5 } };
        var both = g.Generate([PromptA, PromptB], opts);
        var alone = g.Generate([PromptA], opts)[0];
        Assert.That(both[0].Tokens, Is.EqualTo(alone.Tokens));
        var greedy = new GenerationOptions { MaxNewTokens = 8 };
        var bg = g.Generate([PromptA, PromptB, PromptA], greedy);
        Assert.That(bg[1].Tokens, Is.EqualTo(g.Generate([PromptB], greedy)[0].Tokens));
        Assert.That(bg[2].Tokens, Is.EqualTo(bg[0].Tokens));
    }

    [Test]
    public void Sampling_WithSeed_IsReproducible_AndSeedsDiffer()
    {
        using var m = TestModels.Create(TestModels.Tiny(), std: 0.05f);
        using var g = new Generator(m, 1, 64);
        GenerationOptions O(ulong seed) => new() { MaxNewTokens = 20, Sampling = new SamplingOptions { Temperature = 1.5f, TopP = 0.95f, Seed = seed } };
        var a = g.Generate([PromptA], O(1))[0].Tokens;
        Assert.That(g.Generate([PromptA], O(1))[0].Tokens, Is.EqualTo(a));
        Assert.That(g.Generate([PromptA], O(2))[0].Tokens, Is.Not.EqualTo(a));
    }

    [Test]
    public void StopIds_EndTheSequence_AndCallbackStopsIt()
    {
        using var m = TestModels.Create(TestModels.Tiny());
        using var g = new Generator(m, 1, 64);
        var free = g.Generate([PromptA], new GenerationOptions { MaxNewTokens = 6 })[0].Tokens;
        var r = g.Generate([PromptA], new GenerationOptions { MaxNewTokens = 6, StopIds = [free[2]] })[0];
        Assert.That(r.Finish, Is.EqualTo(FinishReason.Eos));
        Assert.That(r.Tokens, Is.EqualTo(free.TakeWhile(t => t != free[2]).ToArray()));
        var seen = new List<int>();
        var s = g.Generate([PromptA], new GenerationOptions { MaxNewTokens = 6 }, (_, t) => { seen.Add(t); return seen.Count < 3; })[0];
        Assert.That(s.Finish, Is.EqualTo(FinishReason.Stop));
        Assert.That(s.Tokens, Is.EqualTo(free.Take(3).ToArray()));
        Assert.That(seen, Is.EqualTo(free.Take(3).ToArray()));
    }

    [Test]
    public void Sampler_TopK1_IsArgmax_AndTopPKeepsOnlyTheHead()
    {
        float[] logits = [0.1f, 3f, 0.2f, 2.9f, -1f];
        var k1 = new Sampler(new SamplingOptions { Temperature = 1, TopK = 1, Seed = 3 }, 5);
        for (int i = 0; i < 20; i++) Assert.That(k1.Sample(logits), Is.EqualTo(1));
        // Probabilities at T=1: token 1 ~ 0.50, token 3 ~ 0.45, the rest ~ 0.05: top-p 0.9 keeps {1, 3} only.
        var p = new Sampler(new SamplingOptions { Temperature = 1, TopP = 0.9f, Seed = 3 }, 5);
        var seen = new HashSet<int>();
        for (int i = 0; i < 200; i++) seen.Add(p.Sample(logits));
        Assert.That(seen, Is.EquivalentTo(new[] { 1, 3 }));
        var k2 = new Sampler(new SamplingOptions { Temperature = 1, TopK = 2, Seed = 4 }, 5);
        seen.Clear();
        for (int i = 0; i < 200; i++) seen.Add(k2.Sample(logits));
        Assert.That(seen, Is.EquivalentTo(new[] { 1, 3 }));
    }

    [Test]
    public void Sampler_RejectsBadOptions()
    {
        Assert.Throws<ArgumentException>(() => new Sampler(new SamplingOptions { TopP = 0 }, 4));
        Assert.Throws<ArgumentException>(() => new Sampler(new SamplingOptions { Temperature = -1 }, 4));
    }
}
