using System.Diagnostics;
using LoRI.Cuda.Driver;
using LoRI.Cuda.Emulator;
using LoRI.Tensors;

namespace LoRI.Tests.Cuda;

/// <summary>
/// The execution model against small programs with known answers (native/kernels/emu_checks.cu): block
/// and warp synchronisation, votes, atomics, the tensor-core instructions. Written once, bound to the
/// emulator (<see cref="EmulatorTests"/>, which adds the failures only the emulator reports: deadlock,
/// out-of-bounds copies, an out-of-bounds kernel write under AddressSanitizer) and to a real device
/// (<see cref="DeviceExecutionModelTests"/>, skipped where there is none).
/// </summary>
public abstract class ExecutionModelTests
{
    protected const string M = "emu_checks";

    /// <summary>A harness on the driver under test (Assert.Ignore when it is unavailable).</summary>
    private protected abstract EmuHarness Open();

    protected static float[] Random(int n, int seed)
    {
        var rng = new Random(seed);
        var x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
        return x;
    }

    [TestCase(32, 5)]
    [TestCase(64, 3)]
    [TestCase(256, 7)]
    [TestCase(1024, 2)]
    public void BlockSum_WithSyncthreads_MatchesSum(int block, int blocks)
    {
        using var h = Open();
        var x = Random(block * blocks, block);
        var dx = h.Upload(x);
        var outStatic = h.Zeros<float>(blocks);
        var outDynamic = h.Zeros<float>(blocks);
        h.Launch(M, "emu_block_sum", blocks, block, 0, dx, outStatic);
        h.Launch(M, "emu_block_sum_dynamic", blocks, block, block * sizeof(float), dx, outDynamic);
        var s = h.Download<float>(outStatic, blocks);
        var d = h.Download<float>(outDynamic, blocks);
        for (int b = 0; b < blocks; b++)
        {
            double expected = 0;
            for (int i = 0; i < block; i++) expected += x[b * block + i];
            Assert.That(s[b], Is.EqualTo(expected).Within(1e-4), $"static shared, block {b}");
            Assert.That(d[b], Is.EqualTo(expected).Within(1e-4), $"dynamic shared, block {b}");
        }
    }

    [Test]
    public void DynamicSharedMemory_Above48K_NeedsTheFunctionAttribute()
    {
        using var h = Open();
        const int block = 64;
        var dx = h.Upload(Random(block, 1));
        var o = h.Zeros<float>(1);
        var e = Assert.Throws<CudaException>(() => h.Launch(M, "emu_block_sum_dynamic", 1, block, 64 * 1024, dx, o))!;
        if (h.Driver.IsEmulator) Assert.That(e.Message, Does.Contain("cuFuncSetAttribute"));
        h.Driver.SetMaxDynamicSharedMemory(h.Function(M, "emu_block_sum_dynamic"), 64 * 1024);
        h.Launch(M, "emu_block_sum_dynamic", 1, block, 64 * 1024, dx, o);
    }

    [TestCase(32)]
    [TestCase(96)]
    [TestCase(512)]
    public void WarpShuffles_MatchLaneArithmetic(int block)
    {
        using var h = Open();
        const int blocks = 3;
        int n = block * blocks, warps = n / 32;
        var x = Random(n, 7);
        var dx = h.Upload(x);
        var o = h.Zeros<float>(3 * warps);
        var bf = h.Zeros<float>(n);
        h.Launch(M, "emu_warp_shuffles", blocks, block, 0, dx, o, bf);
        var r = h.Download<float>(o, 3 * warps);
        var butterfly = h.Download<float>(bf, n);
        for (int w = 0; w < warps; w++)
        {
            double sum = 0;
            for (int l = 0; l < 32; l++) sum += x[w * 32 + l];
            Assert.That(r[3 * w], Is.EqualTo(sum).Within(1e-5), $"shfl_down sum, warp {w}");
            Assert.That(r[3 * w + 1], Is.EqualTo(x[w * 32 + 5]), $"shfl broadcast of lane 5, warp {w}");
            Assert.That(r[3 * w + 2], Is.EqualTo(x[w * 32 + 30]), $"shfl_up by 1 at lane 31, warp {w}");
            for (int l = 0; l < 32; l++)
                Assert.That(butterfly[w * 32 + l], Is.EqualTo(sum).Within(1e-5), $"xor butterfly, warp {w} lane {l}");
        }
    }

