using System.Runtime.InteropServices;
using LoRI.Backend;
using LoRI.Cuda.Driver;
using LoRI.Cuda.Emulator;
using LoRI.Tensors;

namespace LoRI.Cuda.Backend;

/// <summary>
/// The op set on a CUDA device, through <see cref="ICudaDriver"/>: the same code drives a GPU
/// (<see cref="CudaDriver"/>) or the host emulator (<see cref="EmulatorDriver"/>). Tensors live in
/// device memory from one <see cref="DeviceArena"/>; every op checks dtypes and shapes, then enqueues
/// one kernel (native/kernels/OP.cu) on the backend's stream. Upload/Download/Synchronize wait.
/// Beyond IBackend it offers the backward ops, casts, AdamW and on-device sampling.
/// </summary>
public sealed unsafe partial class CudaBackend : IBackend
{
    private readonly bool _ownsDriver;
    private readonly DeviceArena _arena;
    private readonly CudaStream _streamHandle;
    private readonly Dictionary<string, CudaModule> _modules = new();
    private readonly Dictionary<string, nint> _functions = new();
    private readonly Dictionary<nint, int> _dynamicSmemLimit = new();
    private int _blockSize = 256;

    public ICudaDriver Driver { get; }
    public string Name => Driver.IsEmulator ? "cuda-emu" : "cuda";
    public bool IsHostMemory => false;
    public DeviceArena Arena => _arena;
    private nint Stream => _streamHandle.DangerousGetHandle();

    /// <summary>Threads per block of the row-wise and elementwise kernels: a multiple of 32, at most 1024.</summary>
    public int BlockSize
    {
        get => _blockSize;
        set
        {
            if (value < 32 || value > 1024 || value % 32 != 0)
                throw new ArgumentOutOfRangeException(nameof(BlockSize), value, "a multiple of 32 from 32 to 1024");
            _blockSize = value;
        }
    }

    /// <param name="driver">The device (or emulator) to run on.</param>
    /// <param name="ownsDriver">Dispose the driver with the backend.</param>
    /// <param name="arenaChunkBytes">Arena chunk size; 0 allocates every tensor on its own (default for the emulator).</param>
    public CudaBackend(ICudaDriver driver, bool ownsDriver = true, long? arenaChunkBytes = null)
    {
        Driver = driver;
        _ownsDriver = ownsDriver;
        _arena = new DeviceArena(driver, arenaChunkBytes ?? (driver.IsEmulator ? 0 : 256L << 20));
        _streamHandle = driver.CreateStream();
    }

    /// <summary>A backend on the host emulator (libloriemu.so).</summary>
    public static CudaBackend CreateEmulated(int threads = 0) => new(new EmulatorDriver(threads));

    /// <summary>A backend on CUDA device <paramref name="ordinal"/>; throws when there is none.</summary>
    public static CudaBackend CreateDevice(int ordinal = 0) => new(CudaDriver.Open(ordinal));

    // ---- memory ------------------------------------------------------------------------------------

    public Tensor Allocate(DType dtype, params int[] shape)
    {
        NotCapturing("allocate");
        var t = AllocateUninitialized(dtype, shape);
        Driver.Memset((ulong)t.Pointer, 0, Math.Max(1, t.ByteSize), Stream);
        return t;
    }

    private Tensor AllocateUninitialized(DType dtype, int[] shape)
    {
        foreach (var d in shape)
            if (d < 0) throw new ArgumentException($"negative dimension in {DTypes.ShapeString(shape)}");
        long bytes = DTypes.ElementCount(shape) * dtype.Size();
        var block = _arena.Rent(Math.Max(1, bytes));
        return new Tensor(this, dtype, (int[])shape.Clone(), (nint)block.Pointer, block);
    }

    public Tensor FromHost(nint data, DType dtype, int[] shape, IDisposable? keepAlive)
    {
        var t = AllocateUninitialized(dtype, shape);
        Driver.CopyHtoD((ulong)t.Pointer, data, t.ByteSize, 0);
        return t;
    }

