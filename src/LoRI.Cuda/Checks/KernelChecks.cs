using LoRI.Backend;
using LoRI.Backend.Cpu;
using LoRI.Cuda.Backend;
using LoRI.Model;
using LoRI.Tensors;

namespace LoRI.Cuda.Checks;

/// <summary>One kernel check's outcome, as `selftest --json` reports it.</summary>
public sealed record KernelCheckResult(string Name, bool Passed, double MaxError, double Tolerance, double Ms, string Detail)
{
    /// <summary>The check does not apply to the device (Detail says why); it counts as passed.</summary>
    public bool Skipped => Detail.StartsWith("skipped: ", StringComparison.Ordinal);
}

/// <summary>
/// Every CUDA kernel held against a reference: the CPU backend for the IBackend ops; for the backward
/// passes both the CPU backward (LoRI.Backend.Cpu.CpuOps) and a plain loop in double precision; plain
/// loops for the rest (AdamW, casts, sampling). Each check runs at
/// tile-aligned shapes or at ragged ones (not multiples of any tile or block size). Used by the test
/// suite (under the emulator) and by `selftest --device D`.
/// </summary>
public static class KernelChecks
{
    /// <param name="Skip">Null when the check applies to the device, else why it does not (e.g. no sm_90a code).</param>
    public sealed record Check(string Name, Func<CheckContext, Comparison> Run, Func<CudaBackend, string?>? Skip = null);

    public static IReadOnlyList<Check> All { get; } =
    [
        new("embedding_forward_f32", c => Embedding(c, DType.F32)),
        new("embedding_forward_bf16", c => Embedding(c, DType.BF16)),
        new("embedding_forward_f16", c => Embedding(c, DType.F16)),
        new("gather_rows", GatherRows),
        new("rmsnorm_forward", RmsNormForward),
        new("rmsnorm_backward", c => RmsNormBackward(c, accumulate: false)),
        new("rmsnorm_backward_accumulate", c => RmsNormBackward(c, accumulate: true)),
        new("matmul_f32", c => MatMul(c, DType.F32, 1f, false)),
        new("matmul_bf16", c => MatMul(c, DType.BF16, 1f, false)),
        new("matmul_f16", c => MatMul(c, DType.F16, 1f, false)),
        new("matmul_bf16_accumulate", c => MatMul(c, DType.BF16, 0.5f, true)),
        new("matmul_tc_bf16", c => MatMulTensorCore(c, (128, 128, 64), (37, 70, 45), 1f, false)),
        new("matmul_tc_bf16_multistage", c => MatMulTensorCore(c, (256, 256, 256), (150, 200, 136), 1f, false)),
        new("matmul_tc_bf16_multistage_accumulate", c => MatMulTensorCore(c, (130, 136, 104), (150, 200, 171), 0.5f, true)),
        new("matmul_bf16_auto_tensor_core", MatMulAutoTensorCore),
        new("matmul_wgmma_bf16", c => MatMulWgmma(c, (128, 128, 64), (37, 70, 45), 1f, false), WgmmaSkip),
        new("matmul_wgmma_bf16_multistage", c => MatMulWgmma(c, (256, 256, 512), (150, 200, 136), 1f, false), WgmmaSkip),
        new("matmul_wgmma_bf16_multistage_accumulate", c => MatMulWgmma(c, (130, 136, 264), (150, 200, 171), 0.5f, true), WgmmaSkip),
        new("matmul_wgmma_cp_async_bf16_multistage_accumulate", c => MatMulWgmma(c, (130, 136, 264), (150, 200, 136), 0.5f, true, tma: false), WgmmaSkip),
        new("matmul_bf16_auto_wgmma", MatMulAutoWgmma, WgmmaSkip),
        new("sm90_wgmma_tile", Sm90WgmmaTile, WgmmaSkip),
        new("sm90_tma_box", Sm90TmaBox, WgmmaSkip),
        new("sm90_mbarrier_phases", Sm90MbarrierPhases, WgmmaSkip),
        new("matmul_gemv_bf16", c => MatMulGemv(c, 1, 1f, false)),
        new("matmul_gemv_bf16_accumulate", c => MatMulGemv(c, 3, -0.5f, true)),
        new("rope_forward", RopeForward),
        new("rope_backward", RopeBackward),
        new("swiglu_forward", SwiGluForward),
        new("swiglu_backward", SwiGluBackward),
        new("add_forward", AddForward),
        new("cast_f32_bf16", c => Cast(c, DType.F32, DType.BF16)),
        new("cast_bf16_f32", c => Cast(c, DType.BF16, DType.F32)),
        new("cast_f32_f16", c => Cast(c, DType.F32, DType.F16)),
        new("cast_f16_f32", c => Cast(c, DType.F16, DType.F32)),
        new("kvstore", KvStore),
        new("attention_forward", c => Attention(c, flash: false, splits: 0, decode: false)),
        new("flash_attention_forward", c => Attention(c, flash: true, splits: 1, decode: false)),
        new("flash_attention_decode_split3", c => Attention(c, flash: true, splits: 3, decode: true)),
        new("flash_attention_decode_auto", c => Attention(c, flash: true, splits: 0, decode: true)),
        new("flash_attention_train_forward", c => Simt(c, () => TrainAttentionForward(c, TrainAttentionShape(c)))),
        new("flash_attention_backward", c => Simt(c, () => TrainAttentionBackward(c, TrainAttentionShape(c)))),
        new("flash_attention_decode_hd128_group4", FlashDecodeLlamaHeads),
        new("flash_attention_backward_hd256_group8", c => Simt(c, () => TrainAttentionBackward(c, (1, c.Pick(32, 33), 8, 1, 256)))),
        new("flash_attention_tc_forward_hd64_group2", c => TensorCore(c, () => TcTrainForward(c, (2, c.Pick(128, 45), 4, 2, 64)))),
        new("flash_attention_tc_forward_hd16_group4", c => TensorCore(c, () => TcTrainForward(c, (2, c.Pick(128, 77), 8, 2, 16)))),
        new("flash_attention_tc_forward_hd128_group1", c => TensorCore(c, () => TcTrainForward(c, (1, c.Pick(128, 70), 2, 2, 128)))),
        new("flash_attention_tc_forward_f32_inputs", c => TensorCore(c, () => TcTrainForward(c, (2, c.Pick(64, 50), 4, 2, c.Pick(64, 32)), bf16Inputs: false))),
        new("flash_attention_tc_backward_hd64_group2", c => TensorCore(c, () => TcTrainBackward(c, (2, c.Pick(128, 45), 4, 2, 64)))),
        new("flash_attention_tc_backward_hd16_group4", c => TensorCore(c, () => TcTrainBackward(c, (2, c.Pick(128, 77), 8, 2, 16)))),
        new("flash_attention_tc_backward_hd128_group1", c => TensorCore(c, () => TcTrainBackward(c, (1, c.Pick(128, 70), 2, 2, 128)))),
        new("flash_attention_tc_prefill_group2", c => TensorCore(c, () => TcPrefill(c, 4, c.Pick(64, 48)))),
        new("flash_attention_tc_prefill_group4", c => TensorCore(c, () => TcPrefill(c, 8, c.Pick(128, 16)))),
        new("lora_apply_dense_decode", c => LoraApply(c, LoraBForm.Dense, decode: true)),
        new("lora_apply_dense_prefill", c => LoraApply(c, LoraBForm.Dense, decode: false)),
        new("lora_apply_compact_decode", c => LoraApply(c, LoraBForm.Compact, decode: true)),
        new("lora_apply_compact_prefill", c => LoraApply(c, LoraBForm.Compact, decode: false)),
        new("lora_apply_fused_dense_decode", c => LoraApply(c, LoraBForm.Dense, decode: true, fusedBlocks: 3)),
        new("lora_apply_fused_compact_decode", c => LoraApply(c, LoraBForm.Compact, decode: true, fusedBlocks: 2)),
        new("linear_lora_decode_shrink_rows_dense", c => LinearLora(c, LinearLoraPath.DecodeShrinkRows, [LoraBForm.Dense], [c.Pick(16, 13)])),
        new("linear_lora_decode_shrink_rows_compact", c => LinearLora(c, LinearLoraPath.DecodeShrinkRows, [LoraBForm.Compact], [c.Pick(16, 13)])),
        new("linear_lora_decode_gemv_epilogue_dense", c => LinearLora(c, LinearLoraPath.DecodeGemvEpilogue, [LoraBForm.Dense], [c.Pick(16, 13)])),
        new("linear_lora_decode_gemv_epilogue_compact", c => LinearLora(c, LinearLoraPath.DecodeGemvEpilogue, [LoraBForm.Compact], [c.Pick(16, 13)])),
        new("linear_lora_decode_three_adapters", c => LinearLora(c, LinearLoraPath.DecodeShrinkRows, [LoraBForm.Compact, LoraBForm.Dense, LoraBForm.Compact], [8, c.Pick(64, 61), 16])),
        new("linear_lora_tc_shrink_rows_dense", c => LinearLora(c, LinearLoraPath.TensorCoreShrinkRows, [LoraBForm.Dense], [c.Pick(16, 13)])),
        new("linear_lora_tc_shrink_rows_compact", c => LinearLora(c, LinearLoraPath.TensorCoreShrinkRows, [LoraBForm.Compact], [c.Pick(16, 13)])),
        new("linear_lora_tc_kconcat_dense", c => LinearLora(c, LinearLoraPath.TensorCoreKConcat, [LoraBForm.Dense], [c.Pick(16, 13)])),
        new("linear_lora_tc_kconcat_compact", c => LinearLora(c, LinearLoraPath.TensorCoreKConcat, [LoraBForm.Compact], [c.Pick(16, 13)])),
        new("linear_lora_tc_two_adapters", c => LinearLora(c, LinearLoraPath.TensorCoreShrinkRows, [LoraBForm.Compact, LoraBForm.Dense], [c.Pick(64, 61), 8])),
        new("lora_grad_b_masked", LoraGradB),
        new("embedding_backward_repeated_ids", EmbeddingBackward),
        new("transpose_f32", Transpose),
        new("matmul_backward_input_bf16", c => MatMulBackward(c, DType.BF16, input: true)),
        new("matmul_backward_weight", c => MatMulBackward(c, DType.F32, input: false)),
        new("matmul_tc_backward_input", c => MatMulBackwardTensorCore(c, true, (128, 160, 128), (37, 70, 45), 1f, false, exact: true)),
        new("matmul_tc_backward_input_multistage_accumulate", c => MatMulBackwardTensorCore(c, true, (130, 256, 136), (150, 136, 200), -0.5f, true, exact: true)),
        new("matmul_tc_backward_input_f32_staged", c => MatMulBackwardTensorCore(c, true, (64, 128, 64), (37, 70, 45), 1f, true, exact: false)),
        new("matmul_tc_backward_weight", c => MatMulBackwardTensorCore(c, false, (160, 128, 128), (45, 70, 37), 1f, false, exact: true)),
        new("matmul_tc_backward_weight_multistage_accumulate", c => MatMulBackwardTensorCore(c, false, (256, 136, 128), (171, 136, 200), 0.5f, true, exact: true)),
        new("matmul_tc_backward_weight_f32_staged", c => MatMulBackwardTensorCore(c, false, (64, 128, 64), (45, 70, 37), 1f, true, exact: false)),
        new("lm_head_cross_entropy_f32", c => CrossEntropy(c, DType.F32)),
        new("lm_head_cross_entropy_bf16", c => CrossEntropy(c, DType.BF16)),
        new("adamw_step_masked_per_tensor_clip", c => AdamW(c, masked: true, globalNorm: false)),
        new("adamw_step_global_clip", c => AdamW(c, masked: false, globalNorm: true)),
        new("adamw_step_compact_live_entries", c => AdamW(c, masked: false, globalNorm: false, compact: true)),
        new("argmax_rows", Argmax),
        new("sample_top_p", SampleTopP),
        new("sample_rows_top_k_top_p", c => SampleRows(c, topK: c.Pick(50, 37), topP: 0.9f)),
        new("sample_rows_temperature", c => SampleRows(c, topK: 0, topP: 1f)),
        new("sample_rows_wide_vocab", c => SampleRows(c, topK: 100, topP: 0.8f, wide: true)),
    ];

