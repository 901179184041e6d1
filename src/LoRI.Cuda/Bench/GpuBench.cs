using System.Diagnostics;
using System.Text.Json;
using LoRI.Adapters;
using LoRI.Backend;
using LoRI.Cuda.Backend;
using LoRI.Generation;
using LoRI.Model;
using LoRI.Tensors;
using LoRI.Training;
using LoRI.Training.Data;

namespace LoRI.Cuda.Bench;

/// <summary>Sizes of one benchmark run: the model shapes and how much work each figure times.</summary>
public sealed record GpuBenchOptions(LlamaConfig Config, int GemmTokens, int AttentionSeqLen, int Context, int DecodeTokens,
                                     int PrefillTokens, int AdapterRank, double AdapterSparsity, int Repeats, int TrainBatch, int TrainSeqLen)
{
    /// <summary>Llama-3-8B shapes (32 layers, 4096 wide, GQA 32/8, vocab 128256), as gpu.md's arithmetic assumes.</summary>
    public static GpuBenchOptions Llama3_8B { get; } = new(new LlamaConfig
    {
        HiddenSize = 4096, IntermediateSize = 14336, NumLayers = 32, NumHeads = 32, NumKvHeads = 8, HeadDim = 128,
        VocabSize = 128256, MaxPositionEmbeddings = 8192, RopeTheta = 500000f, RmsNormEps = 1e-5f,
        RopeScaling = new RopeScaling(8f, 1f, 4f, 8192), TieWordEmbeddings = false, BosTokenId = 128000, EosTokenIds = [128001],
    }, GemmTokens: 4096, AttentionSeqLen: 4096, Context: 512, DecodeTokens: 64, PrefillTokens: 2048, AdapterRank: 64, AdapterSparsity: 0.9, Repeats: 10,
       TrainBatch: 2, TrainSeqLen: 512);

    /// <summary>A few-kilobyte model for running the benchmark code itself on the emulator.</summary>
    public static GpuBenchOptions Tiny { get; } = new(new LlamaConfig
    {
        HiddenSize = 64, IntermediateSize = 96, NumLayers = 2, NumHeads = 4, NumKvHeads = 2, HeadDim = 16,
        VocabSize = 300, MaxPositionEmbeddings = 256, RopeTheta = 10000f, RmsNormEps = 1e-5f, TieWordEmbeddings = false,
        BosTokenId = 0, EosTokenIds = [1],
    }, GemmTokens: 48, AttentionSeqLen: 40, Context: 20, DecodeTokens: 12, PrefillTokens: 24, AdapterRank: 8, AdapterSparsity: 0.9, Repeats: 1,
       TrainBatch: 2, TrainSeqLen: 12);
}

/// <summary>
/// The GPU benchmarks of the CUDA backend, written as one JSON object: GEMM TFLOP/s of the tensor-core kernel
/// (and the tiled baseline, and cuBLAS when libcublas is present), flash attention TFLOP/s (fp32 SIMT and tensor cores), decode tokens/s of a
/// randomly initialised model built on the device (bf16 weights, CUDA-graph decode) with its fraction of the
/// memory-bandwidth bound, prefill tokens/s, and the overhead of an unmerged LoRI-S adapter over the plain
/// weights (merged weights have the base model's shapes, hence its speed) for every way of folding it into the
/// projection (CudaBackend.LinearLoraDecode / LinearLoraPrefill, and lora_apply_fused), in the model and per module. Wall-clock times around
/// synchronised repeats, after a warm-up. Each GEMM is also checked against the tiled kernel.
/// </summary>
public static class GpuBench
{
    public static void Run(CudaBackend be, GpuBenchOptions o, Utf8JsonWriter w)
    {
        var c = o.Config;
        w.WriteStartObject();
        w.WriteString("date", DateTime.UtcNow.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'"));
        w.WriteString("device", be.Driver.DeviceName);
        w.WriteString("backend", be.Name);
        Num(w, "compute_capability", be.Driver.ComputeCapability);
        w.WriteString("model_shapes", $"{c.NumLayers} layers, hidden {c.HiddenSize}, mlp {c.IntermediateSize}, heads {c.NumHeads}/{c.NumKvHeads} x {c.HeadDim}, vocab {c.VocabSize}");
        double bandwidth = CopyBandwidth(be, o);
        Num(w, "copy_bandwidth_gb_s", bandwidth / 1e9);
        double nominal = NominalBandwidth(be.Driver.DeviceName);
        if (nominal > 0) Num(w, "nominal_bandwidth_gb_s", nominal / 1e9);
        Gemm(be, o, w);
        GemmBackward(be, o, w);
        Attention(be, o, w);
        Model(be, o, w, nominal > 0 ? nominal : bandwidth);
        Training(be, o, w);
        w.WriteEndObject();
    }

    /// <summary>A number, or null when it is not finite (a failed or empty measurement).</summary>
    private static void Num(Utf8JsonWriter w, string name, double v)
    {
        if (double.IsFinite(v)) w.WriteNumber(name, v);
        else w.WriteNull(name);
    }

    private static double NominalBandwidth(string device) =>
        device.Contains("H200", StringComparison.Ordinal) ? 4.8e12 : device.Contains("H100", StringComparison.Ordinal) ? 3.35e12 : 0;

    /// <summary>Seconds per call of <paramref name="op"/>: one warm-up call, then `repeats` calls between two synchronisations.</summary>
    private static double Seconds(CudaBackend be, int repeats, Action op)
    {
        op();
        be.Synchronize();
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < repeats; i++) op();
        be.Synchronize();
        return sw.Elapsed.TotalSeconds / Math.Max(1, repeats);
    }

