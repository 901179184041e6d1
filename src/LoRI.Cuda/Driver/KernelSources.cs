using System.Security.Cryptography;
using System.Text;

namespace LoRI.Cuda.Driver;

/// <summary>
/// The kernel sources (native/kernels/*.cu and native/include/*.cuh, embedded in this assembly) and
/// the PTX made from them: prebuilt by CMake's nvcc step when found, else compiled by NVRTC and kept
/// in a disk cache keyed by the source, the options and the compiler version.
/// </summary>
public static class KernelSources
{
    /// <summary>Names of the kernel families (file names without .cu), sorted.</summary>
    public static IReadOnlyList<string> Families { get; } = typeof(KernelSources).Assembly.GetManifestResourceNames()
        .Where(n => n.StartsWith("kernels/", StringComparison.Ordinal) && n.EndsWith(".cu", StringComparison.Ordinal))
        .Select(n => n["kernels/".Length..^".cu".Length]).Order(StringComparer.Ordinal).ToArray();

    public static string Source(string family) => Resource($"kernels/{family}.cu")
        ?? throw new LoRIException($"no kernel source '{family}.cu' is embedded in LoRI.Cuda (known: {string.Join(", ", Families)})");

    /// <summary>
    /// The headers under every name they are included by: "../include/lori_cuda.cuh" from a kernel,
    /// "lori_cuda.cuh" from a sibling header.
    /// </summary>
    public static IReadOnlyDictionary<string, string> Headers { get; } = typeof(KernelSources).Assembly.GetManifestResourceNames()
        .Where(n => n.StartsWith("include/", StringComparison.Ordinal))
        .SelectMany(n => new[] { ("../" + n, n), (n["include/".Length..], n) })
        .ToDictionary(p => p.Item1, p => Resource(p.Item2)!);

    private static string? Resource(string name)
    {
        using var s = typeof(KernelSources).Assembly.GetManifestResourceStream(name);
        if (s is null) return null;
        using var r = new StreamReader(s, Encoding.UTF8);
        return r.ReadToEnd();
    }

    /// <summary>NVRTC options for a virtual architecture such as "compute_80".</summary>
    public static string[] NvrtcOptions(string arch) => [$"--gpu-architecture={arch}", "--std=c++17", "-default-device"];

    /// <summary>
    /// The PTX file CMake built for this family and device, if any: sm_90a for a compute-capability 9.0
    /// device when present, else the newest of sm_90 / sm_80 the device can run.
    /// </summary>
    public static string? FindPrebuiltPtx(string family, int computeCapability)
    {
        foreach (var dir in PtxDirectories())
        {
            var tags = new List<string>();
            if (computeCapability == 90) tags.Add("sm_90a");
            if (computeCapability >= 90) tags.Add("sm_90");
            if (computeCapability >= 80) tags.Add("sm_80");
            foreach (var tag in tags)
            {
                var f = Path.Combine(dir, $"{family}.{tag}.ptx");
                if (File.Exists(f)) return f;
            }
        }
        return null;
    }

