namespace LoRI.Backend.Cpu;

/// <summary>Span/pointer kernels of the LoRA op (`lora_apply`); CpuBackend.Adapters.cs parallelises them.</summary>
public static unsafe partial class CpuOps
{
    /// <summary>
    /// The compact expand: y[n, o] += sum over row o's non-zeros (c, v) of v * t[n, c], for n in [n0, n1) and
    /// o in [o0, o1). t [N, rank]; y rows are ldy floats apart; rowStart/cols/values as in LoraFactors' compact form.
    /// </summary>
    public static void LoraExpandCompact(float* t, int rank, int* rowStart, byte* cols, float* values, float* y, int ldy,
                                         int n0, int n1, int o0, int o1)
    {
        for (int n = n0; n < n1; n++)
        {
            float* tn = t + (long)n * rank;
            float* yn = y + (long)n * ldy;
            for (int o = o0; o < o1; o++)
            {
                int e0 = rowStart[o], e1 = rowStart[o + 1];
                float s = 0;
                for (int e = e0; e < e1; e++) s += values[e] * tn[cols[e]];
                yn[o] += s;
            }
        }
    }

    /// <summary>Writes rows [o0, o1) of a compact B as dense F32 rows (rank floats each) into dst.</summary>
    public static void UnpackCompactRows(int* rowStart, byte* cols, float* values, int rank, int o0, int o1, float* dst)
    {
        new Span<float>(dst, (o1 - o0) * rank).Clear();
        for (int o = o0; o < o1; o++)
        {
            float* row = dst + (long)(o - o0) * rank;
            for (int e = rowStart[o]; e < rowStart[o + 1]; e++) row[cols[e]] = values[e];
        }
    }

    /// <summary>Single-threaded reference: y += scale * B (A x) in double, for tests. x [n, in], a [r, in], b [out, r], y [n, out].</summary>
    public static void LoraApplyReference(ReadOnlySpan<float> x, ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> y,
                                          int n, int inDim, int rank, int outDim, float scale)
    {
        var t = new double[rank];
        for (int i = 0; i < n; i++)
        {
            for (int j = 0; j < rank; j++)
            {
                double s = 0;
                for (int k = 0; k < inDim; k++) s += (double)x[i * inDim + k] * a[j * inDim + k];
                t[j] = s * scale;
            }
            for (int o = 0; o < outDim; o++)
            {
                double s = 0;
                for (int j = 0; j < rank; j++) s += b[o * rank + j] * t[j];
                y[i * outDim + o] = (float)(y[i * outDim + o] + s);
            }
        }
    }
}