    private static double CopyBandwidth(CudaBackend be, GpuBenchOptions o)
    {
        long bytes = be.Driver.IsEmulator ? 1L << 20 : 1L << 30;
        using var a = be.Allocate(DType.U8, checked((int)bytes));
        using var b = be.Allocate(DType.U8, checked((int)bytes));
        double s = Seconds(be, o.Repeats, () => be.Driver.CopyDtoD((ulong)b.Pointer, (ulong)a.Pointer, bytes, be.StreamHandle));
        return 2.0 * bytes / s;  // read + write
    }

    private static void Gemm(CudaBackend be, GpuBenchOptions o, Utf8JsonWriter w)
    {
        var c = o.Config;
        int n = o.GemmTokens;
        (string Name, int M, int K)[] shapes =
        [
            ("q_proj/o_proj", c.NumHeads * c.HeadDim, c.HiddenSize),
            ("gate_proj/up_proj", c.IntermediateSize, c.HiddenSize),
            ("down_proj", c.HiddenSize, c.IntermediateSize),
        ];
        using var cublas = be.Driver.IsEmulator ? null : Cublas.TryLoad(be.StreamHandle, out _);
        string cublasReason = be.Driver.IsEmulator ? "the emulator has no cuBLAS" : cublas is null ? "libcublas not found" : "";
        w.WriteStartArray("gemm");
        foreach (var (name, m, k) in shapes)
        {
            using var x = be.Allocate(DType.BF16, n, k);
            using var xf = be.Allocate(DType.F32, n, k);
            using var wt = be.Allocate(DType.BF16, m, k);
            using var y = be.Allocate(DType.F32, n, m);
            using var yRef = be.Allocate(DType.F32, n, m);
            be.RandomFill(x, 1, 1f);
            be.RandomFill(wt, 2, 0.05f);
            be.Cast(x, xf);
            double flops = 2.0 * n * m * k;
            double tc = Seconds(be, o.Repeats, () => be.MatMulBf16(x, wt, y));
            bool was = be.Bf16Activations;
            be.Bf16Activations = false;
            double tiled = Seconds(be, Math.Max(1, o.Repeats / 5), () => be.MatMul(xf, wt, yRef));
            be.Bf16Activations = was;
            w.WriteStartObject();
            w.WriteString("name", name);
            w.WriteString("shape", $"{n} x {m} x {k} (tokens x out x in), bf16 in, f32 out");
            Num(w, "tensor_core_tflops", flops / tc / 1e12);
            Num(w, "tiled_tflops", flops / tiled / 1e12);
            Num(w, "max_abs_diff_vs_tiled", MaxAbsDiff(be, y, yRef));
            double wg = double.NaN;
            if (be.WgmmaCodeAvailable)
            {
                using var yWg = be.Allocate(DType.F32, n, m);
                wg = Seconds(be, o.Repeats, () => be.MatMulWgmma(x, wt, yWg));
                Num(w, "wgmma_tflops", flops / wg / 1e12);
                Num(w, "max_abs_diff_wgmma_vs_tensor_core", MaxAbsDiff(be, yWg, y));
            }
            else w.WriteString("wgmma", be.Driver.ComputeCapability == 90 ? "the gemm_wgmma kernels are not the sm_90a build" : "needs a compute-capability-9.0 device");
            if (cublas is not null)
            {
                double cb = Seconds(be, o.Repeats, () => cublas.GemmBf16((ulong)x.Pointer, (ulong)wt.Pointer, (ulong)yRef.Pointer, n, m, k));
                Num(w, "cublas_tflops", flops / cb / 1e12);
                Num(w, "tensor_core_fraction_of_cublas", cb / tc);
                if (!double.IsNaN(wg)) Num(w, "wgmma_fraction_of_cublas", cb / wg);
                Num(w, "max_abs_diff_vs_cublas", MaxAbsDiff(be, y, yRef));
            }
            else w.WriteString("cublas", cublasReason);
            w.WriteEndObject();
        }
        w.WriteEndArray();
    }