    /// <summary>
    /// Runs every check (or those whose name contains <paramref name="filter"/>) on <paramref name="device"/>
    /// against <paramref name="cpu"/>, then times each passing one over <paramref name="timingRepeats"/> launches
    /// (0: no timing) with the device's events.
    /// </summary>
    public static List<KernelCheckResult> RunAll(CudaBackend device, IBackend cpu, bool ragged, int timingRepeats, string? filter = null)
    {
        var results = new List<KernelCheckResult>();
        foreach (var check in All)
        {
            if (filter is not null && !check.Name.Contains(filter, StringComparison.Ordinal)) continue;
            results.Add(RunOne(check, device, cpu, ragged, timingRepeats));
        }
        return results;
    }

    public static KernelCheckResult RunOne(Check check, CudaBackend device, IBackend cpu, bool ragged, int timingRepeats)
    {
        if (check.Skip?.Invoke(device) is string skipped)
            return new KernelCheckResult(check.Name, true, double.NaN, double.NaN, double.NaN, "skipped: " + skipped);
        using var c = new CheckContext(device, cpu, ragged, check.Name);
        Comparison cmp;
        try
        {
            cmp = check.Run(c);
        }
        catch (Exception e) when (e is LoRIException or ArgumentException or InvalidOperationException)
        {
            return new KernelCheckResult(check.Name, false, double.NaN, c.Atol, double.NaN, e.Message);
        }
        double ms = double.NaN;
        if (cmp.Passed && timingRepeats > 0 && c.Timed is not null)
        {
            c.Timed();
            using var start = device.Driver.CreateEvent();
            using var end = device.Driver.CreateEvent();
            device.Synchronize();
            device.Driver.RecordEvent(start, 0);
            for (int i = 0; i < timingRepeats; i++) c.Timed();
            device.Driver.RecordEvent(end, 0);
            device.Driver.SynchronizeEvent(end);
            ms = device.Driver.ElapsedMilliseconds(start, end) / timingRepeats;
        }
        return new KernelCheckResult(check.Name, cmp.Passed, cmp.MaxError, cmp.WorstAllowed, ms,
            $"{(ragged ? "ragged" : "aligned")} shapes {c.ShapeNote}: {cmp}");
    }

    // ---- the checks ---------------------------------------------------------------------------------

    private static Comparison Embedding(CheckContext c, DType dtype)
    {
        int v = c.Pick(64, 37), d = c.Pick(128, 100), n = c.Pick(32, 13);
        c.Note($"table [{v}, {d}] {dtype}, {n} ids");
        var table = c.Random(v * d, 1f);
        var ids = c.Ints(n, v);
        var (dt, ct) = c.Both(table, dtype, v, d);
        var (di, ci) = c.BothInts(ids, n);
        var dy = c.Device.Allocate(DType.F32, n, d);
        var cy = c.Cpu.Allocate(DType.F32, n, d);
        c.Own(dy, cy);
        c.Device.Embedding(dt, di, dy);
        c.Cpu.Embedding(ct, ci, cy);
        c.Timed = () => c.Device.Embedding(dt, di, dy);
        return c.Compare(dy, cy, 0, 0);
    }

    private static Comparison GatherRows(CheckContext c)
    {
        int r = c.Pick(64, 29), w = c.Pick(256, 77), n = c.Pick(32, 11);
        c.Note($"src [{r}, {w}], {n} rows");
        var (ds, cs) = c.Both(c.Random(r * w, 1f), DType.F32, r, w);
        var (di, ci) = c.BothInts(c.Ints(n, r), n);
        var dd = c.Device.Allocate(DType.F32, n, w);
        var cd = c.Cpu.Allocate(DType.F32, n, w);
        c.Own(dd, cd);
        c.Device.GatherRows(ds, di, dd);
        c.Cpu.GatherRows(cs, ci, cd);
        c.Timed = () => c.Device.GatherRows(ds, di, dd);
        return c.Compare(dd, cd, 0, 0);
    }

    private static Comparison RmsNormForward(CheckContext c)
    {
        int n = c.Pick(16, 7), d = c.Pick(256, 333);
        c.Note($"x [{n}, {d}]");
        var (dx, cx) = c.Both(c.Random(n * d, 2f), DType.F32, n, d);
        var (dw, cw) = c.Both(c.Random(d, 1f), DType.F32, d);
        var dy = c.Device.Allocate(DType.F32, n, d);
        var cy = c.Cpu.Allocate(DType.F32, n, d);
        c.Own(dy, cy);
        c.Device.RmsNorm(dx, dw, 1e-5f, dy);
        c.Cpu.RmsNorm(cx, cw, 1e-5f, cy);
        c.Timed = () => c.Device.RmsNorm(dx, dw, 1e-5f, dy);
        return c.Compare(dy, cy, 1e-5f, 1e-5f);
    }

    private static Comparison RmsNormBackward(CheckContext c, bool accumulate)
    {
        int n = c.Pick(16, 7), d = c.Pick(256, 333);
        const float eps = 1e-5f;
        c.Note($"x [{n}, {d}], weight bf16");
        var x = c.Random(n * d, 2f);
        var w = c.Random(d, 1f).Select(Bf16.Round).ToArray();
        var dyv = c.Random(n * d, 1f);
        var rx = new double[n * d];
        var rw = new double[d];
        for (int i = 0; i < n; i++)
        {
            double ss = 0, gx = 0;
            for (int j = 0; j < d; j++) { ss += (double)x[i * d + j] * x[i * d + j]; gx += (double)dyv[i * d + j] * w[j] * x[i * d + j]; }
            double r = 1 / Math.Sqrt(ss / d + eps);
            for (int j = 0; j < d; j++)
            {
                rx[i * d + j] = r * dyv[i * d + j] * w[j] - x[i * d + j] * r * r * r * gx / d;
                rw[j] += dyv[i * d + j] * x[i * d + j] * r;
            }
        }
        var tx = c.Up(x, DType.F32, n, d);
        var tw = c.Up(w, DType.BF16, d);
        var tdy = c.Up(dyv, DType.F32, n, d);
        // accumulate: dx starts from values that the op must add to (and that the reference adds)
        var dx0 = accumulate ? c.Random(n * d, 1f) : new float[n * d];
        if (accumulate) for (int i = 0; i < rx.Length; i++) rx[i] += dx0[i];
        var tdx = c.Up(dx0, DType.F32, n, d);
        var tdw = c.Device.Allocate(DType.F32, d);
        c.Own(tdw);
        c.Device.RmsNormBackward(tx, tw, tdy, eps, tdx, tdw, accumulate);
        c.Timed = () => c.Device.RmsNormBackward(tx, tw, tdy, eps, tdx, null, accumulate);
        var cdx = (float[])dx0.Clone();
        var cdw = new float[d];
        CpuOps.RmsNormBackward(x, w, dyv, d, eps, cdx, cdw, accumulate);
        var gdx = c.Get(tdx);
        var gdw = c.Get(tdw);
        return Tolerance.Compare(gdx, ToFloat(rx), 1e-5f, 1e-4f).And(Tolerance.Compare(gdw, ToFloat(rw), 1e-4f, 1e-4f))
            .And(Tolerance.Compare(gdx, cdx, 1e-5f, 1e-4f)).And(Tolerance.Compare(gdw, cdw, 1e-4f, 1e-4f));
    }

    private static Comparison MatMul(CheckContext c, DType wtype, float alpha, bool accumulate)
    {
        int n = c.Pick(64, 37), m = c.Pick(128, 70), k = c.Pick(64, 101);
        c.Note($"x [{n}, {k}] W [{m}, {k}] {wtype}, alpha {alpha}{(accumulate ? ", accumulate" : "")}");
        var (dx, cx) = c.Both(c.Random(n * k, 1f), DType.F32, n, k);
        var (dw, cw) = c.Both(c.Random(m * k, 1f), wtype, m, k);
        var y0 = c.Random(n * m, 1f);
        var (dy, cy) = c.Both(y0, DType.F32, n, m);
        // fp32 activations throughout (the tensor-core path, which rounds them to bf16, has its own checks)
        bool was = c.Device.Bf16Activations;
        c.Device.Bf16Activations = false;
        try
        {
            c.Device.MatMul(dx, dw, dy, alpha, accumulate);
        }
        finally
        {
            c.Device.Bf16Activations = was;
        }
        c.Cpu.MatMul(cx, cw, cy, alpha, accumulate);
        c.Timed = () => c.Device.MatMul(dx, dw, dy, alpha, false);
        // fp32 sums over k terms of order 1: both sides round differently, by about k * 2^-24 each
        return c.Compare(dy, cy, 2e-5f * MathF.Sqrt(k), 1e-5f);
    }

    /// <summary>
    /// The tensor-core GEMM on bf16 activations against the CPU backend's MatMul on the same (bf16-rounded)
    /// values in F32: both sum exact bf16 products in fp32, so only the order of the sums differs.
    /// </summary>
    private static Comparison MatMulTensorCore(CheckContext c, (int N, int M, int K) aligned, (int N, int M, int K) ragged, float alpha, bool accumulate)
    {
        var (n, m, k) = c.Ragged ? ragged : aligned;
        c.Note($"x [{n}, {k}] bf16, W [{m}, {k}] bf16, alpha {alpha}{(accumulate ? ", accumulate" : "")}, {(k % 8 == 0 ? "cp.async" : "register-staged")} tiles");
        var xv = c.Random(n * k, 1f).Select(Bf16.Round).ToArray();
        var dx = c.Up(xv, DType.BF16, n, k);
        var cx = c.UpCpu(xv, DType.F32, n, k);
        var (dw, cw) = c.Both(c.Random(m * k, 1f), DType.BF16, m, k);
        var (dy, cy) = c.Both(c.Random(n * m, 1f), DType.F32, n, m);
        c.Device.MatMulBf16(dx, dw, dy, alpha, accumulate);
        c.Cpu.MatMul(cx, cw, cy, alpha, accumulate);
        c.Timed = () => c.Device.MatMulBf16(dx, dw, dy, alpha, false);
        return c.Compare(dy, cy, 2e-5f * MathF.Sqrt(k), 1e-5f);
    }

    /// <summary>The wgmma GEMM's checks run on the emulator (its twins) and on a device whose gemm_wgmma code is sm_90a.</summary>
    private static string? WgmmaSkip(CudaBackend device) =>
        device.Driver.IsEmulator || device.WgmmaCodeAvailable ? null
        : $"the gemm_wgmma kernels on {device.Driver.DeviceName} are not the sm_90a build (compute capability {device.Driver.ComputeCapability})";

    /// <summary>The wgmma GEMM (sm_90a) against the CPU backend's MatMul on the same bf16-rounded values, like the mma.sync one.</summary>
    private static Comparison MatMulWgmma(CheckContext c, (int N, int M, int K) aligned, (int N, int M, int K) ragged, float alpha, bool accumulate, bool tma = true)
    {
        var (n, m, k) = c.Ragged ? ragged : aligned;
        c.Note($"x [{n}, {k}] bf16, W [{m}, {k}] bf16, alpha {alpha}{(accumulate ? ", accumulate" : "")}, " +
               $"{(k % 8 != 0 ? "register-staged" : tma ? "TMA" : "cp.async")} tiles, wgmma");
        var xv = c.Random(n * k, 1f).Select(Bf16.Round).ToArray();
        var dx = c.Up(xv, DType.BF16, n, k);
        var cx = c.UpCpu(xv, DType.F32, n, k);
        var (dw, cw) = c.Both(c.Random(m * k, 1f), DType.BF16, m, k);
        var (dy, cy) = c.Both(c.Random(n * m, 1f), DType.F32, n, m);
        bool was = c.Device.WgmmaTma;
        c.Device.WgmmaTma = tma;
        try
        {
            c.Device.MatMulWgmma(dx, dw, dy, alpha, accumulate);
        }
        finally
        {
            c.Device.WgmmaTma = was;
        }
        c.Cpu.MatMul(cx, cw, cy, alpha, accumulate);
        c.Timed = () =>
        {
            c.Device.WgmmaTma = tma;
            c.Device.MatMulWgmma(dx, dw, dy, alpha, false);
            c.Device.WgmmaTma = was;
        };
        return c.Compare(dy, cy, 2e-5f * MathF.Sqrt(k), 1e-5f);
    }

