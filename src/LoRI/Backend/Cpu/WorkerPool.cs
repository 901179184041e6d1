namespace LoRI.Backend.Cpu;

/// <summary>
/// Work that a <see cref="WorkerPool"/> splits by index. Ops keep one instance per op and set its fields
/// before each run, so a run allocates nothing (Parallel.For allocates per call, which the per-token hot
/// path must not).
/// </summary>
public abstract class ParallelJob
{
    /// <summary>Executes items [begin, end). <paramref name="worker"/> is 0..Workers-1, for per-worker scratch.</summary>
    public abstract void Execute(int begin, int end, int worker);
}

/// <summary>
/// A fork-join pool of persistent threads. Run() splits [0, count) into chunks that the calling thread and
/// the workers claim with an atomic counter, and returns when all are done. Not reentrant: a job must not
/// call Run itself.
/// </summary>
public sealed class WorkerPool : IDisposable
{
    private readonly Thread[] _threads;
    private readonly SemaphoreSlim _start;
    private readonly CountdownEvent _done;
    private volatile bool _stop;
    private ParallelJob? _job;
    private int _count, _chunk, _next;
    private Exception? _error;
    private readonly object _runLock = new();

    public int Workers { get; }

    public static WorkerPool Shared { get; } = new(Environment.ProcessorCount);

    public WorkerPool(int workers)
    {
        Workers = Math.Max(1, workers);
        _start = new SemaphoreSlim(0);
        _done = new CountdownEvent(1);
        // The first Wait that blocks (rather than spins) lazily allocates the event's lock object (24 bytes);
        // block once here so that it never happens inside a per-token run.
        _done.Wait(1);
        _threads = new Thread[Workers - 1];
        for (int i = 0; i < _threads.Length; i++)
        {
            int id = i + 1;
            _threads[i] = new Thread(() => Loop(id)) { IsBackground = true, Name = $"lori-worker-{id}" };
            _threads[i].Start();
        }
    }

    /// <summary>Runs job over [0, count) in chunks of at least <paramref name="minChunk"/> items.</summary>
    public void Run(ParallelJob job, int count, int minChunk = 1)
    {
        if (count <= 0) return;
        int chunk = Math.Max(minChunk, (count + Workers * 4 - 1) / (Workers * 4));
        if (Workers == 1 || count <= chunk)
        {
            job.Execute(0, count, 0);
            return;
        }
        lock (_runLock)
        {
            _job = job; _count = count; _chunk = chunk; _next = 0; _error = null;
            _done.Reset(Workers);
            _start.Release(_threads.Length);
            Work(0);
            _done.Signal();
            _done.Wait();
            _job = null;
            if (_error is { } e) throw new AggregateException("a parallel op failed", e);
        }
    }

    private void Work(int worker)
    {
        var job = _job!;
        try
        {
            while (true)
            {
                int begin = Interlocked.Add(ref _next, _chunk) - _chunk;
                if (begin >= _count) break;
                job.Execute(begin, Math.Min(_count, begin + _chunk), worker);
            }
        }
        catch (Exception e)
        {
            Interlocked.CompareExchange(ref _error, e, null);
            Volatile.Write(ref _next, _count);
        }
    }

    private void Loop(int id)
    {
        while (true)
        {
            _start.Wait();
            if (_stop) return;
            Work(id);
            _done.Signal();
        }
    }

    public void Dispose()
    {
        _stop = true;
        if (_threads.Length > 0) _start.Release(_threads.Length);   // a one-thread pool has no workers to wake
    }
}
