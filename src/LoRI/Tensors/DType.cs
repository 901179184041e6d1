namespace LoRI.Tensors;

/// <summary>Element types we read from files and hold in backend memory.</summary>
public enum DType : byte
{
    F32, F16, BF16, F64,
    I8, I16, I32, I64,
    U8, U16, U32, U64,
    Bool,
}

public static class DTypes
{
    /// <summary>Bytes per element.</summary>
    public static int Size(this DType t) => t switch
    {
        DType.F32 or DType.I32 or DType.U32 => 4,
        DType.F16 or DType.BF16 or DType.I16 or DType.U16 => 2,
        DType.F64 or DType.I64 or DType.U64 => 8,
        DType.I8 or DType.U8 or DType.Bool => 1,
        _ => throw new ArgumentOutOfRangeException(nameof(t), t, "unknown dtype"),
    };

    public static bool IsFloat(this DType t) => t is DType.F32 or DType.F16 or DType.BF16 or DType.F64;

    /// <summary>The dtype's name as the safetensors header spells it.</summary>
    public static string SafetensorsName(this DType t) => t switch
    {
        DType.F32 => "F32", DType.F16 => "F16", DType.BF16 => "BF16", DType.F64 => "F64",
        DType.I8 => "I8", DType.I16 => "I16", DType.I32 => "I32", DType.I64 => "I64",
        DType.U8 => "U8", DType.U16 => "U16", DType.U32 => "U32", DType.U64 => "U64",
        DType.Bool => "BOOL",
        _ => throw new ArgumentOutOfRangeException(nameof(t), t, "unknown dtype"),
    };

    public static bool TryParseSafetensors(string name, out DType t)
    {
        switch (name)
        {
            case "F32": t = DType.F32; return true;
            case "F16": t = DType.F16; return true;
            case "BF16": t = DType.BF16; return true;
            case "F64": t = DType.F64; return true;
            case "I8": t = DType.I8; return true;
            case "I16": t = DType.I16; return true;
            case "I32": t = DType.I32; return true;
            case "I64": t = DType.I64; return true;
            case "U8": t = DType.U8; return true;
            case "U16": t = DType.U16; return true;
            case "U32": t = DType.U32; return true;
            case "U64": t = DType.U64; return true;
            case "BOOL": t = DType.Bool; return true;
            default: t = default; return false;
        }
    }

    /// <summary>Parses a user-facing name: f32, f16, bf16 (case-insensitive).</summary>
    public static DType ParseFloat(string name) => name.ToLowerInvariant() switch
    {
        "f32" or "float32" or "fp32" => DType.F32,
        "f16" or "float16" or "fp16" => DType.F16,
        "bf16" or "bfloat16" => DType.BF16,
        _ => throw new ArgumentException($"unknown float dtype '{name}': expected f32, f16 or bf16"),
    };

    public static long ElementCount(ReadOnlySpan<int> shape)
    {
        long n = 1;
        foreach (var d in shape) n = checked(n * d);
        return n;
    }

    public static string ShapeString(ReadOnlySpan<int> shape) => "[" + string.Join(", ", shape.ToArray()) + "]";
}
