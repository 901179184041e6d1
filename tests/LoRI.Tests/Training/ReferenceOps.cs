namespace LoRI.Tests.Training;

/// <summary>
/// Double-precision forwards of the Llama ops, written from the definitions (IBackend's documentation,
/// lori-method.md section 1), as plainly as possible: the oracles the float backward kernels are checked
/// against through finite differences. Row-major, one row per token.
/// </summary>
internal static class ReferenceOps
{
    public static double[] RmsNorm(double[] x, double[] w, int dim, double eps)
    {
        var y = new double[x.Length];
        for (int r = 0; r < x.Length / dim; r++)
        {
            double ms = 0;
            for (int j = 0; j < dim; j++) ms += x[r * dim + j] * x[r * dim + j];
            double inv = 1 / Math.Sqrt(ms / dim + eps);
            for (int j = 0; j < dim; j++) y[r * dim + j] = x[r * dim + j] * inv * w[j];
        }
        return y;
    }

    public static double[] Rope(double[] x, int heads, int headDim, int[] positions, double[] invFreq)
    {
        var y = (double[])x.Clone();
        int width = heads * headDim, half = headDim / 2;
        for (int n = 0; n < positions.Length; n++)
            for (int h = 0; h < heads; h++)
                for (int i = 0; i < half; i++)
                {
                    double a = positions[n] * invFreq[i];
                    int o = n * width + h * headDim + i;
                    double x1 = x[o], x2 = x[o + half];
                    y[o] = x1 * Math.Cos(a) - x2 * Math.Sin(a);
                    y[o + half] = x2 * Math.Cos(a) + x1 * Math.Sin(a);
                }
        return y;
    }

    /// <summary>Causal GQA self-attention of `batch` sequences of `seqLen` tokens; also returns each (row, head)'s log-sum-exp.</summary>
    public static (double[] Y, double[] Lse) Attention(double[] q, double[] k, double[] v, int batch, int seqLen,
                                                       int heads, int kvHeads, int headDim)
    {
        int qw = heads * headDim, kw = kvHeads * headDim, group = heads / kvHeads;
        double scale = 1 / Math.Sqrt(headDim);
        var y = new double[q.Length];
        var lse = new double[batch * seqLen * heads];
        for (int b = 0; b < batch; b++)
            for (int h = 0; h < heads; h++)
                for (int t = 0; t < seqLen; t++)
                {
                    int row = b * seqLen + t, kvh = h / group;
                    var s = new double[t + 1];
                    for (int j = 0; j <= t; j++)
                    {
                        double d = 0;
                        for (int e = 0; e < headDim; e++) d += q[row * qw + h * headDim + e] * k[(b * seqLen + j) * kw + kvh * headDim + e];
                        s[j] = d * scale;
                    }
                    double max = s.Max(), sum = 0;
                    for (int j = 0; j <= t; j++) sum += Math.Exp(s[j] - max);
                    lse[row * heads + h] = max + Math.Log(sum);
                    for (int j = 0; j <= t; j++)
                    {
                        double p = Math.Exp(s[j] - max) / sum;
                        for (int e = 0; e < headDim; e++) y[row * qw + h * headDim + e] += p * v[(b * seqLen + j) * kw + kvh * headDim + e];
                    }
                }
        return (y, lse);
    }

    public static double[] SwiGlu(double[] gate, double[] up)
    {
        var y = new double[gate.Length];
        for (int i = 0; i < y.Length; i++) y[i] = gate[i] / (1 + Math.Exp(-gate[i])) * up[i];
        return y;
    }

    /// <summary>y = x W^T, x [n, k], w [m, k].</summary>
    public static double[] Linear(double[] x, double[] w, int k, int m)
    {
        int n = x.Length / k;
        var y = new double[n * m];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < m; j++)
            {
                double s = 0;
                for (int e = 0; e < k; e++) s += x[i * k + e] * w[j * k + e];
                y[i * m + j] = s;
            }
        return y;
    }

    /// <summary>y = x W^T + s (x A^T) B^T: the adapted linear of lori-method.md section 1.</summary>
    public static double[] LoraLinear(double[] x, double[] w, double[] a, double[] b, int inF, int outF, int rank, double scale)
    {
        var y = Linear(x, w, inF, outF);
        var u = Linear(x, a, inF, rank);
        var z = Linear(u, b, rank, outF);
        for (int i = 0; i < y.Length; i++) y[i] += scale * z[i];
        return y;
    }

    public static double[] Embedding(double[] table, int[] ids, int dim)
    {
        var y = new double[ids.Length * dim];
        for (int i = 0; i < ids.Length; i++) Array.Copy(table, ids[i] * dim, y, i * dim, dim);
        return y;
    }

    /// <summary>Per-token cross-entropy of logits = h W^T against targets (0 where target &lt; 0).</summary>
    public static double[] CrossEntropy(double[] h, double[] w, int dim, int[] targets)
    {
        int vocab = w.Length / dim;
        var logits = Linear(h, w, dim, vocab);
        var loss = new double[targets.Length];
        for (int i = 0; i < targets.Length; i++)
        {
            if (targets[i] < 0) continue;
            double max = double.NegativeInfinity;
            for (int j = 0; j < vocab; j++) max = Math.Max(max, logits[i * vocab + j]);
            double sum = 0;
            for (int j = 0; j < vocab; j++) sum += Math.Exp(logits[i * vocab + j] - max);
            loss[i] = max + Math.Log(sum) - logits[i * vocab + targets[i]];
        }
        return loss;
    }
}