    [Test]
    public void Votes_BallotAnyAll()
    {
        using var h = Open();
        // warp 0: some lanes true; warp 1: none; warp 2: all
        var pred = new int[96];
        for (int l = 0; l < 32; l++) pred[l] = l % 3 == 0 ? 1 : 0;
        for (int l = 64; l < 96; l++) pred[l] = 1;
        var o = h.Zeros<uint>(9);
        h.Launch(M, "emu_warp_votes", 1, 96, 0, h.Upload(pred), o);
        var r = h.Download<uint>(o, 9);
        uint ballot0 = 0;
        for (int l = 0; l < 32; l++) if (pred[l] != 0) ballot0 |= 1u << l;
        Assert.That(r, Is.EqualTo(new uint[] { ballot0, 1, 0, 0, 0, 0, 0xffffffffu, 1, 1 }));
    }

    [Test]
    public void Atomics_HistogramSumAndMax()
    {
        using var h = Open();
        const int n = 10_000, bins = 17;
        var rng = new Random(3);
        var values = new int[n];
        var weights = new float[n];
        for (int i = 0; i < n; i++)
        {
            values[i] = rng.Next(bins);
            weights[i] = 0.25f * rng.Next(8);  // exact in float: the sum does not depend on order
        }
        var dBins = h.Zeros<int>(bins);
        var dTotal = h.Zeros<float>(1);
        var dMax = h.Zeros<int>(1);
        h.Launch(M, "emu_histogram", 7, 128, 0, h.Upload(values), h.Upload(weights), n, dBins, dTotal, dMax);
        var expected = new int[bins];
        foreach (var v in values) expected[v]++;
        Assert.That(h.Download<int>(dBins, bins), Is.EqualTo(expected));
        Assert.That(h.Download<float>(dTotal, 1)[0], Is.EqualTo(weights.Sum()));
        Assert.That(h.Download<int>(dMax, 1)[0], Is.EqualTo(values.Max()));
    }

    [Test]
    public void Indices_ThreeDimensionalGridAndBlock()
    {
        using var h = Open();
        var grid = new Dim3(3, 2, 2);
        var block = new Dim3(4, 3, 2);
        int threads = 3 * 2 * 2 * 4 * 3 * 2;
        var o = h.Zeros<int>(6 * threads);
        h.Launch(M, "emu_indices", grid, block, 0, o);
        var r = h.Download<int>(o, 6 * threads);
        int g = 0;
        for (int bz = 0; bz < 2; bz++)
        for (int by = 0; by < 2; by++)
        for (int bx = 0; bx < 3; bx++)
        for (int tz = 0; tz < 2; tz++)
        for (int ty = 0; ty < 3; ty++)
        for (int tx = 0; tx < 4; tx++, g++)
            Assert.That(r.AsSpan(6 * g, 6).ToArray(), Is.EqualTo(new[] { bx, by, bz, tx, ty, tz }), $"thread slot {g}");
    }

    private static (ushort[] A, ushort[] Bt, ushort[] B, float[] C, double[] D) MmaProblem(int seed)
    {
        var rng = new Random(seed);
        var a = new ushort[16 * 16];
        var bt = new ushort[8 * 16];
        var b = new ushort[16 * 8];
        var c = new float[16 * 8];
        for (int i = 0; i < a.Length; i++) a[i] = Bf16.FromFloat((float)(rng.NextDouble() * 4 - 2));
        for (int n = 0; n < 8; n++)
            for (int k = 0; k < 16; k++)
            {
                bt[n * 16 + k] = Bf16.FromFloat((float)(rng.NextDouble() * 4 - 2));
                b[k * 8 + n] = bt[n * 16 + k];
            }
        for (int i = 0; i < c.Length; i++) c[i] = (float)(rng.NextDouble() - 0.5);
        var d = new double[16 * 8];
        for (int i = 0; i < 16; i++)
            for (int j = 0; j < 8; j++)
            {
                double s = c[i * 8 + j];
                for (int k = 0; k < 16; k++) s += (double)Bf16.ToFloat(a[i * 16 + k]) * Bf16.ToFloat(bt[j * 16 + k]);
                d[i * 8 + j] = s;
            }
        return (a, bt, b, c, d);
    }

