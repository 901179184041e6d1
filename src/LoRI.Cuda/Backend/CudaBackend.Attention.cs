using LoRI.Backend;
using LoRI.Cuda.Driver;
using LoRI.Tensors;

namespace LoRI.Cuda.Backend;

/// <summary>
/// Flash attention (native/kernels/flash_attention.cu in fp32, flash_attention_tc.cu on tensor cores; docs/cuda.md
/// says which runs when): the IBackend.Attention op against the KV cache with
/// an online softmax, the query heads of one KV head together and, when there are too few (token, KV head)
/// pairs to fill the device (decode), the positions split across blocks and combined (flash-decoding);
/// and the training pair, forward with the log-sum-exp saved and backward, with CpuOps.AttentionForwardWithLse
/// / AttentionBackward's conventions.
/// </summary>
public sealed unsafe partial class CudaBackend
{
    private const int FlashThreads = 128;
    private const int FlashTile = 32;
    /// <summary>group x head dim the flash kernels hold in registers (128 threads x 16).</summary>
    private const int FlashMaxGroupWidth = 2048;
    private const int FlashMaxHeadDim = 256;

    /// <summary>Use the flash kernels for IBackend.Attention where the shape allows (else the simple baseline kernel).</summary>
    public bool UseFlashAttention { get; set; } = true;

    /// <summary>KV splits of the flash attention forward: 0 chooses from the shape and the device.</summary>
    public int AttentionSplits
    {
        get => _attentionSplits;
        set
        {
            if (value < 0 || value > 256) throw new ArgumentOutOfRangeException(nameof(AttentionSplits), value, "0 (automatic) to 256");
            _attentionSplits = value;
        }
    }
    private int _attentionSplits;

    /// <summary>
    /// Use the tensor-core kernels (native/kernels/flash_attention_tc.cu: mma.sync bf16, fp32 softmax and
    /// accumulators) where the shape allows: head dim a multiple of 16 up to <see cref="TensorCoreAttentionMaxHeadDim"/>,
    /// 16-byte aligned tensors, and for IBackend.Attention at least <see cref="TensorCoreAttentionMinTokens"/> tokens
    /// in the call (prefill; and <see cref="UseFlashAttention"/>, whose "off" means the baseline kernel). Otherwise,
    /// or when off, the fp32 SIMT flash kernels run (the benchmark baseline).
    /// Default, as for <see cref="Bf16Activations"/>: on for a real device of compute capability 8.0 or newer; off
    /// on the emulator, whose attention then matches the CPU backend's fp32 (the tensor-core kernels are checked
    /// there with this set).
    /// </summary>
    public bool UseTensorCoreAttention
    {
        get => _useTensorCoreAttention ?? (!Driver.IsEmulator && Driver.ComputeCapability >= 80);
        set => _useTensorCoreAttention = value;
    }
    private bool? _useTensorCoreAttention;

    /// <summary>The kernel the last attention call launched (for the checks and the benchmark): "flash_attention_tc_forward_d64", "flash_attention_forward", ...</summary>
    public string LastAttentionKernel { get; private set; } = "";

    /// <summary>The largest head dim of the tensor-core attention kernels (multiples of 16 up to this).</summary>
    public const int TensorCoreAttentionMaxHeadDim = 128;

    /// <summary>
    /// Tokens of one IBackend.Attention call from which the tensor-core kernel takes it (a prefill); fewer go to the
    /// split-KV SIMT kernel (decode). A block of the tensor-core kernel takes 64 consecutive tokens and streams the
    /// keys of each distinct slot among them once per query head, so a large batch of single-token decodes from
    /// many slots is better served by the SIMT kernel, which reads a slot's keys once per KV head.
    /// </summary>
    public int TensorCoreAttentionMinTokens
    {
        get => _tcMinTokens;
        set
        {
            if (value < 1) throw new ArgumentOutOfRangeException(nameof(TensorCoreAttentionMinTokens), value, "at least 1");
            _tcMinTokens = value;
        }
    }
    private int _tcMinTokens = 32;

    private const int TcRows = 64;
    private const int TcQueryTile = 32;
    private static readonly string[] TcForwardNames = TcNames("forward");
    private static readonly string[] TcDqNames = TcNames("backward_dq");
    private static readonly string[] TcDkDvNames = TcNames("backward_dkdv");