    /// <summary>
    /// The training step's backward products at its token count (TrainBatch x TrainSeqLen) on the MLP shapes: dx = dy W
    /// with a bf16 W and dW = dy^T x into F32, through MatMulBackwardInput / MatMulBackwardWeight with Bf16Activations on
    /// (tensor cores; the bf16 casts of dy and x included in the time) and off (the fp32 SIMT kernel).
    /// </summary>
    private static void GemmBackward(CudaBackend be, GpuBenchOptions o, Utf8JsonWriter w)
    {
        var c = o.Config;
        int n = o.TrainBatch * o.TrainSeqLen;
        (string Name, int M, int K)[] shapes =
        [
            ("gate_proj/up_proj", c.IntermediateSize, c.HiddenSize),
            ("down_proj", c.HiddenSize, c.IntermediateSize),
        ];
        bool was = be.Bf16Activations;
        w.WriteStartArray("gemm_backward");
        try
        {
            foreach (var (name, m, k) in shapes)
            {
                using var dy = be.Allocate(DType.F32, n, m);
                using var x = be.Allocate(DType.F32, n, k);
                using var wt = be.Allocate(DType.BF16, m, k);
                using var dx = be.Allocate(DType.F32, n, k);
                using var dxRef = be.Allocate(DType.F32, n, k);
                using var dW = be.Allocate(DType.F32, m, k);
                using var dWRef = be.Allocate(DType.F32, m, k);
                be.RandomFill(dy, 6, 1f);
                be.RandomFill(x, 7, 1f);
                be.RandomFill(wt, 8, 0.05f);
                double flops = 2.0 * n * m * k;
                int simtRepeats = Math.Max(1, o.Repeats / 5);
                be.Bf16Activations = true;
                double tcIn = Seconds(be, o.Repeats, () => be.MatMulBackwardInput(dy, wt, dx));
                double tcW = Seconds(be, o.Repeats, () => be.MatMulBackwardWeight(dy, x, dW, 1f, accumulate: false));
                be.Bf16Activations = false;
                double simtIn = Seconds(be, simtRepeats, () => be.MatMulBackwardInput(dy, wt, dxRef));
                double simtW = Seconds(be, simtRepeats, () => be.MatMulBackwardWeight(dy, x, dWRef, 1f, accumulate: false));
                w.WriteStartObject();
                w.WriteString("name", name);
                w.WriteString("shape", $"{n} x {m} x {k} (tokens x out x in): dx [{n}, {k}] = dy W (W bf16), dW [{m}, {k}] = dy^T x (f32)");
                Num(w, "input_tensor_core_tflops", flops / tcIn / 1e12);
                Num(w, "input_simt_tflops", flops / simtIn / 1e12);
                Num(w, "weight_tensor_core_tflops", flops / tcW / 1e12);
                Num(w, "weight_simt_tflops", flops / simtW / 1e12);
                Num(w, "input_max_abs_diff_vs_simt", MaxAbsDiff(be, dx, dxRef));
                Num(w, "weight_max_abs_diff_vs_simt", MaxAbsDiff(be, dW, dWRef));
                w.WriteEndObject();
            }
        }
        finally
        {
            be.Bf16Activations = was;
        }
        w.WriteEndArray();
    }

