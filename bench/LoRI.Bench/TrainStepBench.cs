using BenchmarkDotNet.Attributes;
using LoRI.Adapters;
using LoRI.Backend.Cpu;
using LoRI.Model;
using LoRI.Tensors;
using LoRI.Training;
using LoRI.Training.Data;

namespace LoRI.Bench;

/// <summary>
/// One optimizer step (forward, backward, clip, AdamW) of each method on the `small` preset (bf16 weights,
/// 8 layers, hidden 512) on the CPU backend: a batch of 8 sequences of 64 tokens (32 prompt, 32 response),
/// rank 16 on all seven projections. Tokens/s = 512 / mean time. LoRI-S uses a 90% mask of a random B.
/// </summary>
[MemoryDiagnoser]
[WarmupCount(1), IterationCount(5), InvocationCount(1)]
public class TrainStepBench
{
    private LlamaModel _m = null!;
    private TrainingGraph _g = null!;
    private Batch _batch = null!;

    [Params(TrainMethod.Lora, TrainMethod.LoriD, TrainMethod.LoriS, TrainMethod.Full)]
    public TrainMethod Method;

    [GlobalSetup]
    public void Setup()
    {
        var c = Presets.Get("small", 2048, 2000, [2001]);
        var be = new CpuBackend();
        _m = new LlamaModel(c, be, LlamaWeights.Load(c, be, RandomWeights.Source(RandomWeights.Create(c, 1, DType.BF16))), 512);
        LoraAdapter? adapter = Method == TrainMethod.Full ? null
            : LoriSetup.CreateAdapter(c, 16, 32, Projs.All, AInit.Uniform, seed: 1);
        LoraMask? mask = Method == TrainMethod.LoriS
            ? LoraMask.Compute(LoraAdapter.CreateRandom(c, 16, 32, seed: 2), 0.9) : null;
        _g = new TrainingGraph(_m, Method, adapter, 512, mask);
        var rng = new Rng(3);
        var examples = Enumerable.Range(0, 8).Select(i =>
            new TrainingExample(Enumerable.Range(0, 64).Select(_ => rng.NextInt(2000)).ToArray(), 32, i)).ToList();
        _batch = new Batch(examples, 2001, LossReduction.SumTokensMeanSequences);
    }

    [Benchmark]
    public float Step()
    {
        _g.ZeroGrad();
        _g.Run(_batch);
        return _g.OptimizerStep(1e-4, new AdamWOptions());
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _g.Dispose();
        _m.Dispose();
    }
}
