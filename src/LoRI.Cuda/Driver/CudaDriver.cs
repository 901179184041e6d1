using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;

namespace LoRI.Cuda.Driver;

/// <summary>
/// <see cref="ICudaDriver"/> over libcuda: one device, its primary context made current on the calling
/// thread, modules from PTX (prebuilt or NVRTC, see <see cref="KernelSources"/>) loaded with the JIT's
/// error log in the exception.
/// </summary>
public sealed unsafe class CudaDriver : ICudaDriver
{
    private readonly int _device;
    private nint _context;

    public string DeviceName { get; }
    public bool IsEmulator => false;
    public int ComputeCapability { get; }
    public int MultiprocessorCount { get; }
    public int MaxDynamicSharedMemoryPerBlock { get; }
    /// <summary>Where each loaded family's PTX came from (a file, or NVRTC's cache).</summary>
    public Dictionary<string, string> PtxOrigins { get; } = new();

    private CudaDriver(int device, nint context)
    {
        _device = device;
        _context = context;
        var name = stackalloc byte[256];
        ThrowIfFailed(CudaApi.cuDeviceGetName(name, 256, device));
        DeviceName = Marshal.PtrToStringUTF8((nint)name) ?? "CUDA device";
        ThrowIfFailed(CudaApi.cuDeviceGetAttribute(out var major, DeviceAttribute.ComputeCapabilityMajor, device));
        ThrowIfFailed(CudaApi.cuDeviceGetAttribute(out var minor, DeviceAttribute.ComputeCapabilityMinor, device));
        ComputeCapability = major * 10 + minor;
        ThrowIfFailed(CudaApi.cuDeviceGetAttribute(out var sms, DeviceAttribute.MultiprocessorCount, device));
        MultiprocessorCount = sms;
        ThrowIfFailed(CudaApi.cuDeviceGetAttribute(out var smem, DeviceAttribute.MaxSharedMemoryPerBlockOptin, device));
        MaxDynamicSharedMemoryPerBlock = smem;
    }

    /// <summary>
    /// Opens device <paramref name="ordinal"/>, or returns null with the reason there is none
    /// (libcuda absent, cuInit finding no device, ordinal out of range).
    /// </summary>
    public static CudaDriver? TryOpen(int ordinal, out string reason)
    {
        CuResult r;
        try
        {
            r = CudaApi.cuInit(0);
        }
        catch (DllNotFoundException)
        {
            reason = $"{CudaApi.Library} is not installed (no NVIDIA driver on this machine)";
            return null;
        }
        if (r != CuResult.Success)
        {
            reason = $"cuInit(0) returned {Describe(r)}";
            return null;
        }
        ThrowIfFailed(CudaApi.cuDeviceGetCount(out var count));
        if (ordinal < 0 || ordinal >= count)
        {
            reason = count == 0 ? "no CUDA device" : $"device {ordinal} requested, {count} present";
            return null;
        }
        ThrowIfFailed(CudaApi.cuDeviceGet(out var device, ordinal));
        ThrowIfFailed(CudaApi.cuDevicePrimaryCtxRetain(out var ctx, device));
        ThrowIfFailed(CudaApi.cuCtxSetCurrent(ctx));
        reason = "";
        return new CudaDriver(device, ctx);
    }

    /// <summary>Opens device <paramref name="ordinal"/> or throws saying why it cannot.</summary>
    public static CudaDriver Open(int ordinal = 0) =>
        TryOpen(ordinal, out var reason) ?? throw new LoRIException($"CUDA device {ordinal} is not available: {reason}");

    /// <summary>"CUDA_ERROR_NO_DEVICE (100): no CUDA-capable device is detected", from the driver's own tables.</summary>
    public static string Describe(CuResult r)
    {
        string name = r.ToString(), text = "";
        try
        {
            if (CudaApi.cuGetErrorName(r, out var n) == CuResult.Success) name = Marshal.PtrToStringUTF8(n) ?? name;
            if (CudaApi.cuGetErrorString(r, out var s) == CuResult.Success) text = Marshal.PtrToStringUTF8(s) ?? "";
        }
        catch (DllNotFoundException)
        {
        }
        return text.Length > 0 ? $"{name} ({(int)r}): {text}" : $"{name} ({(int)r})";
    }

    /// <summary>Throws a <see cref="CudaException"/> naming the failed call and the driver's error.</summary>
    public static void ThrowIfFailed(CuResult result, [CallerArgumentExpression(nameof(result))] string call = "")
    {
        if (result != CuResult.Success) throw new CudaException(result, call, Describe(result));
    }

    [ThreadStatic] private static nint t_current;