    private static string[] TcNames(string kernel) =>
        Enumerable.Range(1, TensorCoreAttentionMaxHeadDim / 16).Select(i => $"flash_attention_tc_{kernel}_d{16 * i}").ToArray();

    /// <summary>Whether the tensor-core attention kernels take this head dim.</summary>
    public static bool TensorCoreAttentionFits(int headDim) => headDim > 0 && headDim % 16 == 0 && headDim <= TensorCoreAttentionMaxHeadDim;

    private bool UseTensorCore(int headDim, Tensor a, Tensor b, Tensor c, Tensor? d = null) =>
        UseTensorCoreAttention && TensorCoreAttentionFits(headDim)
        && ((a.Pointer | b.Pointer | c.Pointer | (d is null ? 0 : d.Pointer)) & 15) == 0;

    /// <summary>Dynamic shared memory of the tensor-core kernels (see the header of flash_attention_tc.cu).</summary>
    internal static int TcForwardSmem(int hd) => 3 * TcRows * (hd + 8) * 2 + (2 * TcRows + 2) * sizeof(int);
    internal static int TcDqSmem(int hd) => 4 * TcRows * (hd + 8) * 2 + 2 * TcRows * sizeof(float);
    internal static int TcDkDvSmem(int hd) => (2 * TcRows + 2 * TcQueryTile) * (hd + 8) * 2 + 2 * TcQueryTile * sizeof(float);

    private void TensorCoreForward(Tensor q, Tensor k, Tensor v, ulong slots, ulong positions, Tensor y, ulong lse,
                                   int n, int heads, int kvHeads, int hd, int s, int t)
    {
        var a = new KernelArgs();
        a.Add(q); a.Add(k); a.Add(v); a.Add(slots); a.Add(positions); a.Add(y); a.Add(lse);
        a.Add(n); a.Add(heads); a.Add(kvHeads); a.Add(s); a.Add(t); a.Add(1f / MathF.Sqrt(hd));
        LastAttentionKernel = TcForwardNames[hd / 16 - 1];
        Launch("flash_attention_tc", LastAttentionKernel, new Dim3((uint)((n + TcRows - 1) / TcRows), (uint)heads), FlashThreads, TcForwardSmem(hd), ref a);
    }

    private bool TryTensorCoreAttention(Tensor q, Tensor kCache, Tensor vCache, Tensor slots, Tensor positions, int heads, int kvHeads, int headDim, Tensor y, int n)
    {
        if (!UseFlashAttention || n < TensorCoreAttentionMinTokens || !UseTensorCore(headDim, q, kCache, vCache)) return false;
        TensorCoreForward(q, kCache, vCache, (ulong)slots.Pointer, (ulong)positions.Pointer, y, 0, n, heads, kvHeads, headDim, kCache.Shape[0], kCache.Shape[1]);
        return true;
    }

    private static bool FlashFits(int heads, int kvHeads, int headDim) => headDim <= FlashMaxHeadDim && heads / kvHeads * headDim <= FlashMaxGroupWidth;

    private static int FlashForwardSmem(int group, int hd) =>
        (group * hd + FlashTile * (hd + 1) + FlashTile * hd + group * FlashTile + 3 * group) * sizeof(float);

    private bool TryFlashAttention(Tensor q, Tensor kCache, Tensor vCache, Tensor slots, Tensor positions, int heads, int kvHeads, int headDim, Tensor y, int n)
    {
        if (!UseFlashAttention || !FlashFits(heads, kvHeads, headDim)) return false;
        int s = kCache.Shape[0], t = kCache.Shape[1];
        int splits = _attentionSplits;
        if (splits == 0)
        {
            // split positions only when (token, KV head) blocks do not fill two per multiprocessor, and keep >= 256 positions per split
            int blocks = n * kvHeads, want = 2 * Driver.MultiprocessorCount;
            splits = blocks >= want ? 1 : Math.Clamp(Math.Min((want + blocks - 1) / blocks, (t + 255) / 256), 1, 64);
        }
        FlashForward(q, kCache, vCache, (ulong)slots.Pointer, (ulong)positions.Pointer, y, 0, n, heads, kvHeads, headDim, s, t, splits);
        return true;
    }

