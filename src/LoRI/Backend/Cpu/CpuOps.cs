using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using LoRI.Tensors;

namespace LoRI.Backend.Cpu;

/// <summary>
/// The CPU reference kernels, on spans and raw pointers, one row (or one tile) at a time. CpuBackend splits
/// the work across cores and calls these; tests call them directly. Forward ops live here; their backward
/// twins in CpuOps.Backward.cs. Semantics are exactly those documented on IBackend.
/// </summary>
public static unsafe partial class CpuOps
{
    /// <summary>Converts `count` elements of a float tensor (F32/F16/BF16) starting at element `offset` to F32.</summary>
    public static void ToFloat(DType dtype, nint basePtr, long offset, Span<float> dst)
    {
        int count = dst.Length;
        switch (dtype)
        {
            case DType.F32:
                new ReadOnlySpan<float>((float*)basePtr + offset, count).CopyTo(dst);
                break;
            case DType.BF16:
                Bf16.ToFloat(new ReadOnlySpan<ushort>((ushort*)basePtr + offset, count), dst);
                break;
            case DType.F16:
                F16.ToFloat(new ReadOnlySpan<ushort>((ushort*)basePtr + offset, count), dst);
                break;
            default:
                throw new NotSupportedException($"{dtype} is not a float weight dtype");
        }
    }

    /// <summary>One row: y = x * rsqrt(mean(x^2) + eps) * w.</summary>
    public static void RmsNormRow(ReadOnlySpan<float> x, ReadOnlySpan<float> w, float eps, Span<float> y)
    {
        float ss = TensorPrimitives.Dot(x, x);
        float inv = 1f / MathF.Sqrt(ss / x.Length + eps);
        TensorPrimitives.Multiply(x, inv, y);
        TensorPrimitives.Multiply(y, w, y);
    }

    /// <summary>Rotate-half RoPE on one head vector of length 2*half, in place, at angle pos * invFreq[i].</summary>
    public static void RopeHead(Span<float> x, int pos, ReadOnlySpan<float> invFreq)
    {
        int half = invFreq.Length;
        for (int i = 0; i < half; i++)
        {
            float angle = pos * invFreq[i];
            var (sin, cos) = MathF.SinCos(angle);
            float a = x[i], b = x[i + half];
            x[i] = a * cos - b * sin;
            x[i + half] = b * cos + a * sin;
        }
    }

    /// <summary>y = silu(g) * u = g / (1 + exp(-g)) * u.</summary>
    public static void SwiGlu(ReadOnlySpan<float> g, ReadOnlySpan<float> u, Span<float> y)
    {
        for (int i = 0; i < y.Length; i++)
        {
            float gi = g[i];
            y[i] = gi / (1f + MathF.Exp(-gi)) * u[i];
        }
    }

