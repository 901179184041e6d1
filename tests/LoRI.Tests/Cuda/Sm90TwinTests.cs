using LoRI.Cuda.Backend;
using LoRI.Cuda.Driver;
using LoRI.Cuda.Emulator;
using LoRI.Tensors;

namespace LoRI.Tests.Cuda;

/// <summary>
/// The sm_90a instructions' host twins (native/emu/emu_sm90.cpp) against small programs with known answers
/// (native/kernels/sm90_checks.cu). Written once, bound to the emulator and to a real device whose
/// sm90_checks code is the sm_90a build (skipped elsewhere): the device run is what judges the twins.
/// </summary>
public abstract class Sm90TwinTestsBase
{
    protected const string M = "sm90_checks";
    private protected abstract EmuHarness Open();

    internal static (ushort[] A, ushort[] Bt, float[] C, double[] D) WgmmaProblem(int seed)
    {
        var rng = new Random(seed);
        var a = new ushort[64 * 64];
        var bt = new ushort[128 * 64];
        var c = new float[64 * 128];
        for (int i = 0; i < a.Length; i++) a[i] = Bf16.FromFloat((float)(rng.NextDouble() * 4 - 2));
        for (int i = 0; i < bt.Length; i++) bt[i] = Bf16.FromFloat((float)(rng.NextDouble() * 4 - 2));
        for (int i = 0; i < c.Length; i++) c[i] = (float)(rng.NextDouble() - 0.5);
        var d = new double[64 * 128];
        for (int i = 0; i < 64; i++)
            for (int j = 0; j < 128; j++)
            {
                double s = c[i * 128 + j];
                for (int k = 0; k < 64; k++) s += (double)Bf16.ToFloat(a[i * 64 + k]) * Bf16.ToFloat(bt[j * 64 + k]);
                d[i * 128 + j] = s;
            }
        return (a, bt, c, d);
    }

    internal const int TileSmem = 1024 + 64 * 128 + 128 * 128;

    [TestCase(1)]
    [TestCase(2)]
    public void Wgmma_SwizzledTilesThroughDescriptors_MatchMatrixProduct(int seed)
    {
        using var h = Open();
        var (a, bt, c, d) = WgmmaProblem(seed);
        var o = h.Zeros<float>(64 * 128);
        h.Launch(M, "sm90_wgmma_tile", 1, 128, TileSmem, h.Upload(a), h.Upload(bt), h.Upload(c), o, 0);
        var r = h.Download<float>(o, 64 * 128);
        for (int i = 0; i < r.Length; i++) Assert.That(r[i], Is.EqualTo(d[i]).Within(1e-4), $"D[{i / 128}, {i % 128}]");
    }
}

public class Sm90TwinTests : Sm90TwinTestsBase
{
    private protected override EmuHarness Open() => new(new EmulatorDriver(computeCapability: 90));

    /// <summary>The twin reads its operands at the wait: a tile overwritten before it shows (D = C, not C + AB).</summary>
    [Test]
    public void Wgmma_ReadsOperandsAtTheWait_SoAnEarlyOverwriteShows()
    {
        using var h = Open();
        var (a, bt, c, _) = WgmmaProblem(3);
        var o = h.Zeros<float>(64 * 128);
        h.Launch(M, "sm90_wgmma_tile", 1, 128, TileSmem, h.Upload(a), h.Upload(bt), h.Upload(c), o, 1);
        Assert.That(h.Download<float>(o, 64 * 128), Is.EqualTo(c));
    }

    [Test]
    public void Wgmma_GroupNeverWaitedFor_FailsTheLaunch()
    {
        using var h = Open();
        var (a, bt, c, _) = WgmmaProblem(4);
        var o = h.Zeros<float>(64 * 128);
        var e = Assert.Throws<CudaException>(() => h.Launch(M, "sm90_wgmma_tile", 1, 128, TileSmem, h.Upload(a), h.Upload(bt), h.Upload(c), o, 2))!;
        Assert.That(e.Message, Does.Contain("never waited"));
    }

    /// <summary>A descriptor whose layout the twin does not emulate traps at the wgmma instead of computing garbage.</summary>
    [Test]
    public void Wgmma_UnemulatedDescriptorLayout_FailsTheLaunch()
    {
        using var h = Open();
        var (a, bt, c, _) = WgmmaProblem(5);
        var o = h.Zeros<float>(64 * 128);
        var e = Assert.Throws<CudaException>(() => h.Launch(M, "sm90_wgmma_tile", 1, 128, TileSmem, h.Upload(a), h.Upload(bt), h.Upload(c), o, 3))!;
        Assert.That(e.Message, Does.Contain("only the 128-byte swizzle layout"));
    }

    /// <summary>The automatic choice on an emulator that reports 9.0: probe, first-use check on the twins, then wgmma.</summary>
    [Test]
    public void Backend_OnA90Emulator_ChoosesWgmmaAfterItsCheck()
    {
        using var be = new CudaBackend(new EmulatorDriver(computeCapability: 90));
        var warnings = new List<string>();
        be.Warning = warnings.Add;
        Assert.That(be.WgmmaCodeAvailable, Is.True);
        Assert.That(be.WgmmaActive, Is.True, be.WgmmaStatus);
        Assert.That(be.WgmmaStatus, Does.StartWith("in use: matched the mma.sync GEMM"));
        Assert.That(warnings, Is.Empty);
    }

    [Test]
    public void Backend_On80_KeepsGemmTcQuietly()
    {
        using var be = CudaBackend.CreateEmulated();
        var warnings = new List<string>();
        be.Warning = warnings.Add;
        Assert.That(be.WgmmaActive, Is.False);
        Assert.That(be.WgmmaStatus, Does.Contain("compute capability 8.0"));
        Assert.That(warnings, Is.Empty);
    }
}

[Category("GPU")]
public class DeviceSm90TwinTests : Sm90TwinTestsBase
{
    private protected override EmuHarness Open()
    {
        var d = CudaDriver.TryOpen(0, out var reason);
        if (d is null) Assert.Ignore($"needs a CUDA device: {reason}");
        if (d!.ComputeCapability != 90)
        {
            d.Dispose();
            Assert.Ignore($"needs a compute-capability-9.0 device, {d.DeviceName} is {d.ComputeCapability}");
        }
        var h = new EmuHarness(d);
        var probe = h.Zeros<int>(1);
        h.Launch("gemm_wgmma", "gemm_wgmma_probe", 1, 1, 0, probe);
        if (h.Download<int>(probe, 1)[0] != 1)
        {
            h.Dispose();
            Assert.Ignore("the sm_90a kernels are not available here (no prebuilt .sm_90a.ptx and no NVRTC 12+)");
        }
        return h;
    }
}
