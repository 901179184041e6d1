using LoRI.Tensors;
using LoRI.Tests.Support;
using LoRI.Training;

namespace LoRI.Tests.Cuda;

/// <summary>
/// The training graph on cuda-emu with <c>Bf16Activations</c> on, as a real GPU runs it: the forward projections and
/// the backward products dx = dy W of every frozen bf16 weight (and the lm_head's) go through the tensor-core GEMMs,
/// which round the F32 activations and gradients to bf16 on the way in. The kernels themselves are held to the CPU
/// exactly (KernelChecks matmul_tc_backward_*); this shows what the rounding does to a LoRI-S step's gradients.
/// </summary>
public class CudaTrainingTensorCoreTests
{
    // The bound, derived from bf16's rounding: a staged product rounds one operand (the activation or the incoming
    // gradient; the bf16 weight is exact) to nearest, moving each term by at most 2^-8 = Bf16Eps / 2 of itself. On
    // the tiny model (2 layers) the path from the input to the loss and back to any B passes through at most 17 staged
    // products in sequence: per layer 4 in the forward (q/k/v, o, gate/up, down) and 4 in the backward (their dx),
    // and the lm_head's forward and its dh. Taking each one's perturbation as 2^-8 of the tensor's largest gradient
    // and adding them gives 17 * 2^-8 of it; the loss passes through the 9 forward ones (relative).
    private const int StagedProductsOnThePath = 17, StagedProductsInTheForward = 9;
    private const float GradAtolOfMax = StagedProductsOnThePath * Close.Bf16Eps / 2;
    private const double LossRtol = StagedProductsInTheForward * Close.Bf16Eps / 2;

    [Test]
    public void LoriS_Bf16Activations_GradientsOfB_MatchTheCpu_WithinTheBf16Bound()
    {
        using var p = new CudaTrainingTests.Pair(TrainMethod.LoriS, dtype: DType.BF16);
        var batch = CudaTrainingTests.TestBatch();
        double lc = p.Cpu.Run(batch);

        // the fp32 device path first (the SIMT backward), to show that the bf16 one below is a different computation
        p.Be.Bf16Activations = false;
        double l32 = p.Dev.Run(batch);
        p.Dev.SyncGradsToHost();
        var grads32 = p.Dev.Params.Select(x => (float[])x.Grad.Clone()).ToArray();
        p.Dev.ZeroGrad();

        p.Be.Bf16Activations = true;
        double ld = p.Dev.Run(batch);
        p.Dev.SyncGradsToHost();
        Assert.That(l32, Is.EqualTo(lc).Within(1e-5 * Math.Abs(lc)), "fp32 device loss");
        Assert.That(ld, Is.EqualTo(lc).Within(LossRtol * Math.Abs(lc)), "loss with bf16 activations");

        Assert.That(p.Dev.Params.Select(x => x.Name), Is.EqualTo(p.Cpu.Params.Select(x => x.Name)));
        double worstRatio = 0, changed = 0;
        for (int i = 0; i < p.Cpu.Params.Count; i++)
        {
            var reference = p.Cpu.Params[i].Grad;
            var got = p.Dev.Params[i].Grad;
            float max = reference.Max(MathF.Abs);
            var mask = p.Dev.Params[i].Mask!;
            if (!mask.Contains(true))
            {
                // a module the mask emptied: no gradient on either side
                Assert.That(got, Has.All.EqualTo(0f), $"{p.Cpu.Params[i].Name}: its mask is empty");
                continue;
            }
            Assert.That(max, Is.GreaterThan(0f), $"{p.Cpu.Params[i].Name} has a gradient");
            Close.Assert(got, reference, GradAtolOfMax * max, 0f, $"d {p.Cpu.Params[i].Name} with bf16 activations");
            worstRatio = Math.Max(worstRatio, Close.MaxError(got, reference) / max);
            changed = Math.Max(changed, Close.MaxError(got, grads32[i]) / max);
            for (int e = 0; e < got.Length; e++)
                if (!mask[e]) Assert.That(got[e], Is.EqualTo(0f), $"{p.Dev.Params[i].Name}[{e}] is masked but has a gradient");
        }
        TestContext.Out.WriteLine($"worst |error| / max |grad|: {worstRatio:G3} (bound {GradAtolOfMax:G3}); bf16 vs fp32 device: {changed:G3}; " +
                                  $"loss {ld} vs {lc}");
        // the tensor-core path really ran: its gradients are not the fp32 kernels' (which agree with the CPU to ~1e-5)
        Assert.That(changed, Is.GreaterThan(1e-4), "bf16 staging changed the gradients");
    }
}