    /// <summary>Makes this device's context current on the calling thread (driver calls need it).</summary>
    public void MakeCurrent()
    {
        if (t_current == _context) return;
        ThrowIfFailed(CudaApi.cuCtxSetCurrent(_context));
        t_current = _context;
    }

    private CuResult TryMakeCurrent()
    {
        if (t_current == _context) return CuResult.Success;
        var r = CudaApi.cuCtxSetCurrent(_context);
        if (r == CuResult.Success) t_current = _context;
        return r;
    }

    public ulong Alloc(long bytes)
    {
        MakeCurrent();
        ThrowIfFailed(CudaApi.cuMemAlloc(out var p, checked((nuint)bytes)));
        return p;
    }

    public void Free(ulong ptr)
    {
        MakeCurrent();
        ThrowIfFailed(CudaApi.cuMemFree(ptr));
    }

    public void Memset(ulong dst, byte value, long bytes, nint stream)
    {
        MakeCurrent();
        ThrowIfFailed(stream == 0 ? CudaApi.cuMemsetD8(dst, value, (nuint)bytes) : CudaApi.cuMemsetD8Async(dst, value, (nuint)bytes, stream));
    }

    public void CopyHtoD(ulong dst, nint src, long bytes, nint stream)
    {
        MakeCurrent();
        ThrowIfFailed(stream == 0 ? CudaApi.cuMemcpyHtoD(dst, src, (nuint)bytes) : CudaApi.cuMemcpyHtoDAsync(dst, src, (nuint)bytes, stream));
    }

    public void CopyDtoH(nint dst, ulong src, long bytes, nint stream)
    {
        MakeCurrent();
        ThrowIfFailed(stream == 0 ? CudaApi.cuMemcpyDtoH(dst, src, (nuint)bytes) : CudaApi.cuMemcpyDtoHAsync(dst, src, (nuint)bytes, stream));
    }

    public void CopyDtoD(ulong dst, ulong src, long bytes, nint stream)
    {
        MakeCurrent();
        ThrowIfFailed(stream == 0 ? CudaApi.cuMemcpyDtoD(dst, src, (nuint)bytes) : CudaApi.cuMemcpyDtoDAsync(dst, src, (nuint)bytes, stream));
    }

    public nint AllocHost(long bytes)
    {
        MakeCurrent();
        ThrowIfFailed(CudaApi.cuMemAllocHost(out var p, checked((nuint)bytes)));
        return p;
    }

    public void FreeHost(nint ptr)
    {
        MakeCurrent();
        ThrowIfFailed(CudaApi.cuMemFreeHost(ptr));
    }

    public CudaModule LoadModule(string name)
    {
        var ptx = KernelSources.GetPtx(name, ComputeCapability, out var origin);
        PtxOrigins[name] = origin;
        return LoadPtx(name, ptx, origin);
    }

    /// <summary>Loads PTX text; a JIT failure throws with the JIT's error log.</summary>
    public CudaModule LoadPtx(string name, string ptx, string origin)
    {
        MakeCurrent();
        const int logSize = 16 * 1024;
        var image = Encoding.UTF8.GetBytes(ptx + "\0");
        var errorLog = new byte[logSize];
        var infoLog = new byte[logSize];
        var options = stackalloc JitOption[4] { JitOption.ErrorLogBuffer, JitOption.ErrorLogBufferSizeBytes, JitOption.InfoLogBuffer, JitOption.InfoLogBufferSizeBytes };
        fixed (byte* img = image, err = errorLog, info = infoLog)
        {
            var values = stackalloc void*[4] { err, (void*)logSize, info, (void*)logSize };
            var r = CudaApi.cuModuleLoadDataEx(out var module, img, 4, options, values);
            if (r != CuResult.Success)
            {
                var log = Encoding.UTF8.GetString(errorLog).TrimEnd('\0').Trim();
                throw new CudaException(r, $"cuModuleLoadDataEx({name} from {origin})", $"{Describe(r)}{(log.Length > 0 ? "\n" + log : "")}");
            }
            return new CudaModule(this, module, name);
        }
    }

    public nint GetFunction(CudaModule module, string name)
    {
        MakeCurrent();
        ThrowIfFailed(CudaApi.cuModuleGetFunction(out var f, module.DangerousGetHandle(), name));
        return f;
    }

    /// <summary>Registers, local (spill) bytes and static shared bytes of a loaded kernel.</summary>
    public (int Registers, int LocalBytes, int SharedBytes) FunctionInfo(nint function)
    {
        MakeCurrent();
        ThrowIfFailed(CudaApi.cuFuncGetAttribute(out var regs, FunctionAttribute.NumRegs, function));
        ThrowIfFailed(CudaApi.cuFuncGetAttribute(out var local, FunctionAttribute.LocalSizeBytes, function));
        ThrowIfFailed(CudaApi.cuFuncGetAttribute(out var shared, FunctionAttribute.SharedSizeBytes, function));
        return (regs, local, shared);
    }