    /// <summary>
    /// The sm_90a programs of native/kernels/sm90_checks.cu, one per twin, so that on a device a wrong reading of
    /// the PTX ISA shows which instruction it concerns: one warpgroup's wgmma over swizzled tiles vs a double loop.
    /// </summary>
    private static Comparison Sm90WgmmaTile(CheckContext c)
    {
        c.Note("A [64, 64] x B [64, 128] + C, 4 x m64n128k16 through descriptors of 128-byte-swizzled tiles");
        var a = c.Random(64 * 64, 2f).Select(Bf16.Round).ToArray();
        var bt = c.Random(128 * 64, 2f).Select(Bf16.Round).ToArray();
        var cv = c.Random(64 * 128, 0.5f);
        var reference = new float[64 * 128];
        for (int i = 0; i < 64; i++)
            for (int j = 0; j < 128; j++)
            {
                double s = cv[i * 128 + j];
                for (int k = 0; k < 64; k++) s += (double)a[i * 64 + k] * bt[j * 64 + k];
                reference[i * 128 + j] = (float)s;
            }
        var da = c.Up(a, DType.BF16, 64, 64);
        var db = c.Up(bt, DType.BF16, 128, 64);
        var dc = c.Up(cv, DType.F32, 64, 128);
        var dd = c.Device.Allocate(DType.F32, 64, 128);
        c.Own(dd);
        var args = new KernelArgs();
        args.Add(da); args.Add(db); args.Add(dc); args.Add(dd); args.Add(0);
        c.Device.LaunchWithTensorMaps("sm90_checks", "sm90_wgmma_tile", 1, 128, 1024 + 64 * 128 + 128 * 128, [], ref args);
        return Tolerance.Compare(c.Get(dd), reference, 1e-4f, 1e-5f);
    }

    /// <summary>One TMA box (64 x 128 bf16, 128-byte swizzle, edges past the tensor) read back where the descriptors look.</summary>
    private static Comparison Sm90TmaBox(CheckContext c)
    {
        const int rows = 100, k = 72;
        int c0 = c.Pick(0, 64), c1 = c.Pick(0, 40);
        c.Note($"x [{rows}, {k}] bf16, box 64 x 128 at ({c0}, {c1}), zero fill past the edges");
        var src = c.Random(rows * k, 1f).Select(Bf16.Round).ToArray();
        var reference = new float[128 * 64];
        for (int r = 0; r < 128; r++)
            for (int e = 0; e < 64; e++)
                reference[r * 64 + e] = c1 + r < rows && c0 + e < k ? src[(c1 + r) * k + c0 + e] : 0f;
        var dx = c.Up(src, DType.BF16, rows, k);
        var dout = c.Device.Allocate(DType.BF16, 128, 64);
        c.Own(dout);
        var args = new KernelArgs();
        args.Add(dout); args.Add(c0); args.Add(c1);
        c.Device.LaunchWithTensorMaps("sm90_checks", "sm90_tma_box", 1, 128, 1024 + 64 * 128 * 2 + 8, [c.Device.Bf16RowsMap(dx, rows, k)], ref args);
        return Tolerance.Compare(c.Get(dout), reference, 0, 0);
    }

    /// <summary>Three mbarrier phases of one block: each completes, and try_wait names it by its parity.</summary>
    private static Comparison Sm90MbarrierPhases(CheckContext c)
    {
        int threads = c.Pick(128, 96);
        c.Note($"{threads} threads, 3 phases");
        var dout = c.Device.Allocate(DType.I32, 6);
        c.Own(dout);
        var args = new KernelArgs();
        args.Add(dout); args.Add(0);
        c.Device.LaunchWithTensorMaps("sm90_checks", "sm90_mbarrier_phases", 1, threads, 1024 + 8, [], ref args);
        return Tolerance.CompareExact(c.GetInts(dout), [1, 0, 1, 0, 1, 0]);
    }

    /// <summary>
    /// MatMul's own choice on a backend that reports compute capability 9.0: on the emulator a fresh backend
    /// whose emulator says 9.0 (so the first-use check runs on the twins and must pick wgmma); on a device,
    /// this backend. Either way the result is held against the CPU backend.
    /// </summary>
    private static Comparison MatMulAutoWgmma(CheckContext c)
    {
        int n = c.Pick(128, 37), m = c.Pick(256, 70), k = c.Pick(128, 101);
        c.Note($"x [{n}, {k}] F32 holding bf16 values, W [{m}, {k}] bf16, through MatMul with Bf16Activations on a 9.0 device");
        var xv = c.Random(n * k, 1f).Select(Bf16.Round).ToArray();
        var wv = c.Random(m * k, 1f);
        var cx = c.UpCpu(xv, DType.F32, n, k);
        var cw = c.UpCpu(wv, DType.BF16, m, k);
        var cy = c.Cpu.Allocate(DType.F32, n, m);
        c.Cpu.MatMul(cx, cw, cy);
        CudaBackend be = c.Device.Driver.IsEmulator ? new CudaBackend(new Emulator.EmulatorDriver(computeCapability: 90)) : c.Device;
        bool wasBf16 = be.Bf16Activations;
        var wasWarning = be.Warning;
        var warnings = new List<string>();
        try
        {
            be.Warning = warnings.Add;
            be.Bf16Activations = true;
            using var dx = be.Allocate(DType.F32, n, k);
            using var dw = be.Allocate(DType.BF16, m, k);
            using var dy = be.Allocate(DType.F32, n, m);
            be.Upload<float>(xv, dx);
            be.Upload<ushort>(wv.Select(Bf16.FromFloat).ToArray(), dw);
            be.MatMul(dx, dw, dy);
            if (!be.WgmmaActive || warnings.Count > 0)
                throw new InvalidOperationException($"MatMul did not choose the wgmma GEMM: {be.WgmmaStatus} {string.Join(" ", warnings)}");
            var got = new float[n * m];
            be.Download<float>(dy, got);
            c.Note($"x [{n}, {k}], W [{m}, {k}] bf16 through MatMul; wgmma {be.WgmmaStatus}");
            return Tolerance.Compare(got, c.Get(cy), 2e-5f * MathF.Sqrt(k), 1e-5f);
        }
        finally
        {
            if (!ReferenceEquals(be, c.Device)) be.Dispose();
            else
            {
                be.Bf16Activations = wasBf16;
                be.Warning = wasWarning;
            }
        }
    }

    /// <summary>MatMul's own choice of the tensor-core path (F32 x cast to bf16 in scratch) when Bf16Activations is on.</summary>
    private static Comparison MatMulAutoTensorCore(CheckContext c)
    {
        int n = c.Pick(64, 37), m = c.Pick(128, 70), k = c.Pick(64, 101);
        c.Note($"x [{n}, {k}] F32 holding bf16 values, W [{m}, {k}] bf16, through MatMul with Bf16Activations");
        var (dx, cx) = c.Both(c.Random(n * k, 1f).Select(Bf16.Round).ToArray(), DType.F32, n, k);
        var (dw, cw) = c.Both(c.Random(m * k, 1f), DType.BF16, m, k);
        var dy = c.Device.Allocate(DType.F32, n, m);
        var cy = c.Cpu.Allocate(DType.F32, n, m);
        c.Own(dy, cy);
        bool was = c.Device.Bf16Activations;
        c.Device.Bf16Activations = true;
        try
        {
            c.Device.MatMul(dx, dw, dy);
        }
        finally
        {
            c.Device.Bf16Activations = was;
        }
        c.Cpu.MatMul(cx, cw, cy);
        c.Timed = () => c.Device.MatMulBf16(c.Device.Scratch("matmul_x_bf16", DType.BF16, (long)n * k).Reshape(n, k), dw, dy);
        return c.Compare(dy, cy, 2e-5f * MathF.Sqrt(k), 1e-5f);
    }

    /// <summary>The decode GEMV (fp32 x, bf16 W) at every K split, through MatMul's dispatch and directly.</summary>
    private static Comparison MatMulGemv(CheckContext c, int n, float alpha, bool accumulate)
    {
        int m = c.Pick(128, 70), k = c.Pick(512, 45 * 7);
        c.Note($"x [{n}, {k}] F32, W [{m}, {k}] bf16, alpha {alpha}{(accumulate ? ", accumulate" : "")}, K split auto/1/2/4/8");
        var (dx, cx) = c.Both(c.Random(n * k, 1f), DType.F32, n, k);
        var (dw, cw) = c.Both(c.Random(m * k, 1f), DType.BF16, m, k);
        var y0 = c.Random(n * m, 1f);
        var cy = c.UpCpu(y0, DType.F32, n, m);
        c.Cpu.MatMul(cx, cw, cy, alpha, accumulate);
        var expected = c.Get(cy);
        var dy = c.Up(y0, DType.F32, n, m);
        c.Device.MatMul(dx, dw, dy, alpha, accumulate);
        var cmp = Tolerance.Compare(c.Get(dy), expected, 2e-5f * MathF.Sqrt(k), 1e-5f);
        int was = c.Device.GemvSplitK;
        try
        {
            foreach (var split in new[] { 1, 2, 4, 8 })
            {
                c.Device.GemvSplitK = split;
                c.Device.Upload<float>(y0, dy);
                c.Device.MatMulGemv(dx, dw, dy, alpha, accumulate);
                cmp = cmp.And(Tolerance.Compare(c.Get(dy), expected, 2e-5f * MathF.Sqrt(k), 1e-5f));
            }
        }
        finally
        {
            c.Device.GemvSplitK = was;
        }
        c.Timed = () => c.Device.MatMulGemv(dx, dw, dy, alpha, false);
        return cmp;
    }

    private static float[] InvFreq(int headDim) => new LlamaConfig
    {
        HeadDim = headDim, RopeTheta = 500000f, RopeScaling = new RopeScaling(8f, 1f, 4f, 8192),
    }.RopeInvFreq();

    private static Comparison RopeForward(CheckContext c)
    {
        int n = c.Pick(16, 9), heads = c.Pick(4, 3), hd = c.Pick(64, 34);
        c.Note($"x [{n}, {heads} x {hd}], llama3 scaling, positions < 8192");
        var (dx, cx) = c.Both(c.Random(n * heads * hd, 1f), DType.F32, n, heads * hd);
        var (dp, cp) = c.BothInts(c.Ints(n, 8192), n);
        var (df, cf) = c.Both(InvFreq(hd), DType.F32, hd / 2);
        c.Device.Rope(dx, heads, hd, dp, df);
        c.Cpu.Rope(cx, heads, hd, cp, cf);
        c.Timed = () => c.Device.Rope(dx, heads, hd, dp, df);
        return c.Compare(dx, cx, 2e-6f, 2e-6f);
    }

    private static Comparison RopeBackward(CheckContext c)
    {
        int n = c.Pick(16, 9), heads = c.Pick(4, 3), hd = c.Pick(64, 34), half = hd / 2;
        c.Note($"dy [{n}, {heads} x {hd}]");
        var g = c.Random(n * heads * hd, 1f);
        var pos = c.Ints(n, 8192);
        var inv = InvFreq(hd);
        var expected = new double[g.Length];
        for (int i = 0; i < n; i++)
            for (int h = 0; h < heads; h++)
                for (int j = 0; j < half; j++)
                {
                    double angle = pos[i] * inv[j];  // the angle as the forward computes it (float product)
                    angle = (float)angle;
                    int o = i * heads * hd + h * hd;
                    double a = g[o + j], b = g[o + j + half];
                    expected[o + j] = a * Math.Cos(angle) + b * Math.Sin(angle);
                    expected[o + j + half] = -a * Math.Sin(angle) + b * Math.Cos(angle);
                }
        var dg = c.Up(g, DType.F32, n, heads * hd);
        var dp = c.UpInts(pos, n);
        var df = c.Up(inv, DType.F32, half);
        c.Device.RopeBackward(dg, heads, hd, dp, df);
        c.Timed = () => c.Device.RopeBackward(dg, heads, hd, dp, df);
        var cpu = (float[])g.Clone();
        CpuOps.RopeBackward(cpu, heads, hd, pos, inv);
        var got = c.Get(dg);
        return Tolerance.Compare(got, ToFloat(expected), 2e-6f, 2e-6f).And(Tolerance.Compare(got, cpu, 2e-6f, 2e-6f));
    }

    private static Comparison SwiGluForward(CheckContext c)
    {
        int n = c.Pick(16, 5), d = c.Pick(256, 203);
        c.Note($"[{n}, {d}]");
        var (dg, cg) = c.Both(c.Random(n * d, 6f), DType.F32, n, d);
        var (du, cu) = c.Both(c.Random(n * d, 2f), DType.F32, n, d);
        var dy = c.Device.Allocate(DType.F32, n, d);
        var cy = c.Cpu.Allocate(DType.F32, n, d);
        c.Own(dy, cy);
        c.Device.SwiGlu(dg, du, dy);
        c.Cpu.SwiGlu(cg, cu, cy);
        c.Timed = () => c.Device.SwiGlu(dg, du, dy);
        return c.Compare(dy, cy, 1e-6f, 1e-5f);
    }

