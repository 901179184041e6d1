using System.Runtime.InteropServices;

namespace LoRI.Cuda.Driver;

/// <summary>
/// A CUtensorMap: 128 opaque bytes made by cuTensorMapEncodeTiled (<see cref="ICudaDriver.EncodeTensorMapTiled"/>)
/// and passed by value to a kernel's `const __grid_constant__` parameter, where the bulk tensor copy (TMA)
/// reads it. The driver wants it 64-byte aligned wherever it is written or launched from; C# cannot align a
/// struct, so callers copy it into aligned memory for those calls.
/// </summary>
[StructLayout(LayoutKind.Sequential, Size = 128)]
public unsafe struct TensorMap
{
    public fixed ulong Words[16];

    /// <summary>The argument counts cuTensorMapEncodeTiled takes: rank 1..5, one stride fewer than dims, one box and element stride per dim.</summary>
    internal static void CheckRank(int dims, int strides, int box, int elementStrides)
    {
        if (dims is < 1 or > 5 || box != dims || elementStrides != dims || strides != dims - 1)
            throw new ArgumentException($"tensor map: rank {dims} with {strides} strides, {box} box and {elementStrides} element-stride values");
    }
}

/// <summary>CUtensorMapDataType values we use.</summary>
public enum TensorMapDataType
{
    UInt8 = 0,
    Float16 = 6,
    Float32 = 7,
    BFloat16 = 9,
}

/// <summary>CUtensorMapSwizzle: the shared-memory layout of a box (16-byte chunks XOR-permuted within 32/64/128 bytes).</summary>
public enum TensorMapSwizzle
{
    None = 0,
    Bytes32 = 1,
    Bytes64 = 2,
    Bytes128 = 3,
}

/// <summary>CUtensorMapL2promotion.</summary>
public enum TensorMapL2Promotion
{
    None = 0,
    Bytes64 = 1,
    Bytes128 = 2,
    Bytes256 = 3,
}

/// <summary>CUtensorMapFloatOOBfill: out-of-bound elements arrive as zeros (None) or as a NaN that requests zero FMA.</summary>
public enum TensorMapOobFill
{
    None = 0,
    NanRequestZeroFma = 1,
}