    private void FlashForward(Tensor q, Tensor k, Tensor v, ulong slots, ulong positions, Tensor y, ulong lse,
                              int n, int heads, int kvHeads, int hd, int s, int t, int splits)
    {
        int group = heads / kvHeads;
        ulong part = 0;
        if (splits > 1) part = (ulong)Scratch("attention_part", DType.F32, (long)n * heads * splits * (hd + 2)).Pointer;
        var a = new KernelArgs();
        a.Add(q); a.Add(k); a.Add(v); a.Add(slots); a.Add(positions); a.Add(y); a.Add(splits == 1 ? lse : 0UL); a.Add(part);
        a.Add(heads); a.Add(kvHeads); a.Add(hd); a.Add(s); a.Add(t); a.Add(splits); a.Add(1f / MathF.Sqrt(hd));
        LastAttentionKernel = "flash_attention_forward";
        Launch("flash_attention", "flash_attention_forward", new Dim3((uint)n, (uint)kvHeads, (uint)splits), FlashThreads, FlashForwardSmem(group, hd), ref a);
        if (splits == 1) return;
        var c = new KernelArgs();
        c.Add(part); c.Add(slots); c.Add(positions); c.Add(y); c.Add(lse); c.Add(heads); c.Add(hd); c.Add(s); c.Add(t); c.Add(splits);
        Launch("flash_attention", "flash_attention_combine", new Dim3((uint)n, (uint)heads), Math.Min(_blockSize, 128), 0, ref c);
    }

    private void CheckTrainingAttention(string op, Tensor q, Tensor k, Tensor v, int batch, int seqLen, int heads, int kvHeads, int headDim)
    {
        Expect(op, "q", q, DType.F32);
        Expect(op, "k", k, DType.F32);
        Expect(op, "v", v, DType.F32);
        if (batch < 0 || seqLen <= 0 || heads <= 0 || kvHeads <= 0 || heads % kvHeads != 0 || headDim <= 0)
            throw new ShapeMismatchException($"{op}: batch {batch} x {seqLen} tokens, {heads} query heads, {kvHeads} KV heads, head dim {headDim}: heads must be a multiple of KV heads");
        if (!FlashFits(heads, kvHeads, headDim))
            throw new UnsupportedException($"{op}: {heads / kvHeads} query heads per KV head of dim {headDim}: the flash kernels take head dim <= {FlashMaxHeadDim} and group x head dim <= {FlashMaxGroupWidth}");
        long n = (long)batch * seqLen;
        ExpectLength(op, "q", q, n * heads * headDim);
        ExpectLength(op, "k", k, n * kvHeads * headDim);
        ExpectLength(op, "v", v, n * kvHeads * headDim);
    }

    /// <summary>
    /// Causal attention of a training batch over its own keys (CpuOps.AttentionForwardWithLse): `batch`
    /// sequences of `seqLen` rows; q, y F32 [N, heads * headDim]; k, v F32 [N, kvHeads * headDim]; lse F32 [N, heads]
    /// gets the log-sum-exp of each row's scaled scores, for <see cref="AttentionBackward"/>. Runs on tensor cores
    /// (q, k, v rounded to bf16 as they are staged; see <see cref="UseTensorCoreAttention"/>) where the head dim allows,
    /// else in fp32.
    /// </summary>
    public void AttentionForwardWithLse(Tensor q, Tensor k, Tensor v, int batch, int seqLen, int heads, int kvHeads, int headDim, Tensor y, Tensor lse)
    {
        CheckTrainingAttention("attention_forward_lse", q, k, v, batch, seqLen, heads, kvHeads, headDim);
        Expect("attention_forward_lse", "y", y, DType.F32);
        Expect("attention_forward_lse", "lse", lse, DType.F32);
        int n = batch * seqLen;
        ExpectLength("attention_forward_lse", "y", y, q.Length);
        ExpectLength("attention_forward_lse", "lse", lse, (long)n * heads);
        if (n == 0) return;
        if (UseTensorCore(headDim, q, k, v)) TensorCoreForward(q, k, v, 0, 0, y, (ulong)lse.Pointer, n, heads, kvHeads, headDim, batch, seqLen);
        else FlashForward(q, k, v, 0, 0, y, (ulong)lse.Pointer, n, heads, kvHeads, headDim, batch, seqLen, 1);
    }

