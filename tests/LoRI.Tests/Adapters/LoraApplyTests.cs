using LoRI.Backend;
using LoRI.Backend.Cpu;
using LoRI.Tests.Support;
using LoRI.Tensors;

namespace LoRI.Tests.Adapters;

/// <summary>The fused `lora_apply` op, both B forms, against a double-precision reference.</summary>
public class LoraApplyTests
{
    private readonly CpuBackend _be = new();

    private static float[] SparseB(int outDim, int rank, double sparsity, ulong seed)
    {
        var b = TestModels.RandomFloats(outDim * rank, seed);
        var r = new Rng(seed + 1000);
        for (int i = 0; i < b.Length; i++) if (r.NextDouble() < sparsity) b[i] = 0;
        return b;
    }

    // Odd sizes (not multiples of the 4-row, 16-row or 64-token tiles), ranks up to 256 (byte columns).
    [TestCase(1, 37, 5, 53, 0.0), TestCase(3, 37, 5, 53, 0.9), TestCase(4, 64, 16, 100, 0.5),
     TestCase(5, 33, 7, 19, 0.99), TestCase(70, 41, 9, 35, 0.8), TestCase(130, 24, 256, 18, 0.7), TestCase(2, 10, 3, 4, 1.0)]
    public void DenseAndCompact_MatchReference(int n, int inDim, int rank, int outDim, double sparsity)
    {
        var x = TestModels.RandomFloats(n * inDim, 1);
        var a = TestModels.RandomFloats(rank * inDim, 2, 0.3f);
        var b = SparseB(outDim, rank, sparsity, 3);
        var y0 = TestModels.RandomFloats(n * outDim, 4);
        var want = (float[])y0.Clone();
        CpuOps.LoraApplyReference(x, a, b, want, n, inDim, rank, outDim, 1.75f);
        using var tx = _be.Allocate(DType.F32, n, inDim);
        _be.Upload<float>(x, tx);
        foreach (var form in new[] { LoraBForm.Dense, LoraBForm.Compact })
        {
            using var f = LoraFactors.Create(_be, a, b, rank, inDim, outDim, form);
            Assert.That(f.Form, Is.EqualTo(form));
            using var ty = _be.Allocate(DType.F32, n, outDim);
            _be.Upload<float>(y0, ty);
            _be.LoraApply(tx, f, 1.75f, ty);
            // Sums of at most 41 + 256 products of O(1) values in fp32: 1e-5 relative plus 1e-5 absolute.
            Close.Assert(ty.Span<float>(), want, 1e-5f, 1e-5f, $"{form} n={n} r={rank} sparsity={sparsity}");
        }
    }

    [Test]
    public void ChooseForm_CompactOnlyWhenSparseAndRankFitsAByte()
    {
        Assert.That(LoraFactors.ChooseForm(5, 10, 10), Is.EqualTo(LoraBForm.Compact));
        Assert.That(LoraFactors.ChooseForm(6, 10, 10), Is.EqualTo(LoraBForm.Dense));
        Assert.That(LoraFactors.ChooseForm(0, 10, 300), Is.EqualTo(LoraBForm.Dense));
        Assert.Throws<ArgumentException>(() => LoraFactors.Create(_be, new float[300], new float[300], 300, 1, 1, LoraBForm.Compact));
    }

    [Test]
    public void GenericFallback_TwoMatMuls_MatchesFusedOp()
    {
        int n = 3, inDim = 20, rank = 4, outDim = 11;
        var x = TestModels.RandomFloats(n * inDim, 5);
        var a = TestModels.RandomFloats(rank * inDim, 6);
        var b = TestModels.RandomFloats(outDim * rank, 7);
        var want = new float[n * outDim];
        CpuOps.LoraApplyReference(x, a, b, want, n, inDim, rank, outDim, 0.5f);
        var be = new MatMulOnly(_be);
        using var tx = _be.Allocate(DType.F32, n, inDim);
        _be.Upload<float>(x, tx);
        using var ty = _be.Allocate(DType.F32, n, outDim);
        using var scratch = _be.Allocate(DType.F32, 8, rank);
        using var f = LoraFactors.Create(_be, a, b, rank, inDim, outDim, LoraBForm.Dense);
        LoraOps.Apply(be, tx, f, 0.5f, ty, scratch);
        Close.Assert(ty.Span<float>(), want, 1e-5f, 1e-5f, "generic path");
    }

    /// <summary>A backend without IAdapterOps (only IBackend's ops, forwarded to the CPU backend).</summary>
    internal sealed class MatMulOnly(CpuBackend inner) : IBackend
    {
        public string Name => "matmul-only";
        public bool IsHostMemory => true;
        public Tensor Allocate(DType dtype, params int[] shape) => inner.Allocate(dtype, shape);
        public Tensor FromHost(nint data, DType dtype, int[] shape, IDisposable? keepAlive) => inner.FromHost(data, dtype, shape, keepAlive);
        public void Upload<T>(ReadOnlySpan<T> src, Tensor dst) where T : unmanaged => inner.Upload(src, dst);
        public void Download<T>(Tensor src, Span<T> dst) where T : unmanaged => inner.Download(src, dst);
        public void Synchronize() { }
        public void Embedding(Tensor table, Tensor ids, Tensor y) => inner.Embedding(table, ids, y);
        public void RmsNorm(Tensor x, Tensor weight, float eps, Tensor y) => inner.RmsNorm(x, weight, eps, y);
        public void MatMul(Tensor x, Tensor w, Tensor y, float alpha = 1, bool accumulate = false) => inner.MatMul(x, w, y, alpha, accumulate);
        public void Rope(Tensor x, int heads, int headDim, Tensor positions, Tensor invFreq) => inner.Rope(x, heads, headDim, positions, invFreq);
        public void KvStore(Tensor src, Tensor cache, Tensor slots, Tensor positions) => inner.KvStore(src, cache, slots, positions);
        public void Attention(Tensor q, Tensor kCache, Tensor vCache, Tensor slots, Tensor positions, int heads, int kvHeads, int headDim, Tensor y) =>
            inner.Attention(q, kCache, vCache, slots, positions, heads, kvHeads, headDim, y);
        public void SwiGlu(Tensor gate, Tensor up, Tensor y) => inner.SwiGlu(gate, up, y);
        public void Add(Tensor a, Tensor b, Tensor y) => inner.Add(a, b, y);
        public void GatherRows(Tensor src, Tensor rows, Tensor dst) => inner.GatherRows(src, rows, dst);
        public void Dispose() { }
    }
}
