using LoRI.Backend.Cpu;
using LoRI.Cuda.Backend;
using LoRI.Model;
using LoRI.Tensors;
using LoRI.Tests.Support;

namespace LoRI.Tests.Cuda;

/// <summary>
/// The Llama graph, written once against IBackend, on the CUDA backend (under the emulator) gives the
/// CPU backend's logits: the whole op set composed, prefill and decode with the KV cache.
/// </summary>
public class CudaModelWeightDtypeTests
{
    [TestCase(DType.F32)]
    [TestCase(DType.BF16)]
    public void TinyModel_LogitsMatchTheCpuBackend(DType dtype)
    {
        var config = TestModels.Tiny(kvHeads: 2, scaling: new RopeScaling(8, 1, 4, 16));
        using var cuda = CudaBackend.CreateEmulated();
        using var cpu = new CpuBackend();
        using var mc = TestModels.Create(config, seed: 3, dtype: dtype, backend: cuda);
        using var mr = TestModels.Create(config, seed: 3, dtype: dtype, backend: cpu);
        int v = config.VocabSize;
        var ids = Enumerable.Range(0, 9).Select(i => (i * 11 + 5) % v).ToArray();

        float[] Run(LlamaModel m)
        {
            using var cache = new KvCache(m.Backend, m.Config, 2, 32);
            var logits = new float[(ids.Length + 1) * v];
            // a prefill of 9 tokens in slot 1, every row out; then one decode step
            m.Forward(ids, Enumerable.Repeat(1, ids.Length).ToArray(), Enumerable.Range(0, ids.Length).ToArray(),
                Enumerable.Range(0, ids.Length).ToArray(), cache, logits.AsSpan(0, ids.Length * v));
            m.Forward([ids[^1]], [1], [ids.Length], [0], cache, logits.AsSpan(ids.Length * v, v));
            return logits;
        }

        var got = Run(mc);
        var expected = Run(mr);
        Close.Assert(got, expected, 1e-4f, 1e-4f, $"{dtype} logits, CUDA (emulated) vs CPU");
    }
}
