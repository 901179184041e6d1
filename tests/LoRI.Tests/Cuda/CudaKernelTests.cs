using LoRI.Backend.Cpu;
using LoRI.Cuda.Backend;
using LoRI.Cuda.Checks;
using LoRI.Cuda.Driver;

namespace LoRI.Tests.Cuda;

/// <summary>
/// Every CUDA kernel held against the CPU backend (or a double-precision loop for the ops beyond
/// IBackend), at tile-aligned and ragged shapes and at several block sizes. The checks live in
/// LoRI.Cuda.Checks.KernelChecks, shared with `selftest`. Bound to the emulator (runs in CI) and to a
/// real device (skipped with the reason where there is none).
/// </summary>
public abstract class CudaKernelTestsBase
{
    private CudaBackend? _device;
    private CpuBackend? _cpu;

    private protected abstract CudaBackend OpenDevice();

    [OneTimeSetUp]
    public void Open()
    {
        _device = OpenDevice();
        _cpu = new CpuBackend();
    }

    [OneTimeTearDown]
    public void Close()
    {
        _device?.Dispose();
        _cpu?.Dispose();
    }

    public static IEnumerable<TestCaseData> Cases() =>
        from check in KernelChecks.All
        from ragged in new[] { false, true }
        from block in new[] { 32, 96, 256 }
        select new TestCaseData(check.Name, ragged, block).SetName($"{check.Name}_{(ragged ? "ragged" : "aligned")}_block{block}");

    [TestCaseSource(nameof(Cases))]
    public void Kernel_MatchesReference(string name, bool ragged, int block)
    {
        _device!.BlockSize = block;
        var check = KernelChecks.All.Single(c => c.Name == name);
        if (check.Skip?.Invoke(_device) is string skipped) Assert.Ignore(skipped);
        var r = KernelChecks.RunOne(check, _device, _cpu!, ragged, timingRepeats: 0);
        TestContext.Out.WriteLine(r.Detail);
        Assert.That(r.Passed, Is.True, r.Detail);
    }
}

public class CudaKernelTests : CudaKernelTestsBase
{
    private protected override CudaBackend OpenDevice() => CudaBackend.CreateEmulated();
}

[Category("GPU")]
public class DeviceKernelTests : CudaKernelTestsBase
{
    private protected override CudaBackend OpenDevice()
    {
        var d = CudaDriver.TryOpen(0, out var reason);
        if (d is null) Assert.Ignore($"needs a CUDA device: {reason}");
        return new CudaBackend(d!);
    }
}

/// <summary>The checks once more with tensors sub-allocated from arena chunks, as on a GPU.</summary>
public class CudaKernelArenaTests
{
    [Test]
    public void AllKernels_PassWithChunkedArena()
    {
        using var device = new CudaBackend(new LoRI.Cuda.Emulator.EmulatorDriver(), arenaChunkBytes: 1 << 20);
        using var cpu = new CpuBackend();
        var results = KernelChecks.RunAll(device, cpu, ragged: true, timingRepeats: 0);
        Assert.That(results, Has.Count.EqualTo(KernelChecks.All.Count));
        Assert.That(results.Where(r => !r.Passed).Select(r => $"{r.Name}: {r.Detail}"), Is.Empty);
        // the backend may keep scratch it grew once; a second run must not need a byte more
        long inUse = device.Arena.BytesInUse;
        var again = KernelChecks.RunAll(device, cpu, ragged: true, timingRepeats: 0);
        Assert.That(again.All(r => r.Passed), Is.True);
        Assert.That(device.Arena.BytesInUse, Is.EqualTo(inUse), "every check returned its tensors");
        Assert.That(device.Arena.BytesReserved, Is.GreaterThanOrEqualTo(1 << 20));
    }
}
