using System.Runtime.InteropServices;

namespace LoRI.Cuda.Driver;

/// <summary>A loaded module (one kernel family); unloaded when disposed or finalized.</summary>
public sealed class CudaModule : SafeHandle
{
    private readonly ICudaDriver _driver;
    public string Name { get; }

    public CudaModule(ICudaDriver driver, nint handle, string name) : base(0, true)
    {
        _driver = driver;
        Name = name;
        SetHandle(handle);
    }

    public override bool IsInvalid => handle == 0;
    protected override bool ReleaseHandle() => _driver.ReleaseModule(handle) == CuResult.Success;
}

/// <summary>A stream; destroyed when disposed or finalized.</summary>
public sealed class CudaStream : SafeHandle
{
    private readonly ICudaDriver _driver;

    public CudaStream(ICudaDriver driver, nint handle) : base(0, true)
    {
        _driver = driver;
        SetHandle(handle);
    }

    public override bool IsInvalid => handle == 0;
    protected override bool ReleaseHandle() => _driver.ReleaseStream(handle) == CuResult.Success;
}

/// <summary>An event (timing enabled); destroyed when disposed or finalized.</summary>
public sealed class CudaEvent : SafeHandle
{
    private readonly ICudaDriver _driver;

    public CudaEvent(ICudaDriver driver, nint handle) : base(0, true)
    {
        _driver = driver;
        SetHandle(handle);
    }

    public override bool IsInvalid => handle == 0;
    protected override bool ReleaseHandle() => _driver.ReleaseEvent(handle) == CuResult.Success;
}

/// <summary>
/// Device memory owned by the caller. Freed by Dispose only, never from a finalizer (a finalizer may
/// run after the context is gone, or on a thread without it).
/// </summary>
public sealed class DeviceBuffer : IDisposable
{
    private readonly ICudaDriver _driver;
    public ulong Pointer { get; private set; }
    public long Bytes { get; }

    public DeviceBuffer(ICudaDriver driver, long bytes)
    {
        _driver = driver;
        Bytes = bytes;
        Pointer = driver.Alloc(bytes);
    }

    public void Dispose()
    {
        if (Pointer != 0) _driver.Free(Pointer);
        Pointer = 0;
    }
}
