namespace LoRI.Cuda.Driver;

/// <summary>Grid or block dimensions of a launch.</summary>
public readonly record struct Dim3(uint X, uint Y = 1, uint Z = 1)
{
    public static implicit operator Dim3(int x) => new((uint)x);
    public override string ToString() => $"({X},{Y},{Z})";
}
