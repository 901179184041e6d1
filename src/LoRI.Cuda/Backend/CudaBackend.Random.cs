using LoRI.Backend;
using LoRI.Cuda.Driver;
using LoRI.Tensors;

namespace LoRI.Cuda.Backend;

public sealed unsafe partial class CudaBackend
{
    /// <summary>The backend's stream (for libraries that enqueue on it, e.g. cuBLAS in the benchmark).</summary>
    internal nint StreamHandle => Stream;

    /// <summary>
    /// t[i] = offset + scale * u(seed, i), u uniform in [-1, 1) from a hash of (seed, i) (native/kernels/random_fill.cu):
    /// weights made on the device, for benchmarks of models that need no checkpoint. F32 or BF16.
    /// </summary>
    public void RandomFill(Tensor t, ulong seed, float scale, float offset = 0f)
    {
        Own(t, "t");
        if (t.DType is not (DType.F32 or DType.BF16)) throw new ShapeMismatchException($"random_fill: {t} is neither F32 nor BF16");
        if (t.Length == 0) return;
        var a = new KernelArgs();
        a.Add(t); a.Add(t.Length); a.Add(seed); a.Add(scale); a.Add(offset);
        Launch("random_fill", "random_fill_" + Suffix(t.DType), StrideGrid(t.Length), _blockSize, 0, ref a);
    }
}
