using LoRI.Cuda.Backend;
using LoRI.Cuda.Emulator;

namespace LoRI.Tests.Cuda;

/// <summary>The device arena's sub-allocation: alignment, reuse and merging of returned blocks.</summary>
public class DeviceArenaTests
{
    [Test]
    public void Blocks_AreAlignedDisjointAndMergedOnReturn()
    {
        using var driver = new EmulatorDriver();
        using var arena = new DeviceArena(driver, 4096);
        var a = arena.Rent(100);
        var b = arena.Rent(300);
        var c = arena.Rent(256);
        Assert.That(new[] { a.Pointer, b.Pointer, c.Pointer }.All(p => p % 256 == 0), Is.True, "256-byte alignment");
        Assert.That(b.Pointer, Is.EqualTo(a.Pointer + 256));
        Assert.That(c.Pointer, Is.EqualTo(b.Pointer + 512));
        Assert.That(arena.BytesInUse, Is.EqualTo(256 + 512 + 256));
        Assert.That(arena.BytesReserved, Is.EqualTo(4096), "one chunk");
        b.Dispose();
        a.Dispose();
        // a and b merged: a 768-byte request fits where they were
        var d = arena.Rent(768);
        Assert.That(d.Pointer, Is.EqualTo(a.Pointer));
        // larger than a chunk: its own chunk
        var e = arena.Rent(10_000);
        Assert.That(arena.BytesReserved, Is.EqualTo(4096 + 10_240));
        c.Dispose();
        d.Dispose();
        e.Dispose();
        Assert.That(arena.BytesInUse, Is.EqualTo(0));
        var f = arena.Rent(4096);
        Assert.That(f.Pointer, Is.EqualTo(a.Pointer), "the first chunk is whole again");
        f.Dispose();
    }

    [Test]
    public void BlockReturnedAfterTheArena_IsIgnored()
    {
        using var driver = new EmulatorDriver();
        var arena = new DeviceArena(driver, 0);
        var a = arena.Rent(64);
        arena.Dispose();
        Assert.DoesNotThrow(a.Dispose);
        Assert.Throws<ObjectDisposedException>(() => arena.Rent(1));
    }
}
