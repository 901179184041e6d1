using LoRI.Tensors;

namespace LoRI.Backend;

/// <summary>
/// A dense, row-major block of elements in one backend's memory: a host pointer for the CPU backend,
/// a device pointer for CUDA. A tensor either owns its memory (disposing frees it) or is a view into
/// memory owned by something else (an arena, a memory-mapped file, another tensor).
/// </summary>
public sealed class Tensor : IDisposable
{
    private IDisposable? _owner;

    public IBackend Backend { get; }
    public DType DType { get; }
    public int[] Shape { get; }
    public long Length { get; }
    /// <summary>Address of element 0 in the backend's address space.</summary>
    public nint Pointer { get; private set; }
    public long ByteSize => Length * DType.Size();
    public int Rank => Shape.Length;
    /// <summary>Size of the first dimension (rows of a matrix, tokens of an activation).</summary>
    public int Rows => Shape.Length == 0 ? 1 : Shape[0];
    /// <summary>Size of the last dimension (row length).</summary>
    public int Cols => Shape.Length == 0 ? 1 : Shape[^1];

    public Tensor(IBackend backend, DType dtype, int[] shape, nint pointer, IDisposable? owner)
    {
        Backend = backend;
        DType = dtype;
        Shape = shape;
        Length = DTypes.ElementCount(shape);
        Pointer = pointer;
        _owner = owner;
    }

    /// <summary>A view of <paramref name="shape"/> starting <paramref name="elementOffset"/> elements in. Owns nothing.</summary>
    public Tensor View(long elementOffset, params int[] shape)
    {
        long n = DTypes.ElementCount(shape);
        if (elementOffset < 0 || elementOffset + n > Length)
            throw new ArgumentOutOfRangeException(nameof(elementOffset),
                $"view of {DTypes.ShapeString(shape)} at {elementOffset} does not fit in {DTypes.ShapeString(Shape)}");
        return new Tensor(Backend, DType, shape, Pointer + (nint)(elementOffset * DType.Size()), null);
    }

    /// <summary>Rows [start, start+count) of the first dimension, as a view.</summary>
    public Tensor Slice(int start, int count)
    {
        var shape = (int[])Shape.Clone();
        shape[0] = count;
        return View((long)start * (Length / Math.Max(1, Rows)), shape);
    }

    /// <summary>The same memory seen with another shape of equal element count.</summary>
    public Tensor Reshape(params int[] shape)
    {
        if (DTypes.ElementCount(shape) != Length)
            throw new ArgumentException($"cannot reshape {DTypes.ShapeString(Shape)} to {DTypes.ShapeString(shape)}");
        return View(0, shape);
    }

    /// <summary>Host span over the elements. Valid only for host-memory backends (the CPU backend).</summary>
    public unsafe Span<T> Span<T>() where T : unmanaged
    {
        if (!Backend.IsHostMemory) throw new InvalidOperationException($"{Backend.Name} tensors are not host memory");
        if (sizeof(T) != DType.Size()) throw new InvalidOperationException($"tensor is {DType}, not {typeof(T).Name}");
        return new Span<T>((void*)Pointer, checked((int)Length));
    }

    public override string ToString() => $"{DType}{DTypes.ShapeString(Shape)}";

    public void Dispose()
    {
        _owner?.Dispose();
        _owner = null;
        Pointer = 0;
    }
}