    [TestCase(1)]
    [TestCase(2)]
    public void Mma_FragmentsFromGlobal_MatchMatrixProduct(int seed)
    {
        using var h = Open();
        var (a, bt, _, c, d) = MmaProblem(seed);
        var o = h.Zeros<float>(128);
        h.Launch(M, "emu_mma_direct", 1, 32, 0, h.Upload(a), h.Upload(bt), h.Upload(c), o);
        var r = h.Download<float>(o, 128);
        for (int i = 0; i < 128; i++) Assert.That(r[i], Is.EqualTo(d[i]).Within(1e-4), $"D[{i / 8}, {i % 8}]");
    }

    [TestCase(0)]
    [TestCase(1)]
    public void Mma_FragmentsFromLdmatrixAndCpAsync_MatchMatrixProduct(int transB)
    {
        using var h = Open();
        var (a, bt, b, c, d) = MmaProblem(10 + transB);
        var o = h.Zeros<float>(128);
        h.Launch(M, "emu_mma_ldmatrix", 1, 32, 0, h.Upload(a), h.Upload(transB == 1 ? b : bt), h.Upload(c), o, transB);
        var r = h.Download<float>(o, 128);
        for (int i = 0; i < 128; i++) Assert.That(r[i], Is.EqualTo(d[i]).Within(1e-4), $"D[{i / 8}, {i % 8}]");
    }

    [TestCase(0)]
    [TestCase(1)]
    public void Ldmatrix_X1_DeliversRowPairsPerLane(int trans)
    {
        using var h = Open();
        var m = new ushort[64];
        for (int i = 0; i < 64; i++) m[i] = (ushort)(100 + i);  // element (r, c) = 100 + 8r + c
        var o = h.Zeros<uint>(32);
        h.Launch(M, "emu_ldmatrix_x1", 1, 32, 0, h.Upload(m), o, trans);
        var r = h.Download<uint>(o, 32);
        for (int lane = 0; lane < 32; lane++)
        {
            int row = lane / 4, col = 2 * (lane % 4);
            // without .trans: (row, col) and (row, col+1); with .trans: (col, row) and (col+1, row)
            uint lo = trans == 0 ? (uint)(100 + 8 * row + col) : (uint)(100 + 8 * col + row);
            uint hi = trans == 0 ? (uint)(100 + 8 * row + col + 1) : (uint)(100 + 8 * (col + 1) + row);
            Assert.That(r[lane], Is.EqualTo(lo | (hi << 16)), $"lane {lane}");
        }
    }

    [Test]
    public void Conversions_MatchTheHostRoundingBitForBit()
    {
        using var h = Open();
        var rng = new Random(5);
        var x = new List<float> { 0f, -0f, 1f, 1.00390625f, 1.01171875f, 65504f, 65520f, 1e-7f, 5.96e-8f, 3e-5f, -2.5f, float.PositiveInfinity, 1e30f };
        while (x.Count < 300) x.Add((float)((rng.NextDouble() - 0.5) * Math.Pow(2, rng.Next(-30, 20))));
        int n = x.Count;
        var db = h.Zeros<ushort>(n);
        var dh = h.Zeros<ushort>(n);
        var bb = h.Zeros<float>(n);
        var bh = h.Zeros<float>(n);
        h.Launch(M, "emu_conversions", (n + 63) / 64, 64, 0, h.Upload(x.ToArray()), db, dh, bb, bh, n);
        var b = h.Download<ushort>(db, n);
        var f = h.Download<ushort>(dh, n);
        var backB = h.Download<float>(bb, n);
        var backH = h.Download<float>(bh, n);
        for (int i = 0; i < n; i++)
        {
            Assert.That(b[i], Is.EqualTo(Bf16.FromFloat(x[i])), $"bf16({x[i]:R})");
            Assert.That(f[i], Is.EqualTo(BitConverter.HalfToUInt16Bits((Half)x[i])), $"f16({x[i]:R})");
            Assert.That(backB[i], Is.EqualTo(Bf16.ToFloat(b[i])), $"float(bf16 {b[i]:x4})");
            Assert.That(backH[i], Is.EqualTo((float)BitConverter.UInt16BitsToHalf(f[i])), $"float(f16 {f[i]:x4})");
        }
    }

}