    public void Upload<T>(ReadOnlySpan<T> src, Tensor dst) where T : unmanaged
    {
        Own(dst, nameof(dst));
        NotCapturing("upload");
        long bytes = (long)src.Length * sizeof(T);
        if (bytes != dst.ByteSize)
            throw new ShapeMismatchException($"upload: {src.Length} x {typeof(T).Name} ({bytes} bytes) into {dst} ({dst.ByteSize} bytes)");
        fixed (T* p = src) Driver.CopyHtoD((ulong)dst.Pointer, (nint)p, bytes, 0);
    }

    public void Download<T>(Tensor src, Span<T> dst) where T : unmanaged
    {
        Own(src, nameof(src));
        NotCapturing("download");
        long bytes = (long)dst.Length * sizeof(T);
        if (bytes != src.ByteSize)
            throw new ShapeMismatchException($"download: {src} ({src.ByteSize} bytes) into {dst.Length} x {typeof(T).Name} ({bytes} bytes)");
        fixed (T* p = dst) Driver.CopyDtoH((nint)p, (ulong)src.Pointer, bytes, 0);
    }

    public void Synchronize()
    {
        NotCapturing("synchronize");
        Driver.SynchronizeStream(Stream);
    }

    // ---- launching -------------------------------------------------------------------------------

    /// <summary>Every kernel loaded so far, as "family/name" -> function handle.</summary>
    public IReadOnlyDictionary<string, nint> LoadedFunctions => _functions;

    /// <summary>The kernel `name` of family `family` (native/kernels/family.cu), loaded once.</summary>
    public nint Function(string family, string name)
    {
        var key = family + "/" + name;
        if (_functions.TryGetValue(key, out var f)) return f;
        if (!_modules.TryGetValue(family, out var m)) _modules[family] = m = Driver.LoadModule(family);
        f = Driver.GetFunction(m, name);
        _functions[key] = f;
        return f;
    }

    private void Launch(string family, string name, Dim3 grid, Dim3 block, int smem, ref KernelArgs args)
    {
        var fn = Function(family, name);
        if (Driver is EmulatorDriver emu && emu.ParameterCount(fn) != args.Count)
            throw new InvalidOperationException($"{name} takes {emu.ParameterCount(fn)} parameters, the launcher passed {args.Count}");
        if (smem > 48 * 1024 && (!_dynamicSmemLimit.TryGetValue(fn, out var limit) || limit < smem))
        {
            if (smem > Driver.MaxDynamicSharedMemoryPerBlock)
                throw new UnsupportedException($"{name} needs {smem} bytes of shared memory; the device allows {Driver.MaxDynamicSharedMemoryPerBlock}");
            Driver.SetMaxDynamicSharedMemory(fn, smem);
            _dynamicSmemLimit[fn] = smem;
        }
        if (_capturing) _capturedLaunches++;
        if (_recording is not null)
        {
            _recording.Add(new RecordedLaunch(fn, grid, block, smem, args));
            return;
        }
        var pointers = stackalloc void*[KernelArgs.Capacity];
        fixed (ulong* v = args.Values)
        {
            for (int i = 0; i < args.Count; i++) pointers[i] = v + i;
            Driver.Launch(fn, grid, block, smem, Stream, pointers);
        }
    }

    /// <summary>Blocks for a grid-stride loop over n elements.</summary>
    private Dim3 StrideGrid(long n) => (int)Math.Clamp((n + _blockSize - 1) / _blockSize, 1, 4096);

    private void Own(Tensor t, string name)
    {
        if (!ReferenceEquals(t.Backend, this))
            throw new ArgumentException($"{name} ({t}) belongs to backend '{t.Backend.Name}', not this {Name} backend");
    }

    private void Expect(string op, string name, Tensor t, DType dtype)
    {
        Own(t, name);
        if (t.DType != dtype) throw new ShapeMismatchException($"{op}: {name} is {t}, expected {dtype}");
    }

