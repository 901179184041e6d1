using System.Text.Json;
using LoRI.Cuda.Backend;
using LoRI.Cuda.Bench;
using LoRI.Cuda.Checks;

namespace LoRI.Tests.Cuda;

/// <summary>
/// The GPU benchmark's code run end to end on the emulator at tiny shapes (the figures mean nothing there; the
/// report's structure, the GEMM cross-checks and the decode through the captured graph are what is tested).
/// </summary>
public class GpuBenchTests
{
    [Test]
    public void TinyBenchmark_OnTheEmulator_WritesEveryFigure()
    {
        using var be = CudaBackend.CreateEmulated();
        var buffer = new System.Buffers.ArrayBufferWriter<byte>();
        using (var w = new Utf8JsonWriter(buffer))
            GpuBench.Run(be, GpuBenchOptions.Tiny, w);
        using var doc = JsonDocument.Parse(buffer.WrittenMemory);
        var r = doc.RootElement;
        TestContext.Out.WriteLine(System.Text.Encoding.UTF8.GetString(buffer.WrittenSpan));
        Assert.That(r.GetProperty("backend").GetString(), Is.EqualTo("cuda-emu"));
        var gemm = r.GetProperty("gemm").EnumerateArray().ToArray();
        Assert.That(gemm, Has.Length.EqualTo(3));
        foreach (var g in gemm)
        {
            Assert.That(g.GetProperty("tensor_core_tflops").GetDouble(), Is.GreaterThan(0));
            Assert.That(g.GetProperty("tiled_tflops").GetDouble(), Is.GreaterThan(0));
            // same bf16 inputs, fp32 sums in another order
            Assert.That(g.GetProperty("max_abs_diff_vs_tiled").GetDouble(), Is.LessThan(1e-4));
            Assert.That(g.GetProperty("cublas").GetString(), Does.Contain("emulator"));
        }
        var backward = r.GetProperty("gemm_backward").EnumerateArray().ToArray();
        Assert.That(backward, Has.Length.EqualTo(2));
        foreach (var g in backward)
        {
            foreach (var f in new[] { "input_tensor_core_tflops", "input_simt_tflops", "weight_tensor_core_tflops", "weight_simt_tflops" })
                Assert.That(g.GetProperty(f).GetDouble(), Is.GreaterThan(0), f);
            // bf16-staged against fp32: dx rounds dy (|dy W| terms <= 0.05, at most 96 of them), dW rounds dy and x
            // (terms <= 1, 24 tokens); Bf16StagedSumFactor's 2^-8 per rounded factor bounds the differences below these
            Assert.That(g.GetProperty("input_max_abs_diff_vs_simt").GetDouble(), Is.LessThan(96 * 0.05 / 256 * 1.1));
            Assert.That(g.GetProperty("weight_max_abs_diff_vs_simt").GetDouble(), Is.LessThan(24 * 2.0 / 256 * 1.1));
        }
        Assert.That(r.GetProperty("attention").GetProperty("forward_tflops").GetDouble(), Is.GreaterThan(0));
        Assert.That(r.GetProperty("attention").GetProperty("backward_tflops").GetDouble(), Is.GreaterThan(0));
        var attention = r.GetProperty("attention");
        Assert.That(attention.GetProperty("tensor_core_kernel").GetString(), Is.EqualTo("flash_attention_tc_forward_d16"));
        Assert.That(attention.GetProperty("tensor_core_forward_tflops").GetDouble(), Is.GreaterThan(0));
        Assert.That(attention.GetProperty("tensor_core_backward_tflops").GetDouble(), Is.GreaterThan(0));
        // RandomFill values within [-1, 1], not bf16 values: the staged-input bound, plus the fp32 allowance of a reference near 1
        var hd = GpuBenchOptions.Tiny.Config.HeadDim;
        double allowed = Tolerance.Bf16AttentionForwardStaged(1f, Tolerance.Bf16StagedScoreError(1f, 1f, hd)) + 1e-4;
        Assert.That(attention.GetProperty("tensor_core_max_abs_diff_vs_simt").GetDouble(), Is.GreaterThan(0).And.LessThanOrEqualTo(allowed));
        var decode = r.GetProperty("decode");
        Assert.That(decode.GetProperty("tokens_per_s").GetDouble(), Is.GreaterThan(0));
        Assert.That(decode.GetProperty("fraction_of_bandwidth_bound").GetDouble(), Is.GreaterThan(0));
        Assert.That(decode.GetProperty("tokens").GetString()!.Split(','), Has.Length.EqualTo(GpuBenchOptions.Tiny.DecodeTokens));
        Assert.That(r.GetProperty("prefill").GetProperty("tokens_per_s").GetDouble(), Is.GreaterThan(0));
        var adapter = r.GetProperty("adapter_overhead");
        Assert.That(adapter.GetProperty("decode_tokens_per_s").GetDouble(), Is.GreaterThan(0));
        Assert.That(adapter.TryGetProperty("prefill_overhead", out _), Is.True);
        Assert.That(adapter.GetProperty("decode_fused_variants").EnumerateArray().Select(v => v.GetProperty("decode_tokens_per_s").GetDouble()),
                    Has.All.GreaterThan(0));
        foreach (var (array, figure, count) in new[] { ("decode_linear_lora_variants", "decode_tokens_per_s", 3), ("prefill_linear_lora_variants", "prefill_tokens_per_s", 3) })
        {
            var variants = adapter.GetProperty(array).EnumerateArray().ToArray();
            var names = variants.Select(v => v.GetProperty("variant").GetString()).ToArray();
            Assert.That(names, Is.Unique.And.Length.EqualTo(count));
            Assert.That(variants.Select(v => v.GetProperty(figure).GetDouble()), Has.All.GreaterThan(0));
        }
        // per module: 3 shapes x 2 B forms x (decode, prefill), each with its 3 variants timed against the plain product
        var modules = r.GetProperty("linear_lora").EnumerateArray().ToArray();
        Assert.That(modules, Has.Length.EqualTo(12));
        foreach (var m in modules)
        {
            Assert.That(m.GetProperty("plain_us").GetDouble(), Is.GreaterThan(0));
            var variants = m.GetProperty("variants").EnumerateArray().ToArray();
            Assert.That(variants, Has.Length.EqualTo(3));
            Assert.That(variants.Select(v => v.GetProperty("us").GetDouble()), Has.All.GreaterThan(0));
        }
        var training = r.GetProperty("training");
        foreach (var method in new[] { "lora", "lori-d", "lori-s", "full" })
        {
            var t = training.GetProperty(method);
            Assert.That(t.GetProperty("tokens_per_s").GetDouble(), Is.GreaterThan(0), method);
            Assert.That(t.GetProperty("training_peak_bytes").GetDouble(), Is.GreaterThan(0), method);
            Assert.That(double.IsFinite(t.GetProperty("loss").GetDouble()), method);
        }
        // LoRI-S trains the mask's entries only (about a tenth of LoRI-D's B), LoRA trains A as well
        double Trainable(string m) => training.GetProperty(m).GetProperty("trainable_parameters").GetDouble();
        Assert.That(Trainable("lori-s"), Is.LessThan(0.2 * Trainable("lori-d")));
        Assert.That(Trainable("lora"), Is.GreaterThan(Trainable("lori-d")));
    }
}
