using System.Text.RegularExpressions;
using LoRI.Cuda.Driver;

namespace LoRI.Tests.Cuda;

/// <summary>
/// Every kernel family compiles with NVRTC for compute_80 and compute_90, and the PTX holds an entry
/// for every `extern "C" __global__` kernel of its source. NVRTC needs no GPU; where it is absent the
/// tests skip, except when LORI_REQUIRE_NVRTC=1 (CI installs it and sets that).
/// </summary>
public partial class NvrtcCompileTests
{
    public static IEnumerable<TestCaseData> Cases() =>
        from family in KernelSources.Families
        from arch in new[] { "compute_80", "compute_90" }
        select new TestCaseData(family, arch).SetName($"Compile_{family}_{arch}");

    [GeneratedRegex(@"extern\s+""C""\s+__global__\s+(?:__launch_bounds__\([^)]*\)\s+)?void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)\s*\(")]
    private static partial Regex KernelDeclaration();

    [GeneratedRegex(@"\.entry\s+(\w+)\s*\(")]
    private static partial Regex PtxEntry();

    [Test]
    public void EveryFamilyIsEmbedded() =>
        Assert.That(KernelSources.Families, Is.SupersetOf(new[] { "add", "adamw", "attention", "cast", "embedding", "emu_checks", "kvstore", "matmul", "rmsnorm", "rope", "sampling", "swiglu" }));

    [TestCaseSource(nameof(Cases))]
    public void Compile(string family, string arch)
    {
        var nvrtc = Nvrtc.TryLoad(out var reason);
        if (nvrtc is null)
        {
            if (Environment.GetEnvironmentVariable("LORI_REQUIRE_NVRTC") == "1") Assert.Fail(reason);
            Assert.Ignore(reason);
        }
        var source = KernelSources.Source(family);
        var ptx = nvrtc!.CompileToPtx(source, family + ".cu", KernelSources.Headers, KernelSources.NvrtcOptions(arch), out var log);
        var expected = KernelDeclaration().Matches(source).Select(m => m.Groups[1].Value).ToArray();
        var entries = PtxEntry().Matches(ptx).Select(m => m.Groups[1].Value).ToArray();
        TestContext.Out.WriteLine($"{family}.cu {arch} with {nvrtc.LibraryName} {nvrtc.Version}: {ptx.Length} bytes of PTX");
        foreach (var e in entries)
            TestContext.Out.WriteLine($"  .entry {e}");
        if (log.Length > 0) TestContext.Out.WriteLine(log);
        Assert.That(expected, Is.Not.Empty, "no kernels found in the source");
        Assert.That(entries, Is.EquivalentTo(expected), "PTX entries vs the source's extern \"C\" kernels");
        Assert.That(ptx, Does.Contain($".target sm_{arch["compute_".Length..]}"));
    }

    [Test]
    public void Sm90aFamilies_TargetCompute90aOnlyOnHopperWithNvrtc12()
    {
        Assert.That(KernelSources.NvrtcArchitecture("gemm_wgmma", 90, 13), Is.EqualTo("compute_90a"));
        Assert.That(KernelSources.NvrtcArchitecture("gemm_wgmma", 90, 12), Is.EqualTo("compute_90a"));
        Assert.That(KernelSources.NvrtcArchitecture("gemm_wgmma", 90, 11), Is.EqualTo("compute_90"));
        Assert.That(KernelSources.NvrtcArchitecture("gemm_wgmma", 89, 13), Is.EqualTo("compute_80"));
        Assert.That(KernelSources.NvrtcArchitecture("gemm_wgmma", 100, 13), Is.EqualTo("compute_90"));
        Assert.That(KernelSources.NvrtcArchitecture("gemm_tc", 90, 13), Is.EqualTo("compute_90"));
    }

    /// <summary>The sm_90a build of every such family, where NVRTC is 12 or newer (11.8 knows no sm_90a).</summary>
    [TestCaseSource(nameof(Sm90aCases))]
    public void CompileSm90a(string family)
    {
        var nvrtc = Nvrtc.TryLoad(out var reason);
        if (nvrtc is null) Assert.Ignore(reason);
        if (nvrtc!.Version.Major < 12) Assert.Ignore($"{nvrtc.LibraryName} is NVRTC {nvrtc.Version}: compute_90a needs 12+");
        var ptx = nvrtc.CompileToPtx(KernelSources.Source(family), family + ".cu", KernelSources.Headers, KernelSources.NvrtcOptions("compute_90a"), out _);
        Assert.That(ptx, Does.Contain(".target sm_90a"));
        Assert.That(ptx, Does.Contain("wgmma.mma_async"));
    }

    public static IEnumerable<TestCaseData> Sm90aCases() =>
        KernelSources.Sm90aFamilies.Order(StringComparer.Ordinal).Select(f => new TestCaseData(f).SetName($"CompileSm90a_{f}"));

    [Test]
    public void CompileCached_WritesAndReusesTheCache()
    {
        var nvrtc = Nvrtc.TryLoad(out var reason);
        if (nvrtc is null)
        {
            if (Environment.GetEnvironmentVariable("LORI_REQUIRE_NVRTC") == "1") Assert.Fail(reason);
            Assert.Ignore(reason);
        }
        var dir = Path.Combine(Path.GetTempPath(), "lori-ptx-cache-" + Guid.NewGuid().ToString("N"));
        var old = Environment.GetEnvironmentVariable("LORI_CACHE");
        Environment.SetEnvironmentVariable("LORI_CACHE", dir);
        try
        {
            var first = KernelSources.CompileCached(nvrtc!, "add", "compute_80", out var origin1);
            Assert.That(File.Exists(origin1), Is.True, origin1);
            var second = KernelSources.CompileCached(nvrtc!, "add", "compute_80", out var origin2);
            Assert.That(origin2, Is.EqualTo(origin1));
            Assert.That(second, Is.EqualTo(first));
        }
        finally
        {
            Environment.SetEnvironmentVariable("LORI_CACHE", old);
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
        }
    }
}
