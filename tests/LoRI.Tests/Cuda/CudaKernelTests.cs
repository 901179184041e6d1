using LoRI.Backend.Cpu;
using LoRI.Cuda.Backend;
using LoRI.Cuda.Checks;

namespace LoRI.Tests.Cuda;

/// <summary>
/// Every CUDA kernel under the host emulator, held against the CPU backend (or a double-precision loop
/// for the ops beyond IBackend), at tile-aligned and ragged shapes and at several block sizes. The
/// checks themselves live in LoRI.Cuda.Checks.KernelChecks, shared with `selftest`.
/// </summary>
public class CudaKernelTests
{
    private static CudaBackend? _device;
    private static CpuBackend? _cpu;

    [OneTimeSetUp]
    public void Open()
    {
        _device = CudaBackend.CreateEmulated();
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
        var r = KernelChecks.RunOne(check, _device, _cpu!, ragged, timingRepeats: 0);
        TestContext.Out.WriteLine(r.Detail);
        Assert.That(r.Passed, Is.True, r.Detail);
    }
}
