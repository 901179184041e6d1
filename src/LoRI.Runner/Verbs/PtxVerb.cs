using LoRI.Cuda.Driver;

namespace LoRI.Runner.Verbs;

/// <summary>
/// `ptx --out DIR`: compiles every kernel family with NVRTC for compute_80 and compute_90 and writes
/// DIR/FAMILY.sm_80.ptx and .sm_90.ptx, the names the CUDA backend looks for ($LORI_PTX_DIR, or ptx/
/// next to the program), plus FAMILY.sm_90a.ptx for the sm_90a families (KernelSources.Sm90aFamilies) when NVRTC
/// is 12 or newer. Used to ship PTX to a machine with a GPU without compiling there.
/// </summary>
public static class PtxVerb
{
    public static readonly Verb Verb = new("ptx", "compile every CUDA kernel to PTX with NVRTC (compute_80, compute_90)",
        "ptx --out DIR", Run);

    private static int Run(Args a)
    {
        var dir = a.Require("out");
        a.EnsureAllUsed();
        var nvrtc = Nvrtc.TryLoad(out var reason) ?? throw new LoRIException(reason);
        Directory.CreateDirectory(dir);
        foreach (var family in KernelSources.Families)
            foreach (var arch in new[] { "compute_80", "compute_90", "compute_90a" })
            {
                if (arch == "compute_90a" && (nvrtc.Version.Major < 12 || !KernelSources.Sm90aFamilies.Contains(family))) continue;
                var ptx = nvrtc.CompileToPtx(KernelSources.Source(family), family + ".cu", KernelSources.Headers, KernelSources.NvrtcOptions(arch), out _);
                var file = Path.Combine(dir, $"{family}.{arch.Replace("compute_", "sm_")}.ptx");
                var tmp = file + ".tmp";
                File.WriteAllText(tmp, ptx);
                File.Move(tmp, file, overwrite: true);
                Console.Out.WriteLine($"{file}: {ptx.Length} bytes ({nvrtc.LibraryName} {nvrtc.Version.Major}.{nvrtc.Version.Minor})");
            }
        return 0;
    }
}