    private static Comparison SwiGluBackward(CheckContext c)
    {
        int n = c.Pick(16, 5), d = c.Pick(256, 203), len = n * d;
        c.Note($"[{n}, {d}]");
        var g = c.Random(len, 6f);
        var u = c.Random(len, 2f);
        var dy = c.Random(len, 1f);
        var eg = new double[len];
        var eu = new double[len];
        for (int i = 0; i < len; i++)
        {
            double s = 1 / (1 + Math.Exp(-g[i]));
            eg[i] = dy[i] * u[i] * s * (1 + g[i] * (1 - s));
            eu[i] = dy[i] * g[i] * s;
        }
        var tg = c.Up(g, DType.F32, n, d);
        var tu = c.Up(u, DType.F32, n, d);
        var tdy = c.Up(dy, DType.F32, n, d);
        var tdg = c.Device.Allocate(DType.F32, n, d);
        var tdu = c.Device.Allocate(DType.F32, n, d);
        c.Own(tdg, tdu);
        c.Device.SwiGluBackward(tg, tu, tdy, tdg, tdu);
        c.Timed = () => c.Device.SwiGluBackward(tg, tu, tdy, tdg, tdu);
        var cg = new float[len];
        var cu = new float[len];
        CpuOps.SwiGluBackward(g, u, dy, cg, cu);
        var gg = c.Get(tdg);
        var gu = c.Get(tdu);
        return Tolerance.Compare(gg, ToFloat(eg), 1e-6f, 1e-5f).And(Tolerance.Compare(gu, ToFloat(eu), 1e-6f, 1e-5f))
            .And(Tolerance.Compare(gg, cg, 1e-6f, 1e-5f)).And(Tolerance.Compare(gu, cu, 1e-6f, 1e-5f));
    }

    private static Comparison AddForward(CheckContext c)
    {
        int n = c.Pick(4096, 1001);
        c.Note($"[{n}]");
        var (da, ca) = c.Both(c.Random(n, 1f), DType.F32, n);
        var (db, cb) = c.Both(c.Random(n, 1f), DType.F32, n);
        var dy = c.Device.Allocate(DType.F32, n);
        var cy = c.Cpu.Allocate(DType.F32, n);
        c.Own(dy, cy);
        c.Device.Add(da, db, dy);
        c.Cpu.Add(ca, cb, cy);
        c.Timed = () => c.Device.Add(da, db, dy);
        return c.Compare(dy, cy, 0, 0);
    }

    private static Comparison Cast(CheckContext c, DType from, DType to)
    {
        int n = c.Pick(4096, 1003);
        c.Note($"[{n}] {from} -> {to}");
        var x = c.Random(n, 100f);
        x[0] = 1.00390625f;   // a tie: rounds to even
        x[1] = 65520f;        // f16 overflow to infinity
        x[2] = 3e-6f;         // f16 subnormal
        x[3] = -0f;
        var src = c.Up(x, from, n);
        var dst = c.Device.Allocate(to, n);
        c.Own(dst);
        c.Device.Cast(src, dst);
        c.Timed = () => c.Device.Cast(src, dst);
        // the reference: the host's conversions of the same source values
        var source = from == DType.F32 ? x : x.Select(v => Round(v, from)).ToArray();
        var expected = source.Select(v => Round(v, to)).ToArray();
        return Tolerance.Compare(c.Get(dst), expected, 0, 0);
    }

    private static Comparison KvStore(CheckContext c)
    {
        int s = 3, t = c.Pick(16, 13), w = c.Pick(128, 72), n = c.Pick(8, 5);
        c.Note($"cache [{s}, {t}, {w}], {n} tokens");
        var (dc, cc) = c.Both(c.Random(s * t * w, 1f), DType.F32, s, t, w);
        var (dsrc, csrc) = c.Both(c.Random(n * w, 1f), DType.F32, n, w);
        var slots = c.Ints(n, s);
        var pos = Enumerable.Range(0, n).Select(i => i % t).ToArray();
        var (dsl, csl) = c.BothInts(slots, n);
        var (dp, cp) = c.BothInts(pos, n);
        c.Device.KvStore(dsrc, dc, dsl, dp);
        c.Cpu.KvStore(csrc, cc, csl, cp);
        c.Timed = () => c.Device.KvStore(dsrc, dc, dsl, dp);
        return c.Compare(dc, cc, 0, 0);
    }

    /// <summary>
    /// IBackend.Attention against the CPU: the baseline kernel, or the flash kernel with a given number of KV
    /// splits (0: the backend's choice). Decode shapes: a few tokens against a long cache (several splits,
    /// one of them empty for the ragged shape).
    /// </summary>
    private static Comparison Attention(CheckContext c, bool flash, int splits, bool decode)
    {
        int s = 2, t = decode ? c.Pick(128, 100) : c.Pick(32, 37), kvHeads = 2, heads = c.Pick(8, 6), hd = c.Pick(64, 20), n = decode ? 2 : c.Pick(8, 7);
        c.Note($"{n} tokens, {heads}/{kvHeads} heads of {hd}, cache [{s}, {t}], {(flash ? $"flash, {(splits == 0 ? "auto" : splits.ToString())} splits" : "baseline")}");
        bool wasFlash = c.Device.UseFlashAttention;
        int wasSplits = c.Device.AttentionSplits;
        c.Device.UseFlashAttention = flash;
        c.Device.AttentionSplits = splits;
        try
        {
            return Simt(c, () => AttentionRun(c, s, t, kvHeads, heads, hd, n));
        }
        finally
        {
            c.Device.UseFlashAttention = wasFlash;
            c.Device.AttentionSplits = wasSplits;
        }
    }

    /// <summary>Runs a check of the fp32 SIMT attention kernels with the tensor-core ones switched off.</summary>
    private static Comparison Simt(CheckContext c, Func<Comparison> run) => WithTensorCoreAttention(c, false, run);

    /// <summary>Runs a check of the tensor-core attention kernels (switched on, whatever the device's default).</summary>
    private static Comparison TensorCore(CheckContext c, Func<Comparison> run) => WithTensorCoreAttention(c, true, run);

    private static Comparison WithTensorCoreAttention(CheckContext c, bool on, Func<Comparison> run)
    {
        bool was = c.Device.UseTensorCoreAttention;
        c.Device.UseTensorCoreAttention = on;
        try
        {
            var cmp = run();
            // the timing runs later, under the device's default: pin the choice there too
            var timed = c.Timed;
            if (timed is not null)
                c.Timed = () =>
                {
                    bool before = c.Device.UseTensorCoreAttention;
                    c.Device.UseTensorCoreAttention = on;
                    try
                    {
                        timed();
                    }
                    finally
                    {
                        c.Device.UseTensorCoreAttention = before;
                    }
                };
            return cmp;
        }
        finally
        {
            c.Device.UseTensorCoreAttention = was;
        }
    }

    /// <summary>Throws unless the device's last attention call ran the expected kernel (a shape that falls back would test nothing new).</summary>
    private static void ExpectKernel(CheckContext c, string name)
    {
        if (c.Device.LastAttentionKernel != name)
            throw new InvalidOperationException($"expected the kernel {name}, the backend ran {c.Device.LastAttentionKernel}");
    }

    private static Comparison AttentionRun(CheckContext c, int s, int t, int kvHeads, int heads, int hd, int n)
    {
        var (dk, ck) = c.Both(c.Random(s * t * kvHeads * hd, 1f), DType.F32, s, t, kvHeads * hd);
        var (dv, cv) = c.Both(c.Random(s * t * kvHeads * hd, 1f), DType.F32, s, t, kvHeads * hd);
        var (dq, cq) = c.Both(c.Random(n * heads * hd, 1f), DType.F32, n, heads * hd);
        var slots = c.Ints(n, s);
        var pos = c.Ints(n, t);
        pos[0] = 0;
        pos[^1] = t - 1;
        var (dsl, csl) = c.BothInts(slots, n);
        var (dp, cp) = c.BothInts(pos, n);
        var dy = c.Device.Allocate(DType.F32, n, heads * hd);
        var cy = c.Cpu.Allocate(DType.F32, n, heads * hd);
        c.Own(dy, cy);
        c.Device.Attention(dq, dk, dv, dsl, dp, heads, kvHeads, hd, dy);
        c.Cpu.Attention(cq, ck, cv, csl, cp, heads, kvHeads, hd, cy);
        bool flash = c.Device.UseFlashAttention;
        int splits = c.Device.AttentionSplits;
        c.Timed = () =>
        {
            c.Device.UseFlashAttention = flash;
            c.Device.AttentionSplits = splits;
            c.Device.Attention(dq, dk, dv, dsl, dp, heads, kvHeads, hd, dy);
        };
        return c.Compare(dy, cy, 1e-5f, 1e-4f);
    }

    private static (int Batch, int SeqLen, int Heads, int KvHeads, int Hd) TrainAttentionShape(CheckContext c) =>
        (2, c.Pick(32, 37), c.Pick(8, 6), 2, c.Pick(64, 20));

    /// <summary>Decode at Llama-3's head shape (head dim 128, 4 query heads per KV head), split over the positions.</summary>
    private static Comparison FlashDecodeLlamaHeads(CheckContext c)
    {
        int t = c.Pick(64, 70);
        c.Note($"2 tokens, 8/2 heads of 128, cache [2, {t}], flash, 2 splits");
        bool wasFlash = c.Device.UseFlashAttention;
        int wasSplits = c.Device.AttentionSplits;
        c.Device.UseFlashAttention = true;
        c.Device.AttentionSplits = 2;
        try
        {
            return Simt(c, () => AttentionRun(c, 2, t, 2, 8, 128, 2));
        }
        finally
        {
            c.Device.UseFlashAttention = wasFlash;
            c.Device.AttentionSplits = wasSplits;
        }
    }

    /// <summary>The training forward (keys from the batch itself) with its log-sum-exp, against CpuOps.AttentionForwardWithLse.</summary>
    private static Comparison TrainAttentionForward(CheckContext c, (int Batch, int SeqLen, int Heads, int KvHeads, int Hd) shape)
    {
        var (b, t, heads, kvh, hd) = shape;
        int n = b * t;
        c.Note($"{b} sequences of {t}, {heads}/{kvh} heads of {hd}");
        var (q, k, v, ry, rl) = TrainAttentionReference(c, b, t, heads, kvh, hd, bf16Values: false);
        var (ty, tl) = TrainAttentionForwardOnDevice(c, q, k, v, b, t, heads, kvh, hd);
        return Tolerance.Compare(c.Get(ty), ry, 1e-5f, 1e-4f).And(Tolerance.Compare(c.Get(tl), rl, 1e-5f, 1e-5f));
    }

    /// <summary>The training backward (dq, dk, dv) against CpuOps.AttentionBackward, from the device's own forward.</summary>
    private static Comparison TrainAttentionBackward(CheckContext c, (int Batch, int SeqLen, int Heads, int KvHeads, int Hd) shape)
    {
        var (b, t, heads, kvh, hd) = shape;
        int n = b * t;
        c.Note($"{b} sequences of {t}, {heads}/{kvh} heads of {hd}");
        var (q, k, v, _, rl) = TrainAttentionReference(c, b, t, heads, kvh, hd, bf16Values: false);
        var dyv = c.Random(n * heads * hd, 1f);
        var rdq = new float[q.Length];
        var rdk = new float[k.Length];
        var rdv = new float[v.Length];
        LoRI.Backend.Cpu.CpuOps.AttentionBackward(q, k, v, rl, dyv, b, t, heads, kvh, hd, rdq, rdk, rdv);
        var (tdq, tdk, tdv, backward) = TrainAttentionOnDevice(c, q, k, v, dyv, b, t, heads, kvh, hd);
        c.Timed = backward;
        // sums over up to t positions and the group's heads of products of order 1
        return Tolerance.Compare(c.Get(tdq), rdq, 2e-5f, 1e-4f)
            .And(Tolerance.Compare(c.Get(tdk), rdk, 2e-5f, 1e-4f))
            .And(Tolerance.Compare(c.Get(tdv), rdv, 2e-5f, 1e-4f));
    }

    /// <summary>Random values in [-1, 1] that are bf16 numbers, so staging them in bf16 is exact (see Tolerance.Bf16AttentionForward).</summary>
    private static float[] Bf16Values(CheckContext c, int n) => c.Random(n, 1f).Select(Bf16.Round).ToArray();

    private static float MaxAbs(float[] a) => a.Length == 0 ? 0 : a.Max(MathF.Abs);