    /// <summary>
    /// Backward of <see cref="AttentionForwardWithLse"/> (CpuOps.AttentionBackward): from the forward's q, k, v,
    /// its output y and lse, and dy, writes (=) dq [N, heads * headDim], dk and dv [N, kvHeads * headDim].
    /// Tensor cores or fp32 as for the forward (each call chooses by itself: lse and y from either forward will do).
    /// </summary>
    public void AttentionBackward(Tensor q, Tensor k, Tensor v, Tensor y, Tensor lse, Tensor dy, int batch, int seqLen, int heads, int kvHeads, int headDim,
                                  Tensor dq, Tensor dk, Tensor dv)
    {
        const string op = "attention_backward";
        CheckTrainingAttention(op, q, k, v, batch, seqLen, heads, kvHeads, headDim);
        Expect(op, "y", y, DType.F32);
        Expect(op, "lse", lse, DType.F32);
        Expect(op, "dy", dy, DType.F32);
        Expect(op, "dq", dq, DType.F32);
        Expect(op, "dk", dk, DType.F32);
        Expect(op, "dv", dv, DType.F32);
        int n = batch * seqLen, group = heads / kvHeads, hd = headDim;
        ExpectLength(op, "y", y, q.Length);
        ExpectLength(op, "dy", dy, q.Length);
        ExpectLength(op, "dq", dq, q.Length);
        ExpectLength(op, "dk", dk, k.Length);
        ExpectLength(op, "dv", dv, v.Length);
        ExpectLength(op, "lse", lse, (long)n * heads);
        if (n == 0) return;
        float scale = 1f / MathF.Sqrt(hd);
        var dsum = Scratch("attention_dsum", DType.F32, (long)n * heads);

        var a = new KernelArgs();
        a.Add(dy); a.Add(y); a.Add(dsum); a.Add(n * heads); a.Add(hd);
        Launch("flash_attention", "attention_backward_dot", Math.Max(1, Math.Min(4096, (n * heads * 32 + _blockSize - 1) / _blockSize)), _blockSize, 0, ref a);

        if (UseTensorCore(hd, q, k, v, dy))
        {
            var tb = new KernelArgs();
            tb.Add(q); tb.Add(k); tb.Add(v); tb.Add(dy); tb.Add(lse); tb.Add(dsum); tb.Add(dq); tb.Add(heads); tb.Add(kvHeads); tb.Add(seqLen); tb.Add(scale);
            uint tiles = (uint)((seqLen + TcRows - 1) / TcRows);
            Launch("flash_attention_tc", TcDqNames[hd / 16 - 1], new Dim3(tiles, (uint)batch, (uint)heads), FlashThreads, TcDqSmem(hd), ref tb);
            var tc = new KernelArgs();
            tc.Add(q); tc.Add(k); tc.Add(v); tc.Add(dy); tc.Add(lse); tc.Add(dsum); tc.Add(dk); tc.Add(dv); tc.Add(heads); tc.Add(kvHeads); tc.Add(seqLen); tc.Add(scale);
            Launch("flash_attention_tc", TcDkDvNames[hd / 16 - 1], new Dim3(tiles, (uint)batch, (uint)kvHeads), FlashThreads, TcDkDvSmem(hd), ref tc);
            LastAttentionKernel = TcDkDvNames[hd / 16 - 1];
            return;
        }

        var b = new KernelArgs();
        b.Add(q); b.Add(k); b.Add(v); b.Add(dy); b.Add(lse); b.Add(dsum); b.Add(dq); b.Add(heads); b.Add(kvHeads); b.Add(hd); b.Add(seqLen); b.Add(scale);
        int dqSmem = (2 * group * hd + 2 * FlashTile * (hd + 1) + group * FlashTile + 2 * group) * sizeof(float);
        Launch("flash_attention", "flash_attention_backward_dq", new Dim3((uint)n, (uint)kvHeads), FlashThreads, dqSmem, ref b);

        var c = new KernelArgs();
        c.Add(q); c.Add(k); c.Add(v); c.Add(dy); c.Add(lse); c.Add(dsum); c.Add(dk); c.Add(dv); c.Add(heads); c.Add(kvHeads); c.Add(hd); c.Add(seqLen); c.Add(scale);
        int dkdvSmem = (2 * hd + 2 * FlashTile * hd + 2 * FlashTile) * sizeof(float);
        Launch("flash_attention", "flash_attention_backward_dkdv", new Dim3((uint)n, (uint)kvHeads), FlashThreads, dkdvSmem, ref c);
        LastAttentionKernel = "flash_attention_backward_dkdv";
    }
}
