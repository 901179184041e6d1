using System.Runtime.InteropServices;

namespace LoRI.Cuda.Driver;

/// <summary>Stream capture into a CUDA graph and its replay (driver API, CUDA 11.4 and newer).</summary>
internal static unsafe partial class CudaApi
{
    /// <summary>CUstreamCaptureMode: only this thread's unsafe API calls are refused while it captures.</summary>
    public const int StreamCaptureModeThreadLocal = 1;

    [LibraryImport(Library, EntryPoint = "cuStreamBeginCapture_v2")] public static partial CuResult cuStreamBeginCapture(nint stream, int mode);
    [LibraryImport(Library)] public static partial CuResult cuStreamEndCapture(nint stream, out nint graph);
    [LibraryImport(Library)] public static partial CuResult cuGraphInstantiateWithFlags(out nint exec, nint graph, ulong flags);
    [LibraryImport(Library)] public static partial CuResult cuGraphLaunch(nint exec, nint stream);
    [LibraryImport(Library)] public static partial CuResult cuGraphExecDestroy(nint exec);
    [LibraryImport(Library)] public static partial CuResult cuGraphDestroy(nint graph);
}
