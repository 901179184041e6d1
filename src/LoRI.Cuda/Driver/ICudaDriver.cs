namespace LoRI.Cuda.Driver;

/// <summary>
/// The driver calls the CUDA backend makes, with two implementations: <see cref="CudaDriver"/> over
/// libcuda and <see cref="Emulator.EmulatorDriver"/> over the host emulator (native/emu). The backend
/// never knows which one it drives. Every method throws <see cref="CudaException"/> on failure.
/// Device pointers are 64-bit addresses in the device's space; a stream of 0 is the default stream.
/// </summary>
public interface ICudaDriver : IDisposable
{
    /// <summary>The device's name, e.g. "NVIDIA H200" or "LoRI CUDA emulator (2 threads)".</summary>
    string DeviceName { get; }
    bool IsEmulator { get; }
    /// <summary>major * 10 + minor, e.g. 90 for sm_90.</summary>
    int ComputeCapability { get; }
    int MultiprocessorCount { get; }
    /// <summary>The most dynamic shared memory one block may opt in to (bytes).</summary>
    int MaxDynamicSharedMemoryPerBlock { get; }

    ulong Alloc(long bytes);
    void Free(ulong ptr);
    void Memset(ulong dst, byte value, long bytes, nint stream);
    void CopyHtoD(ulong dst, nint src, long bytes, nint stream);
    void CopyDtoH(nint dst, ulong src, long bytes, nint stream);
    void CopyDtoD(ulong dst, ulong src, long bytes, nint stream);
    /// <summary>Page-locked host memory (plain aligned memory in the emulator).</summary>
    nint AllocHost(long bytes);
    void FreeHost(nint ptr);

    /// <summary>Loads one kernel family (native/kernels/NAME.cu) by name.</summary>
    CudaModule LoadModule(string name);
    nint GetFunction(CudaModule module, string name);
    void SetMaxDynamicSharedMemory(nint function, int bytes);
    unsafe void Launch(nint function, Dim3 grid, Dim3 block, int dynamicSharedBytes, nint stream, void** args);

    CudaStream CreateStream();
    void SynchronizeStream(nint stream);
    CudaEvent CreateEvent();
    void RecordEvent(CudaEvent e, nint stream);
    void SynchronizeEvent(CudaEvent e);
    /// <summary>Milliseconds between two recorded events.</summary>
    float ElapsedMilliseconds(CudaEvent start, CudaEvent end);
    /// <summary>Waits for all work on the device.</summary>
    void Synchronize();

    /// <summary>
    /// cuTensorMapEncodeTiled (CUDA 12+, compute capability 9.0 devices): a tiled map of the tensor at
    /// <paramref name="globalAddress"/> with <paramref name="globalDims"/> elements per dimension (innermost first),
    /// <paramref name="globalStrides"/> bytes between consecutive indices of dimensions 1.. (rank - 1 values,
    /// multiples of 16), copied in boxes of <paramref name="boxDims"/> elements; interleave none. The emulator
    /// checks the arguments as the driver documents and writes its own encoding.
    /// </summary>
    TensorMap EncodeTensorMapTiled(TensorMapDataType dataType, ulong globalAddress, ReadOnlySpan<ulong> globalDims, ReadOnlySpan<ulong> globalStrides,
                                   ReadOnlySpan<uint> boxDims, ReadOnlySpan<uint> elementStrides, TensorMapSwizzle swizzle,
                                   TensorMapL2Promotion l2Promotion, TensorMapOobFill oobFill);

    // Release calls for the SafeHandles (no throwing: they run from ReleaseHandle).
    internal CuResult ReleaseModule(nint module);
    internal CuResult ReleaseStream(nint stream);
    internal CuResult ReleaseEvent(nint e);
}