    private void ExpectFloat(string op, string name, Tensor t)
    {
        Own(t, name);
        if (t.DType is not (DType.F32 or DType.F16 or DType.BF16)) throw new ShapeMismatchException($"{op}: {name} is {t}, expected F32, F16 or BF16");
    }

    private static void ExpectLength(string op, string name, Tensor t, long length)
    {
        if (t.Length != length) throw new ShapeMismatchException($"{op}: {name} is {t} ({t.Length} elements), expected {length}");
    }

    private static string Suffix(DType t) => t switch { DType.F32 => "f32", DType.F16 => "f16", DType.BF16 => "bf16", _ => throw new UnsupportedException($"dtype {t}") };

    private static int RowsOf(Tensor t, int width) => width == 0 ? 0 : checked((int)(t.Length / width));

    // ---- IBackend ops --------------------------------------------------------------------------------

    public void Embedding(Tensor table, Tensor ids, Tensor y)
    {
        ExpectFloat("embedding", "table", table);
        Expect("embedding", "ids", ids, DType.I32);
        Expect("embedding", "y", y, DType.F32);
        if (table.Rank != 2) throw new ShapeMismatchException($"embedding: table is {table}, expected [vocab, dim]");
        int n = checked((int)ids.Length), d = table.Cols;
        ExpectLength("embedding", "y", y, (long)n * d);
        if (n == 0) return;
        var a = new KernelArgs();
        a.Add(table); a.Add(ids); a.Add(y); a.Add(d); a.Add(table.Rows);
        Launch("embedding", "embedding_" + Suffix(table.DType), n, _blockSize, 0, ref a);
    }

    public void RmsNorm(Tensor x, Tensor weight, float eps, Tensor y)
    {
        Expect("rmsnorm", "x", x, DType.F32);
        ExpectFloat("rmsnorm", "weight", weight);
        Expect("rmsnorm", "y", y, DType.F32);
        int d = checked((int)weight.Length);
        if (d == 0 || x.Cols != d) throw new ShapeMismatchException($"rmsnorm: x is {x}, weight is {weight}: the row length must equal the weight's");
        ExpectLength("rmsnorm", "y", y, x.Length);
        int rows = RowsOf(x, d);
        if (rows == 0) return;
        var a = new KernelArgs();
        a.Add(x); a.Add(weight); a.Add(y); a.Add(d); a.Add(eps);
        Launch("rmsnorm", "rmsnorm_forward_" + Suffix(weight.DType), rows, _blockSize, 0, ref a);
    }

    public void MatMul(Tensor x, Tensor w, Tensor y, float alpha = 1f, bool accumulate = false)
    {
        Expect("matmul", "x", x, DType.F32);
        ExpectFloat("matmul", "w", w);
        Expect("matmul", "y", y, DType.F32);
        if (w.Rank != 2) throw new ShapeMismatchException($"matmul: w is {w}, expected [out, in]");
        int m = w.Rows, k = w.Cols;
        if (x.Cols != k) throw new ShapeMismatchException($"matmul: x is {x} but w is {w}: x's rows must have {k} elements");
        int n = RowsOf(x, k);
        ExpectLength("matmul", "y", y, (long)n * m);
        if (n == 0 || m == 0) return;
        if (TryFastMatMul(x, w, y, n, m, k, alpha, accumulate)) return;
        MatMulTiled(x, w, y, n, m, k, alpha, accumulate);
    }

    /// <summary>The plain tiled GEMM (native/kernels/matmul.cu), the baseline every faster MatMul kernel is held against.</summary>
    private void MatMulTiled(Tensor x, Tensor w, Tensor y, int n, int m, int k, float alpha, bool accumulate)
    {
        var a = new KernelArgs();
        a.Add(x); a.Add(w); a.Add(y); a.Add(n); a.Add(m); a.Add(k); a.Add(alpha); a.Add(accumulate ? 1 : 0);
        Launch("matmul", "matmul_" + Suffix(w.DType), new Dim3((uint)((m + 63) / 64), (uint)((n + 63) / 64)), new Dim3(16, 16), 0, ref a);
    }