    private static double MaxAbsDiff(CudaBackend be, Tensor a, Tensor b)
    {
        var x = new float[a.Length];
        var y = new float[b.Length];
        be.Download<float>(a, x);
        be.Download<float>(b, y);
        double m = 0;
        for (int i = 0; i < x.Length; i++) m = Math.Max(m, Math.Abs((double)x[i] - y[i]));
        return m;
    }

    private static void Attention(CudaBackend be, GpuBenchOptions o, Utf8JsonWriter w)
    {
        var c = o.Config;
        int s = o.AttentionSeqLen, qd = c.NumHeads * c.HeadDim, kvd = c.NumKvHeads * c.HeadDim;
        using var q = be.Allocate(DType.F32, s, qd);
        using var k = be.Allocate(DType.F32, s, kvd);
        using var v = be.Allocate(DType.F32, s, kvd);
        using var y = be.Allocate(DType.F32, s, qd);
        using var lse = be.Allocate(DType.F32, s, c.NumHeads);
        using var dq = be.Allocate(DType.F32, s, qd);
        using var dk = be.Allocate(DType.F32, s, kvd);
        using var dv = be.Allocate(DType.F32, s, kvd);
        be.RandomFill(q, 3, 1f);
        be.RandomFill(k, 4, 1f);
        be.RandomFill(v, 5, 1f);
        double flops = 4.0 * c.NumHeads * c.HeadDim * (s * (s + 1.0) / 2);  // causal: QK^T and PV over the lower triangle
        bool was = be.UseTensorCoreAttention;
        try
        {
            // the fp32 SIMT kernels (the baseline), then the tensor-core ones on the same inputs
            be.UseTensorCoreAttention = false;
            double fwd = Seconds(be, o.Repeats, () => be.AttentionForwardWithLse(q, k, v, 1, s, c.NumHeads, c.NumKvHeads, c.HeadDim, y, lse));
            double bwd = Seconds(be, Math.Max(1, o.Repeats / 2), () => be.AttentionBackward(q, k, v, y, lse, y, 1, s, c.NumHeads, c.NumKvHeads, c.HeadDim, dq, dk, dv));
            w.WriteStartObject("attention");
            w.WriteString("shape", $"1 x {s} tokens, causal, {c.NumHeads}/{c.NumKvHeads} heads x {c.HeadDim}, fp32 in memory");
            Num(w, "forward_tflops", flops / fwd / 1e12);
            Num(w, "backward_tflops", 2.5 * flops / bwd / 1e12);
            if (CudaBackend.TensorCoreAttentionFits(c.HeadDim))
            {
                be.UseTensorCoreAttention = true;
                using var yTc = be.Allocate(DType.F32, s, qd);
                using var lseTc = be.Allocate(DType.F32, s, c.NumHeads);
                double tcFwd = Seconds(be, o.Repeats, () => be.AttentionForwardWithLse(q, k, v, 1, s, c.NumHeads, c.NumKvHeads, c.HeadDim, yTc, lseTc));
                string kernel = be.LastAttentionKernel;
                double tcBwd = Seconds(be, Math.Max(1, o.Repeats / 2), () => be.AttentionBackward(q, k, v, yTc, lseTc, yTc, 1, s, c.NumHeads, c.NumKvHeads, c.HeadDim, dq, dk, dv));
                w.WriteString("tensor_core_kernel", kernel);
                Num(w, "tensor_core_forward_tflops", flops / tcFwd / 1e12);
                Num(w, "tensor_core_backward_tflops", 2.5 * flops / tcBwd / 1e12);
                Num(w, "tensor_core_forward_speedup", fwd / tcFwd);
                Num(w, "tensor_core_backward_speedup", bwd / tcBwd);
                Num(w, "tensor_core_max_abs_diff_vs_simt", MaxAbsDiff(be, yTc, y));
            }
            else w.WriteString("tensor_core", $"head dim {c.HeadDim}: the tensor-core kernels take multiples of 16 up to {CudaBackend.TensorCoreAttentionMaxHeadDim}");
            w.WriteEndObject();
        }
        finally
        {
            be.UseTensorCoreAttention = was;
        }
    }

