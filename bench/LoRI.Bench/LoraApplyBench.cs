using BenchmarkDotNet.Attributes;
using LoRI.Backend;
using LoRI.Backend.Cpu;
using LoRI.Tensors;

namespace LoRI.Bench;

/// <summary>A Llama-3-8B projection shape: W is [Out, In].</summary>
public sealed record LayerShape(int Out, int In)
{
    public override string ToString() => $"{Out}x{In}";
    public static IEnumerable<LayerShape> Llama3_8B => [new(4096, 4096), new(14336, 4096), new(4096, 14336)];
}

/// <summary>
/// `lora_apply` alone (y += s B (A x)) on the CPU, with B dense and compact, at Llama-3-8B shapes, 1 token
/// (decode) and 512 (prefill), ranks 16/32/64 and B sparsity 0/50/90/99%. The unmerged cost of a layer is
/// this plus <see cref="BaseLinearBench"/>'s base MatMul; docs/benchmarks.md reports it as a ratio to "merged".
/// </summary>
[WarmupCount(2), IterationCount(5)]
public class LoraApplyBench
{
    private CpuBackend _be = null!;
    private Tensor _x = null!, _y = null!;
    private LoraFactors _dense = null!, _compact = null!;

    [ParamsSource(nameof(Shapes))] public LayerShape Shape = null!;
    public static IEnumerable<LayerShape> Shapes => LayerShape.Llama3_8B;
    [Params(1, 512)] public int Tokens;
    [Params(16, 32, 64)] public int Rank;
    [Params(0.0, 0.5, 0.9, 0.99)] public double Sparsity;

    [GlobalSetup]
    public void Setup()
    {
        _be = new CpuBackend();
        var rng = new Rng(7);
        var a = new float[Rank * Shape.In];
        for (int i = 0; i < a.Length; i++) a[i] = (float)((rng.NextDouble() * 2 - 1) / Math.Sqrt(Shape.In));
        var b = new float[Shape.Out * Rank];
        for (int i = 0; i < b.Length; i++) b[i] = rng.NextDouble() < Sparsity ? 0 : (float)(rng.NextGaussian() * 0.01);
        _dense = LoraFactors.Create(_be, a, b, Rank, Shape.In, Shape.Out, LoraBForm.Dense);
        _compact = LoraFactors.Create(_be, a, b, Rank, Shape.In, Shape.Out, LoraBForm.Compact);
        _x = _be.Allocate(DType.F32, Tokens, Shape.In);
        var xs = _x.Span<float>();
        for (int i = 0; i < xs.Length; i++) xs[i] = (float)rng.NextGaussian();
        _y = _be.Allocate(DType.F32, Tokens, Shape.Out);
    }

    [Benchmark(Baseline = true)]
    public void UnmergedDense() => _be.LoraApply(_x, _dense, 2f, _y);

    [Benchmark]
    public void UnmergedCompact() => _be.LoraApply(_x, _compact, 2f, _y);

    [GlobalCleanup]
    public void Cleanup()
    {
        _dense.Dispose(); _compact.Dispose(); _x.Dispose(); _y.Dispose();
    }
}

/// <summary>
/// The base projection y = x W^T with bf16 W (Llama-3-8B's stored dtype): "base only" on the original W and
/// "merged" on W + s B A (a different tensor of the same dtype and shape, so the same cost: merging is free
/// at run time, which is why it is the reference of the ratios).
/// </summary>
[WarmupCount(2), IterationCount(5)]
public class BaseLinearBench
{
    private CpuBackend _be = null!;
    private Tensor _x = null!, _y = null!, _w = null!, _merged = null!;

    [ParamsSource(nameof(Shapes))] public LayerShape Shape = null!;
    public static IEnumerable<LayerShape> Shapes => LayerShape.Llama3_8B;
    [Params(1, 512)] public int Tokens;

    [GlobalSetup]
    public void Setup()
    {
        _be = new CpuBackend();
        var rng = new Rng(3);
        _w = _be.Allocate(DType.BF16, Shape.Out, Shape.In);
        _merged = _be.Allocate(DType.BF16, Shape.Out, Shape.In);
        var w = _w.Span<ushort>(); var m = _merged.Span<ushort>();
        for (int i = 0; i < w.Length; i++)
        {
            float v = (float)(rng.NextGaussian() * 0.02);
            w[i] = Bf16.FromFloat(v);
            m[i] = Bf16.FromFloat(v + (float)(rng.NextGaussian() * 1e-4));
        }
        _x = _be.Allocate(DType.F32, Tokens, Shape.In);
        var xs = _x.Span<float>();
        for (int i = 0; i < xs.Length; i++) xs[i] = (float)rng.NextGaussian();
        _y = _be.Allocate(DType.F32, Tokens, Shape.Out);
    }

    [Benchmark]
    public void BaseOnly() => _be.MatMul(_x, _w, _y);

    [Benchmark(Baseline = true)]
    public void Merged() => _be.MatMul(_x, _merged, _y);

    [GlobalCleanup]
    public void Cleanup()
    {
        _w.Dispose(); _merged.Dispose(); _x.Dispose(); _y.Dispose();
    }
}