    public void Rope(Tensor x, int heads, int headDim, Tensor positions, Tensor invFreq) => RopeLaunch("rope_forward", x, heads, headDim, positions, invFreq);

    /// <summary>Backward of <see cref="Rope"/> in place on the gradient: the rotation by the opposite angle.</summary>
    public void RopeBackward(Tensor dx, int heads, int headDim, Tensor positions, Tensor invFreq) => RopeLaunch("rope_backward", dx, heads, headDim, positions, invFreq);

    private void RopeLaunch(string kernel, Tensor x, int heads, int headDim, Tensor positions, Tensor invFreq)
    {
        Expect("rope", "x", x, DType.F32);
        Expect("rope", "positions", positions, DType.I32);
        Expect("rope", "invFreq", invFreq, DType.F32);
        if (heads <= 0 || headDim <= 0 || headDim % 2 != 0) throw new ShapeMismatchException($"rope: {heads} heads of dim {headDim} (an even dim is needed)");
        int width = heads * headDim, n = checked((int)positions.Length);
        ExpectLength("rope", "x", x, (long)n * width);
        ExpectLength("rope", "invFreq", invFreq, headDim / 2);
        if (n == 0) return;
        var a = new KernelArgs();
        a.Add(x); a.Add(positions); a.Add(invFreq); a.Add(heads); a.Add(headDim);
        Launch("rope", kernel, n, _blockSize, 0, ref a);
    }

    public void KvStore(Tensor src, Tensor cache, Tensor slots, Tensor positions)
    {
        Expect("kvstore", "src", src, DType.F32);
        Expect("kvstore", "cache", cache, DType.F32);
        Expect("kvstore", "slots", slots, DType.I32);
        Expect("kvstore", "positions", positions, DType.I32);
        if (cache.Rank != 3) throw new ShapeMismatchException($"kvstore: cache is {cache}, expected [slots, positions, width]");
        int n = checked((int)slots.Length), w = cache.Shape[2];
        ExpectLength("kvstore", "positions", positions, n);
        ExpectLength("kvstore", "src", src, (long)n * w);
        if (n == 0) return;
        var a = new KernelArgs();
        a.Add(src); a.Add(cache); a.Add(slots); a.Add(positions); a.Add(w); a.Add(cache.Shape[0]); a.Add(cache.Shape[1]);
        Launch("kvstore", "kvstore", n, _blockSize, 0, ref a);
    }

    public void Attention(Tensor q, Tensor kCache, Tensor vCache, Tensor slots, Tensor positions, int heads, int kvHeads, int headDim, Tensor y)
    {
        Expect("attention", "q", q, DType.F32);
        Expect("attention", "kCache", kCache, DType.F32);
        Expect("attention", "vCache", vCache, DType.F32);
        Expect("attention", "slots", slots, DType.I32);
        Expect("attention", "positions", positions, DType.I32);
        Expect("attention", "y", y, DType.F32);
        if (heads <= 0 || kvHeads <= 0 || heads % kvHeads != 0 || headDim <= 0)
            throw new ShapeMismatchException($"attention: {heads} query heads, {kvHeads} KV heads, head dim {headDim}: heads must be a multiple of KV heads");
        if (kCache.Rank != 3 || vCache.Rank != 3 || kCache.Shape[2] != kvHeads * headDim || !kCache.Shape.SequenceEqual(vCache.Shape))
            throw new ShapeMismatchException($"attention: caches {kCache} and {vCache}, expected equal [slots, positions, {kvHeads * headDim}]");
        int n = checked((int)slots.Length);
        ExpectLength("attention", "positions", positions, n);
        ExpectLength("attention", "q", q, (long)n * heads * headDim);
        ExpectLength("attention", "y", y, (long)n * heads * headDim);
        if (n == 0) return;
        if (TryTensorCoreAttention(q, kCache, vCache, slots, positions, heads, kvHeads, headDim, y, n)) return;
        if (TryFlashAttention(q, kCache, vCache, slots, positions, heads, kvHeads, headDim, y, n)) return;
        int s = kCache.Shape[0], t = kCache.Shape[1];
        var a = new KernelArgs();
        a.Add(q); a.Add(kCache); a.Add(vCache); a.Add(slots); a.Add(positions); a.Add(y);
        a.Add(heads); a.Add(kvHeads); a.Add(headDim); a.Add(s); a.Add(t); a.Add(1f / MathF.Sqrt(headDim));
        LastAttentionKernel = "attention_forward";
        Launch("attention", "attention_forward", new Dim3((uint)n, (uint)heads), _blockSize, (t + headDim) * sizeof(float), ref a);
    }