    /// <summary>
    /// Attention of one query head vector against `len` cached keys/values (rows `stride` floats apart),
    /// scores scratch of at least len floats. out = softmax(q.K^T * scale) V.
    /// </summary>
    public static void AttendHead(ReadOnlySpan<float> q, float* k, float* v, int len, int stride, float scale,
                                  Span<float> scores, Span<float> output)
    {
        int d = q.Length;
        float max = float.NegativeInfinity;
        for (int t = 0; t < len; t++)
        {
            float s = TensorPrimitives.Dot(q, new ReadOnlySpan<float>(k + (long)t * stride, d)) * scale;
            scores[t] = s;
            if (s > max) max = s;
        }
        var sc = scores[..len];
        TensorPrimitives.Subtract(sc, max, sc);
        TensorPrimitives.Exp(sc, sc);
        float inv = 1f / TensorPrimitives.Sum(sc);
        output.Clear();
        for (int t = 0; t < len; t++)
            TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(v + (long)t * stride, d), sc[t] * inv, output, output);
    }

    /// <summary>
    /// The linear op's tile: y[n, m] = alpha * dot(x[n, :], w[m, :]) (+ y[n, m] when accumulate) for
    /// n in [n0, n1), m in [m0, m1). w rows are F32 here (callers convert bf16/f16 tiles first);
    /// wRow0 is the row of w that wTile's first row holds.
    /// </summary>
    public static void MatMulTile(float* x, int k, float* wTile, int wRow0, float* y, int ldy,
                                  int n0, int n1, int m0, int m1, float alpha, bool accumulate)
    {
        int m = m0;
        for (; m + 4 <= m1; m += 4)
        {
            float* w0 = wTile + (long)(m - wRow0) * k, w1 = w0 + k, w2 = w1 + k, w3 = w2 + k;
            int n = n0;
            for (; n + 2 <= n1; n += 2)
            {
                float* xa = x + (long)n * k, xb = xa + k;
                var a0 = Vector256<float>.Zero; var a1 = a0; var a2 = a0; var a3 = a0;
                var b0 = a0; var b1 = a0; var b2 = a0; var b3 = a0;
                int i = 0;
                for (; i + 8 <= k; i += 8)
                {
                    var va = Vector256.Load(xa + i); var vb = Vector256.Load(xb + i);
                    var v0 = Vector256.Load(w0 + i); var v1 = Vector256.Load(w1 + i);
                    var v2 = Vector256.Load(w2 + i); var v3 = Vector256.Load(w3 + i);
                    a0 = Vector256.FusedMultiplyAdd(va, v0, a0); a1 = Vector256.FusedMultiplyAdd(va, v1, a1);
                    a2 = Vector256.FusedMultiplyAdd(va, v2, a2); a3 = Vector256.FusedMultiplyAdd(va, v3, a3);
                    b0 = Vector256.FusedMultiplyAdd(vb, v0, b0); b1 = Vector256.FusedMultiplyAdd(vb, v1, b1);
                    b2 = Vector256.FusedMultiplyAdd(vb, v2, b2); b3 = Vector256.FusedMultiplyAdd(vb, v3, b3);
                }
                float sa0 = Vector256.Sum(a0), sa1 = Vector256.Sum(a1), sa2 = Vector256.Sum(a2), sa3 = Vector256.Sum(a3);
                float sb0 = Vector256.Sum(b0), sb1 = Vector256.Sum(b1), sb2 = Vector256.Sum(b2), sb3 = Vector256.Sum(b3);
                for (; i < k; i++)
                {
                    sa0 += xa[i] * w0[i]; sa1 += xa[i] * w1[i]; sa2 += xa[i] * w2[i]; sa3 += xa[i] * w3[i];
                    sb0 += xb[i] * w0[i]; sb1 += xb[i] * w1[i]; sb2 += xb[i] * w2[i]; sb3 += xb[i] * w3[i];
                }
                Store(y + (long)n * ldy + m, sa0, sa1, sa2, sa3, alpha, accumulate);
                Store(y + (long)(n + 1) * ldy + m, sb0, sb1, sb2, sb3, alpha, accumulate);
            }
            for (; n < n1; n++)
            {
                float* xa = x + (long)n * k;
                var a0 = Vector256<float>.Zero; var a1 = a0; var a2 = a0; var a3 = a0;
                int i = 0;
                for (; i + 8 <= k; i += 8)
                {
                    var va = Vector256.Load(xa + i);
                    a0 = Vector256.FusedMultiplyAdd(va, Vector256.Load(w0 + i), a0);
                    a1 = Vector256.FusedMultiplyAdd(va, Vector256.Load(w1 + i), a1);
                    a2 = Vector256.FusedMultiplyAdd(va, Vector256.Load(w2 + i), a2);
                    a3 = Vector256.FusedMultiplyAdd(va, Vector256.Load(w3 + i), a3);
                }
                float s0 = Vector256.Sum(a0), s1 = Vector256.Sum(a1), s2 = Vector256.Sum(a2), s3 = Vector256.Sum(a3);
                for (; i < k; i++) { s0 += xa[i] * w0[i]; s1 += xa[i] * w1[i]; s2 += xa[i] * w2[i]; s3 += xa[i] * w3[i]; }
                Store(y + (long)n * ldy + m, s0, s1, s2, s3, alpha, accumulate);
            }
        }
        for (; m < m1; m++)
        {
            var wr = new ReadOnlySpan<float>(wTile + (long)(m - wRow0) * k, k);
            for (int n = n0; n < n1; n++)
            {
                float s = alpha * TensorPrimitives.Dot(new ReadOnlySpan<float>(x + (long)n * k, k), wr);
                float* dst = y + (long)n * ldy + m;
                *dst = accumulate ? *dst + s : s;
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(float* dst, float s0, float s1, float s2, float s3, float alpha, bool accumulate)
    {
        if (accumulate)
        {
            dst[0] += alpha * s0; dst[1] += alpha * s1; dst[2] += alpha * s2; dst[3] += alpha * s3;
        }
        else
        {
            dst[0] = alpha * s0; dst[1] = alpha * s1; dst[2] = alpha * s2; dst[3] = alpha * s3;
        }
    }

    /// <summary>Single-threaded reference linear op on spans, for tests and small shapes: y = alpha x W^T (+y).</summary>
    public static void MatMulReference(ReadOnlySpan<float> x, ReadOnlySpan<float> w, Span<float> y, int n, int k, int m,
                                       float alpha = 1f, bool accumulate = false)
    {
        for (int i = 0; i < n; i++)
            for (int j = 0; j < m; j++)
            {
                double s = 0;
                for (int t = 0; t < k; t++) s += (double)x[i * k + t] * w[j * k + t];
                y[i * m + j] = (float)(alpha * s + (accumulate ? y[i * m + j] : 0));
            }
    }

    internal static Span<float> AsSpan(nint p, long offset, int count) => new((float*)p + offset, count);
    internal static Span<int> AsIntSpan(nint p, int count) => new((int*)p, count);
    internal static ref float Ref(nint p) => ref Unsafe.AsRef<float>((void*)p);
    internal static Span<byte> Bytes(nint p, long count) => MemoryMarshal.CreateSpan(ref Unsafe.AsRef<byte>((void*)p), checked((int)count));
}