    /// <summary>Bytes one decode step must read: every weight once (the embedding: one row) and the KV cache so far.</summary>
    private static double DecodeBytes(LlamaConfig c, int context)
    {
        double proj = 0;
        foreach (var p in Projs.All)
        {
            var (outDim, inDim) = p.Shape(c);
            proj += (double)outDim * inDim * 2;
        }
        return c.NumLayers * proj + (double)c.VocabSize * c.HiddenSize * 2 + 2.0 * c.NumLayers * context * c.KvDim * sizeof(float);
    }

    private static void Model(CudaBackend be, GpuBenchOptions o, Utf8JsonWriter w, double bandwidth)
    {
        var c = o.Config;
        using var weights = RandomModel(be, c, 42);
        using var model = new LlamaModel(c, be, weights, Math.Max(o.PrefillTokens, o.Context));
        using var cache = new KvCache(be, c, 2, Math.Max(o.PrefillTokens, o.Context + o.DecodeTokens + 1));
        var prompt = Enumerable.Range(0, o.Context).Select(i => (i * 7919 + 13) % c.VocabSize).ToArray();
        var prefill = Enumerable.Range(0, o.PrefillTokens).Select(i => (i * 104729 + 7) % c.VocabSize).ToArray();

        var (decodeS, prefillS, tokens) = TimeModel(be, model, cache, prompt, prefill, o);
        double bytes = DecodeBytes(c, o.Context + o.DecodeTokens / 2);
        w.WriteStartObject("decode");
        w.WriteString("setup", $"batch 1, greedy, context {o.Context}, {o.DecodeTokens} tokens, bf16 weights, KV cache f32, the device decoder of `generate` (a CUDA graph per step, tokens chosen on the device)");
        Num(w, "tokens_per_s", 1 / decodeS);
        Num(w, "ms_per_token", decodeS * 1e3);
        Num(w, "bytes_per_token", bytes);
        Num(w, "fraction_of_bandwidth_bound", bytes / decodeS / bandwidth);
        w.WriteString("tokens", string.Join(',', tokens));
        w.WriteEndObject();
        w.WriteStartObject("prefill");
        w.WriteString("setup", $"{o.PrefillTokens} tokens in one forward, bf16 activations into the tensor-core GEMM: {be.Bf16Activations}");
        Num(w, "tokens_per_s", o.PrefillTokens / prefillS);
        w.WriteEndObject();

        var adapter = LoraAdapter.CreateRandom(c, o.AdapterRank, 2.0 * o.AdapterRank, 7, o.AdapterSparsity);
        using (AdapterSet.Attach(model, [(adapter, 1f)], merge: false))
        {
            var (decodeA, prefillA, _) = TimeModel(be, model, cache, prompt, prefill, o);
            w.WriteStartObject("adapter_overhead");
            w.WriteString("setup", $"LoRI-S rank {o.AdapterRank}, B sparsity {o.AdapterSparsity}, all 7 projections, unmerged (linear_lora per projection: decode {be.LinearLoraDecode}, prefill {be.LinearLoraPrefill}) against the plain weights (= merged weights' speed)");
            Num(w, "decode_tokens_per_s", 1 / decodeA);
            Num(w, "decode_overhead", decodeA / decodeS - 1);
            Num(w, "prefill_tokens_per_s", o.PrefillTokens / prefillA);
            Num(w, "prefill_overhead", prefillA / prefillS - 1);
            w.WriteString("linear_lora_decode", be.LinearLoraDecode.ToString());
            w.WriteString("linear_lora_prefill", be.LinearLoraPrefill.ToString());
            // every way of folding the adapter into the projection (linear_lora), the defaults' losers included
            var (savedDecode, savedPrefill) = (be.LinearLoraDecode, be.LinearLoraPrefill);
            w.WriteStartArray("decode_linear_lora_variants");
            foreach (var variant in Enum.GetValues<LoraDecodeVariant>())
            {
                be.LinearLoraDecode = variant;
                var (decodeV, _, _) = TimeModel(be, model, cache, prompt, prefill, o, timePrefill: false);
                w.WriteStartObject();
                w.WriteString("variant", variant.ToString());
                Num(w, "decode_tokens_per_s", 1 / decodeV);
                Num(w, "decode_overhead", decodeV / decodeS - 1);
                w.WriteEndObject();
            }
            be.LinearLoraDecode = savedDecode;
            w.WriteEndArray();
            w.WriteStartArray("prefill_linear_lora_variants");
            foreach (var variant in Enum.GetValues<LoraPrefillVariant>())
            {
                be.LinearLoraPrefill = variant;
                double prefillV = PrefillSeconds(be, model, cache, prefill, o);
                w.WriteStartObject();
                w.WriteString("variant", variant.ToString());
                Num(w, "prefill_tokens_per_s", o.PrefillTokens / prefillV);
                Num(w, "prefill_overhead", prefillV / prefillS - 1);
                w.WriteEndObject();
            }
            be.LinearLoraPrefill = savedPrefill;
            w.WriteEndArray();
            // the one-launch lora_apply (lora_apply_fused) at a few grid sizes, after the unfused GEMV
            be.LinearLoraDecode = LoraDecodeVariant.Unfused;
            w.WriteStartArray("decode_fused_variants");
            foreach (int blocks in new[] { 8, 16, 32 })
            {
                be.LoraFusedDecodeBlocks = blocks;
                var (decodeF, _, _) = TimeModel(be, model, cache, prompt, prefill, o, timePrefill: false);
                w.WriteStartObject();
                Num(w, "blocks", blocks);
                Num(w, "decode_tokens_per_s", 1 / decodeF);
                Num(w, "decode_overhead", decodeF / decodeS - 1);
                w.WriteEndObject();
            }
            be.LoraFusedDecodeBlocks = 0;
            be.LinearLoraDecode = savedDecode;
            w.WriteEndArray();
            w.WriteEndObject();
        }
        LinearLora(be, o, w);
    }

