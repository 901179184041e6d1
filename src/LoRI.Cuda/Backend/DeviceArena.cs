using LoRI.Cuda.Driver;

namespace LoRI.Cuda.Backend;

/// <summary>
/// Device memory for one backend: large chunks allocated from the driver and handed out in 256-byte
/// aligned blocks (first fit, neighbours merged on return), so a model's many tensors cost a few
/// driver allocations. With a chunk size of 0 every block is its own driver allocation: the emulator
/// uses that, so an overrun of one tensor is caught (the emulator's copy checks, AddressSanitizer)
/// instead of landing in its neighbour.
/// </summary>
public sealed class DeviceArena : IDisposable
{
    private const long Alignment = 256;
    private readonly ICudaDriver _driver;
    private readonly long _chunkBytes;
    private readonly List<Chunk> _chunks = new();
    private readonly HashSet<ulong> _direct = new();
    private readonly object _lock = new();
    private bool _disposed;

    private sealed class Chunk(ulong pointer, long size)
    {
        public ulong Pointer { get; } = pointer;
        public long Size { get; } = size;
        /// <summary>Free ranges: offset -> length.</summary>
        public SortedDictionary<long, long> Free { get; } = new() { [0] = size };
    }

    /// <summary>Bytes handed out and not yet returned.</summary>
    public long BytesInUse
    {
        get;
        private set
        {
            field = value;
            if (value > PeakBytesInUse) PeakBytesInUse = value;
        }
    }

    /// <summary>The most bytes in use at once since creation or the last <see cref="ResetPeak"/>.</summary>
    public long PeakBytesInUse { get; private set; }

    /// <summary>Starts a new peak measurement from the bytes in use now.</summary>
    public void ResetPeak()
    {
        lock (_lock) PeakBytesInUse = BytesInUse;
    }
    /// <summary>Bytes held from the driver (chunks plus direct blocks).</summary>
    public long BytesReserved { get; private set; }

    public DeviceArena(ICudaDriver driver, long chunkBytes)
    {
        _driver = driver;
        _chunkBytes = chunkBytes;
    }

    public ArenaBlock Rent(long bytes)
    {
        if (bytes <= 0) throw new ArgumentOutOfRangeException(nameof(bytes), bytes, "a device block needs at least one byte");
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_chunkBytes == 0)
            {
                var p = _driver.Alloc(bytes);
                _direct.Add(p);
                BytesInUse += bytes;
                BytesReserved += bytes;
                return new ArenaBlock(this, null, p, bytes, bytes);
            }
            long size = (bytes + Alignment - 1) / Alignment * Alignment;
            foreach (var c in _chunks)
                if (TryTake(c, size, out var off))
                    return Issue(c, off, size, bytes);
            var chunk = new Chunk(_driver.Alloc(Math.Max(_chunkBytes, size)), Math.Max(_chunkBytes, size));
            _chunks.Add(chunk);
            BytesReserved += chunk.Size;
            TryTake(chunk, size, out var o);
            return Issue(chunk, o, size, bytes);
        }
    }

    private ArenaBlock Issue(Chunk c, long offset, long size, long bytes)
    {
        BytesInUse += size;
        return new ArenaBlock(this, c, c.Pointer + (ulong)offset, bytes, size);
    }

    private static bool TryTake(Chunk c, long size, out long offset)
    {
        foreach (var (off, len) in c.Free)
        {
            if (len < size) continue;
            c.Free.Remove(off);
            if (len > size) c.Free[off + size] = len - size;
            offset = off;
            return true;
        }
        offset = -1;
        return false;
    }

    internal void Return(ArenaBlock b)
    {
        lock (_lock)
        {
            // a tensor that outlives its backend: the arena already gave everything back
            if (_disposed) return;
            BytesInUse -= b.ReservedBytes;
            if (b.Owner is null)
            {
                BytesReserved -= b.ReservedBytes;
                _direct.Remove(b.Pointer);
                _driver.Free(b.Pointer);
                return;
            }
            var c = (Chunk)b.Owner;
            long off = (long)(b.Pointer - c.Pointer), len = b.ReservedBytes;
            // merge with the free range that ends where this one starts, and the one that starts where it ends
            long prevKey = -1;
            foreach (var (o, l) in c.Free)
            {
                if (o >= off) break;
                if (o + l == off) prevKey = o;
            }
            if (prevKey >= 0)
            {
                len += off - prevKey;
                off = prevKey;
                c.Free.Remove(prevKey);
            }
            if (c.Free.Remove(off + len, out var nextLen)) len += nextLen;
            c.Free[off] = len;
        }
    }

    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
            foreach (var c in _chunks) _driver.Free(c.Pointer);
            foreach (var p in _direct) _driver.Free(p);
            _chunks.Clear();
            _direct.Clear();
            BytesReserved = 0;
            BytesInUse = 0;
        }
    }
}

/// <summary>A block of device memory from a <see cref="DeviceArena"/>; Dispose returns it.</summary>
public sealed class ArenaBlock : IDisposable
{
    private DeviceArena? _arena;
    internal object? Owner { get; }
    public ulong Pointer { get; }
    public long Bytes { get; }
    internal long ReservedBytes { get; }

    internal ArenaBlock(DeviceArena arena, object? owner, ulong pointer, long bytes, long reserved)
    {
        _arena = arena;
        Owner = owner;
        Pointer = pointer;
        Bytes = bytes;
        ReservedBytes = reserved;
    }

    public void Dispose()
    {
        var a = Interlocked.Exchange(ref _arena, null);
        a?.Return(this);
    }
}
