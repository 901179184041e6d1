using System.Globalization;

namespace LoRI.IO;

/// <summary>The value types of GGUF metadata (their numbers are the file's type tags).</summary>
public enum GgufValueType : uint
{
    UInt8 = 0, Int8 = 1, UInt16 = 2, Int16 = 3, UInt32 = 4, Int32 = 5, Float32 = 6, Bool = 7,
    String = 8, Array = 9, UInt64 = 10, Int64 = 11, Float64 = 12,
}

/// <summary>The ggml tensor types this engine writes and reads (numbers as ggml.h defines them).</summary>
public enum GgmlType : uint
{
    F32 = 0,
    F16 = 1,
    BF16 = 30,
}

/// <summary>
/// One metadata value: a scalar, a string, or an array of one element type (nested arrays are not used by
/// llama-architecture files and are not supported). Arrays hold string[], int[], uint[], float[], long[],
/// ulong[], double[], bool[], byte[], sbyte[], short[] or ushort[].
/// </summary>
public sealed record GgufValue(GgufValueType Type, object Value, GgufValueType ElementType = GgufValueType.UInt8)
{
    public static GgufValue Of(string s) => new(GgufValueType.String, s);
    public static GgufValue Of(uint v) => new(GgufValueType.UInt32, v);
    public static GgufValue Of(int v) => new(GgufValueType.Int32, v);
    public static GgufValue Of(float v) => new(GgufValueType.Float32, v);
    public static GgufValue Of(bool v) => new(GgufValueType.Bool, v);
    public static GgufValue Of(ulong v) => new(GgufValueType.UInt64, v);
    public static GgufValue Of(long v) => new(GgufValueType.Int64, v);
    public static GgufValue Of(double v) => new(GgufValueType.Float64, v);
    public static GgufValue Of(string[] a) => new(GgufValueType.Array, a, GgufValueType.String);
    public static GgufValue Of(int[] a) => new(GgufValueType.Array, a, GgufValueType.Int32);
    public static GgufValue Of(uint[] a) => new(GgufValueType.Array, a, GgufValueType.UInt32);
    public static GgufValue Of(float[] a) => new(GgufValueType.Array, a, GgufValueType.Float32);

    public string AsString() => Type == GgufValueType.String ? (string)Value : throw Wrong("a string");
    public string[] AsStrings() => IsArrayOf(GgufValueType.String) ? (string[])Value : throw Wrong("an array of strings");
    public int[] AsInts() => IsArrayOf(GgufValueType.Int32) ? (int[])Value : throw Wrong("an array of int32");
    public float[] AsFloats() => IsArrayOf(GgufValueType.Float32) ? (float[])Value : throw Wrong("an array of float32");

    private bool IsArrayOf(GgufValueType t) => Type == GgufValueType.Array && ElementType == t;
    public float AsFloat() => Type == GgufValueType.Float32 ? (float)Value : throw Wrong("a float32");
    public bool AsBool() => Type == GgufValueType.Bool ? (bool)Value : throw Wrong("a bool");

    /// <summary>Any integer scalar as a long.</summary>
    public long AsLong() => Value switch
    {
        byte b when Type == GgufValueType.UInt8 => b,
        sbyte b => b,
        ushort s => s,
        short s => s,
        uint u => u,
        int i => i,
        ulong u when u <= long.MaxValue => (long)u,
        long l => l,
        _ => throw Wrong("an integer"),
    };

    private InvalidOperationException Wrong(string expected) =>
        new($"GGUF value of type {Type}{(Type == GgufValueType.Array ? $" of {ElementType}" : "")} is not {expected}");

    public override string ToString() => Value switch
    {
        string s => s,
        float f => f.ToString("R", CultureInfo.InvariantCulture),
        System.Array a => $"[{ElementType} x {a.Length}]",
        _ => Convert.ToString(Value, CultureInfo.InvariantCulture) ?? "",
    };
}

public static class GgmlTypes
{
    public static int Size(this GgmlType t) => t switch
    {
        GgmlType.F32 => 4,
        GgmlType.F16 or GgmlType.BF16 => 2,
        _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };

    /// <summary>llama.cpp's `general.file_type` for a file whose large tensors are all of this type.</summary>
    public static uint FileType(this GgmlType t) => t switch
    {
        GgmlType.F32 => 0,   // LLAMA_FTYPE_ALL_F32
        GgmlType.F16 => 1,   // LLAMA_FTYPE_MOSTLY_F16
        GgmlType.BF16 => 32, // LLAMA_FTYPE_MOSTLY_BF16
        _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };

    public static GgmlType Parse(string s) => s.ToLowerInvariant() switch
    {
        "f32" or "float32" => GgmlType.F32,
        "f16" or "float16" => GgmlType.F16,
        "bf16" or "bfloat16" => GgmlType.BF16,
        _ => throw new ArgumentException($"unknown GGUF tensor type '{s}': expected f32, f16 or bf16"),
    };
}

/// <summary>GGUF constants shared by the writer and the reader.</summary>
public static class Gguf
{
    public const uint Magic = 0x46554747; // "GGUF" read as a little-endian uint32
    public const uint Version = 3;
    public const int DefaultAlignment = 32;
    public const string AlignmentKey = "general.alignment";
}
