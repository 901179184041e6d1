using LoRI.Tensors;

namespace LoRI.Backend;

/// <summary>How a LoRA B matrix is held on a backend.</summary>
public enum LoraBForm
{
    /// <summary>B as a dense F32 [Out, Rank] matrix.</summary>
    Dense,
    /// <summary>
    /// B as per-row compressed sparse rows: RowStart I32 [Out + 1], Cols U8 [nnz] (column = rank index, so
    /// Rank must be at most 256) and Values F32 [nnz]. Row o holds entries RowStart[o] .. RowStart[o + 1] - 1.
    /// 5 bytes per non-zero instead of 4 per element: smaller than dense below 80% density.
    /// </summary>
    Compact,
}

/// <summary>
/// One adapted projection's LoRA factors on a backend, ready for <see cref="IAdapterOps.LoraApply"/>:
///   A      F32 [Rank, In]   (the frozen random projection of LoRI)
///   B      F32 [Out, Rank]  (Dense form), or RowStart / Cols / Values (Compact form).
/// The scale (s * user weight) is not stored: it is an argument of the op, so re-weighting needs no upload.
/// </summary>
public sealed class LoraFactors : IDisposable
{
    /// <summary>
    /// Highest B density at which <see cref="ChooseForm"/> picks the compact form. Measured (docs/benchmarks.md):
    /// on the CPU the dense expand (4 rows at a time, vectorised over the rank) beats the compact row walk at 50%
    /// and is level with it at 90% sparsity; the compact form wins clearly only at 99%.
    /// </summary>
    public const double CompactMaxDensity = 0.05;

    public int Rank { get; }
    public int In { get; }
    public int Out { get; }
    public LoraBForm Form { get; }
    public long NonZeros { get; }
    public Tensor A { get; }
    public Tensor? B { get; }
    public Tensor? RowStart { get; }
    public Tensor? Cols { get; }
    public Tensor? Values { get; }

    /// <summary>
    /// A in bf16 [Rank, In] and B dense in bf16 [Out, Rank] (whatever <see cref="Form"/> is), for a backend's
    /// tensor-core kernels (CUDA's linear with adapters): made by that backend on first use through
    /// <see cref="SetBf16Copies"/>, disposed with the factors; null until then.
    /// </summary>
    public Tensor? Bf16A { get; private set; }
    public Tensor? Bf16B { get; private set; }

    /// <summary>Records the bf16 copies (owned by the factors from then on); each may be set once.</summary>
    public void SetBf16Copies(Tensor? a, Tensor? b)
    {
        if ((a is not null && Bf16A is not null) || (b is not null && Bf16B is not null))
            throw new InvalidOperationException("the bf16 copies of these LoRA factors are already set");
        if (a is not null && (a.DType != DType.BF16 || a.Length != (long)Rank * In))
            throw new ArgumentException($"the bf16 copy of A is {a}, expected BF16 [{Rank}, {In}]");
        if (b is not null && (b.DType != DType.BF16 || b.Length != (long)Out * Rank))
            throw new ArgumentException($"the bf16 copy of B is {b}, expected BF16 [{Out}, {Rank}]");
        Bf16A ??= a;
        Bf16B ??= b;
    }

    private LoraFactors(int rank, int inDim, int outDim, LoraBForm form, long nnz, Tensor a, Tensor? b, Tensor? rowStart, Tensor? cols, Tensor? values)
    {
        Rank = rank; In = inDim; Out = outDim; Form = form; NonZeros = nnz;
        A = a; B = b; RowStart = rowStart; Cols = cols; Values = values;
    }

    /// <summary>The form to use for a B of this density: compact when it is sparse enough and the rank fits a byte index.</summary>
    public static LoraBForm ChooseForm(long nonZeros, int outDim, int rank) =>
        rank <= 256 && nonZeros <= CompactMaxDensity * outDim * rank ? LoraBForm.Compact : LoraBForm.Dense;

    /// <summary>Uploads A [rank, in] and B [out, rank] (row-major F32) in the requested form (null: chosen by density).</summary>
    public static LoraFactors Create(IBackend backend, ReadOnlySpan<float> a, ReadOnlySpan<float> b, int rank, int inDim, int outDim,
                                     LoraBForm? form = null)
    {
        if (rank < 1 || inDim < 1 || outDim < 1) throw new ArgumentException($"LoRA factors need positive sizes (rank {rank}, in {inDim}, out {outDim})");
        if (a.Length != (long)rank * inDim) throw new ArgumentException($"A has {a.Length} values, expected [{rank}, {inDim}]");
        if (b.Length != (long)outDim * rank) throw new ArgumentException($"B has {b.Length} values, expected [{outDim}, {rank}]");
        long nnz = 0;
        foreach (var v in b) if (v != 0) nnz++;
        var f = form ?? ChooseForm(nnz, outDim, rank);
        if (f == LoraBForm.Compact && rank > 256) throw new ArgumentException($"the compact B form indexes columns with a byte: rank {rank} is more than 256");
        var ta = backend.Allocate(DType.F32, rank, inDim);
        backend.Upload(a, ta);
        if (f == LoraBForm.Dense)
        {
            var tb = backend.Allocate(DType.F32, outDim, rank);
            backend.Upload(b, tb);
            return new LoraFactors(rank, inDim, outDim, f, nnz, ta, tb, null, null, null);
        }
        var rowStart = new int[outDim + 1];
        var cols = new byte[Math.Max(1, nnz)];
        var vals = new float[Math.Max(1, nnz)];
        int k = 0;
        for (int o = 0; o < outDim; o++)
        {
            rowStart[o] = k;
            var row = b.Slice(o * rank, rank);
            for (int j = 0; j < rank; j++)
                if (row[j] != 0) { cols[k] = (byte)j; vals[k] = row[j]; k++; }
        }
        rowStart[outDim] = k;
        var tr = backend.Allocate(DType.I32, outDim + 1);
        backend.Upload<int>(rowStart, tr);
        var tc = backend.Allocate(DType.U8, cols.Length);
        backend.Upload<byte>(cols, tc);
        var tv = backend.Allocate(DType.F32, vals.Length);
        backend.Upload<float>(vals, tv);
        return new LoraFactors(rank, inDim, outDim, f, nnz, ta, null, tr, tc, tv);
    }

    public void Dispose()
    {
        A.Dispose(); B?.Dispose(); RowStart?.Dispose(); Cols?.Dispose(); Values?.Dispose(); Bf16A?.Dispose(); Bf16B?.Dispose();
    }
}