    private static IEnumerable<string> PtxDirectories()
    {
        var env = Environment.GetEnvironmentVariable("LORI_PTX_DIR");
        if (!string.IsNullOrEmpty(env)) yield return env;
        yield return Path.Combine(AppContext.BaseDirectory, "ptx");
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "build", "native", "ptx");
            if (Directory.Exists(candidate)) yield return candidate;
        }
    }

    /// <summary>
    /// PTX for the family: prebuilt when found, else NVRTC (cached on disk). For an sm_90a family on a 9.0 device the
    /// sm_90a build comes first (prebuilt or NVRTC 12+), ahead of a prebuilt compute_90 one.
    /// </summary>
    public static string GetPtx(string family, int computeCapability, out string origin)
    {
        if (computeCapability == 90 && Sm90aFamilies.Contains(family))
        {
            // the sm_90a build beats any other prebuilt PTX of the family: a prebuilt .sm_90a.ptx, else NVRTC 12+
            var sm90a = PtxDirectories().Select(d => Path.Combine(d, $"{family}.sm_90a.ptx")).FirstOrDefault(File.Exists);
            if (sm90a is not null)
            {
                origin = sm90a;
                return File.ReadAllText(sm90a);
            }
            if (Nvrtc.TryLoad(out _) is { Version.Major: >= 12 } recent)
                return CompileCached(recent, family, "compute_90a", out origin);
        }
        var prebuilt = FindPrebuiltPtx(family, computeCapability);
        if (prebuilt is not null)
        {
            origin = prebuilt;
            return File.ReadAllText(prebuilt);
        }
        var nvrtc = Nvrtc.TryLoad(out var reason)
            ?? throw new LoRIException($"no PTX for kernel family '{family}': none was prebuilt (build/native/ptx, $LORI_PTX_DIR) and {reason}");
        return CompileCached(nvrtc, family, NvrtcArchitecture(family, computeCapability, nvrtc.Version.Major), out origin);
    }

    /// <summary>
    /// Families with sm_90a-only kernels (wgmma, TMA), guarded by LORI_SM90A (native/include/lori_sm90.cuh): on a
    /// compute-capability-9.0 device they are compiled for compute_90a where the compiler knows it (NVRTC 12+).
    /// </summary>
    public static IReadOnlySet<string> Sm90aFamilies { get; } = new HashSet<string>(StringComparer.Ordinal) { "gemm_wgmma", "sm90_checks" };

    /// <summary>The NVRTC target for a family on a device: compute_90a (see <see cref="Sm90aFamilies"/>), compute_90 or compute_80.</summary>
    public static string NvrtcArchitecture(string family, int computeCapability, int nvrtcMajor) =>
        computeCapability == 90 && nvrtcMajor >= 12 && Sm90aFamilies.Contains(family) ? "compute_90a"
        : computeCapability >= 90 ? "compute_90" : "compute_80";

    /// <summary>Compiles one family with NVRTC through the disk cache ($LORI_CACHE or ~/.cache/lori/ptx).</summary>
    public static string CompileCached(Nvrtc nvrtc, string family, string arch, out string origin)
    {
        var source = Source(family);
        var options = NvrtcOptions(arch);
        var key = new StringBuilder().Append(source).Append('\0').Append(string.Join(' ', options)).Append('\0')
            .Append(nvrtc.LibraryName).Append(nvrtc.Version.ToString());
        foreach (var (n, t) in Headers.OrderBy(h => h.Key, StringComparer.Ordinal)) key.Append('\0').Append(n).Append('\0').Append(t);
        var hash = Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(key.ToString())))[..16].ToLowerInvariant();
        var dir = CacheDirectory();
        var file = Path.Combine(dir, $"{family}.{arch}.{hash}.ptx");
        if (File.Exists(file))
        {
            origin = file;
            return File.ReadAllText(file);
        }
        var ptx = nvrtc.CompileToPtx(source, family + ".cu", Headers, options, out _);
        try
        {
            Directory.CreateDirectory(dir);
            var tmp = file + "." + Environment.ProcessId + ".tmp";
            File.WriteAllText(tmp, ptx);
            File.Move(tmp, file, overwrite: true);
            origin = file;
        }
        catch (IOException)
        {
            origin = $"NVRTC ({nvrtc.LibraryName}, not cached)";
        }
        catch (UnauthorizedAccessException)
        {
            origin = $"NVRTC ({nvrtc.LibraryName}, not cached)";
        }
        return ptx;
    }

    private static string CacheDirectory()
    {
        var env = Environment.GetEnvironmentVariable("LORI_CACHE");
        if (!string.IsNullOrEmpty(env)) return Path.Combine(env, "ptx");
        var xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        var home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        var root = !string.IsNullOrEmpty(xdg) ? xdg : Path.Combine(string.IsNullOrEmpty(home) ? Path.GetTempPath() : home, ".cache");
        return Path.Combine(root, "lori", "ptx");
    }
}