    public void SwiGlu(Tensor gate, Tensor up, Tensor y)
    {
        Elementwise3("swiglu", gate, up, y);
        if (y.Length == 0) return;
        var a = new KernelArgs();
        a.Add(gate); a.Add(up); a.Add(y); a.Add(y.Length);
        Launch("swiglu", "swiglu_forward", StrideGrid(y.Length), _blockSize, 0, ref a);
    }

    /// <summary>Backward of <see cref="SwiGlu"/>: dgate and dup from the forward inputs and dy (all F32 of one shape).</summary>
    public void SwiGluBackward(Tensor gate, Tensor up, Tensor dy, Tensor dgate, Tensor dup)
    {
        Elementwise3("swiglu_backward", gate, up, dy);
        Elementwise3("swiglu_backward", dgate, dup, dy);
        if (dy.Length == 0) return;
        var a = new KernelArgs();
        a.Add(gate); a.Add(up); a.Add(dy); a.Add(dgate); a.Add(dup); a.Add(dy.Length);
        Launch("swiglu", "swiglu_backward", StrideGrid(dy.Length), _blockSize, 0, ref a);
    }

    public void Add(Tensor a, Tensor b, Tensor y)
    {
        Elementwise3("add", a, b, y);
        if (y.Length == 0) return;
        var k = new KernelArgs();
        k.Add(a); k.Add(b); k.Add(y); k.Add(y.Length);
        Launch("add", "add_forward", StrideGrid(y.Length), _blockSize, 0, ref k);
    }

    private void Elementwise3(string op, Tensor a, Tensor b, Tensor c)
    {
        Expect(op, "a", a, DType.F32);
        Expect(op, "b", b, DType.F32);
        Expect(op, "c", c, DType.F32);
        if (a.Length != b.Length || a.Length != c.Length) throw new ShapeMismatchException($"{op}: {a}, {b} and {c} must have one element count");
    }

    public void GatherRows(Tensor src, Tensor rows, Tensor dst)
    {
        Expect("gather_rows", "src", src, DType.F32);
        Expect("gather_rows", "rows", rows, DType.I32);
        Expect("gather_rows", "dst", dst, DType.F32);
        int w = src.Cols, n = checked((int)rows.Length);
        ExpectLength("gather_rows", "dst", dst, (long)n * w);
        if (n == 0 || w == 0) return;
        var a = new KernelArgs();
        a.Add(src); a.Add(rows); a.Add(dst); a.Add(w); a.Add(RowsOf(src, w));
        Launch("embedding", "gather_rows", n, _blockSize, 0, ref a);
    }

    // ---- beyond IBackend -------------------------------------------------------------------------