/// <summary>The execution-model programs on the host emulator, plus the failures only it reports.</summary>
public class EmulatorTests : ExecutionModelTests
{
    private protected override EmuHarness Open() => new();

    [Test]
    public void Deadlock_IsReportedNotHung()
    {
        using var h = Open();
        var o = h.Zeros<float>(32);
        var e = Assert.Throws<CudaException>(() => h.Launch(M, "emu_divergent_sync", 1, 32, 0, o))!;
        Assert.That(e.Message, Does.Contain("deadlock").And.Contain("emu_divergent_sync"));
        // the emulator stays usable after a failed launch
        var x = ExecutionModelTests.Random(32, 1);
        var s = h.Zeros<float>(1);
        h.Launch(M, "emu_block_sum", 1, 32, 0, h.Upload(x), s);
        Assert.That(h.Download<float>(s, 1)[0], Is.EqualTo(x.Sum()).Within(1e-5));
    }

    [Test]
    public void MisalignedCpAsync_FailsTheLaunchNamingTheThread()
    {
        using var h = Open();
        var src = h.Upload(new float[8]);
        var o = h.Zeros<float>(32);
        var e = Assert.Throws<CudaException>(() => h.Launch(M, "emu_misaligned_cp_async", 1, 32, 0, src, o))!;
        Assert.That(e.Message, Does.Contain("not 16-byte aligned").And.Contain("thread (0,0,0)"));
    }

    [Test]
    public void MissingSyncthreads_GivesAWrongResultInOneBlockOrder()
    {
        using var h = Open();
        const int block = 64;
        int salt = new Random().Next(1, 1 << 20);
        var o = h.Zeros<int>(2 * block);
        h.Launch(M, "emu_missing_barrier", 2, block, 0, o, salt);
        var r = h.Download<int>(o, 2 * block);
        int wrong = 0;
        for (int b = 0; b < 2; b++)
            for (int t = 0; t < block; t++)
                if (r[b * block + t] != salt + 1000 * b + (t + 1) % block) wrong++;
        Assert.That(wrong, Is.GreaterThan(0), "the race went unnoticed in both scheduling orders");
    }

    [Test]
    public unsafe void Copy_OutsideAnyAllocation_ThrowsNamingTheRange()
    {
        using var h = Open();
        var p = h.Zeros<float>(4);
        var host = new float[8];
        fixed (float* src = host)
        {
            var address = (nint)src;
            var e = Assert.Throws<CudaException>(() => h.Driver.CopyHtoD(p, address, 32, 0))!;
            Assert.That(e.Message, Does.Contain("lemu_memcpy_htod").And.Contain("not inside one allocation"));
            Assert.That(e.Result, Is.EqualTo(CuResult.InvalidValue));
        }
    }

    [Test]
    public void UnknownModuleAndKernel_AreNamedInTheError()
    {
        using var h = Open();
        Assert.That(Assert.Throws<CudaException>(() => h.Driver.LoadModule("no_such_family"))!.Message, Does.Contain("no_such_family"));
        using var m = h.Driver.LoadModule(M);
        Assert.That(Assert.Throws<CudaException>(() => h.Driver.GetFunction(m, "nope"))!.Message, Does.Contain("'nope'"));
    }

