using LoRI.Backend;
using LoRI.Backend.Cpu;
using LoRI.Model;
using LoRI.Tensors;
using LoRI.Tests.Support;

namespace LoRI.Tests.Backend;

/// <summary>The CPU backend's forward ops against hand-computed values and naive loops.</summary>
public class CpuOpsTests
{
    private readonly CpuBackend _be = new();

    private Tensor T(float[] data, params int[] shape)
    {
        var t = _be.Allocate(DType.F32, shape);
        _be.Upload<float>(data, t);
        return t;
    }

    private Tensor I(params int[] data)
    {
        var t = _be.Allocate(DType.I32, data.Length);
        _be.Upload<int>(data, t);
        return t;
    }

    private static float[] Get(Tensor t) => t.Span<float>().ToArray();

    [Test]
    public void RmsNorm_HandComputed()
    {
        // mean(x^2) = (1 + 4 + 9 + 16) / 4 = 7.5; y = x / sqrt(7.5 + eps) * w
        using var x = T([1, 2, 3, 4], 1, 4);
        using var w = T([1, 1, 2, 0.5f], 4);
        using var y = _be.Allocate(DType.F32, 1, 4);
        _be.RmsNorm(x, w, 1e-5f, y);
        double inv = 1 / Math.Sqrt(7.5 + 1e-5);
        Close.Assert(Get(y), [(float)(1 * inv), (float)(2 * inv), (float)(6 * inv), (float)(2 * inv)], 1e-6f, 1e-6f, "rmsnorm");
    }

    [Test]
    public void Rope_RotatesPairsHalfApart()
    {
        // head dim 4: pairs (0, 2) and (1, 3). invFreq = [pi/2, 0] at position 1: pair (0,2) turns by 90 degrees,
        // pair (1,3) stays. (1, 3) -> (1 cos - 3 sin, 3 cos + 1 sin) = (-3, 1).
        using var x = T([1, 2, 3, 4], 1, 4);
        using var inv = T([MathF.PI / 2, 0], 2);
        using var pos = I(1);
        _be.Rope(x, 1, 4, pos, inv);
        Close.Assert(Get(x), [-3, 2, 1, 4], 1e-6f, 0, "rope");
    }

    [Test]
    public void Rope_PositionZeroIsIdentity_AndTwoHeadsRotateAlike()
    {
        using var x = T([1, 2, 3, 4, 1, 2, 3, 4, 5, 6, 7, 8, 5, 6, 7, 8], 2, 8);
        using var inv = T([0.3f, 0.7f], 2);
        using var pos = I(0, 5);
        _be.Rope(x, 2, 4, pos, inv);
        var y = Get(x);
        Close.Assert(y.AsSpan(0, 8), new float[] { 1, 2, 3, 4, 1, 2, 3, 4 }, 0, 0, "position 0");
        Close.Assert(y.AsSpan(8, 4), y.AsSpan(12, 4), 0, 0, "same input, same rotation in both heads");
        double a = 5 * 0.3;
        Assert.That(y[8], Is.EqualTo(5 * Math.Cos(a) - 7 * Math.Sin(a)).Within(1e-5));
        Assert.That(y[10], Is.EqualTo(7 * Math.Cos(a) + 5 * Math.Sin(a)).Within(1e-5));
    }

    [Test]
    public void RopeInvFreq_Llama3Scaling_HandComputed()
    {
        // theta 10000, head dim 8: base inverse frequencies 1, 0.1, 0.01, 0.001 (wavelengths 2pi/f).
        // original context 1000, low 1, high 4, factor 8: wavelengths under 250 kept (i = 0, 1), over 1000
        // divided by 8 (i = 3), in between interpolated: smooth = (1000 / (2pi/0.01) - 1) / 3.
        var c = new LlamaConfig { HeadDim = 8, RopeTheta = 10000, RopeScaling = new RopeScaling(8, 1, 4, 1000) };
        var f = c.RopeInvFreq();
        double smooth = (1000 / (2 * Math.PI / 0.01) - 1) / 3;
        double mid = (1 - smooth) * 0.01 / 8 + smooth * 0.01;
        Assert.That(f[0], Is.EqualTo(1.0).Within(1e-6));
        Assert.That(f[1], Is.EqualTo(0.1).Within(1e-7));
        Assert.That(f[2], Is.EqualTo(mid).Within(1e-8));
        Assert.That(f[3], Is.EqualTo(0.001 / 8).Within(1e-9));
        var unscaled = (c with { RopeScaling = null }).RopeInvFreq();
        Assert.That(unscaled[2], Is.EqualTo(0.01).Within(1e-8));
    }

    [Test]
    public void SwiGlu_HandComputed()
    {
        // silu(1) = 1 / (1 + e^-1) = 0.7310586; silu(-2) = -2 / (1 + e^2) = -0.2384058
        using var g = T([1, -2, 0], 1, 3);
        using var u = T([2, 3, 5], 1, 3);
        using var y = _be.Allocate(DType.F32, 1, 3);
        _be.SwiGlu(g, u, y);
        Close.Assert(Get(y), [2 * 0.7310586f, 3 * -0.2384058f, 0], 1e-6f, 1e-6f, "swiglu");
    }