    /// <summary>
    /// Backward of <see cref="RmsNorm"/>: dx (=, or += when accumulate) and, when <paramref name="dweight"/> is
    /// given (F32 [D]), dweight += the weight gradient.
    /// </summary>
    public void RmsNormBackward(Tensor x, Tensor weight, Tensor dy, float eps, Tensor dx, Tensor? dweight = null, bool accumulate = false)
    {
        Expect("rmsnorm_backward", "x", x, DType.F32);
        ExpectFloat("rmsnorm_backward", "weight", weight);
        Expect("rmsnorm_backward", "dy", dy, DType.F32);
        Expect("rmsnorm_backward", "dx", dx, DType.F32);
        int d = checked((int)weight.Length);
        if (d == 0 || x.Cols != d) throw new ShapeMismatchException($"rmsnorm_backward: x is {x}, weight is {weight}");
        ExpectLength("rmsnorm_backward", "dy", dy, x.Length);
        ExpectLength("rmsnorm_backward", "dx", dx, x.Length);
        if (dweight is not null)
        {
            Expect("rmsnorm_backward", "dweight", dweight, DType.F32);
            ExpectLength("rmsnorm_backward", "dweight", dweight, d);
        }
        int rows = RowsOf(x, d);
        if (rows == 0) return;
        var a = new KernelArgs();
        a.Add(x); a.Add(weight); a.Add(dy); a.Add(dx); a.Add(dweight is null ? 0UL : (ulong)dweight.Pointer); a.Add(d); a.Add(eps); a.Add(accumulate ? 1 : 0);
        Launch("rmsnorm", "rmsnorm_backward_" + Suffix(weight.DType), rows, _blockSize, 0, ref a);
    }

    /// <summary>dst = src converted (F32 to/from BF16 or F16), round to nearest even.</summary>
    public void Cast(Tensor src, Tensor dst)
    {
        ExpectFloat("cast", "src", src);
        ExpectFloat("cast", "dst", dst);
        ExpectLength("cast", "dst", dst, src.Length);
        if (src.DType == dst.DType)
        {
            NotCapturing("a device copy");
            Driver.CopyDtoD((ulong)dst.Pointer, (ulong)src.Pointer, src.ByteSize, Stream);
            return;
        }
        if (src.DType != DType.F32 && dst.DType != DType.F32)
            throw new UnsupportedException($"cast: {src.DType} to {dst.DType} (one side must be F32)");
        if (src.Length == 0) return;
        var a = new KernelArgs();
        a.Add(src); a.Add(dst); a.Add(src.Length);
        Launch("cast", $"cast_{Suffix(src.DType)}_{Suffix(dst.DType)}", StrideGrid(src.Length), _blockSize, 0, ref a);
    }

    private void CheckMask(string op, Tensor? mask, long length)
    {
        if (mask is null) return;
        Own(mask, "mask");
        if (mask.DType is not (DType.U8 or DType.Bool)) throw new ShapeMismatchException($"{op}: mask is {mask}, expected U8 or Bool");
        ExpectLength(op, "mask", mask, length);
    }

    /// <summary>ids[r] = argmax of logits row r (lowest index among equals). logits F32 [R, V], ids I32 [R].</summary>
    public void Argmax(Tensor logits, Tensor ids)
    {
        Expect("argmax", "logits", logits, DType.F32);
        Expect("argmax", "ids", ids, DType.I32);
        int v = logits.Cols, rows = RowsOf(logits, v);
        ExpectLength("argmax", "ids", ids, rows);
        if (rows == 0) return;
        var a = new KernelArgs();
        a.Add(logits); a.Add(v); a.Add(ids);
        Launch("sampling", "argmax_rows", rows, _blockSize, 0, ref a);
    }

