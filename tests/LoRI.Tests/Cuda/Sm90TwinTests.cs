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

    internal static TensorMap BoxMap(ICudaDriver driver, ulong address, int rows, int k) =>
        driver.EncodeTensorMapTiled(TensorMapDataType.BFloat16, address, [(ulong)k, (ulong)rows], [(ulong)k * 2], [64, 128], [1, 1],
                                    TensorMapSwizzle.Bytes128, TensorMapL2Promotion.None, TensorMapOobFill.None);

    /// <summary>A box read back where the wgmma descriptors look for (row, k): swizzle, position and zero fill past the edges.</summary>
    [TestCase(0, 0)]
    [TestCase(64, 40)]
    [TestCase(-8, -3)]
    public void Tma_BoxLandsSwizzledWithZerosPastTheEdges(int c0, int c1)
    {
        using var h = Open();
        const int rows = 100, k = 72;
        var rng = new Random(c0 * 7 + c1);
        var src = new ushort[rows * k];
        for (int i = 0; i < src.Length; i++) src[i] = Bf16.FromFloat((float)(rng.NextDouble() * 2 - 1));
        var map = BoxMap(h.Driver, h.Upload(src), rows, k);
        var o = h.Zeros<ushort>(128 * 64);
        h.Launch(M, "sm90_tma_box", 1, 128, 1024 + 64 * 128 * 2 + 8, map, o, c0, c1);
        var got = h.Download<ushort>(o, 128 * 64);
        for (int r = 0; r < 128; r++)
            for (int e = 0; e < 64; e++)
            {
                int gr = c1 + r, gk = c0 + e;
                ushort want = gr >= 0 && gr < rows && gk >= 0 && gk < k ? src[gr * k + gk] : (ushort)0;
                Assert.That(got[r * 64 + e], Is.EqualTo(want), $"box element (row {r}, k {e}) = x[{gr}, {gk}]");
            }
    }

    [Test]
    public void Mbarrier_PhasesCompleteInTurnAndAreNamedByParity()
    {
        using var h = Open();
        var o = h.Zeros<int>(6);
        h.Launch(M, "sm90_mbarrier_phases", 1, 64, 1024 + 8, o, 0);
        Assert.That(h.Download<int>(o, 6), Is.EqualTo(new[] { 1, 0, 1, 0, 1, 0 }));
    }
}

public class Sm90TwinTests : Sm90TwinTestsBase
{
    [Test]
    public void Mbarrier_WaitThatCanNeverComplete_IsReportedAsDeadlock()
    {
        using var h = Open();
        var o = h.Zeros<int>(6);
        var e = Assert.Throws<CudaException>(() => h.Launch(M, "sm90_mbarrier_phases", 1, 64, 1024 + 8, o, 1))!;
        Assert.That(e.Message, Does.Contain("deadlock").And.Contain("spinning"));
    }

    [Test]
    public void TensorMapEncode_RejectsWhatTheDriverRejects()
    {
        using var h = Open();
        var p = h.Zeros<ushort>(4096);
        Assert.That(() => BoxMap(h.Driver, p + 2, 32, 64), Throws.TypeOf<CudaException>().With.Message.Contains("16-byte aligned"));
        Assert.That(() => BoxMap(h.Driver, p, 32, 60), Throws.TypeOf<CudaException>().With.Message.Contains("multiple of 16"));
        Assert.That(() => h.Driver.EncodeTensorMapTiled(TensorMapDataType.BFloat16, p, [128, 32], [256], [128, 32], [1, 1],
                                                        TensorMapSwizzle.Bytes128, TensorMapL2Promotion.None, TensorMapOobFill.None),
                    Throws.TypeOf<CudaException>().With.Message.Contains("exceeds the 128-byte swizzle span"));
        Assert.That(() => h.Driver.EncodeTensorMapTiled(TensorMapDataType.BFloat16, p, [64, 32], [128], [64, 257], [1, 1],
                                                        TensorMapSwizzle.Bytes128, TensorMapL2Promotion.None, TensorMapOobFill.None),
                    Throws.TypeOf<CudaException>().With.Message.Contains("boxDim[1] = 257"));
    }

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

    /// <summary>
    /// MatMul inside a graph capture: before the decision it records gemm_tc (deciding needs launches and downloads);
    /// after it, the recorded wgmma launch is the cp.async kernel (a recorded emulator launch keeps no tensor maps).
    /// Both replays must give the product.
    /// </summary>
    [TestCase(false)]
    [TestCase(true)]
    public void Backend_MatMulInsideACapture_ReplaysTheProduct(bool decideFirst)
    {
        using var be = new CudaBackend(new EmulatorDriver(computeCapability: 90)) { Bf16Activations = true };
        using var cpu = new LoRI.Backend.Cpu.CpuBackend();
        const int n = 40, m = 136, k = 200;
        var rng = new Random(7);
        var xv = Enumerable.Range(0, n * k).Select(_ => Bf16.Round((float)(rng.NextDouble() * 2 - 1))).ToArray();
        var wv = Enumerable.Range(0, m * k).Select(_ => Bf16.FromFloat((float)(rng.NextDouble() * 2 - 1))).ToArray();
        using var x = be.Allocate(DType.F32, n, k);
        using var w = be.Allocate(DType.BF16, m, k);
        using var y = be.Allocate(DType.F32, n, m);
        be.Upload<float>(xv, x);
        be.Upload<ushort>(wv, w);
        if (decideFirst)
        {
            be.MatMul(x, w, y);
            Assert.That(be.WgmmaActive, Is.True, be.WgmmaStatus);
        }
        else
        {
            // the step once before capturing it (scratch reaches its size) without deciding
            be.UseWgmma = false;
            be.MatMul(x, w, y);
            be.UseWgmma = null;
        }
        be.BeginCapture();
        be.MatMul(x, w, y);
        using var graph = be.EndCapture();
        be.Upload<float>(new float[n * m], y);
        graph.Launch();
        var got = new float[n * m];
        be.Download<float>(y, got);
        // captured before the decision: gemm_tc was recorded and nothing was decided; after it: wgmma (cp.async, since
        // the TMA launcher refuses to record), which a wrong choice of kernel would have turned into an exception
        Assert.That(be.WgmmaStatus, decideFirst ? Does.StartWith("in use") : Does.StartWith("not decided"));
        using var cx = cpu.Allocate(DType.F32, n, k);
        using var cw = cpu.Allocate(DType.BF16, m, k);
        using var cy = cpu.Allocate(DType.F32, n, m);
        cpu.Upload<float>(xv, cx);
        cpu.Upload<ushort>(wv, cw);
        cpu.MatMul(cx, cw, cy);
        var want = new float[n * m];
        cpu.Download<float>(cy, want);
        for (int i = 0; i < want.Length; i++) Assert.That(got[i], Is.EqualTo(want[i]).Within(1e-3 + 1e-4 * Math.Abs(want[i])), $"y[{i / m}, {i % m}]");
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