    /// <summary>
    /// linear_lora alone at the model's projection shapes: one module's time with a LoRI-S adapter (rank and sparsity of
    /// the options, B dense and compact) over the plain product's, per variant, for 1 token (decode: launches and the
    /// adapter's bytes) and for the prefill's token count (tensor cores: the shrink's and expand's extra passes).
    /// </summary>
    private static void LinearLora(CudaBackend be, GpuBenchOptions o, Utf8JsonWriter w)
    {
        var c = o.Config;
        int r = o.AdapterRank;
        (string Name, int M, int K)[] shapes =
        [
            ("q_proj/o_proj", c.NumHeads * c.HeadDim, c.HiddenSize),
            ("gate_proj/up_proj", c.IntermediateSize, c.HiddenSize),
            ("down_proj", c.HiddenSize, c.IntermediateSize),
        ];
        var rng = new Random(11);
        w.WriteStartArray("linear_lora");
        foreach (var (name, m, k) in shapes)
        {
            var a = new float[r * k];
            for (int i = 0; i < a.Length; i++) a[i] = (float)((rng.NextDouble() * 2 - 1) / Math.Sqrt(k));
            var b = new float[m * r];
            for (int i = 0; i < b.Length; i++) b[i] = rng.NextDouble() < o.AdapterSparsity ? 0f : (float)(rng.NextDouble() - 0.5) * 0.02f;
            using var wt = be.Allocate(DType.BF16, m, k);
            be.RandomFill(wt, 21, 1f / MathF.Sqrt(k));
            foreach (var form in new[] { LoraBForm.Dense, LoraBForm.Compact })
            {
                using var f = LoraFactors.Create(be, a, b, r, k, m, form);
                LoraTerm[] terms = [new LoraTerm(f, 2f)];
                foreach (int n in new[] { 1, o.PrefillTokens })
                {
                    using var x = be.Allocate(DType.F32, n, k);
                    using var y = be.Allocate(DType.F32, n, m);
                    be.RandomFill(x, 22, 1f);
                    int repeats = n == 1 ? o.Repeats * 10 : o.Repeats;
                    double plain = Seconds(be, repeats, () => be.MatMul(x, wt, y));
                    w.WriteStartObject();
                    w.WriteString("name", name);
                    w.WriteString("shape", $"{n} x {m} x {k} (tokens x out x in), rank {r}, B {form} at sparsity {o.AdapterSparsity}");
                    Num(w, "plain_us", plain * 1e6);
                    w.WriteStartArray("variants");
                    var saved = (be.LinearLoraDecode, be.LinearLoraPrefill);
                    var variants = n <= CudaBackend.GemvMaxTokens
                        ? Enum.GetValues<LoraDecodeVariant>().Select(v => (v.ToString(), (Action)(() => be.LinearLoraDecode = v)))
                        : Enum.GetValues<LoraPrefillVariant>().Select(v => (v.ToString(), (Action)(() => be.LinearLoraPrefill = v)));
                    foreach (var (variant, select) in variants)
                    {
                        select();
                        double t = Seconds(be, repeats, () => be.LinearWithAdapters(x, wt, terms, y));
                        w.WriteStartObject();
                        w.WriteString("variant", variant);
                        Num(w, "us", t * 1e6);
                        Num(w, "overhead", t / plain - 1);
                        w.WriteEndObject();
                    }
                    (be.LinearLoraDecode, be.LinearLoraPrefill) = saved;
                    w.WriteEndArray();
                    w.WriteEndObject();
                }
            }
        }
        w.WriteEndArray();
    }

