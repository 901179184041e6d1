using LoRI.Backend.Cpu;
using LoRI.Cuda;
using LoRI.Cuda.Checks;
using LoRI.Cuda.Driver;

namespace LoRI.Runner.Verbs;

/// <summary>
/// `selftest --device D [--json]`: every CUDA kernel held against the CPU backend at aligned and ragged
/// shapes, then a short timing of each (device events). Exit code 1 when any check fails.
/// </summary>
public static class SelftestVerb
{
    public static readonly Verb Verb = new("selftest", "check every CUDA kernel against the CPU backend, then time it",
        "selftest [--device cuda|cuda:N|cuda-emu|auto] [--json] [--filter NAME] [--repeats N] [--block N]", Run);

    private static int Run(Args a)
    {
        var device = a.Get("device") ?? "auto";
        bool json = a.Flag("json");
        var filter = a.Get("filter");
        int repeats = a.GetInt("repeats", -1);
        int block = a.GetInt("block", 256);
        a.EnsureAllUsed();
        if (repeats < -1) throw new UsageException("--repeats must be >= 0");

        using var cuda = CreateCuda(device);
        using var cpu = new CpuBackend();
        try
        {
            cuda.BlockSize = block;
        }
        catch (ArgumentOutOfRangeException e)
        {
            throw new UsageException($"--block {block}: {e.Message}");
        }
        if (repeats < 0) repeats = cuda.Driver.IsEmulator ? 2 : 20;

        var results = new List<KernelCheckResult>();
        foreach (var ragged in new[] { false, true })
            foreach (var r in KernelChecks.RunAll(cuda, cpu, ragged, ragged ? 0 : repeats, filter))
                results.Add(ragged ? r with { Name = r.Name + ".ragged" } : r);
        if (results.Count == 0) throw new UsageException($"--filter {filter}: no kernel check matches");

        int failed = results.Count(r => !r.Passed);
        if (json)
        {
            Session.WriteJson(w =>
            {
                w.WriteString("device", cuda.Driver.DeviceName);
                w.WriteString("backend", cuda.Name);
                w.WriteNumber("compute_capability", cuda.Driver.ComputeCapability);
                w.WriteNumber("block_size", block);
                w.WriteNumber("failed", failed);
                w.WriteStartObject("wgmma");
                w.WriteBoolean("active", cuda.WgmmaActive);
                w.WriteString("status", cuda.WgmmaStatus);
                w.WriteEndObject();
                w.WriteStartArray("results");
                foreach (var r in results)
                {
                    w.WriteStartObject();
                    w.WriteString("name", r.Name);
                    w.WriteBoolean("passed", r.Passed);
                    if (r.Skipped) w.WriteBoolean("skipped", true);
                    WriteNumberOrNull(w, "max_error", r.MaxError);
                    WriteNumberOrNull(w, "tolerance", r.Tolerance);
                    WriteNumberOrNull(w, "ms", r.Ms);
                    w.WriteString("detail", r.Detail);
                    w.WriteEndObject();
                }
                w.WriteEndArray();
                if (cuda.Driver is CudaDriver real)
                {
                    // registers and spills per kernel, as the driver's JIT compiled them for this device
                    w.WriteStartArray("kernels");
                    foreach (var (name, fn) in cuda.LoadedFunctions.OrderBy(k => k.Key, StringComparer.Ordinal))
                    {
                        var (regs, local, shared) = real.FunctionInfo(fn);
                        w.WriteStartObject();
                        w.WriteString("name", name);
                        w.WriteNumber("registers", regs);
                        w.WriteNumber("local_bytes", local);
                        w.WriteNumber("static_shared_bytes", shared);
                        w.WriteEndObject();
                    }
                    w.WriteEndArray();
                    w.WriteStartObject("ptx");
                    foreach (var (family, origin) in real.PtxOrigins) w.WriteString(family, origin);
                    w.WriteEndObject();
                }
            });
        }
        else
        {
            Console.Out.WriteLine($"device: {cuda.Driver.DeviceName} (sm_{cuda.Driver.ComputeCapability}), block size {block}");
            foreach (var r in results)
                Console.Out.WriteLine($"{(r.Skipped ? "skip" : r.Passed ? "pass" : "FAIL"),-5} {r.Name,-42} max_error {r.MaxError,10:G3}  tol {r.Tolerance,10:G3}  {(double.IsNaN(r.Ms) ? "" : $"{r.Ms,9:F4} ms")}");
            foreach (var r in results.Where(r => !r.Passed))
                Console.Out.WriteLine($"FAIL {r.Name}: {r.Detail}");
            Console.Out.WriteLine($"wgmma GEMM: {(cuda.WgmmaActive ? "" : "not ")}active ({cuda.WgmmaStatus})");
            Console.Out.WriteLine($"{results.Count - failed} passed, {failed} failed");
        }
        return failed == 0 ? 0 : 1;
    }

    private static LoRI.Cuda.Backend.CudaBackend CreateCuda(string device)
    {
        try
        {
            return Devices.CreateCuda(device);
        }
        catch (ArgumentException e)
        {
            throw new UsageException($"--device: {e.Message}");
        }
    }

    private static void WriteNumberOrNull(System.Text.Json.Utf8JsonWriter w, string name, double v)
    {
        if (double.IsFinite(v)) w.WriteNumber(name, v);
        else w.WriteNull(name);
    }
}