    /// <summary>
    /// The tensor-core training forward against CpuOps.AttentionForwardWithLse, on bf16-valued inputs, or on any
    /// fp32 values (then the bound of staging them, Tolerance.Bf16AttentionForwardStaged, applies).
    /// </summary>
    private static Comparison TcTrainForward(CheckContext c, (int Batch, int SeqLen, int Heads, int KvHeads, int Hd) shape, bool bf16Inputs = true)
    {
        var (b, t, heads, kvh, hd) = shape;
        int n = b * t;
        c.Note($"{b} sequences of {t}, {heads}/{kvh} heads of {hd}, {(bf16Inputs ? "bf16-valued" : "fp32")} inputs, tensor cores");
        var (q, k, v, ry, rl) = TrainAttentionReference(c, b, t, heads, kvh, hd, bf16Inputs);
        var (ty, tl) = TrainAttentionForwardOnDevice(c, q, k, v, b, t, heads, kvh, hd);
        ExpectKernel(c, $"flash_attention_tc_forward_d{hd}");
        // the log-sum-exp is fp32 on exact scores for bf16 inputs (unrounded P in the sum); staged scores move it by at most their own error
        float ds = bf16Inputs ? 0 : Tolerance.Bf16StagedScoreError(MaxAbs(q), MaxAbs(k), hd);
        float yTol = bf16Inputs ? Tolerance.Bf16AttentionForward(MaxAbs(v)) : Tolerance.Bf16AttentionForwardStaged(MaxAbs(v), ds);
        return Tolerance.Compare(c.Get(ty), ry, yTol, 1e-4f).And(Tolerance.Compare(c.Get(tl), rl, ds + 1e-5f, 1e-5f));
    }

    /// <summary>
    /// The tensor-core backward against CpuOps.AttentionBackward, on bf16-valued inputs, from the device's own
    /// forward; the allowance (Tolerance.Bf16AttentionBackward) takes max |dy.v| and the largest column mass of P
    /// from the reference in double precision.
    /// </summary>
    private static Comparison TcTrainBackward(CheckContext c, (int Batch, int SeqLen, int Heads, int KvHeads, int Hd) shape)
    {
        var (b, t, heads, kvh, hd) = shape;
        int n = b * t, group = heads / kvh;
        c.Note($"{b} sequences of {t}, {heads}/{kvh} heads of {hd}, tensor cores");
        var (q, k, v, ry, rl) = TrainAttentionReference(c, b, t, heads, kvh, hd, bf16Values: true);
        var dyv = Bf16Values(c, n * heads * hd);
        var rdq = new float[q.Length];
        var rdk = new float[k.Length];
        var rdv = new float[v.Length];
        CpuOps.AttentionBackward(q, k, v, rl, dyv, b, t, heads, kvh, hd, rdq, rdk, rdv);

        double scale = 1 / Math.Sqrt(hd), maxDp = 0;
        var mass = new double[n * kvh];
        for (int s = 0; s < b; s++)
            for (int h = 0; h < heads; h++)
                for (int i = 0; i < t; i++)
                {
                    long qi = ((long)(s * t + i) * heads + h) * hd;
                    for (int j = 0; j <= i; j++)
                    {
                        long kj = ((long)(s * t + j) * kvh + h / group) * hd;
                        double dot = 0, dp = 0;
                        for (int d = 0; d < hd; d++)
                        {
                            dot += (double)q[qi + d] * k[kj + d];
                            dp += (double)dyv[qi + d] * v[kj + d];
                        }
                        mass[(s * t + j) * kvh + h / group] += Math.Exp(dot * scale - rl[(s * t + i) * heads + h]);
                        maxDp = Math.Max(maxDp, Math.Abs(dp));
                    }
                }
        var tol = Tolerance.Bf16AttentionBackward((float)scale, (float)maxDp, (float)mass.Max(), MaxAbs(q), MaxAbs(k), MaxAbs(dyv));

        var (tdq, tdk, tdv, backward) = TrainAttentionOnDevice(c, q, k, v, dyv, b, t, heads, kvh, hd);
        ExpectKernel(c, $"flash_attention_tc_backward_dkdv_d{hd}");
        c.Timed = backward;
        return Tolerance.Compare(c.Get(tdq), rdq, tol.Dq, 1e-4f)
            .And(Tolerance.Compare(c.Get(tdk), rdk, tol.Dk, 1e-4f))
            .And(Tolerance.Compare(c.Get(tdv), rdv, tol.Dv, 1e-4f));
    }

    /// <summary>
    /// IBackend.Attention on tensor cores (a prefill: many tokens at once) against the CPU backend: a chunk of
    /// consecutive positions of slot 1 ending at the cache's last position, then a few tokens at random slots and
    /// positions (so a block of 64 rows walks two slots). bf16-valued q and cache. Then once more with the last
    /// token's slot out of range: that row must be NaN and the others unchanged.
    /// </summary>
    private static Comparison TcPrefill(CheckContext c, int heads, int hd)
    {
        int s = 2, t = c.Pick(128, 100), kvHeads = 2, n = c.Pick(64, 37), chunk = n - 5;
        c.Note($"{n} tokens ({chunk} consecutive, 5 scattered), {heads}/{kvHeads} heads of {hd}, cache [{s}, {t}], tensor cores");
        var kv = Bf16Values(c, s * t * kvHeads * hd);
        var vv = Bf16Values(c, s * t * kvHeads * hd);
        var (dk, ck) = c.Both(kv, DType.F32, s, t, kvHeads * hd);
        var (dv, cv) = c.Both(vv, DType.F32, s, t, kvHeads * hd);
        var (dq, cq) = c.Both(Bf16Values(c, n * heads * hd), DType.F32, n, heads * hd);
        var slots = new int[n];
        var pos = new int[n];
        for (int i = 0; i < n; i++)
        {
            bool inChunk = i < chunk;
            slots[i] = inChunk ? 1 : c.Rng.Next(s);
            pos[i] = inChunk ? t - chunk + i : c.Rng.Next(t);
        }
        var (dsl, csl) = c.BothInts(slots, n);
        var (dp, cp) = c.BothInts(pos, n);
        var dy = c.Device.Allocate(DType.F32, n, heads * hd);
        var cy = c.Cpu.Allocate(DType.F32, n, heads * hd);
        c.Own(dy, cy);
        c.Device.Attention(dq, dk, dv, dsl, dp, heads, kvHeads, hd, dy);
        ExpectKernel(c, $"flash_attention_tc_forward_d{hd}");
        c.Cpu.Attention(cq, ck, cv, csl, cp, heads, kvHeads, hd, cy);
        var cmp = c.Compare(dy, cy, Tolerance.Bf16AttentionForward(MaxAbs(vv)), 1e-4f);
        // a token whose slot is out of range gets a NaN row (the CPU backend throws instead); the others are unchanged
        var good = c.Get(dy);
        var bad = (int[])slots.Clone();
        bad[^1] = s;
        c.Device.Upload<int>(bad, dsl);
        c.Device.Attention(dq, dk, dv, dsl, dp, heads, kvHeads, hd, dy);
        var got = c.Get(dy);
        int width = heads * hd;
        for (int e = 0; e < got.Length; e++)
            if (e >= (n - 1) * width ? !float.IsNaN(got[e]) : got[e] != good[e])
                throw new InvalidOperationException($"slot {s} (out of range) for the last token: element {e} is {got[e]}, expected {(e >= (n - 1) * width ? "NaN" : good[e])}");
        c.Device.Upload<int>(slots, dsl);
        c.Timed = () => c.Device.Attention(dq, dk, dv, dsl, dp, heads, kvHeads, hd, dy);
        return cmp;
    }

    /// <summary>
    /// GradNorm + AdamWStep over two tensors for three steps, clipped per tensor or globally (the coefficients
    /// formed on the host from the device's norms, as TrainingGraph does): against the AdamW formulas in double,
    /// and against the CPU backend's ops, which the kernel matches operation for operation.
    /// </summary>
    private static Comparison AdamW(CheckContext c, bool masked, bool globalNorm, bool compact = false)
    {
        int n1 = c.Pick(4096, 1000), n2 = c.Pick(1024, 333);
        const double lr = 1e-2, wd = 0.01;
        const float maxNorm = 1f;
        var opts = new Training.AdamWOptions { WeightDecay = wd };
        const int steps = 3;
        c.Note($"tensors [{n1}] and [{n2}], {steps} steps, {(masked ? "masked, " : "")}{(compact ? "compact state over ~10% live entries, " : "")}" +
               $"{(globalNorm ? "global" : "per-tensor")} norm clipping");
        int[] sizes = [n1, n2];
        var p = sizes.Select(s => c.Random(s, 1f)).ToArray();
        var mask = sizes.Select(s => masked || compact ? c.Ints(s, 10).Select(v => (byte)(v == 0 ? 1 : 0)).ToArray() : null).ToArray();
        var live = mask.Select(mk => compact ? Enumerable.Range(0, mk!.Length).Where(i => mk[i] != 0).ToArray() : null).ToArray();
        var grads = Enumerable.Range(0, steps).Select(_ => sizes.Select(s => c.Random(s, 3f)).ToArray()).ToArray();

        // reference in double
        var rp = p.Select(a => a.Select(v => (double)v).ToArray()).ToArray();
        var rm = sizes.Select(s => new double[s]).ToArray();
        var rv = sizes.Select(s => new double[s]).ToArray();
        for (int step = 1; step <= steps; step++)
        {
            var g = grads[step - 1].Select((a, ti) => a.Select((v, i) => mask[ti] is { } mk && mk[i] == 0 ? 0.0 : v).ToArray()).ToArray();
            var sq = g.Select(a => a.Sum(v => v * v)).ToArray();
            var coef = globalNorm
                ? Enumerable.Repeat(Math.Min(1, maxNorm / (Math.Sqrt(sq.Sum()) + 1e-6)), sizes.Length).ToArray()
                : sq.Select(q => Math.Min(1, maxNorm / (Math.Sqrt(q) + 1e-6))).ToArray();
            double bc1 = 1 - Math.Pow(opts.Beta1, step), bc2 = 1 - Math.Pow(opts.Beta2, step);
            for (int ti = 0; ti < sizes.Length; ti++)
                for (int i = 0; i < sizes[ti]; i++)
                {
                    if (compact && mask[ti]![i] == 0) continue;
                    double gi = g[ti][i] * coef[ti];
                    rp[ti][i] -= lr * wd * rp[ti][i];
                    rm[ti][i] = opts.Beta1 * rm[ti][i] + (1 - opts.Beta1) * gi;
                    rv[ti][i] = opts.Beta2 * rv[ti][i] + (1 - opts.Beta2) * gi * gi;
                    rp[ti][i] -= lr / bc1 * rm[ti][i] / (Math.Sqrt(rv[ti][i]) / Math.Sqrt(bc2) + opts.Eps);
                }
        }

        ITrainingOps dev = c.Device, cpu = (ITrainingOps)c.Cpu;
        (Tensor D, Tensor C)[] Pairs(Func<int, float[]> init) => sizes.Select((_, ti) => init(ti)).Select(a => c.Both(a, DType.F32, a.Length)).ToArray();
        var tp = Pairs(ti => p[ti]);
        var tg = Pairs(ti => new float[sizes[ti]]);
        var tm = Pairs(ti => new float[live[ti]?.Length ?? sizes[ti]]);
        var tv = Pairs(ti => new float[live[ti]?.Length ?? sizes[ti]]);
        var tmask = mask.Select((mk, ti) => mk is null || compact ? ((Tensor?)null, (Tensor?)null) : (c.UpBytes(mk, sizes[ti]), c.UpBytesCpu(mk, sizes[ti]))).ToArray();
        var tlive = live.Select(lv => lv is null ? ((Tensor?)null, (Tensor?)null) : c.BothInts(lv, lv.Length)).ToArray();
        var norms = c.Both(new float[sizes.Length], DType.F32, sizes.Length);
        var coefs = c.Both(new float[sizes.Length], DType.F32, sizes.Length);
        var devNorms = new float[sizes.Length];
        var cpuNorms = new float[sizes.Length];
        var gradMask = mask.Select((mk, ti) => mk is null ? ((Tensor?)null, (Tensor?)null) : (c.UpBytes(mk, sizes[ti]), c.UpBytesCpu(mk, sizes[ti]))).ToArray();
        var normCmp = new Comparison(0, 0, 0, -1, 0, 0, 0);
        for (int step = 1; step <= steps; step++)
        {
            for (int ti = 0; ti < sizes.Length; ti++)
            {
                c.Device.Upload<float>(grads[step - 1][ti], tg[ti].D);
                c.Cpu.Upload<float>(grads[step - 1][ti], tg[ti].C);
                dev.GradNorm(tg[ti].D, gradMask[ti].Item1, norms.Device, ti);
                cpu.GradNorm(tg[ti].C, gradMask[ti].Item2, norms.Cpu, ti);
            }
            c.Device.Download<float>(norms.Device, devNorms);
            c.Cpu.Download<float>(norms.Cpu, cpuNorms);
            normCmp = normCmp.And(Tolerance.Compare(devNorms, cpuNorms, 1e-6f, 1e-6f));
            // the coefficients as the training graph forms them, from the CPU's norms so both sides step alike
            double total = Math.Sqrt(cpuNorms.Sum(x => (double)x * x));
            var coef = cpuNorms.Select(nrm => Training.GradClip.Coefficient(globalNorm ? (float)total : nrm, maxNorm)).ToArray();
            c.Device.Upload<float>(coef, coefs.Device);
            c.Cpu.Upload<float>(coef, coefs.Cpu);
            var s = Training.AdamW.Scalars(lr, opts, step);
            for (int ti = 0; ti < sizes.Length; ti++)
            {
                dev.AdamWStep(tp[ti].D, tg[ti].D, tm[ti].D, tv[ti].D, tlive[ti].Item1, tmask[ti].Item1, coefs.Device, ti, s);
                cpu.AdamWStep(tp[ti].C, tg[ti].C, tm[ti].C, tv[ti].C, tlive[ti].Item2, tmask[ti].Item2, coefs.Cpu, ti, s);
            }
        }
        var s4 = Training.AdamW.Scalars(lr, opts, steps + 1);
        c.Timed = () => dev.AdamWStep(tp[0].D, tg[0].D, tm[0].D, tv[0].D, tlive[0].Item1, tmask[0].Item1, coefs.Device, 0, s4);
        var cmp = normCmp;
        for (int ti = 0; ti < sizes.Length; ti++)
        {
            var got = c.Get(tp[ti].D);
            cmp = cmp.And(Tolerance.Compare(got, ToFloat(rp[ti]), 1e-6f, 1e-5f))
                     .And(Tolerance.Compare(got, c.Get(tp[ti].C), 1e-7f, 1e-7f))
                     .And(Tolerance.Compare(c.Get(tm[ti].D), c.Get(tm[ti].C), 1e-7f, 1e-7f))
                     .And(Tolerance.Compare(c.Get(tv[ti].D), c.Get(tv[ti].C), 1e-7f, 1e-7f));
            if (mask[ti] is { } mk)
                for (int i = 0; i < sizes[ti]; i++)
                {
                    // masked entries: no gradient ever, so only weight decay moves them (and nothing at all in compact state)
                    double expect = compact ? p[ti][i] : p[ti][i] * Math.Pow(1 - lr * wd, steps);
                    if (mk[i] == 0 && Math.Abs(got[i] - expect) > 1e-6)
                        throw new InvalidOperationException($"adamw: masked entry {i} of tensor {ti} is {got[i]}, expected {expect}");
                }
        }
        return cmp;
    }

