using LoRI.Adapters;
using LoRI.Backend;
using LoRI.Backend.Cpu;
using LoRI.Cuda.Backend;
using LoRI.Cuda.Checks;
using LoRI.Model;
using LoRI.Tensors;
using LoRI.Tests.Support;
using Path = LoRI.Cuda.Checks.KernelChecks.LinearLoraPath;

namespace LoRI.Tests.Cuda;

/// <summary>
/// The op `linear_lora` (y = x W^T + sum_i s_i B_i (A_i x) with the first adapter folded into the base product) on the
/// emulator against the CPU backend: every variant at ranks 8/16/64, B dense and compact at 90% sparsity, at
/// tile-aligned and ragged shapes, with several adapters; the generic fallback against a double loop; the model's
/// linear through an AdapterSet of two adapters.
/// </summary>
public class LinearLoraTests
{
    private static readonly Path[] Paths =
    [
        Path.DecodeShrinkRows, Path.DecodeGemvEpilogue, Path.DecodeUnfused,
        Path.TensorCoreShrinkRows, Path.TensorCoreKConcat, Path.TensorCoreUnfused,
    ];

    public static IEnumerable<TestCaseData> SingleAdapterCases() =>
        from path in Paths
        from rank in new[] { 8, 16, 64 }
        from form in new[] { LoraBForm.Dense, LoraBForm.Compact }
        from ragged in new[] { false, true }
        select new TestCaseData(path, rank, form, ragged).SetName($"Linear_{path}_rank{rank}_{form}_{(ragged ? "ragged" : "aligned")}");

    [TestCaseSource(nameof(SingleAdapterCases))]
    public void OneAdapter_MatchesTheCpu(Path path, int rank, LoraBForm form, bool ragged)
    {
        // ragged shapes take a rank that is not a multiple of the kernels' 8-element chunks as well
        int r = ragged ? rank - 3 : rank;
        Check(path, ragged, [form], [r]);
    }

    public static IEnumerable<TestCaseData> SeveralAdapterCases() =>
        from path in Paths
        from ragged in new[] { false, true }
        select new TestCaseData(path, ragged).SetName($"Linear_{path}_three_adapters_{(ragged ? "ragged" : "aligned")}");

    [TestCaseSource(nameof(SeveralAdapterCases))]
    public void ThreeAdapters_MatchTheCpu(Path path, bool ragged) =>
        Check(path, ragged, [LoraBForm.Compact, LoraBForm.Dense, LoraBForm.Compact], [64, 8, 16]);

    private static void Check(Path path, bool ragged, LoraBForm[] forms, int[] ranks)
    {
        using var device = CudaBackend.CreateEmulated();
        using var cpu = new CpuBackend();
        using var c = new CheckContext(device, cpu, ragged, $"linear_lora_{path}_{string.Join('_', ranks)}");
        var cmp = KernelChecks.LinearLora(c, path, forms, ranks);
        TestContext.Out.WriteLine($"{c.ShapeNote}: {cmp}");
        Assert.That(cmp.Passed, Is.True, $"{c.ShapeNote}: {cmp}");
    }

    [Test]
    public void NoAdapter_IsThePlainMatMul()
    {
        using var device = CudaBackend.CreateEmulated();
        var rng = new Random(3);
        var xv = Enumerable.Range(0, 3 * 40).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
        var wv = Enumerable.Range(0, 24 * 40).Select(_ => Bf16.FromFloat((float)rng.NextDouble() - 0.5f)).ToArray();
        using var x = device.Allocate(DType.F32, 3, 40);
        using var w = device.Allocate(DType.BF16, 24, 40);
        using var y = device.Allocate(DType.F32, 3, 24);
        using var yRef = device.Allocate(DType.F32, 3, 24);
        device.Upload<float>(xv, x);
        device.Upload<ushort>(wv, w);
        device.LinearWithAdapters(x, w, [], y);
        device.MatMul(x, w, yRef);
        var got = new float[72];
        var want = new float[72];
        device.Download<float>(y, got);
        device.Download<float>(yRef, want);
        Assert.That(got, Is.EqualTo(want));
        Assert.That(want.Any(v => v != 0), Is.True);
    }