    /// <summary>
    /// Decode seconds per token through the path `generate` takes (Generator with the device decoder: one CUDA graph
    /// per step, tokens chosen on the device), greedy at batch 1 after the prompt, and the prefill's seconds. Each
    /// Generate call captures its graph in its first steps, so the decode rate is the difference of a long and a
    /// short run: (D(n) - D(8)) / (n - 8), capture and warm-up cancelled.
    /// </summary>
    private static (double DecodeSeconds, double PrefillSeconds, int[] Tokens) TimeModel(CudaBackend be, LlamaModel model, KvCache cache,
                                                                                          int[] prompt, int[] prefill, GpuBenchOptions o,
                                                                                          bool timePrefill = true)
    {
        const int shortRun = 8;
        int n = Math.Max(o.DecodeTokens, shortRun + 2);
        using var gen = new Generator(model, 1, prompt.Length + n + 1);
        GenerationResult Decode(int tokens) =>
            gen.Generate([prompt], new GenerationOptions { MaxNewTokens = tokens, StopIds = [] })[0];
        Decode(shortRun);
        var small = Decode(shortRun);
        var large = Decode(n);
        double decode = (large.DecodeSeconds - small.DecodeSeconds) / (large.Tokens.Length - small.Tokens.Length);
        if (!timePrefill) return (decode, double.NaN, large.Tokens);
        return (decode, PrefillSeconds(be, model, cache, prefill, o), large.Tokens);
    }

    /// <summary>Seconds of one forward over the prefill tokens (sequence slot 1), the last row's logits returned.</summary>
    private static double PrefillSeconds(CudaBackend be, LlamaModel model, KvCache cache, int[] prefill, GpuBenchOptions o)
    {
        var slots = new int[prefill.Length];
        Array.Fill(slots, 1);
        var positions = Enumerable.Range(0, prefill.Length).ToArray();
        var logits = new float[model.Config.VocabSize];
        return Seconds(be, Math.Max(1, o.Repeats / 5), () => model.Forward(prefill, slots, positions, [prefill.Length - 1], cache, logits));
    }