    /// <summary>
    /// lora_apply against the CPU backend's, B dense or compact at ~90% sparsity (LoRI-S), at decode token
    /// counts (the warp kernels) and prefill counts (GEMMs for the shrink and a dense expand).
    /// </summary>
    private static Comparison LoraApply(CheckContext c, LoraBForm form, bool decode, int fusedBlocks = 0)
    {
        int inDim = c.Pick(128, 45), outDim = c.Pick(96, 70), rank = c.Pick(16, 13);
        int n = decode ? c.Pick(8, 3) : c.Pick(64, 37);
        const float scale = 0.75f;
        c.Note($"x [{n}, {inDim}], A [{rank}, {inDim}], B [{outDim}, {rank}] {form}, scale {scale}{(fusedBlocks > 0 ? $", one launch of {fusedBlocks} blocks" : "")}");
        var a = c.Random(rank * inDim, 1f);
        var b = c.Random(outDim * rank, 1f);
        var keep = c.Ints(b.Length, 10);
        for (int i = 0; i < b.Length; i++)
            if (keep[i] != 0) b[i] = 0;
        using var df = LoraFactors.Create(c.Device, a, b, rank, inDim, outDim, form);
        using var cf = LoraFactors.Create(c.Cpu, a, b, rank, inDim, outDim, form);
        var (dx, cx) = c.Both(c.Random(n * inDim, 1f), DType.F32, n, inDim);
        var (dy, cy) = c.Both(c.Random(n * outDim, 1f), DType.F32, n, outDim);
        int was = c.Device.LoraFusedDecodeBlocks;
        c.Device.LoraFusedDecodeBlocks = fusedBlocks;
        try
        {
            c.Device.LoraApply(dx, df, scale, dy);
        }
        finally
        {
            c.Device.LoraFusedDecodeBlocks = was;
        }
        ((IAdapterOps)c.Cpu).LoraApply(cx, cf, scale, cy);
        var cmp = c.Compare(dy, cy, 2e-5f * MathF.Sqrt(inDim), 1e-5f);
        c.Timed = null;
        return cmp;
    }

    /// <summary>Which path of CudaBackend.LinearWithAdapters a check (or test) drives.</summary>
    public enum LinearLoraPath { DecodeShrinkRows, DecodeGemvEpilogue, DecodeUnfused, TensorCoreShrinkRows, TensorCoreKConcat, TensorCoreUnfused }

    /// <summary>
    /// linear_lora (y = x W^T + sum_i s_i B_i (A_i x), bf16 W) against the CPU backend's MatMul + lora_apply, one adapter per
    /// entry of <paramref name="forms"/> / <paramref name="ranks"/>, B ~90% zeros (LoRI-S) in both forms.
    /// Decode paths (3 tokens ragged, 4 aligned): fp32 throughout, so the CPU's ops are the reference as they are.
    /// Tensor-core paths (bf16 activations): x, A and B hold bf16 values, so only each adapter's u = bf16(s x A^T) is
    /// rounded on the device; the reference rounds its own u the same way (from a double-precision sum), and the
    /// tolerance allows a one-ulp difference in u (2^-7 |u| |B|) per adapter where the fp32 and double sums fall on
    /// both sides of a rounding boundary. Aligned shapes are tile multiples where the kernels tile (K, rank % 8);
    /// ragged ones are not.
    /// </summary>
    public static Comparison LinearLora(CheckContext c, LinearLoraPath path, LoraBForm[] forms, int[] ranks)
    {
        bool decode = path is LinearLoraPath.DecodeShrinkRows or LinearLoraPath.DecodeGemvEpilogue or LinearLoraPath.DecodeUnfused;
        int n = decode ? c.Pick(4, 3) : c.Pick(128, 37);
        int inDim = decode ? c.Pick(256, 315) : c.Pick(128, 101);
        int outDim = decode ? c.Pick(128, 70) : c.Pick(128, 70);
        var scales = new[] { 0.75f, -1.5f, 0.5f, 2f };
        c.Note($"x [{n}, {inDim}], W [{outDim}, {inDim}] bf16, {path}, adapters {string.Join(", ", forms.Select((f, i) => $"rank {ranks[i]} {f} scale {scales[i % 4]}"))}");
        // bf16-representable inputs, so the device's conversions of x, A and B are exact
        var xv = c.Random(n * inDim, 1f).Select(Bf16.Round).ToArray();
        var (dx, cx) = c.Both(xv, DType.F32, n, inDim);
        var (dw, cw) = c.Both(c.Random(outDim * inDim, 1f), DType.BF16, outDim, inDim);
        var terms = new LoraTerm[forms.Length];
        var cterms = new LoraTerm[forms.Length];
        var factors = new List<(float[] A, float[] B)>();
        for (int i = 0; i < forms.Length; i++)
        {
            int r = ranks[i];
            var a = c.Random(r * inDim, 1f).Select(Bf16.Round).ToArray();
            var b = c.Random(outDim * r, 1f).Select(Bf16.Round).ToArray();
            var drop = c.Ints(b.Length, 10);
            for (int e = 0; e < b.Length; e++)
                if (drop[e] != 0) b[e] = 0;
            factors.Add((a, b));
            terms[i] = new LoraTerm(c.Keep(LoraFactors.Create(c.Device, a, b, r, inDim, outDim, forms[i])), scales[i % 4]);
            cterms[i] = new LoraTerm(c.Keep(LoraFactors.Create(c.Cpu, a, b, r, inDim, outDim, forms[i])), scales[i % 4]);
        }
        var dy = c.Up(c.Random(n * outDim, 1f), DType.F32, n, outDim);  // garbage: the op writes y
        var cy = c.Cpu.Allocate(DType.F32, n, outDim);
        c.Own(cy);
        c.Cpu.MatMul(cx, cw, cy);
        bool tensorCore = !decode && path != LinearLoraPath.TensorCoreUnfused;
        float uFlip = 0;
        if (tensorCore)
        {
            // every adapter through a rounded u, as the device does it
            for (int i = 0; i < forms.Length; i++)
            {
                var (a, b) = factors[i];
                int r = ranks[i];
                var u = new float[n * r];
                float maxU = 0, maxB = b.Max(MathF.Abs);
                for (int q = 0; q < n; q++)
                    for (int j = 0; j < r; j++)
                    {
                        double acc = 0;
                        for (int k = 0; k < inDim; k++) acc += (double)xv[q * inDim + k] * a[j * inDim + k];
                        u[q * r + j] = Bf16.Round((float)(scales[i % 4] * acc));
                        maxU = Math.Max(maxU, MathF.Abs(u[q * r + j]));
                    }
                var cu = c.UpCpu(u, DType.F32, n, r);
                var cb = c.UpCpu(b, DType.F32, outDim, r);
                c.Cpu.MatMul(cu, cb, cy, 1f, accumulate: true);
                uFlip += 2 * MathF.Pow(2, -8) * maxU * maxB;
            }
        }
        else
            for (int i = 0; i < forms.Length; i++) ((IAdapterOps)c.Cpu).LoraApply(cx, cterms[i].Factors, cterms[i].Scale, cy);

        var device = c.Device;
        var decodeVariant = path switch
        {
            LinearLoraPath.DecodeGemvEpilogue => LoraDecodeVariant.GemvEpilogue,
            LinearLoraPath.DecodeUnfused => LoraDecodeVariant.Unfused,
            _ => LoraDecodeVariant.ShrinkRows,
        };
        var prefillVariant = path switch
        {
            LinearLoraPath.TensorCoreKConcat => LoraPrefillVariant.KConcat,
            LinearLoraPath.TensorCoreUnfused => LoraPrefillVariant.Unfused,
            _ => LoraPrefillVariant.ShrinkRows,
        };
        void Run()
        {
            var saved = (device.LinearLoraDecode, device.LinearLoraPrefill, device.Bf16Activations);
            try
            {
                (device.LinearLoraDecode, device.LinearLoraPrefill, device.Bf16Activations) = (decodeVariant, prefillVariant, !decode);
                device.LinearWithAdapters(dx, dw, terms, dy);
            }
            finally
            {
                (device.LinearLoraDecode, device.LinearLoraPrefill, device.Bf16Activations) = saved;
            }
        }
        Run();
        int maxRank = ranks.Max();
        var cmp = c.Compare(dy, cy, 2e-5f * MathF.Sqrt(inDim + maxRank) * forms.Length + uFlip, 1e-5f);
        c.Timed = Run;
        return cmp;
    }

    private static Comparison LoraGradB(CheckContext c)
    {
        int n = c.Pick(32, 37), outDim = c.Pick(64, 70), rank = c.Pick(16, 13);
        const float scale = 2f;
        c.Note($"dy [{n}, {outDim}], u [{n}, {rank}], mask keeping ~10%");
        var dyv = c.Random(n * outDim, 1f);
        var u = c.Random(n * rank, 1f);
        var db0 = c.Random(outDim * rank, 1f);
        var mask = c.Ints(outDim * rank, 10).Select(v => (byte)(v == 0 ? 1 : 0)).ToArray();
        var expected = new double[db0.Length];
        for (int o = 0; o < outDim; o++)
            for (int j = 0; j < rank; j++)
            {
                double s = 0;
                for (int i = 0; i < n; i++) s += (double)dyv[i * outDim + o] * u[i * rank + j];
                expected[o * rank + j] = mask[o * rank + j] != 0 ? db0[o * rank + j] + scale * s : db0[o * rank + j];
            }
        var tdy = c.Up(dyv, DType.F32, n, outDim);
        var tu = c.Up(u, DType.F32, n, rank);
        var tdb = c.Up(db0, DType.F32, outDim, rank);
        var tm = c.UpBytes(mask, outDim * rank);
        c.Device.LoraGradB(tdy, tu, tm, scale, tdb);
        c.Timed = () => c.Device.LoraGradB(tdy, tu, tm, scale, tdb);
        return Tolerance.Compare(c.Get(tdb), ToFloat(expected), 1e-5f, 1e-5f);
    }

