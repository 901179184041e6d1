using LoRI.Backend.Cpu;
using LoRI.Cuda.Backend;
using LoRI.Cuda.Checks;
using LoRI.Tensors;

namespace LoRI.Tests.Cuda;

/// <summary>
/// Which attention kernel CudaBackend picks (the tensor-core ones where head dim, alignment and token count
/// allow, the fp32 SIMT ones otherwise) and that either answer agrees with the CPU. The kernels' numbers at
/// many shapes are KernelChecks' flash_attention_tc_* checks.
/// </summary>
public class TensorCoreAttentionTests
{
    private static float[] Random(int n, int seed)
    {
        var r = new Random(seed);
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = Bf16.Round((float)(r.NextDouble() * 2 - 1));
        return a;
    }

    private static (float[] Y, string Kernel) Forward(CudaBackend be, float[] q, float[] k, float[] v, int batch, int t, int heads, int kvHeads, int hd, int qOffset = 0)
    {
        using var tq = be.Allocate(DType.F32, q.Length + qOffset);
        using var tk = be.Allocate(DType.F32, k.Length);
        using var tv = be.Allocate(DType.F32, v.Length);
        using var ty = be.Allocate(DType.F32, q.Length);
        using var tl = be.Allocate(DType.F32, batch * t * heads);
        var padded = new float[q.Length + qOffset];
        q.CopyTo(padded, qOffset);
        be.Upload<float>(padded, tq);
        be.Upload<float>(k, tk);
        be.Upload<float>(v, tv);
        using var qv = tq.View(qOffset, batch * t, heads * hd);
        be.AttentionForwardWithLse(qv, tk, tv, batch, t, heads, kvHeads, hd, ty, tl);
        var y = new float[q.Length];
        be.Download<float>(ty, y);
        return (y, be.LastAttentionKernel);
    }

    [Test]
    public void Default_IsOffOnTheEmulator_SoItsAttentionIsFp32()
    {
        using var be = CudaBackend.CreateEmulated();
        Assert.That(be.UseTensorCoreAttention, Is.False);
        var q = Random(2 * 40 * 4 * 16, 1);
        var k = Random(2 * 40 * 2 * 16, 2);
        var v = Random(2 * 40 * 2 * 16, 3);
        Assert.That(Forward(be, q, k, v, 2, 40, 4, 2, 16).Kernel, Is.EqualTo("flash_attention_forward"));
    }

    [TestCase(16, 0, "flash_attention_tc_forward_d16")]
    [TestCase(48, 0, "flash_attention_tc_forward_d48")]
    [TestCase(20, 0, "flash_attention_forward")]    // head dim not a multiple of 16
    [TestCase(144, 0, "flash_attention_forward")]   // above 128
    [TestCase(16, 1, "flash_attention_forward")]    // q 4 bytes off a 16-byte boundary
    public void TrainingForward_PicksTheKernel_AndMatchesTheCpu(int hd, int qOffset, string kernel)
    {
        using var be = CudaBackend.CreateEmulated();
        be.UseTensorCoreAttention = true;
        int b = 2, t = 40, heads = 4, kvHeads = 2;
        var q = Random(b * t * heads * hd, 1);
        var k = Random(b * t * kvHeads * hd, 2);
        var v = Random(b * t * kvHeads * hd, 3);
        var (y, ran) = Forward(be, q, k, v, b, t, heads, kvHeads, hd, qOffset);
        Assert.That(ran, Is.EqualTo(kernel));
        var ry = new float[q.Length];
        CpuOps.AttentionForwardWithLse(q, k, v, b, t, heads, kvHeads, hd, ry, new float[b * t * heads]);
        float atol = kernel.Contains("_tc_", StringComparison.Ordinal) ? Tolerance.Bf16AttentionForward(1f) : 1e-5f;
        var cmp = Tolerance.Compare(y, ry, atol, 1e-4f);
        Assert.That(cmp.Passed, Is.True, cmp.ToString());
    }

    [Test]
    public void CacheAttention_TakesTheTensorCoresFromMinTokens_UnlessTheBaselineIsAskedFor()
    {
        using var be = CudaBackend.CreateEmulated();
        be.UseTensorCoreAttention = true;
        int s = 1, t = 48, heads = 4, kvHeads = 2, hd = 16;
        using var kc = be.Allocate(DType.F32, s, t, kvHeads * hd);
        using var vc = be.Allocate(DType.F32, s, t, kvHeads * hd);
        be.Upload<float>(Random(s * t * kvHeads * hd, 4), kc);
        be.Upload<float>(Random(s * t * kvHeads * hd, 5), vc);
        int min = be.TensorCoreAttentionMinTokens;
        foreach (var (n, flash, expected) in new[] { (min - 1, true, "flash_attention_forward"), (min, true, "flash_attention_tc_forward_d16"), (min, false, "attention_forward") })
        {
            be.UseFlashAttention = flash;
            using var q = be.Allocate(DType.F32, n, heads * hd);
            using var y = be.Allocate(DType.F32, n, heads * hd);
            using var slots = be.Allocate(DType.I32, n);
            using var pos = be.Allocate(DType.I32, n);
            be.Upload<float>(Random(n * heads * hd, 6), q);
            be.Upload<int>(new int[n], slots);
            be.Upload<int>(Enumerable.Range(t - n, n).ToArray(), pos);
            be.Attention(q, kc, vc, slots, pos, heads, kvHeads, hd, y);
            Assert.That(be.LastAttentionKernel, Is.EqualTo(expected), $"{n} tokens, UseFlashAttention {flash}");
        }
        Assert.That(() => be.TensorCoreAttentionMinTokens = 0, Throws.InstanceOf<ArgumentOutOfRangeException>());
    }
}
