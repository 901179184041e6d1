using System.Text.Json;
using LoRI.Cuda.Backend;
using LoRI.Cuda.Bench;

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
        Assert.That(r.GetProperty("attention").GetProperty("forward_tflops").GetDouble(), Is.GreaterThan(0));
        Assert.That(r.GetProperty("attention").GetProperty("backward_tflops").GetDouble(), Is.GreaterThan(0));
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