    [Test]
    public void AdapterOfTheWrongShape_IsRefusedWithBothShapes()
    {
        using var device = CudaBackend.CreateEmulated();
        using var x = device.Allocate(DType.F32, 2, 16);
        using var w = device.Allocate(DType.BF16, 8, 16);
        using var y = device.Allocate(DType.F32, 2, 8);
        using var f = LoraFactors.Create(device, new float[4 * 12], new float[8 * 4], 4, 12, 8);
        var e = Assert.Throws<ShapeMismatchException>(() => device.LinearWithAdapters(x, w, [new LoraTerm(f, 1f)], y));
        Assert.That(e!.Message, Does.Contain("[4, 12]").And.Contain("[8, 16]"));
    }

    /// <summary>The generic path (CPU backend: MatMul, then lora_apply per term) against a double-precision loop; a term of scale 0 adds nothing.</summary>
    [Test]
    public void GenericFallback_MatchesADoubleLoop()
    {
        using var cpu = new CpuBackend();
        const int n = 5, inDim = 19, outDim = 11;
        var rng = new Random(5);
        float[] Rand(int len) => Enumerable.Range(0, len).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var xv = Rand(n * inDim);
        var wv = Rand(outDim * inDim);
        int[] ranks = [3, 7, 2];
        float[] scales = [0.5f, -2f, 0f];
        var a = ranks.Select(r => Rand(r * inDim)).ToArray();
        var b = ranks.Select(r => Rand(outDim * r)).ToArray();
        using var x = cpu.Allocate(DType.F32, n, inDim);
        using var w = cpu.Allocate(DType.F32, outDim, inDim);
        using var y = cpu.Allocate(DType.F32, n, outDim);
        cpu.Upload<float>(xv, x);
        cpu.Upload<float>(wv, w);
        cpu.Upload<float>(Rand(n * outDim), y);
        var factors = ranks.Select((r, i) => LoraFactors.Create(cpu, a[i], b[i], r, inDim, outDim, i == 1 ? LoraBForm.Compact : LoraBForm.Dense)).ToArray();
        try
        {
            var terms = factors.Select((f, i) => new LoraTerm(f, scales[i])).ToArray();
            LoraOps.Linear(cpu, x, w, terms, y, scratch: null);
        }
        finally
        {
            foreach (var f in factors) f.Dispose();
        }
        var got = new float[n * outDim];
        cpu.Download<float>(y, got);
        for (int q = 0; q < n; q++)
            for (int o = 0; o < outDim; o++)
            {
                double s = 0;
                for (int k = 0; k < inDim; k++) s += (double)xv[q * inDim + k] * wv[o * inDim + k];
                for (int i = 0; i < ranks.Length; i++)
                    for (int j = 0; j < ranks[i]; j++)
                    {
                        double t = 0;
                        for (int k = 0; k < inDim; k++) t += (double)xv[q * inDim + k] * a[i][j * inDim + k];
                        s += scales[i] * t * b[i][o * ranks[i] + j];
                    }
                Assert.That(got[q * outDim + o], Is.EqualTo(s).Within(1e-4 + 1e-5 * Math.Abs(s)), $"y[{q}, {o}]");
            }
    }