    public void SetMaxDynamicSharedMemory(nint function, int bytes)
    {
        MakeCurrent();
        ThrowIfFailed(CudaApi.cuFuncSetAttribute(function, FunctionAttribute.MaxDynamicSharedSizeBytes, bytes));
    }

    public void Launch(nint function, Dim3 grid, Dim3 block, int dynamicSharedBytes, nint stream, void** args)
    {
        MakeCurrent();
        ThrowIfFailed(CudaApi.cuLaunchKernel(function, grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z, (uint)dynamicSharedBytes, stream, args, null));
    }

    public CudaStream CreateStream()
    {
        MakeCurrent();
        // a blocking stream: the synchronous copies (legacy default stream) stay ordered with its work
        ThrowIfFailed(CudaApi.cuStreamCreate(out var s, 0));
        return new CudaStream(this, s);
    }

    public void SynchronizeStream(nint stream)
    {
        MakeCurrent();
        ThrowIfFailed(CudaApi.cuStreamSynchronize(stream));
    }

    public CudaEvent CreateEvent()
    {
        MakeCurrent();
        ThrowIfFailed(CudaApi.cuEventCreate(out var e, 0));
        return new CudaEvent(this, e);
    }

    public void RecordEvent(CudaEvent e, nint stream)
    {
        MakeCurrent();
        ThrowIfFailed(CudaApi.cuEventRecord(e.DangerousGetHandle(), stream));
    }
    public void SynchronizeEvent(CudaEvent e)
    {
        MakeCurrent();
        ThrowIfFailed(CudaApi.cuEventSynchronize(e.DangerousGetHandle()));
    }

    public float ElapsedMilliseconds(CudaEvent start, CudaEvent end)
    {
        MakeCurrent();
        ThrowIfFailed(CudaApi.cuEventElapsedTime(out var ms, start.DangerousGetHandle(), end.DangerousGetHandle()));
        return ms;
    }

    public void Synchronize()
    {
        MakeCurrent();
        ThrowIfFailed(CudaApi.cuCtxSynchronize());
    }

    public TensorMap EncodeTensorMapTiled(TensorMapDataType dataType, ulong globalAddress, ReadOnlySpan<ulong> globalDims, ReadOnlySpan<ulong> globalStrides,
                                          ReadOnlySpan<uint> boxDims, ReadOnlySpan<uint> elementStrides, TensorMapSwizzle swizzle,
                                          TensorMapL2Promotion l2Promotion, TensorMapOobFill oobFill)
    {
        TensorMap.CheckRank(globalDims.Length, globalStrides.Length, boxDims.Length, elementStrides.Length);
        // the map must be written to 64-byte aligned memory
        var raw = stackalloc byte[128 + 64];
        var map = (TensorMap*)(((nint)raw + 63) & ~(nint)63);
        fixed (ulong* dims = globalDims, strides = globalStrides)
        fixed (uint* box = boxDims, es = elementStrides)
        {
            ulong none = 0;
            MakeCurrent();
            CuResult r;
            try
            {
                r = CudaApi.cuTensorMapEncodeTiled(map, dataType, (uint)globalDims.Length, globalAddress, dims, globalStrides.Length > 0 ? strides : &none,
                                                   box, es, 0, swizzle, l2Promotion, oobFill);
            }
            catch (EntryPointNotFoundException)
            {
                throw new UnsupportedException($"{CudaApi.Library} has no cuTensorMapEncodeTiled (a CUDA 12+ driver is needed for TMA)");
            }
            ThrowIfFailed(r, "cuTensorMapEncodeTiled");
        }
        return *map;
    }

    // The handles' release calls may run on a finalizer thread: make the context current there first.
    CuResult ICudaDriver.ReleaseModule(nint module) => TryMakeCurrent() is var r && r != CuResult.Success ? r : CudaApi.cuModuleUnload(module);
    CuResult ICudaDriver.ReleaseStream(nint stream) => TryMakeCurrent() is var r && r != CuResult.Success ? r : CudaApi.cuStreamDestroy(stream);
    CuResult ICudaDriver.ReleaseEvent(nint e) => TryMakeCurrent() is var r && r != CuResult.Success ? r : CudaApi.cuEventDestroy(e);

    public void Dispose()
    {
        if (_context == 0) return;
        _context = 0;
        CudaApi.cuDevicePrimaryCtxRelease(_device);
    }
}
