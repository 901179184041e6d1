using System.Text.Json;
using LoRI.Cuda;
using LoRI.Cuda.Bench;

namespace LoRI.Runner.Verbs;

/// <summary>
/// `bench-gpu --device D [--shapes llama3-8b|tiny] [--out FILE]`: the CUDA backend's benchmarks (GEMM against
/// cuBLAS, flash attention, decode and prefill tokens/s of a random model built on the device, the unmerged
/// adapter's overhead) as one JSON object, on stdout or written to FILE. `tiny` runs anywhere, the emulator included.
/// </summary>
public static class BenchGpuVerb
{
    public static readonly Verb Verb = new("bench-gpu", "benchmark the CUDA kernels and the model on a GPU (JSON)",
        "bench-gpu [--device cuda|cuda:N|cuda-emu|auto] [--shapes llama3-8b|tiny] [--out FILE]", Run);

    private static int Run(Args a)
    {
        var device = a.Get("device") ?? "auto";
        var shapes = a.Get("shapes") ?? "llama3-8b";
        var outFile = a.Get("out");
        a.EnsureAllUsed();
        var options = shapes switch
        {
            "llama3-8b" => GpuBenchOptions.Llama3_8B,
            "tiny" => GpuBenchOptions.Tiny,
            _ => throw new UsageException($"--shapes {shapes}: expected llama3-8b or tiny"),
        };
        LoRI.Cuda.Backend.CudaBackend be;
        try
        {
            be = Devices.CreateCuda(device);
        }
        catch (ArgumentException e)
        {
            throw new UsageException($"--device: {e.Message}");
        }
        using (be)
        {
            var buffer = new System.Buffers.ArrayBufferWriter<byte>();
            using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
                GpuBench.Run(be, options, w);
            if (outFile is null)
            {
                Console.Out.WriteLine(System.Text.Encoding.UTF8.GetString(buffer.WrittenSpan));
                return 0;
            }
            var tmp = outFile + ".tmp";
            File.WriteAllBytes(tmp, buffer.WrittenSpan.ToArray());
            File.Move(tmp, outFile, overwrite: true);
        }
        return 0;
    }
}