    /// <summary>
    /// The tiny model with two unmerged adapters (a LoRI-S one, compact B, and a dense one, unequal weights) on the emulator
    /// against the CPU: the prefill and every decode step, through each decode variant; with bf16 activations the prefill
    /// runs the tensor-core variants (looser tolerance: every projection input is rounded to bf16, as in CudaModelTests,
    /// and so are the adapters' A, B and u).
    /// </summary>
    [TestCase(LoraDecodeVariant.ShrinkRows, LoraPrefillVariant.ShrinkRows, false, 1e-4f, 1e-4f)]
    [TestCase(LoraDecodeVariant.GemvEpilogue, LoraPrefillVariant.ShrinkRows, false, 1e-4f, 1e-4f)]
    [TestCase(LoraDecodeVariant.Unfused, LoraPrefillVariant.Unfused, false, 1e-4f, 1e-4f)]
    // bf16 activations: CudaModelTests' 3e-2 for the rounded projection inputs, plus both adapters' A, B and u rounded to bf16
    [TestCase(LoraDecodeVariant.ShrinkRows, LoraPrefillVariant.ShrinkRows, true, 6e-2f, 2e-2f)]
    [TestCase(LoraDecodeVariant.GemvEpilogue, LoraPrefillVariant.KConcat, true, 6e-2f, 2e-2f)]
    public void ModelWithTwoAdapters_MatchesTheCpu(LoraDecodeVariant decode, LoraPrefillVariant prefill, bool bf16Activations, float atol, float rtol)
    {
        var c = TestModels.Tiny();
        var sparse = LoraAdapter.CreateRandom(c, 4, 8, 11, bSparsity: 0.9, bStd: 0.5f);
        var dense = LoraAdapter.CreateRandom(c, 8, 16, 12, bSparsity: 0, bStd: 0.3f);
        using var cpu = TestModels.Create(c, 7, DType.BF16);
        using var be = CudaBackend.CreateEmulated();
        be.LinearLoraDecode = decode;
        be.LinearLoraPrefill = prefill;
        be.Bf16Activations = bf16Activations;
        using var dev = TestModels.Create(c, 7, DType.BF16, be);
        using var cpuSet = AdapterSet.Attach(cpu, [(sparse, 0.7f), (dense, 1.3f)], merge: false);
        using var devSet = AdapterSet.Attach(dev, [(sparse, 0.7f), (dense, 1.3f)], merge: false, form: LoraBForm.Compact);
        var prompt = CudaModelTests.PromptIds(c);
        var expected = CudaModelTests.Run(cpu, prompt, CudaModelTests.Steps, out _);
        var got = CudaModelTests.Run(dev, prompt, CudaModelTests.Steps, out _);
        using var plain = TestModels.Create(c, 7, DType.BF16);
        using (AdapterSet.Attach(plain, [(sparse, 0.7f)], merge: false))
        {
            var oneAdapter = CudaModelTests.Run(plain, prompt, CudaModelTests.Steps, out _);
            Assert.That(Tolerance.Compare(oneAdapter, expected, atol, rtol).Passed, Is.False, "the second adapter must change the logits");
        }
        var cmp = Tolerance.Compare(got, expected, atol, rtol);
        TestContext.Out.WriteLine(cmp.ToString());
        Assert.That(cmp.Passed, Is.True, cmp.ToString());
    }

    /// <summary>A weight set to 0 drops that adapter from the op (the model equals the one with the other adapter alone).</summary>
    [Test]
    public void ZeroWeight_DropsTheAdapterFromTheFusedOp()
    {
        var c = TestModels.Tiny();
        var first = LoraAdapter.CreateRandom(c, 4, 8, 21, bSparsity: 0.9, bStd: 0.5f);
        var second = LoraAdapter.CreateRandom(c, 4, 8, 22, bSparsity: 0, bStd: 0.5f);
        using var be = CudaBackend.CreateEmulated();
        using var dev = TestModels.Create(c, 7, DType.BF16, be);
        var prompt = CudaModelTests.PromptIds(c);
        float[] alone;
        using (AdapterSet.Attach(dev, [(second, 1f)], merge: false))
            alone = CudaModelTests.Run(dev, prompt, 2, out _);
        using var set = AdapterSet.Attach(dev, [(first, 1f), (second, 1f)], merge: false);
        var both = CudaModelTests.Run(dev, prompt, 2, out _);
        set.SetWeight(0, 0f);
        var dropped = CudaModelTests.Run(dev, prompt, 2, out _);
        Assert.That(Tolerance.Compare(both, alone, 1e-5f, 1e-5f).Passed, Is.False, "the first adapter must change the logits");
        Assert.That(dropped, Is.EqualTo(alone));
    }
}