    [Test]
    public void Attention_Gqa_HandComputed()
    {
        // 2 query heads share 1 KV head, head dim 2. Cache: k0 = (1, 0), k1 = (0, 1); v0 = (1, 2), v1 = (3, 4).
        // The token at position 1 attends to both entries. Head 0: q = (1, 0): scores (1, 0) / sqrt 2.
        // Head 1: q = (0, 2): scores (0, 2) / sqrt 2. At position 0 it would see only entry 0 (output v0).
        using var q = T([1, 0, 0, 2, 5, 5, 5, 5], 2, 4);
        using var k = T([1, 0, 0, 1], 1, 2, 2);
        using var v = T([1, 2, 3, 4], 1, 2, 2);
        using var slots = I(0, 0);
        using var pos = I(1, 0);
        using var y = _be.Allocate(DType.F32, 2, 4);
        _be.Attention(q, k, v, slots, pos, 2, 1, 2, y);
        static (float, float) Mix(double s0, double s1)
        {
            double e0 = Math.Exp(s0), e1 = Math.Exp(s1), p0 = e0 / (e0 + e1), p1 = e1 / (e0 + e1);
            return ((float)(p0 * 1 + p1 * 3), (float)(p0 * 2 + p1 * 4));
        }
        var (a0, a1) = Mix(1 / Math.Sqrt(2), 0);
        var (b0, b1) = Mix(0, 2 / Math.Sqrt(2));
        Close.Assert(Get(y), [a0, a1, b0, b1, 1, 2, 1, 2], 1e-6f, 1e-6f, "attention");
    }

    [Test]
    public void KvStoreAndGatherRows_MoveRows()
    {
        using var src = T([1, 2, 3, 4, 5, 6], 3, 2);
        using var cache = _be.Allocate(DType.F32, 2, 3, 2);
        using var slots = I(1, 0, 1);
        using var pos = I(2, 0, 0);
        _be.KvStore(src, cache, slots, pos);
        Assert.That(Get(cache), Is.EqualTo(new float[] { 3, 4, 0, 0, 0, 0, 5, 6, 0, 0, 1, 2 }));
        using var rows = I(2, 0);
        using var dst = _be.Allocate(DType.F32, 2, 2);
        _be.GatherRows(src, rows, dst);
        Assert.That(Get(dst), Is.EqualTo(new float[] { 5, 6, 1, 2 }));
    }

    [Test]
    public void Embedding_ConvertsRowsOfAnyFloatDtype([Values(DType.F32, DType.BF16, DType.F16)] DType dt)
    {
        var table = TestModels.RandomFloats(5 * 3, 7);
        var bytes = RandomWeights.Encode(table, dt);
        unsafe
        {
            fixed (byte* p = bytes)
            {
                var t = _be.FromHost((nint)p, dt, [5, 3], null);
                using var ids = I(4, 0, 4);
                using var y = _be.Allocate(DType.F32, 3, 3);
                _be.Embedding(t, ids, y);
                var expect = new float[9];
                CpuOps.ToFloat(dt, (nint)p, 12, expect.AsSpan(0, 3));
                CpuOps.ToFloat(dt, (nint)p, 0, expect.AsSpan(3, 3));
                CpuOps.ToFloat(dt, (nint)p, 12, expect.AsSpan(6, 3));
                Assert.That(Get(y), Is.EqualTo(expect));
                Assert.That(expect[0], Is.EqualTo(table[12]).Within(dt == DType.F32 ? 0 : 0.01));
            }
        }
    }

    [Test]
    public void Embedding_RejectsIdOutsideVocabulary()
    {
        using var table = _be.Allocate(DType.F32, 4, 2);
        using var ids = I(4);
        using var y = _be.Allocate(DType.F32, 1, 2);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => _be.Embedding(table, ids, y));
        Assert.That(e!.Message, Does.Contain("token id 4"));
    }

    // Shapes that are and are not multiples of the 4-row, 8-lane and 16x64 tiles.
    [TestCase(1, 8, 16), TestCase(3, 13, 7), TestCase(70, 33, 45), TestCase(2, 64, 130), TestCase(65, 1, 17)]
    public void MatMul_MatchesNaiveLoop(int n, int k, int m)
    {
        foreach (var dt in new[] { DType.F32, DType.BF16, DType.F16 })
        {
            var x = TestModels.RandomFloats(n * k, 1);
            var wf = TestModels.RandomFloats(m * k, 2);
            var wb = RandomWeights.Encode(wf, dt);
            // The reference sees the weights as stored (rounded to the dtype), so the tolerance measures the kernel only.
            var wr = new float[m * k];
            unsafe { fixed (byte* p = wb) CpuOps.ToFloat(dt, (nint)p, 0, wr); }
            var y0 = TestModels.RandomFloats(n * m, 3);
            var expect = (float[])y0.Clone();
            CpuOps.MatMulReference(x, wr, expect, n, k, m, 0.5f, accumulate: true);
            unsafe
            {
                fixed (byte* p = wb)
                {
                    using var xt = T(x, n, k);
                    var wt = _be.FromHost((nint)p, dt, [m, k], null);
                    using var yt = T(y0, n, m);
                    _be.MatMul(xt, wt, yt, 0.5f, accumulate: true);
                    // fp32 accumulation over k terms of size <= 1: rounding error grows ~ k * 2^-24.
                    Close.Assert(Get(yt), expect, 1e-5f * k, 1e-5f, $"{dt} {n}x{k}x{m}");
                    _be.MatMul(xt, wt, yt);
                    var plain = new float[n * m];
                    CpuOps.MatMulReference(x, wr, plain, n, k, m);
                    Close.Assert(Get(yt), plain, 1e-5f * k, 1e-5f, $"{dt} {n}x{k}x{m} overwrite");
                }
            }
        }
    }

    [Test]
    public void MatMul_RejectsMismatchedShapes()
    {
        using var x = _be.Allocate(DType.F32, 2, 3);
        using var w = _be.Allocate(DType.F32, 4, 5);
        using var y = _be.Allocate(DType.F32, 2, 4);
        var e = Assert.Throws<ArgumentException>(() => _be.MatMul(x, w, y));
        Assert.That(e!.Message, Does.Contain("MatMul").And.Contain("[4, 5]"));
    }
}
