using LoRI.Backend;
using LoRI.Cuda.Driver;
using LoRI.Tensors;

namespace LoRI.Cuda.Backend;

/// <summary>
/// Capturing a sequence of the backend's ops once and replaying it with one call (a CUDA graph), for the decode
/// step, where launch gaps dominate at batch 1. On a device the stream is captured (cuStreamBeginCapture) and
/// the graph instantiated (cuGraphInstantiateWithFlags) and launched (cuGraphLaunch); on the emulator the
/// launches are recorded with their argument values and replayed in order. Either way nothing runs while
/// capturing, and the captured ops may not allocate, copy to or from the host, or synchronize (they throw):
/// run the step once before capturing it so that scratch buffers have their final size.
/// </summary>
public sealed unsafe partial class CudaBackend
{
    private List<RecordedLaunch>? _recording;
    private bool _capturing;
    private int _capturedLaunches;

    /// <summary>True between <see cref="BeginCapture"/> and <see cref="EndCapture"/>.</summary>
    public bool IsCapturing => _capturing;

    private void NotCapturing(string what)
    {
        if (_capturing) throw new InvalidOperationException($"{what} is not allowed while a CUDA graph is being captured");
    }

    public void BeginCapture()
    {
        NotCapturing("starting a capture");
        if (Driver is CudaDriver)
            CudaDriver.ThrowIfFailed(CudaApi.cuStreamBeginCapture(Stream, CudaApi.StreamCaptureModeThreadLocal));
        else
            _recording = new List<RecordedLaunch>();
        _capturedLaunches = 0;
        _capturing = true;
    }

    /// <summary>Ends the capture and returns the graph, ready to <see cref="CudaGraph.Launch"/> on this backend's stream.</summary>
    public CudaGraph EndCapture()
    {
        if (!_capturing) throw new InvalidOperationException("EndCapture without BeginCapture");
        _capturing = false;
        if (_recording is not null)
        {
            var launches = _recording;
            _recording = null;
            return new CudaGraph(this, 0, launches.ToArray(), launches.Count);
        }
        CudaDriver.ThrowIfFailed(CudaApi.cuStreamEndCapture(Stream, out var graph));
        try
        {
            CudaDriver.ThrowIfFailed(CudaApi.cuGraphInstantiateWithFlags(out var exec, graph, 0));
            return new CudaGraph(this, exec, null, _capturedLaunches);
        }
        finally
        {
            CudaApi.cuGraphDestroy(graph);
        }
    }

    /// <summary>positions[i] += 1 on the device (I32 [N]): the next decode step's positions, inside a captured step.</summary>
    public void AdvancePositions(Tensor positions)
    {
        Expect("positions_advance", "positions", positions, DType.I32);
        int n = checked((int)positions.Length);
        if (n == 0) return;
        var a = new KernelArgs();
        a.Add(positions); a.Add(n);
        Launch("decode", "positions_advance", (n + 255) / 256, 256, 0, ref a);
    }

    /// <summary>
    /// A fingerprint of the scratch buffers' addresses and sizes. A captured graph holds the scratch pointers of
    /// its capture, so it may be replayed only while the fingerprint is unchanged (scratch grows by reallocation).
    /// </summary>
    internal ulong ScratchFingerprint()
    {
        ulong h = 0x9E3779B97F4A7C15UL;
        foreach (var kv in _scratch)
        {
            h = Mix(h ^ (ulong)kv.Value.Pointer);
            h = Mix(h ^ (ulong)kv.Value.Length);
        }
        return h;

        static ulong Mix(ulong z)
        {
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            return z ^ (z >> 31);
        }
    }

    internal void LaunchGraph(CudaGraph g)
    {
        NotCapturing("launching a graph");
        if (g.Recorded is null)
        {
            CudaDriver.ThrowIfFailed(CudaApi.cuGraphLaunch(g.Exec, Stream));
            return;
        }
        var pointers = stackalloc void*[KernelArgs.Capacity];
        var recorded = g.Recorded;
        for (int k = 0; k < recorded.Length; k++)
        {
            ref readonly var r = ref recorded[k];
            var args = r.Args;
            for (int i = 0; i < args.Count; i++) pointers[i] = args.Values + i;
            Driver.Launch(r.Function, r.Grid, r.Block, r.Smem, Stream, pointers);
        }
    }
}

/// <summary>One launch as recorded on the emulator: the function, its configuration and its argument values.</summary>
internal readonly record struct RecordedLaunch(nint Function, Dim3 Grid, Dim3 Block, int Smem, KernelArgs Args);

/// <summary>A captured sequence of ops of one <see cref="CudaBackend"/>; <see cref="Launch"/> replays it on the backend's stream.</summary>
public sealed class CudaGraph : IDisposable
{
    private readonly CudaBackend _backend;
    internal nint Exec { get; private set; }
    /// <summary>The emulator's recording (an array, so that a replay walks it without an enumerator); null on a device.</summary>
    internal RecordedLaunch[]? Recorded { get; }

    internal CudaGraph(CudaBackend backend, nint exec, RecordedLaunch[]? recorded, int launchCount)
    {
        _backend = backend;
        Exec = exec;
        Recorded = recorded;
        LaunchCount = launchCount;
    }

    /// <summary>Kernel launches in the graph (counted while it was captured, on a device as on the emulator).</summary>
    public int LaunchCount { get; }

    public void Launch() => _backend.LaunchGraph(this);

    public void Dispose()
    {
        if (Exec != 0) CudaApi.cuGraphExecDestroy(Exec);
        Exec = 0;
    }
}
