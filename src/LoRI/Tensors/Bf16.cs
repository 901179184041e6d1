using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace LoRI.Tensors;

/// <summary>
/// bfloat16 (the top 16 bits of an IEEE float32) and float16 conversions, scalar and vectorised.
/// float32 -> bf16 rounds to nearest, ties to even, and keeps NaN a (quiet) NaN, as PyTorch does.
/// </summary>
public static class Bf16
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ToFloat(ushort h) => BitConverter.Int32BitsToSingle(h << 16);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort FromFloat(float f)
    {
        uint u = BitConverter.SingleToUInt32Bits(f);
        if ((u & 0x7FFF_FFFF) > 0x7F80_0000) return (ushort)((u >> 16) | 0x40);
        u += 0x7FFF + ((u >> 16) & 1);
        return (ushort)(u >> 16);
    }

    /// <summary>Rounds a float to the nearest bf16 value and returns it as a float.</summary>
    public static float Round(float f) => ToFloat(FromFloat(f));

    /// <summary>dst[i] = (float)src[i], 16 lanes at a time where the CPU allows it.</summary>
    public static void ToFloat(ReadOnlySpan<ushort> src, Span<float> dst)
    {
        if (dst.Length < src.Length) throw new ArgumentException("destination too short");
        int i = 0;
        ref ushort s = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(src);
        ref float d = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(dst);
        if (Vector512.IsHardwareAccelerated)
        {
            for (; i + 16 <= src.Length; i += 16)
            {
                var v = Vector256.LoadUnsafe(ref s, (nuint)i);
                var (lo, hi) = Vector256.Widen(v);
                var w = Vector512.Create(lo, hi);
                Vector512.StoreUnsafe(Vector512.ShiftLeft(w, 16).AsSingle(), ref d, (nuint)i);
            }
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            for (; i + 8 <= src.Length; i += 8)
            {
                var v = Vector128.LoadUnsafe(ref s, (nuint)i);
                var (lo, hi) = Vector128.Widen(v);
                var w = Vector256.Create(lo, hi);
                Vector256.StoreUnsafe(Vector256.ShiftLeft(w, 16).AsSingle(), ref d, (nuint)i);
            }
        }
        for (; i < src.Length; i++) Unsafe.Add(ref d, i) = ToFloat(Unsafe.Add(ref s, i));
    }

    public static void FromFloat(ReadOnlySpan<float> src, Span<ushort> dst)
    {
        if (dst.Length < src.Length) throw new ArgumentException("destination too short");
        for (int i = 0; i < src.Length; i++) dst[i] = FromFloat(src[i]);
    }
}

public static class F16
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ToFloat(ushort h) => (float)BitConverter.UInt16BitsToHalf(h);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort FromFloat(float f) => BitConverter.HalfToUInt16Bits((Half)f);

    public static void ToFloat(ReadOnlySpan<ushort> src, Span<float> dst)
    {
        if (dst.Length < src.Length) throw new ArgumentException("destination too short");
        System.Numerics.Tensors.TensorPrimitives.ConvertToSingle(
            System.Runtime.InteropServices.MemoryMarshal.Cast<ushort, Half>(src), dst);
    }

    public static void FromFloat(ReadOnlySpan<float> src, Span<ushort> dst)
    {
        if (dst.Length < src.Length) throw new ArgumentException("destination too short");
        System.Numerics.Tensors.TensorPrimitives.ConvertToHalf(
            src, System.Runtime.InteropServices.MemoryMarshal.Cast<ushort, Half>(dst));
    }
}
