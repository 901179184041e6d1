using LoRI.Backend.Cpu;
using static LoRI.Tests.Training.GradCheck;

namespace LoRI.Tests.Training;

/// <summary>
/// Every CPU backward kernel against central finite differences of a double-precision forward
/// (ReferenceOps). Each test differentiates L = sum(c * f(inputs)) for random c, so dy = c.
/// Tolerance: GradCheck's rule, rtol 1e-3 with atol 1e-4 * max|ref| (float kernel vs double reference).
/// Sizes are odd on purpose (not multiples of any SIMD width).
/// </summary>
public class CpuBackwardTests
{
    [Test]
    public void RmsNormBackward_MatchesFiniteDifferences()
    {
        var rng = new Random(11);
        int dim = 13, rows = 3;
        const double eps = 1e-5;
        var x = RoundToFloat(Random(rng, rows * dim, 2));
        var w = RoundToFloat(Random(rng, dim).Select(v => 1 + 0.5 * v).ToArray());
        var c = RoundToFloat(Random(rng, rows * dim));

        var dx = new float[x.Length];
        var dw = new float[dim];
        CpuOps.RmsNormBackward(F(x), F(w), F(c), dim, (float)eps, dx, dw);

        AssertClose(dx, Numeric(xv => Dot(c, ReferenceOps.RmsNorm(xv, w, dim, eps)), x), "dx");
        AssertClose(dw, Numeric(wv => Dot(c, ReferenceOps.RmsNorm(x, wv, dim, eps)), w), "dWeight");

        // dx accumulates into what is there when asked, dWeight always does.
        var dx2 = Enumerable.Repeat(1f, x.Length).ToArray();
        var dw2 = (float[])dw.Clone();
        CpuOps.RmsNormBackward(F(x), F(w), F(c), dim, (float)eps, dx2, dw2, accumulate: true);
        for (int i = 0; i < dx.Length; i++) Assert.That(dx2[i], Is.EqualTo(1f + dx[i]).Within(1e-6f), $"dx accumulate {i}");
        for (int i = 0; i < dim; i++) Assert.That(dw2[i], Is.EqualTo(2 * dw[i]).Within(1e-5f * Math.Abs(dw[i]) + 1e-7f), $"dWeight accumulate {i}");
    }

    [Test]
    public void RopeBackward_MatchesFiniteDifferences()
    {
        var rng = new Random(12);
        int heads = 3, headDim = 8, n = 4;
        int[] pos = [0, 5, 17, 100];
        var invF = Enumerable.Range(0, headDim / 2).Select(i => 1f / MathF.Pow(10000f, 2f * i / headDim)).ToArray();
        var invD = invF.Select(v => (double)v).ToArray();
        var x = RoundToFloat(Random(rng, n * heads * headDim));
        var c = RoundToFloat(Random(rng, x.Length));

        var g = F(c);
        CpuOps.RopeBackward(g, heads, headDim, pos, invF);
        AssertClose(g, Numeric(xv => Dot(c, ReferenceOps.Rope(xv, heads, headDim, pos, invD)), x), "dx");
    }

    [TestCase(2, 5, 4, 2, 6)]   // GQA: two query heads per KV head
    [TestCase(1, 7, 3, 3, 4)]   // MHA
    [TestCase(2, 4, 4, 1, 8)]   // MQA: every query head on one KV head
    public void AttentionForwardWithLse_MatchesReference(int batch, int seqLen, int heads, int kvHeads, int headDim)
    {
        var rng = new Random(13);
        int n = batch * seqLen;
        var q = RoundToFloat(Random(rng, n * heads * headDim, 2));
        var k = RoundToFloat(Random(rng, n * kvHeads * headDim, 2));
        var v = RoundToFloat(Random(rng, n * kvHeads * headDim));
        var (yRef, lseRef) = ReferenceOps.Attention(q, k, v, batch, seqLen, heads, kvHeads, headDim);
        var y = new float[q.Length];
        var lse = new float[n * heads];
        CpuOps.AttentionForwardWithLse(F(q), F(k), F(v), batch, seqLen, heads, kvHeads, headDim, y, lse);
        AssertClose(y, yRef, "y", rtol: 1e-5, atolFactor: 1e-6);
        AssertClose(lse, lseRef, "lse", rtol: 1e-5, atolFactor: 1e-6);
    }

