using BenchmarkDotNet.Attributes;
using LoRI.Backend.Cpu;
using LoRI.Model;
using LoRI.Tensors;

namespace LoRI.Bench;

/// <summary>
/// Forward throughput of the `small` preset (random bf16 weights, built in memory) on the CPU backend:
/// prefill of 128 tokens, and one decode step at position 128. Tokens/s = tokens / mean time.
/// </summary>
[MemoryDiagnoser]
[WarmupCount(2), IterationCount(5)]
public class ForwardBench
{
    private LlamaModel _m = null!;
    private KvCache _cache = null!;
    private int[] _ids = null!, _slots = null!, _pos = null!;
    private float[] _logits = null!;
    private readonly int[] _lastRow = [Prompt - 1], _decodePos = [Prompt], _row0 = [0];
    private const int Prompt = 128;

    [GlobalSetup]
    public void Setup()
    {
        var c = Presets.Get("small", 2048, 2000, [2001]);
        var be = new CpuBackend();
        _m = new LlamaModel(c, be, LlamaWeights.Load(c, be, RandomWeights.Source(RandomWeights.Create(c, 1, DType.BF16))), Prompt);
        _cache = new KvCache(be, c, 1, 1024);
        _ids = new int[Prompt];
        _slots = new int[Prompt];
        _pos = new int[Prompt];
        for (int i = 0; i < Prompt; i++) { _ids[i] = (i * 37) % c.VocabSize; _pos[i] = i; }
        _logits = new float[c.VocabSize];
        Prefill128();
    }

    [Benchmark]
    public void Prefill128() => _m.Forward(_ids, _slots, _pos, _lastRow, _cache, _logits);

    [Benchmark]
    public void DecodeOneToken() => _m.Forward(_ids.AsSpan(0, 1), _slots.AsSpan(0, 1), _decodePos, _row0, _cache, _logits);

    [GlobalCleanup]
    public void Cleanup()
    {
        _cache.Dispose();
        _m.Dispose();
    }
}