    /// <summary>
    /// One training step (forward, backward, clipping, AdamW) of TrainingGraph per adapter method on a random bf16
    /// model made on the device: tokens/s and the device memory the training adds (activations, adapter,
    /// gradients, optimizer state, scratch) at its peak. Full fine-tuning is measured only where its fp32 master
    /// weights, gradients and AdamW moments (16 bytes a parameter) fit in a quarter of a 141 GB device.
    /// </summary>
    private static void Training(CudaBackend be, GpuBenchOptions o, Utf8JsonWriter w)
    {
        var c = o.Config;
        int r = o.AdapterRank;
        w.WriteStartObject("training");
        w.WriteString("setup", $"{o.TrainBatch} x {o.TrainSeqLen} tokens a step, rank {r}, alpha {2 * r}, all 7 projections, frozen bf16 weights as " +
                               $"stored, per-tensor clipping, AdamW; LoRI-S with a random {o.AdapterSparsity:P0}-sparse mask and compact optimizer state; " +
                               "seconds of one step after a warm-up step");
        using var weights = RandomModel(be, c, 43);
        using var model = new LlamaModel(c, be, weights, 1);
        var rng = new Rng(5);
        var examples = Enumerable.Range(0, o.TrainBatch).Select(i =>
            new TrainingExample(Enumerable.Range(0, o.TrainSeqLen).Select(_ => rng.NextInt(c.VocabSize)).ToArray(), PromptLength: 1, Line: i + 1)).ToList();
        var batch = new Batch(examples, 0, LossReduction.SumTokensMeanSequences);
        var opt = new AdamWOptions();
        bool fullFits = c.ParameterCount * 16.0 <= 141e9 / 4;
        foreach (var method in new[] { TrainMethod.Lora, TrainMethod.LoriD, TrainMethod.LoriS, TrainMethod.Full })
        {
            w.WriteStartObject(method.Name());
            if (method == TrainMethod.Full && !fullFits)
            {
                w.WriteString("status", $"not run: {c.ParameterCount * 16.0 / 1e9:F0} GB of fp32 weights, gradients and AdamW moments");
                w.WriteEndObject();
                continue;
            }
            var adapter = method == TrainMethod.Full ? null : LoriSetup.CreateAdapter(c, r, 2.0 * r, Projs.All, AInit.Uniform, 7);
            var mask = method == TrainMethod.LoriS ? RandomMask(adapter!, o.AdapterSparsity, 9) : null;
            be.Synchronize();
            long before = be.Arena.BytesInUse;
            be.Arena.ResetPeak();
            using (var g = new TrainingGraph(model, method, adapter, batch.Size * batch.SeqLen, mask))
            {
                double loss = 0;
                double s = Seconds(be, Math.Max(1, o.Repeats / 5), () =>
                {
                    loss = g.Run(batch);
                    g.OptimizerStep(1e-4, opt);
                });
                Num(w, "tokens_per_s", batch.Size * batch.SeqLen / s);
                Num(w, "step_ms", s * 1e3);
                Num(w, "loss", loss);
                Num(w, "trainable_parameters", g.Params.Sum(p => (double)(p.Mask is null ? p.Value.Length : p.Mask.Count(k => k))));
                Num(w, "training_peak_bytes", be.Arena.PeakBytesInUse - before);
                Num(w, "device_peak_bytes", be.Arena.PeakBytesInUse);
            }
            be.ReleaseScratch();
            w.WriteEndObject();
        }
        w.WriteEndObject();
    }

    private static LoraMask RandomMask(LoraAdapter a, double sparsity, ulong seed)
    {
        var rng = new Rng(seed);
        return new LoraMask(a.Modules.Select(m =>
            new MaskEntry(m.Layer, m.Proj, m.Out, m.Rank, m.B.Select(_ => rng.NextDouble() >= sparsity ? (byte)1 : (byte)0).ToArray())));
    }

    /// <summary>A model of config <paramref name="c"/> with random bf16 weights made on the device (no host copy).</summary>
    public static LlamaWeights RandomModel(CudaBackend be, LlamaConfig c, ulong seed)
    {
        Tensor Proj(int outDim, int inDim, ulong s)
        {
            var t = be.Allocate(DType.BF16, outDim, inDim);
            be.RandomFill(t, s, 1f / MathF.Sqrt(inDim));
            return t;
        }
        Tensor Ones(int d)
        {
            var t = be.Allocate(DType.F32, d);
            be.RandomFill(t, 0, 0f, 1f);
            return t;
        }
        var layers = new LlamaLayerWeights[c.NumLayers];
        ulong s = seed;
        for (int l = 0; l < c.NumLayers; l++)
        {
            layers[l] = new LlamaLayerWeights { AttnNorm = Ones(c.HiddenSize), MlpNorm = Ones(c.HiddenSize) };
            foreach (var p in Projs.All)
            {
                var (outDim, inDim) = p.Shape(c);
                layers[l][p] = Proj(outDim, inDim, ++s);
            }
        }
        var embed = be.Allocate(DType.BF16, c.VocabSize, c.HiddenSize);
        be.RandomFill(embed, ++s, 1f);
        return new LlamaWeights { Embed = embed, Layers = layers, FinalNorm = Ones(c.HiddenSize), LmHead = Proj(c.VocabSize, c.HiddenSize, ++s) };
    }
}
