using System.Runtime.InteropServices;

namespace LoRI.Cuda.Driver;

/// <summary>
/// The CUDA driver API (libcuda.so.1), the calls we use, grouped by area. Versioned entry points
/// (_v2) are the ones cuda.h maps the plain names to. Device pointers are CUdeviceptr (64-bit);
/// contexts, modules, functions, streams and events are opaque pointers.
/// </summary>
internal static unsafe partial class CudaApi
{
    public const string Library = "libcuda.so.1";

    // ---- init, errors, devices
    [LibraryImport(Library)] public static partial CuResult cuInit(uint flags);
    [LibraryImport(Library)] public static partial CuResult cuDriverGetVersion(out int version);
    [LibraryImport(Library)] public static partial CuResult cuGetErrorName(CuResult error, out nint name);
    [LibraryImport(Library)] public static partial CuResult cuGetErrorString(CuResult error, out nint text);
    [LibraryImport(Library)] public static partial CuResult cuDeviceGetCount(out int count);
    [LibraryImport(Library)] public static partial CuResult cuDeviceGet(out int device, int ordinal);
    [LibraryImport(Library)] public static partial CuResult cuDeviceGetName(byte* name, int length, int device);
    [LibraryImport(Library)] public static partial CuResult cuDeviceGetAttribute(out int value, DeviceAttribute attribute, int device);

    // ---- primary context
    [LibraryImport(Library)] public static partial CuResult cuDevicePrimaryCtxRetain(out nint context, int device);
    [LibraryImport(Library, EntryPoint = "cuDevicePrimaryCtxRelease_v2")] public static partial CuResult cuDevicePrimaryCtxRelease(int device);
    [LibraryImport(Library)] public static partial CuResult cuCtxSetCurrent(nint context);
    [LibraryImport(Library)] public static partial CuResult cuCtxSynchronize();

    // ---- modules and functions
    [LibraryImport(Library)]
    public static partial CuResult cuModuleLoadDataEx(out nint module, byte* image, uint numOptions, JitOption* options, void** optionValues);
    [LibraryImport(Library)] public static partial CuResult cuModuleUnload(nint module);
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)] public static partial CuResult cuModuleGetFunction(out nint function, nint module, string name);
    [LibraryImport(Library)] public static partial CuResult cuFuncSetAttribute(nint function, FunctionAttribute attribute, int value);
    [LibraryImport(Library)] public static partial CuResult cuFuncGetAttribute(out int value, FunctionAttribute attribute, nint function);
    [LibraryImport(Library)]
    public static partial CuResult cuLaunchKernel(nint function, uint gridX, uint gridY, uint gridZ, uint blockX, uint blockY, uint blockZ,
                                                  uint sharedBytes, nint stream, void** kernelParams, void** extra);

    // ---- memory
    [LibraryImport(Library, EntryPoint = "cuMemAlloc_v2")] public static partial CuResult cuMemAlloc(out ulong dptr, nuint bytes);
    [LibraryImport(Library, EntryPoint = "cuMemFree_v2")] public static partial CuResult cuMemFree(ulong dptr);
    [LibraryImport(Library, EntryPoint = "cuMemAllocHost_v2")] public static partial CuResult cuMemAllocHost(out nint p, nuint bytes);
    [LibraryImport(Library)] public static partial CuResult cuMemFreeHost(nint p);
    [LibraryImport(Library, EntryPoint = "cuMemsetD8_v2")] public static partial CuResult cuMemsetD8(ulong dst, byte value, nuint n);
    [LibraryImport(Library)] public static partial CuResult cuMemsetD8Async(ulong dst, byte value, nuint n, nint stream);
    [LibraryImport(Library, EntryPoint = "cuMemcpyHtoD_v2")] public static partial CuResult cuMemcpyHtoD(ulong dst, nint src, nuint n);
    [LibraryImport(Library, EntryPoint = "cuMemcpyDtoH_v2")] public static partial CuResult cuMemcpyDtoH(nint dst, ulong src, nuint n);
    [LibraryImport(Library, EntryPoint = "cuMemcpyDtoD_v2")] public static partial CuResult cuMemcpyDtoD(ulong dst, ulong src, nuint n);
    [LibraryImport(Library, EntryPoint = "cuMemcpyHtoDAsync_v2")] public static partial CuResult cuMemcpyHtoDAsync(ulong dst, nint src, nuint n, nint stream);
    [LibraryImport(Library, EntryPoint = "cuMemcpyDtoHAsync_v2")] public static partial CuResult cuMemcpyDtoHAsync(nint dst, ulong src, nuint n, nint stream);
    [LibraryImport(Library, EntryPoint = "cuMemcpyDtoDAsync_v2")] public static partial CuResult cuMemcpyDtoDAsync(ulong dst, ulong src, nuint n, nint stream);

    // ---- tensor maps (CUDA 12+)
    [LibraryImport(Library)]
    public static partial CuResult cuTensorMapEncodeTiled(TensorMap* tensorMap, TensorMapDataType dataType, uint rank, ulong globalAddress,
                                                          ulong* globalDim, ulong* globalStrides, uint* boxDim, uint* elementStrides,
                                                          int interleave, TensorMapSwizzle swizzle, TensorMapL2Promotion l2Promotion, TensorMapOobFill oobFill);

    // ---- streams and events
    [LibraryImport(Library)] public static partial CuResult cuStreamCreate(out nint stream, uint flags);
    [LibraryImport(Library, EntryPoint = "cuStreamDestroy_v2")] public static partial CuResult cuStreamDestroy(nint stream);
    [LibraryImport(Library)] public static partial CuResult cuStreamSynchronize(nint stream);
    [LibraryImport(Library)] public static partial CuResult cuEventCreate(out nint e, uint flags);
    [LibraryImport(Library, EntryPoint = "cuEventDestroy_v2")] public static partial CuResult cuEventDestroy(nint e);
    [LibraryImport(Library)] public static partial CuResult cuEventRecord(nint e, nint stream);
    [LibraryImport(Library)] public static partial CuResult cuEventSynchronize(nint e);
    [LibraryImport(Library)] public static partial CuResult cuEventElapsedTime(out float ms, nint start, nint end);
}

/// <summary>CUdevice_attribute values we query.</summary>
public enum DeviceAttribute
{
    MultiprocessorCount = 16,
    ComputeCapabilityMajor = 75,
    ComputeCapabilityMinor = 76,
    MaxSharedMemoryPerBlockOptin = 97,
}

/// <summary>CUfunction_attribute values we query or set.</summary>
public enum FunctionAttribute
{
    MaxThreadsPerBlock = 0,
    SharedSizeBytes = 1,
    LocalSizeBytes = 3,
    NumRegs = 4,
    MaxDynamicSharedSizeBytes = 8,
}

/// <summary>CUjit_option values passed to cuModuleLoadDataEx.</summary>
public enum JitOption
{
    InfoLogBuffer = 3,
    InfoLogBufferSizeBytes = 4,
    ErrorLogBuffer = 5,
    ErrorLogBufferSizeBytes = 6,
}