    [Test]
    public void Events_MeasureANonNegativeInterval()
    {
        using var h = Open();
        using var a = h.Driver.CreateEvent();
        using var b = h.Driver.CreateEvent();
        using var s = h.Driver.CreateStream();
        h.Driver.RecordEvent(a, s.DangerousGetHandle());
        h.Launch(M, "emu_block_sum", 4, 256, 0, h.Upload(ExecutionModelTests.Random(1024, 2)), h.Zeros<float>(4));
        h.Driver.RecordEvent(b, s.DangerousGetHandle());
        h.Driver.SynchronizeEvent(b);
        Assert.That(h.Driver.ElapsedMilliseconds(a, b), Is.GreaterThanOrEqualTo(0f));
    }

    private static string? Probe()
    {
        var lib = EmulatorLibrary.Locate();
        if (lib is null) return null;
        var probe = Path.Combine(Path.GetDirectoryName(lib)!, "lori_emu_probe");
        return File.Exists(probe) ? probe : null;
    }

    private static (int Code, string Err) RunProbe(string probe, string mode)
    {
        var psi = new ProcessStartInfo(probe, mode) { RedirectStandardError = true, RedirectStandardOutput = true };
        psi.Environment["ASAN_OPTIONS"] = "detect_leaks=0";
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, err.Result);
    }

    [Test]
    public void AddressSanitizer_CatchesAnOutOfBoundsKernelWrite()
    {
        var probe = Probe();
        if (probe is null) Assert.Ignore("lori_emu_probe is not built (cmake -S native -B build/native)");
        var ok = RunProbe(probe!, "ok");
        Assert.That(ok.Code, Is.EqualTo(0), "in-bounds run under ASan: " + ok.Err);
        var bad = RunProbe(probe!, "oob");
        Assert.That(bad.Code, Is.Not.EqualTo(0));
        Assert.That(bad.Err, Does.Contain("heap-buffer-overflow").And.Contain("emu_oob_write"));
    }

    [Test]
    public void AddressSanitizer_EveryKernelRunsCleanInsideDotnet()
    {
        // the whole selftest in a child .NET process on the ASan build of the emulator: any
        // out-of-bounds access by a kernel aborts it with a report instead of passing
        var lib = EmulatorLibrary.Locate();
        var asanLib = lib is null ? null : Path.Combine(Path.GetDirectoryName(lib)!, "libloriemu_asan.so");
        if (asanLib is null || !File.Exists(asanLib)) Assert.Ignore("libloriemu_asan.so is not built (cmake -S native -B build/native)");
        var runtime = GccFile("libasan.so");
        if (runtime is null) Assert.Ignore("gcc's libasan.so was not found");
        var runner = Path.Combine(AppContext.BaseDirectory, "LoRI.Runner.dll");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var arg in new[] { runner, "selftest", "--device", "cuda-emu", "--repeats", "0" }) psi.ArgumentList.Add(arg);
        psi.Environment["LD_PRELOAD"] = runtime;
        psi.Environment["ASAN_OPTIONS"] = "detect_leaks=0";
        psi.Environment["LORI_EMU_LIBRARY"] = asanLib;
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        var output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        Assert.That(p.ExitCode, Is.EqualTo(0), output + err.Result);
        Assert.That(output, Does.Contain("AddressSanitizer").And.Contain(" 0 failed"));
    }

    private static string? GccFile(string name)
    {
        try
        {
            var psi = new ProcessStartInfo("gcc", $"-print-file-name={name}") { RedirectStandardOutput = true };
            using var p = Process.Start(psi)!;
            var path = p.StandardOutput.ReadToEnd().Trim();
            p.WaitForExit();
            return p.ExitCode == 0 && Path.IsPathRooted(path) && File.Exists(path) ? path : null;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return null;
        }
    }
}

/// <summary>The execution-model programs on CUDA device 0; skipped with the reason where there is none.</summary>
[Category("GPU")]
public class DeviceExecutionModelTests : ExecutionModelTests
{
    private protected override EmuHarness Open()
    {
        var d = CudaDriver.TryOpen(0, out var reason);
        if (d is null) Assert.Ignore($"needs a CUDA device: {reason}");
        return new EmuHarness(d!);
    }
}