    [TestCase(2, 5, 4, 2, 6)]
    [TestCase(1, 7, 3, 3, 4)]
    [TestCase(2, 4, 4, 1, 8)]
    public void AttentionBackward_MatchesFiniteDifferences(int batch, int seqLen, int heads, int kvHeads, int headDim)
    {
        var rng = new Random(14);
        int n = batch * seqLen;
        var q = RoundToFloat(Random(rng, n * heads * headDim, 2));
        var k = RoundToFloat(Random(rng, n * kvHeads * headDim, 2));
        var v = RoundToFloat(Random(rng, n * kvHeads * headDim));
        var c = RoundToFloat(Random(rng, q.Length));
        var y = new float[q.Length];
        var lse = new float[n * heads];
        CpuOps.AttentionForwardWithLse(F(q), F(k), F(v), batch, seqLen, heads, kvHeads, headDim, y, lse);

        // Stale values in the outputs must not leak in: dq, dk, dv are written, not accumulated.
        var dq = Enumerable.Repeat(7f, q.Length).ToArray();
        var dk = Enumerable.Repeat(7f, k.Length).ToArray();
        var dv = Enumerable.Repeat(7f, v.Length).ToArray();
        CpuOps.AttentionBackward(F(q), F(k), F(v), lse, F(c), batch, seqLen, heads, kvHeads, headDim, dq, dk, dv);

        AssertClose(dq, Numeric(qv => Dot(c, ReferenceOps.Attention(qv, k, v, batch, seqLen, heads, kvHeads, headDim).Y), q), "dq");
        AssertClose(dk, Numeric(kv => Dot(c, ReferenceOps.Attention(q, kv, v, batch, seqLen, heads, kvHeads, headDim).Y), k), "dk");
        AssertClose(dv, Numeric(vv => Dot(c, ReferenceOps.Attention(q, k, vv, batch, seqLen, heads, kvHeads, headDim).Y), v), "dv");
    }

    [Test]
    public void SwiGluBackward_MatchesFiniteDifferences()
    {
        var rng = new Random(15);
        int n = 53;
        var gate = RoundToFloat(Random(rng, n, 4));
        var up = RoundToFloat(Random(rng, n, 2));
        var c = RoundToFloat(Random(rng, n));
        var dg = new float[n];
        var du = new float[n];
        CpuOps.SwiGluBackward(F(gate), F(up), F(c), dg, du);
        AssertClose(dg, Numeric(gv => Dot(c, ReferenceOps.SwiGlu(gv, up)), gate), "dGate");
        AssertClose(du, Numeric(uv => Dot(c, ReferenceOps.SwiGlu(gate, uv)), up), "dUp");
    }

    [Test]
    public void LinearBackward_MatchesFiniteDifferences()
    {
        var rng = new Random(16);
        int n = 5, k = 7, m = 9;
        var x = RoundToFloat(Random(rng, n * k));
        var w = RoundToFloat(Random(rng, m * k));
        var c = RoundToFloat(Random(rng, n * m));
        var dx = new float[x.Length];
        var dW = new float[w.Length];
        CpuOps.LinearBackwardInput(F(c), F(w), m, k, dx);
        CpuOps.LinearBackwardWeight(F(c), F(x), m, k, dW);
        AssertClose(dx, Numeric(xv => Dot(c, ReferenceOps.Linear(xv, w, k, m)), x), "dx");
        AssertClose(dW, Numeric(wv => Dot(c, ReferenceOps.Linear(x, wv, k, m)), w), "dW");

        // dW accumulates: a second call doubles it.
        CpuOps.LinearBackwardWeight(F(c), F(x), m, k, dW);
        var twice = Numeric(wv => 2 * Dot(c, ReferenceOps.Linear(x, wv, k, m)), w);
        AssertClose(dW, twice, "dW after two calls");
    }