    /// <summary>Random q, k, v of a training batch (bf16 values, or any fp32) and the CPU's forward output and lse on them.</summary>
    private static (float[] Q, float[] K, float[] V, float[] Y, float[] Lse) TrainAttentionReference(CheckContext c, int b, int t, int heads,
                                                                                                     int kvh, int hd, bool bf16Values)
    {
        int n = b * t;
        float[] Values(int count) => bf16Values ? Bf16Values(c, count) : c.Random(count, 1f);
        var q = Values(n * heads * hd);
        var k = Values(n * kvh * hd);
        var v = Values(n * kvh * hd);
        var y = new float[q.Length];
        var lse = new float[n * heads];
        CpuOps.AttentionForwardWithLse(q, k, v, b, t, heads, kvh, hd, y, lse);
        return (q, k, v, y, lse);
    }

    /// <summary>The training attention forward on the device (timed by the check): its output and lse.</summary>
    private static (Tensor Y, Tensor Lse) TrainAttentionForwardOnDevice(CheckContext c, float[] q, float[] k, float[] v, int b, int t, int heads, int kvh, int hd)
    {
        int n = b * t;
        var tq = c.Up(q, DType.F32, n, heads * hd);
        var tk = c.Up(k, DType.F32, n, kvh * hd);
        var tv = c.Up(v, DType.F32, n, kvh * hd);
        var ty = c.Device.Allocate(DType.F32, n, heads * hd);
        var tl = c.Device.Allocate(DType.F32, n, heads);
        c.Own(ty, tl);
        c.Device.AttentionForwardWithLse(tq, tk, tv, b, t, heads, kvh, hd, ty, tl);
        c.Timed = () => c.Device.AttentionForwardWithLse(tq, tk, tv, b, t, heads, kvh, hd, ty, tl);
        return (ty, tl);
    }

    /// <summary>
    /// Uploads q, k, v, dy of a training batch, runs the attention forward (with lse) and backward on the device, and
    /// returns dq, dk, dv with the backward call for timing.
    /// </summary>
    private static (Tensor Dq, Tensor Dk, Tensor Dv, Action Backward) TrainAttentionOnDevice(CheckContext c, float[] q, float[] k, float[] v,
                                                                                            float[] dy, int b, int t, int heads, int kvh, int hd)
    {
        int n = b * t;
        var tq = c.Up(q, DType.F32, n, heads * hd);
        var tk = c.Up(k, DType.F32, n, kvh * hd);
        var tv = c.Up(v, DType.F32, n, kvh * hd);
        var tdy = c.Up(dy, DType.F32, n, heads * hd);
        var ty = c.Device.Allocate(DType.F32, n, heads * hd);
        var tl = c.Device.Allocate(DType.F32, n, heads);
        var tdq = c.Device.Allocate(DType.F32, n, heads * hd);
        var tdk = c.Device.Allocate(DType.F32, n, kvh * hd);
        var tdv = c.Device.Allocate(DType.F32, n, kvh * hd);
        c.Own(ty, tl, tdq, tdk, tdv);
        c.Device.AttentionForwardWithLse(tq, tk, tv, b, t, heads, kvh, hd, ty, tl);
        c.Device.AttentionBackward(tq, tk, tv, ty, tl, tdy, b, t, heads, kvh, hd, tdq, tdk, tdv);
        return (tdq, tdk, tdv, () => c.Device.AttentionBackward(tq, tk, tv, ty, tl, tdy, b, t, heads, kvh, hd, tdq, tdk, tdv));
    }

    /// <summary>dTable[ids[i]] += dy[i] with repeated ids, against the CPU backend's scatter-add.</summary>
    private static Comparison EmbeddingBackward(CheckContext c)
    {
        int n = c.Pick(64, 37), d = c.Pick(128, 45), vocab = c.Pick(32, 19);
        c.Note($"dy [{n}, {d}], table [{vocab}, {d}], ids repeating");
        var ids = c.Ints(n, vocab);
        var (did, cid) = c.BothInts(ids, n);
        var (ddy, cdy) = c.Both(c.Random(n * d, 1f), DType.F32, n, d);
        var (dt, ct) = c.Both(c.Random(vocab * d, 1f), DType.F32, vocab, d);
        c.Device.EmbeddingBackward(did, ddy, dt);
        ((ITrainingOps)c.Cpu).EmbeddingBackward(cid, cdy, ct);
        c.Timed = () => c.Device.EmbeddingBackward(did, ddy, dt);
        // each entry is a sum of the same terms in the same (token) order on both sides
        return c.Compare(dt, ct, 0f, 0f);
    }

    private static Comparison Transpose(CheckContext c)
    {
        int rows = c.Pick(64, 37), cols = c.Pick(96, 70);
        c.Note($"[{rows}, {cols}] -> [{cols}, {rows}]");
        var (ds, cs) = c.Both(c.Random(rows * cols, 1f), DType.F32, rows, cols);
        var (dd, cd) = c.Both(new float[rows * cols], DType.F32, cols, rows);
        c.Device.Transpose(ds, dd);
        ((ITrainingOps)c.Cpu).Transpose(cs, cd);
        c.Timed = () => c.Device.Transpose(ds, dd);
        return c.Compare(dd, cd, 0f, 0f);
    }

