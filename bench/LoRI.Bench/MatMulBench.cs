using BenchmarkDotNet.Attributes;
using LoRI.Backend;
using LoRI.Backend.Cpu;
using LoRI.Tensors;

namespace LoRI.Bench;

/// <summary>
/// The CPU linear op (y = x W^T, bf16 W) against a naive triple loop, at a Llama-like projection shape.
/// Tokens = 1 is decode (memory-bound: reports GB/s of weights), 64 is a prefill tile (compute-bound).
/// </summary>
[MemoryDiagnoser]
[WarmupCount(2), IterationCount(5)]
public class MatMulBench
{
    private CpuBackend _be = null!;
    private Tensor _x = null!, _w = null!, _y = null!;
    private float[] _xf = null!, _wf = null!, _yf = null!;

    [Params(1, 64)] public int Tokens;
    [Params(2048)] public int K;
    [Params(2048)] public int M;

    [GlobalSetup]
    public void Setup()
    {
        _be = new CpuBackend();
        var rng = new Rng(1);
        _xf = new float[Tokens * K];
        _wf = new float[M * K];
        for (int i = 0; i < _xf.Length; i++) _xf[i] = rng.NextFloat() - 0.5f;
        for (int i = 0; i < _wf.Length; i++) _wf[i] = Bf16.Round(rng.NextFloat() - 0.5f);
        _yf = new float[Tokens * M];
        _x = _be.Allocate(DType.F32, Tokens, K);
        _be.Upload<float>(_xf, _x);
        _w = _be.Allocate(DType.BF16, M, K);
        var u = new ushort[_wf.Length];
        Bf16.FromFloat(_wf, u);
        _be.Upload<ushort>(u, _w);
        _y = _be.Allocate(DType.F32, Tokens, M);
    }

    [Benchmark(Baseline = true)]
    public float Naive()
    {
        for (int n = 0; n < Tokens; n++)
            for (int m = 0; m < M; m++)
            {
                float s = 0;
                for (int k = 0; k < K; k++) s += _xf[n * K + k] * _wf[m * K + k];
                _yf[n * M + m] = s;
            }
        return _yf[0];
    }

    [Benchmark]
    public void CpuBackendMatMul() => _be.MatMul(_x, _w, _y);

    [GlobalCleanup]
    public void Cleanup()
    {
        _x.Dispose(); _w.Dispose(); _y.Dispose();
    }
}
