using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using LoRI.Cuda.Backend;
using LoRI.Cuda.Driver;

namespace LoRI.Tests.Cuda;

/// <summary>
/// What crosses into libcuda / libloriemu by value or by layout: enums passed as C ints, and the
/// kernel argument block whose slots cuLaunchKernel reads through pointers.
/// </summary>
public class BindingAbiTests
{
    [Test]
    public void Enums_AreCInts()
    {
        Assert.That(Unsafe.SizeOf<CuResult>(), Is.EqualTo(4));
        Assert.That(Unsafe.SizeOf<DeviceAttribute>(), Is.EqualTo(4));
        Assert.That(Unsafe.SizeOf<FunctionAttribute>(), Is.EqualTo(4));
        Assert.That(Unsafe.SizeOf<JitOption>(), Is.EqualTo(4));
    }

    [Test]
    public void DriverEnumValues_MatchCudaH()
    {
        // values from cuda.h (CUresult, CUdevice_attribute, CUfunction_attribute, CUjit_option)
        Assert.That((int)CuResult.NoDevice, Is.EqualTo(100));
        Assert.That((int)CuResult.LaunchFailed, Is.EqualTo(719));
        Assert.That((int)DeviceAttribute.ComputeCapabilityMajor, Is.EqualTo(75));
        Assert.That((int)DeviceAttribute.MaxSharedMemoryPerBlockOptin, Is.EqualTo(97));
        Assert.That((int)FunctionAttribute.MaxDynamicSharedSizeBytes, Is.EqualTo(8));
        Assert.That((int)JitOption.ErrorLogBuffer, Is.EqualTo(5));
        Assert.That((int)JitOption.ErrorLogBufferSizeBytes, Is.EqualTo(6));
    }

    [Test]
    public void KernelArgs_LayoutIsSixteenEightByteSlotsThenTheCount()
    {
        Assert.That(Marshal.SizeOf<KernelArgs>(), Is.EqualTo(16 * 8 + 8));
        Assert.That(Marshal.OffsetOf<KernelArgs>(nameof(KernelArgs.Values)).ToInt32(), Is.EqualTo(0));
        Assert.That(Marshal.OffsetOf<KernelArgs>(nameof(KernelArgs.Count)).ToInt32(), Is.EqualTo(128));
    }

    [Test]
    public unsafe void KernelArgs_PutFourByteValuesInTheLowBytesOfTheirSlot()
    {
        var a = new KernelArgs();
        a.Add(-2);
        a.Add(1.5f);
        a.Add(0x1122334455667788UL);
        a.Add(-3L);
        Assert.That(a.Count, Is.EqualTo(4));
        Assert.That(*(int*)a.Values, Is.EqualTo(-2));
        Assert.That(*(float*)(a.Values + 1), Is.EqualTo(1.5f));
        Assert.That(a.Values[2], Is.EqualTo(0x1122334455667788UL));
        Assert.That(*(long*)(a.Values + 3), Is.EqualTo(-3L));
    }

    [Test]
    public void RealDriver_OpensOrSaysWhyNot()
    {
        using var d = CudaDriver.TryOpen(0, out var reason);
        if (d is null)
        {
            Assert.That(reason, Is.Not.Empty);
            Assert.Ignore($"no CUDA device: {reason}");
        }
        Assert.That(d!.ComputeCapability, Is.GreaterThanOrEqualTo(50));
        Assert.That(d.DeviceName, Is.Not.Empty);
    }
}