    /// <summary>dx = dy W and dW += dy^T x against double-precision loops.</summary>
    private static Comparison MatMulBackward(CheckContext c, DType wtype, bool input)
    {
        int n = c.Pick(64, 37), m = c.Pick(128, 70), k = c.Pick(64, 45);
        c.Note($"dy [{n}, {m}], {(input ? $"W [{m}, {k}] {wtype}" : $"x [{n}, {k}]")}, accumulate");
        var dyv = c.Random(n * m, 1f);
        var other = c.Random(input ? m * k : n * k, 1f).Select(v => Round(v, wtype)).ToArray();
        int rows = input ? n : m;
        var y0 = c.Random(rows * k, 1f);
        var expected = new double[rows * k];
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < k; j++)
            {
                double s = y0[r * k + j];
                if (input) for (int q = 0; q < m; q++) s += (double)dyv[r * m + q] * other[q * k + j];
                else for (int q = 0; q < n; q++) s += (double)dyv[q * m + r] * other[q * k + j];
                expected[r * k + j] = s;
            }
        var tdy = c.Up(dyv, DType.F32, n, m);
        var ty = c.Up(y0, DType.F32, rows, k);
        // the fp32 SIMT kernel (the tensor-core path, which rounds dy and x to bf16, has its own checks)
        bool was = c.Device.Bf16Activations;
        c.Device.Bf16Activations = false;
        try
        {
            if (input)
            {
                var tw = c.Up(other, wtype, m, k);
                c.Device.MatMulBackwardInput(tdy, tw, ty, 1f, accumulate: true);
            }
            else
            {
                var tx = c.Up(other, DType.F32, n, k);
                c.Device.MatMulBackwardWeight(tdy, tx, ty, 1f, accumulate: true);
            }
        }
        finally
        {
            c.Device.Bf16Activations = was;
        }
        c.Timed = null;
        return Tolerance.Compare(c.Get(ty), ToFloat(expected), 2e-5f * MathF.Sqrt(input ? m : n), 1e-5f);
    }

    /// <summary>
    /// The tensor-core backward products as MatMulBackwardInput / MatMulBackwardWeight choose them (Bf16Activations on:
    /// dy, and for dW x, cast to bf16 into scratch; the cp.async or the register-staged kernel by shape) against the CPU
    /// backend's ITrainingOps on F32 copies. exact: the F32 inputs hold bf16 values, so staging rounds nothing and only
    /// the order of the fp32 sums differs; otherwise any F32 values, within Tolerance.Bf16StagedSumFactor of
    /// |alpha| sum_i |A(r, i) B(i, c)| (+ |the accumulated output|) per element.
    /// </summary>
    private static Comparison MatMulBackwardTensorCore(CheckContext c, bool input, (int N, int M, int K) aligned, (int N, int M, int K) ragged,
                                                       float alpha, bool accumulate, bool exact)
    {
        var (n, m, k) = c.Ragged ? ragged : aligned;
        int rows = input ? n : m, inner = input ? m : n;
        c.Note((input ? $"dy [{n}, {m}] x W [{m}, {k}] bf16 -> dx" : $"dy [{n}, {m}]^T x x [{n}, {k}] -> dW") +
               $", alpha {alpha}{(accumulate ? ", accumulate" : "")}, {(exact ? "bf16-valued" : "any")} F32 inputs, " +
               $"{(m % 8 == 0 && k % 8 == 0 ? "cp.async" : "register-staged")} tiles");
        var dyv = c.Random(n * m, 1f);
        var other = c.Random(input ? m * k : n * k, 1f);
        if (exact || input) other = other.Select(Bf16.Round).ToArray();   // W is bf16 as stored
        if (exact) dyv = dyv.Select(Bf16.Round).ToArray();
        var y0 = accumulate ? c.Random(rows * k, 1f) : new float[rows * k];
        var tdy = c.Up(dyv, DType.F32, n, m);
        var tb = c.Up(other, input ? DType.BF16 : DType.F32, input ? m : n, k);
        var ty = c.Up(y0, DType.F32, rows, k);
        var cdy = c.UpCpu(dyv, DType.F32, n, m);
        var cb = c.UpCpu(other, DType.F32, input ? m : n, k);
        var cy = c.UpCpu(y0, DType.F32, rows, k);
        void Run()
        {
            bool was = c.Device.Bf16Activations;
            c.Device.Bf16Activations = true;
            try
            {
                if (input) c.Device.MatMulBackwardInput(tdy, tb, ty, alpha, accumulate);
                else c.Device.MatMulBackwardWeight(tdy, tb, ty, alpha, accumulate);
            }
            finally
            {
                c.Device.Bf16Activations = was;
            }
        }
        Run();
        var ops = (ITrainingOps)c.Cpu;
        if (input) ops.MatMulBackwardInput(cdy, cb, cy, alpha, accumulate);
        else ops.MatMulBackwardWeight(cdy, cb, cy, alpha, accumulate);
        c.Timed = Run;
        if (exact) return c.Compare(ty, cy, 2e-5f * MathF.Sqrt(inner), 1e-5f);
        double f = Tolerance.Bf16StagedSumFactor(inner, input ? 1 : 2);
        var allowed = new double[rows * k];
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < k; j++)
            {
                double mag = 0;
                if (input) for (int i = 0; i < m; i++) mag += Math.Abs((double)dyv[r * m + i] * other[i * k + j]);
                else for (int i = 0; i < n; i++) mag += Math.Abs((double)dyv[i * m + r] * other[i * k + j]);
                allowed[r * k + j] = f * (Math.Abs(alpha) * mag + Math.Abs(y0[r * k + j]));
            }
        return Tolerance.Compare(c.Get(ty), c.Get(cy), allowed, 2e-7f);
    }

    /// <summary>The chunked lm_head cross-entropy (loss, dh, dW, the weighted total) against CpuOps.LmHeadCrossEntropy.</summary>
    private static Comparison CrossEntropy(CheckContext c, DType wtype)
    {
        int n = c.Pick(16, 7), dim = c.Pick(64, 45), vocab = c.Pick(512, 300);
        const int chunk = 128;
        c.Note($"h [{n}, {dim}], W [{vocab}, {dim}] {wtype}, chunks of {chunk}, one row without a target");
        var h = c.Random(n * dim, 1f);
        var w = c.Random(vocab * dim, 0.5f).Select(v => Round(v, wtype)).ToArray();
        var targets = c.Ints(n, vocab);
        targets[1] = -1;
        targets[^1] = vocab - 1;
        var weights = c.Random(n, 0.5f).Select(v => v + 0.6f).ToArray();
        var dw0 = c.Random(vocab * dim, 0.1f);
        var rloss = new float[n];
        var rdh = new float[n * dim];
        var rdw = (float[])dw0.Clone();
        double rtotal = LoRI.Backend.Cpu.CpuOps.LmHeadCrossEntropy(h, w, dim, targets, weights, rloss, rdh, rdw, new float[n * chunk]);
        var th = c.Up(h, DType.F32, n, dim);
        var tw = c.Up(w, wtype, vocab, dim);
        var tt = c.UpInts(targets, n);
        var twt = c.Up(weights, DType.F32, n);
        var tloss = c.Device.Allocate(DType.F32, n);
        var tdh = c.Device.Allocate(DType.F32, n, dim);
        c.Own(tloss, tdh);
        var tdw = c.Up(dw0, DType.F32, vocab, dim);
        // fp32 activations into the lm_head, as the CPU reference has them
        bool was = c.Device.Bf16Activations;
        c.Device.Bf16Activations = false;
        double total;
        try
        {
            total = c.Device.LmHeadCrossEntropy(th, tw, tt, twt, tloss, tdh, tdw, chunk);
        }
        finally
        {
            c.Device.Bf16Activations = was;
        }
        c.Timed = () => c.Device.LmHeadCrossEntropy(th, tw, tt, twt, tloss, null, null, chunk);
        return Tolerance.Compare(c.Get(tloss), rloss, 1e-5f, 1e-5f)
            .And(Tolerance.Compare(c.Get(tdh), rdh, 1e-6f, 1e-4f))
            .And(Tolerance.Compare(c.Get(tdw), rdw, 1e-6f, 1e-4f))
            .And(Tolerance.Compare([(float)total], [(float)rtotal], 1e-5f, 1e-5f));
    }

    private static Comparison Argmax(CheckContext c)
    {
        int rows = c.Pick(8, 5), v = c.Pick(4096, 1237);
        c.Note($"[{rows}, {v}] with planted ties");
        var x = c.Random(rows * v, 4f);
        var expected = new int[rows];
        for (int r = 0; r < rows; r++)
        {
            // plant a tie of the maximum at two places: the lower index must win
            int a = (r * 131) % v, b = (a + v / 2 + r) % v;
            x[r * v + a] = 10f;
            x[r * v + b] = 10f;
            expected[r] = Math.Min(a, b);
        }
        var tx = c.Up(x, DType.F32, rows, v);
        var ids = c.Device.Allocate(DType.I32, rows);
        c.Own(ids);
        c.Device.Argmax(tx, ids);
        c.Timed = () => c.Device.Argmax(tx, ids);
        return Tolerance.CompareExact(c.GetInts(ids), expected);
    }

    private static Comparison SampleTopP(CheckContext c)
    {
        int rows = c.Pick(8, 6), v = c.Pick(2048, 999);
        const float temperature = 0.8f, topP = 0.9f;
        c.Note($"[{rows}, {v}], temperature {temperature}, top-p {topP}");
        var x = c.Random(rows * v, 6f);
        var u = c.Random(rows, 0.5f).Select(a => a + 0.5f).ToArray();
        u[0] = 0f;
        var expected = new int[rows];
        for (int r = 0; r < rows; r++)
        {
            var row = x.AsSpan(r * v, v);
            float mx = float.NegativeInfinity;
            foreach (var l in row) mx = Math.Max(mx, l);
            var p = new double[v];
            for (int j = 0; j < v; j++) p[j] = Math.Exp((row[j] - mx) / (double)temperature);
            double z = p.Sum();
            // the nucleus: the largest probabilities, smallest prefix holding top-p of the mass, ties kept
            var sorted = p.OrderByDescending(q => q).ToArray();
            double run = 0, tau = sorted[0];
            foreach (var q in sorted)
            {
                run += q;
                tau = q;
                if (run >= topP * z) break;
            }
            double mass = p.Where(q => q >= tau).Sum(), goal = u[r] * mass, acc = 0;
            expected[r] = -1;
            for (int j = 0; j < v && expected[r] < 0; j++)
            {
                if (p[j] < tau) continue;
                acc += p[j];
                if (acc > goal) expected[r] = j;
            }
        }
        var tx = c.Up(x, DType.F32, rows, v);
        var tu = c.Up(u, DType.F32, rows);
        var ids = c.Device.Allocate(DType.I32, rows);
        c.Own(ids);
        c.Device.SampleTopP(tx, temperature, topP, tu, ids);
        c.Timed = () => c.Device.SampleTopP(tx, temperature, topP, tu, ids);
        return Tolerance.CompareExact(c.GetInts(ids), expected);
    }

    /// <summary>
    /// sample_rows against a double-precision twin of its rule (temperature, top-k with ties kept, top-p over the
    /// top-k mass with ties kept, then the first token whose running sum passes u * nucleus mass) and of its random
    /// number, the hash of (seed, slot, position + 1).
    /// </summary>
    private static Comparison SampleRows(CheckContext c, int topK, float topP, bool wide = false)
    {
        // wide: a vocabulary past CudaBackend.SampleRowsWideVocab, where the kernel runs 1024 threads per row
        int rows = wide ? c.Pick(3, 2) : c.Pick(8, 6);
        int v = wide ? c.Pick(32768, CudaBackend.SampleRowsWideVocab + 3627) : c.Pick(2048, 999);
        const float temperature = 0.8f;
        const ulong seed = 0x5EED1234UL;
        c.Note($"[{rows}, {v}], temperature {temperature}, top-k {topK}, top-p {topP}");
        var x = c.Random(rows * v, 6f);
        var slots = new int[rows];
        var positions = new int[rows];
        var expected = new int[rows];
        for (int r = 0; r < rows; r++)
        {
            slots[r] = r % 3;
            positions[r] = 7 * r + 1;
            var row = x.AsSpan(r * v, v);
            float mx = float.NegativeInfinity;
            foreach (var l in row) mx = Math.Max(mx, l);
            var p = new double[v];
            for (int j = 0; j < v; j++) p[j] = Math.Exp((row[j] - mx) / (double)temperature);
            var sorted = p.OrderByDescending(q => q).ToArray();
            double tau = topK > 0 && topK < v ? sorted[topK - 1] : 0;
            double kept = p.Where(q => q >= tau).Sum();
            if (topP < 1)
            {
                double run = 0;
                foreach (var q in sorted)
                {
                    run += q;
                    tau = q;
                    if (run >= topP * kept) break;
                }
            }
            double mass = p.Where(q => q >= tau).Sum(), goal = SampleUniform(seed, slots[r], positions[r] + 1) * mass, acc = 0;
            expected[r] = -1;
            for (int j = 0; j < v && expected[r] < 0; j++)
            {
                if (p[j] < tau) continue;
                acc += p[j];
                if (acc > goal) expected[r] = j;
            }
        }
        var tx = c.Up(x, DType.F32, rows, v);
        var ts = c.Device.Allocate(DType.I32, rows);
        var tp = c.Device.Allocate(DType.I32, rows);
        var ids = c.Device.Allocate(DType.I32, rows);
        c.Own(ts, tp, ids);
        c.Device.Upload<int>(slots, ts);
        c.Device.Upload<int>(positions, tp);
        c.Device.SampleRows(tx, temperature, topK, topP, seed, ts, tp, ids);
        c.Timed = () => c.Device.SampleRows(tx, temperature, topK, topP, seed, ts, tp, ids);
        return Tolerance.CompareExact(c.GetInts(ids), expected);
    }

    /// <summary>The random number of sample_rows (native/kernels/sampling.cu, sr_uniform): 24 bits of a splitmix64 hash.</summary>
    public static float SampleUniform(ulong seed, int slot, int position)
    {
        static ulong Mix(ulong z)
        {
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            return z ^ (z >> 31);
        }
        ulong h = Mix(seed + 0x9E3779B97F4A7C15UL * (uint)(slot + 1));
        h = Mix(h + 0xD1B54A32D192ED03UL * (uint)(position + 1));
        return (h >> 40) * (1f / 16777216f);
    }

    // ---- helpers ------------------------------------------------------------------------------------

    private static float Round(float v, DType t) => t switch
    {
        DType.BF16 => Bf16.Round(v),
        DType.F16 => (float)(Half)v,
        _ => v,
    };

    private static float[] ToFloat(double[] a) => a.Select(v => (float)v).ToArray();
}

/// <summary>Inputs and outputs of one check on both backends; disposes every tensor it made.</summary>
public sealed class CheckContext : IDisposable
{
    private readonly List<Tensor> _owned = new();
    private readonly List<IDisposable> _kept = new();
    public CudaBackend Device { get; }
    public IBackend Cpu { get; }
    public bool Ragged { get; }
    public Random Rng { get; }
    /// <summary>The device op alone, for timing; set by the check.</summary>
    public Action? Timed { get; set; }
    public float Atol { get; private set; }
    public string ShapeNote { get; private set; } = "";

    public CheckContext(CudaBackend device, IBackend cpu, bool ragged, string name)
    {
        Device = device;
        Cpu = cpu;
        Ragged = ragged;
        Rng = new Random(name.Aggregate(17, (h, ch) => h * 31 + ch) ^ (ragged ? 0x5bd1 : 0));
    }

    public int Pick(int aligned, int ragged) => Ragged ? ragged : aligned;
    public void Note(string shapes) => ShapeNote = shapes;
    public void Own(params Tensor[] ts) => _owned.AddRange(ts);

    /// <summary>Disposes <paramref name="d"/> (e.g. LoRA factors) with the context, before its tensors.</summary>
    public T Keep<T>(T d) where T : IDisposable
    {
        _kept.Add(d);
        return d;
    }

    public float[] Random(int n, float scale)
    {
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float)((Rng.NextDouble() * 2 - 1) * scale);
        return a;
    }

    public int[] Ints(int n, int below)
    {
        var a = new int[n];
        for (int i = 0; i < n; i++) a[i] = Rng.Next(below);
        return a;
    }

    private Tensor UpTo(IBackend b, float[] data, DType dtype, int[] shape)
    {
        var t = b.Allocate(dtype, shape);
        _owned.Add(t);
        switch (dtype)
        {
            case DType.F32: b.Upload<float>(data, t); break;
            case DType.BF16: b.Upload<ushort>(data.Select(Bf16.FromFloat).ToArray(), t); break;
            case DType.F16: b.Upload<ushort>(data.Select(v => BitConverter.HalfToUInt16Bits((Half)v)).ToArray(), t); break;
            default: throw new ArgumentException($"no upload of floats as {dtype}");
        }
        return t;
    }

    /// <summary>The same values on the device and on the CPU (in the given dtype).</summary>
    public (Tensor Device, Tensor Cpu) Both(float[] data, DType dtype, params int[] shape) =>
        (UpTo(Device, data, dtype, shape), UpTo(Cpu, data, dtype, shape));

    public (Tensor Device, Tensor Cpu) BothInts(int[] data, params int[] shape) => (UpInts(Device, data, shape), UpInts(Cpu, data, shape));

    public Tensor Up(float[] data, DType dtype, params int[] shape) => UpTo(Device, data, dtype, shape);
    public Tensor UpCpu(float[] data, DType dtype, params int[] shape) => UpTo(Cpu, data, dtype, shape);
    public Tensor UpInts(int[] data, params int[] shape) => UpInts(Device, data, shape);

    private Tensor UpInts(IBackend b, int[] data, int[] shape)
    {
        var t = b.Allocate(DType.I32, shape);
        _owned.Add(t);
        b.Upload<int>(data, t);
        return t;
    }

    public Tensor UpBytes(byte[] data, params int[] shape) => UpBytes(Device, data, shape);
    public Tensor UpBytesCpu(byte[] data, params int[] shape) => UpBytes(Cpu, data, shape);

    private Tensor UpBytes(IBackend b, byte[] data, int[] shape)
    {
        var t = b.Allocate(DType.U8, shape);
        _owned.Add(t);
        b.Upload<byte>(data, t);
        return t;
    }

    /// <summary>A tensor's values as floats (bf16 / f16 converted exactly).</summary>
    public float[] Get(Tensor t)
    {
        var b = t.Backend;
        switch (t.DType)
        {
            case DType.F32:
            {
                var r = new float[t.Length];
                b.Download<float>(t, r);
                return r;
            }
            case DType.BF16:
            case DType.F16:
            {
                var h = new ushort[t.Length];
                b.Download<ushort>(t, h);
                return t.DType == DType.BF16 ? h.Select(Bf16.ToFloat).ToArray() : h.Select(F16.ToFloat).ToArray();
            }
            default: throw new ArgumentException($"no float view of {t}");
        }
    }

    public int[] GetInts(Tensor t)
    {
        var r = new int[t.Length];
        t.Backend.Download<int>(t, r);
        return r;
    }

    /// <summary>Device tensor against CPU tensor under the tolerance rule.</summary>
    public Comparison Compare(Tensor device, Tensor cpu, float atol, float rtol)
    {
        Atol = atol;
        return Tolerance.Compare(Get(device), Get(cpu), atol, rtol);
    }

    public void Dispose()
    {
        foreach (var d in _kept) d.Dispose();
        _kept.Clear();
        foreach (var t in _owned) t.Dispose();
        _owned.Clear();
        // the backend's scratch (GEMM staging, attention partials, adapter and cross-entropy buffers) as well:
        // a check leaves the arena as it found it
        if (!Device.IsCapturing) Device.ReleaseScratch();
    }
}
