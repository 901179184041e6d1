using LoRI.Backend;
using LoRI.Backend.Cpu;
using LoRI.Cuda.Backend;
using LoRI.Cuda.Driver;

namespace LoRI.Cuda;

/// <summary>
/// The `--device` choice, as a library call: "cpu", "cuda" (device 0), "cuda:N", "cuda-emu" (the host
/// emulator) or "auto" (the first CUDA device when one is present, else the CPU).
/// </summary>
public static class Devices
{
    public const string Choices = "cpu, cuda, cuda:N, cuda-emu or auto";

    public static IBackend Create(string device)
    {
        switch (device)
        {
            case "cpu":
                return new CpuBackend();
            case "cuda-emu":
                return CudaBackend.CreateEmulated();
            case "cuda":
                return CudaBackend.CreateDevice(0);
            case "auto":
            {
                var d = CudaDriver.TryOpen(0, out _);
                return d is null ? new CpuBackend() : new CudaBackend(d);
            }
        }
        if (device.StartsWith("cuda:", StringComparison.Ordinal) && int.TryParse(device.AsSpan(5), out var ordinal) && ordinal >= 0)
            return CudaBackend.CreateDevice(ordinal);
        throw new ArgumentException($"unknown device '{device}': expected {Choices}");
    }

    /// <summary>A CUDA backend for "cuda", "cuda:N", "cuda-emu", or "auto" (a device if present, else the emulator).</summary>
    public static CudaBackend CreateCuda(string device)
    {
        if (device == "auto")
        {
            var d = CudaDriver.TryOpen(0, out _);
            return d is null ? CudaBackend.CreateEmulated() : new CudaBackend(d);
        }
        var b = device is "cpu" ? null : Create(device);
        if (b is CudaBackend c) return c;
        b?.Dispose();
        throw new ArgumentException($"device '{device}' is not a CUDA device: expected cuda, cuda:N, cuda-emu or auto");
    }
}