    [Test]
    public void LoraBackward_MatchesFiniteDifferences()
    {
        var rng = new Random(17);
        int n = 4, inF = 7, outF = 9, rank = 3;
        const double s = 2.0;
        var x = RoundToFloat(Random(rng, n * inF));
        var w = RoundToFloat(Random(rng, outF * inF));
        var a = RoundToFloat(Random(rng, rank * inF));
        var b = RoundToFloat(Random(rng, outF * rank));
        var c = RoundToFloat(Random(rng, n * outF));
        var u = F(ReferenceOps.Linear(x, a, inF, rank));

        var dA = new float[a.Length];
        var dB = new float[b.Length];
        var dx = new float[x.Length];
        var du = new float[n * rank];
        CpuOps.LinearBackwardInput(F(c), F(w), outF, inF, dx);
        CpuOps.LoraBackward(F(x), u, F(c), F(a), F(b), inF, outF, rank, (float)s, dA, dB, dx, du);

        double L(double[] xv, double[] av, double[] bv) => Dot(c, ReferenceOps.LoraLinear(xv, w, av, bv, inF, outF, rank, s));
        AssertClose(dx, Numeric(xv => L(xv, a, b), x), "dx");
        AssertClose(dA, Numeric(av => L(x, av, b), a), "dA");
        AssertClose(dB, Numeric(bv => L(x, a, bv), b), "dB");

        // LoRI: dA empty (A frozen) and no dx; dB is the same.
        var dB2 = new float[b.Length];
        CpuOps.LoraBackward(F(x), u, F(c), F(a), F(b), inF, outF, rank, (float)s, [], dB2, [], du);
        Assert.That(dB2, Is.EqualTo(dB));
    }

    [Test]
    public void EmbeddingBackward_MatchesFiniteDifferences_WithRepeatedIds()
    {
        var rng = new Random(18);
        int vocab = 6, dim = 5;
        int[] ids = [1, 3, 1, 0];
        var table = RoundToFloat(Random(rng, vocab * dim));
        var c = RoundToFloat(Random(rng, ids.Length * dim));
        var dT = new float[table.Length];
        CpuOps.EmbeddingBackward(ids, F(c), dim, dT);
        AssertClose(dT, Numeric(tv => Dot(c, ReferenceOps.Embedding(tv, ids, dim)), table), "dTable");
        for (int j = 0; j < dim; j++) Assert.That(dT[5 * dim + j], Is.EqualTo(0f), "an id never used gets no gradient");
        Assert.Throws<ArgumentOutOfRangeException>(() => CpuOps.EmbeddingBackward([6], new float[dim], dim, dT));
    }

    // chunk = scratch rows of W per pass: 8 splits the 37-row vocabulary into 4 full chunks and a partial one;
    // 64 covers it in one.
    [TestCase(8)]
    [TestCase(64)]
    public void LmHeadCrossEntropy_MatchesFiniteDifferences(int chunk)
    {
        var rng = new Random(19);
        int n = 6, dim = 5, vocab = 37;
        int[] targets = [3, -1, 36, 0, 8, -1];
        double[] g = [0.5, 0, 0.5, 0.5, 0.25, 0];
        var h = RoundToFloat(Random(rng, n * dim, 3));
        var w = RoundToFloat(Random(rng, vocab * dim, 2));
        var loss = new float[n];
        var dh = Enumerable.Repeat(5f, h.Length).ToArray();
        var dW = new float[w.Length];
        var scratch = new float[n * chunk];
        double total = CpuOps.LmHeadCrossEntropy(F(h), F(w), dim, targets, F(g), loss, dh, dW, scratch);

        var lossRef = ReferenceOps.CrossEntropy(h, w, dim, targets);
        AssertClose(loss, lossRef, "loss", rtol: 1e-5, atolFactor: 1e-6);
        Assert.That(loss[1], Is.EqualTo(0f));
        Assert.That(total, Is.EqualTo(Dot(g, lossRef)).Within(1e-5 * Math.Abs(Dot(g, lossRef))));

        double L(double[] hv, double[] wv) => Dot(g, ReferenceOps.CrossEntropy(hv, wv, dim, targets));
        AssertClose(dh, Numeric(hv => L(hv, w), h), "dh");
        AssertClose(dW, Numeric(wv => L(h, wv), w), "dW");
    }

    [Test]
    public void LmHeadCrossEntropy_IsStableForLargeLogits()
    {
        // Logits in the hundreds: a naive exp overflows float; the online log-sum-exp must not.
        var rng = new Random(20);
        int n = 3, dim = 4, vocab = 19;
        int[] targets = [0, 7, 18];
        var h = RoundToFloat(Random(rng, n * dim, 60));
        var w = RoundToFloat(Random(rng, vocab * dim, 5));
        var loss = new float[n];
        CpuOps.LmHeadCrossEntropy(F(h), F(w), dim, targets, [1, 1, 1], loss, [], [], new float[n * 4]);
        AssertClose(loss, ReferenceOps.CrossEntropy(h, w, dim, targets), "loss", rtol: 1e-5, atolFactor: 1e-6);
    }
}
