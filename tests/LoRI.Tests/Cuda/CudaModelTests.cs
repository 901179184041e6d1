using LoRI.Adapters;
using LoRI.Backend;
using LoRI.Backend.Cpu;
using LoRI.Cuda.Backend;
using LoRI.Cuda.Checks;
using LoRI.Model;
using LoRI.Tensors;
using LoRI.Tests.Support;

namespace LoRI.Tests.Cuda;

/// <summary>
/// The whole tiny model (bf16 weights) on the CUDA emulator against the CPU backend: the logits of a prefill,
/// then of every decode step, each step feeding the CPU's argmax token to both. The kernels the model
/// meets there are the ones a GPU runs: the tiled GEMM or the tensor-core GEMM for the prefill, the GEMV for
/// decode, flash attention (split-KV for decode), the adapter kernels for an unmerged LoRI-S adapter.
/// </summary>
public class CudaModelTests
{
    internal const int Prompt = 20, Steps = 5;

    internal static float[] Run(LlamaModel m, int[] prompt, int steps, out int[] tokens)
    {
        var c = m.Config;
        using var cache = new KvCache(m.Backend, c, 1, 64);
        var all = new List<float>();
        var logits = new float[c.VocabSize];
        var pos = Enumerable.Range(0, prompt.Length).ToArray();
        m.Forward(prompt, new int[prompt.Length], pos, [prompt.Length - 1], cache, logits);
        all.AddRange(logits);
        var toks = new List<int>();
        int next = prompt.Length;
        for (int s = 0; s < steps; s++)
        {
            int tok = Array.IndexOf(logits, logits.Max());
            toks.Add(tok);
            m.Forward([tok], [0], [next++], [0], cache, logits);
            all.AddRange(logits);
        }
        tokens = toks.ToArray();
        return all.ToArray();
    }

    internal static int[] PromptIds(LlamaConfig c) => Enumerable.Range(0, Prompt).Select(i => (i * 37 + 5) % c.VocabSize).ToArray();

    /// <param name="bf16Activations">Prefill through the tensor-core GEMM (activations rounded to bf16).</param>
    /// <param name="splits">KV splits of the flash attention (0: the backend's choice).</param>
    [TestCase(false, 0, 1e-4f, 1e-4f)]
    [TestCase(true, 3, 3e-2f, 2e-2f)]  // bf16 activations: each projection's input rounded to 8 bits of mantissa
    public void PrefillAndDecodeLogits_MatchTheCpu(bool bf16Activations, int splits, float atol, float rtol)
    {
        var c = TestModels.Tiny();
        using var cpu = TestModels.Create(c, 7, DType.BF16);
        using var be = CudaBackend.CreateEmulated();
        be.Bf16Activations = bf16Activations;
        be.AttentionSplits = splits;
        using var dev = TestModels.Create(c, 7, DType.BF16, be);
        var prompt = PromptIds(c);
        var expected = Run(cpu, prompt, Steps, out var cpuTokens);
        var got = Run(dev, prompt, Steps, out var devTokens);
        var cmp = Tolerance.Compare(got, expected, atol, rtol);
        TestContext.Out.WriteLine($"{cmp}; tokens cpu {string.Join(',', cpuTokens)}, cuda-emu {string.Join(',', devTokens)}");
        Assert.That(cmp.Passed, Is.True, cmp.ToString());
    }

    [Test]
    public void Capture_RefusesHostCopies()
    {
        using var be = CudaBackend.CreateEmulated();
        using var t = be.Allocate(DType.F32, 4);
        be.BeginCapture();
        Assert.Throws<InvalidOperationException>(() => be.Upload<float>([1f, 2f, 3f, 4f], t));
        using var g = be.EndCapture();
        Assert.That(g.LaunchCount, Is.Zero);
    }

    [Test]
    public void UnmergedLoriSAdapter_MatchesTheCpu()
    {
        var c = TestModels.Tiny();
        var adapter = LoraAdapter.CreateRandom(c, 4, 8, 11, bSparsity: 0.9, bStd: 0.5f);
        using var cpu = TestModels.Create(c, 7, DType.BF16);
        using var be = CudaBackend.CreateEmulated();
        using var dev = TestModels.Create(c, 7, DType.BF16, be);
        using var cpuSet = AdapterSet.Attach(cpu, [(adapter, 1f)], merge: false);
        using var devSet = AdapterSet.Attach(dev, [(adapter, 1f)], merge: false);
        var prompt = PromptIds(c);
        var expected = Run(cpu, prompt, Steps, out _);
        var got = Run(dev, prompt, Steps, out _);
        using var plain = TestModels.Create(c, 7, DType.BF16);
        var without = Run(plain, prompt, Steps, out _);
        Assert.That(Tolerance.Compare(without, expected, 1e-4f, 1e-4f).Passed, Is.False, "the adapter must change the logits");
        var cmp = Tolerance.Compare(got, expected, 1e-4f, 1e-4f);
        Assert.That(cmp.Passed, Is.True, cmp.ToString());
    }
}