    /// <summary>
    /// Nucleus sampling per row (see native/kernels/sampling.cu for the exact rule): uniforms F32 [R] in
    /// [0, 1) drive the choice, so a run is reproducible from its random numbers.
    /// </summary>
    public void SampleTopP(Tensor logits, float temperature, float topP, Tensor uniforms, Tensor ids)
    {
        Expect("sample_top_p", "logits", logits, DType.F32);
        Expect("sample_top_p", "uniforms", uniforms, DType.F32);
        Expect("sample_top_p", "ids", ids, DType.I32);
        if (!(temperature > 0) || !(topP > 0 && topP <= 1)) throw new ArgumentException($"sample_top_p: temperature {temperature} must be > 0 and top-p {topP} in (0, 1]");
        int v = logits.Cols, rows = RowsOf(logits, v);
        ExpectLength("sample_top_p", "uniforms", uniforms, rows);
        ExpectLength("sample_top_p", "ids", ids, rows);
        if (rows == 0) return;
        var a = new KernelArgs();
        a.Add(logits); a.Add(v); a.Add(temperature); a.Add(topP); a.Add(uniforms); a.Add(ids);
        Launch("sampling", "sample_top_p", rows, _blockSize, 0, ref a);
    }

    /// <summary>The vocabulary size from which <see cref="SampleRows"/> runs 1024 threads per row instead of <see cref="BlockSize"/>.</summary>
    public const int SampleRowsWideVocab = 16384;

    /// <summary>
    /// The generator's token choice per row on the device (native/kernels/sampling.cu, sample_rows): temperature,
    /// then top-k (0 = off), then top-p, with the random number a hash of (seed, slots[r], positions[r] + 1), so a
    /// captured step needs nothing from the host. logits F32 [R, V]; slots, positions and ids I32 [R].
    /// </summary>
    public void SampleRows(Tensor logits, float temperature, int topK, float topP, ulong seed, Tensor slots, Tensor positions, Tensor ids)
    {
        Expect("sample_rows", "logits", logits, DType.F32);
        Expect("sample_rows", "slots", slots, DType.I32);
        Expect("sample_rows", "positions", positions, DType.I32);
        Expect("sample_rows", "ids", ids, DType.I32);
        if (!(temperature > 0) || !float.IsFinite(temperature) || topK < 0 || !(topP > 0 && topP <= 1))
            throw new ArgumentException($"sample_rows: temperature {temperature} must be > 0, top-k {topK} >= 0 and top-p {topP} in (0, 1]");
        int v = logits.Cols, rows = RowsOf(logits, v);
        ExpectLength("sample_rows", "slots", slots, rows);
        ExpectLength("sample_rows", "positions", positions, rows);
        ExpectLength("sample_rows", "ids", ids, rows);
        if (rows == 0) return;
        var a = new KernelArgs();
        a.Add(logits); a.Add(v); a.Add(temperature); a.Add(topK); a.Add(topP); a.Add(seed); a.Add(slots); a.Add(positions); a.Add(ids);
        // a row is read once per bisection step (up to ~60 with top-k and top-p): a large vocabulary gets the widest block
        Launch("sampling", "sample_rows", rows, v >= SampleRowsWideVocab ? 1024 : _blockSize, 0, ref a);
    }

    public void Dispose()
    {
        foreach (var m in _modules.Values) m.Dispose();
        _modules.Clear();
        _functions.Clear();
        _streamHandle.Dispose();
        DisposeScratch();
        _arena.Dispose();
        if (_ownsDriver) Driver.Dispose();
    }
}

/// <summary>
/// Kernel arguments as cuLaunchKernel takes them: each value in its own 8-byte slot (a 4-byte int or
/// float in the low bytes, as the ABI reads it), no boxing.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct KernelArgs
{
    public const int Capacity = 16;
    public fixed ulong Values[Capacity];
    public int Count;

    private ulong* Next()
    {
        if (Count >= Capacity) throw new InvalidOperationException($"more than {Capacity} kernel arguments");
        fixed (ulong* v = Values)
        {
            v[Count] = 0;
            return v + Count++;
        }
    }

    public void Add(Tensor t) => *Next() = (ulong)t.Pointer;
    public void Add(ulong pointer) => *Next() = pointer;
    public void Add(int value) => *(int*)Next() = value;
    public void Add(long value) => *(long*)Next() = value;
    public void Add(float value) => *(float*)Next() = value;
}
