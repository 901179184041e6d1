using LoRI.Backend;
using LoRI.Cuda.Driver;
using LoRI.Tensors;

namespace LoRI.Cuda.Backend;

/// <summary>
/// The backward products on tensor cores (native/kernels/gemm_tc_backward.cu), chosen by MatMulBackwardInput and
/// MatMulBackwardWeight when <see cref="Bf16Activations"/> is on and dy has at least <see cref="TensorCoreMinTokens"/>
/// rows (the rule MatMul follows): dy (and for dW also x) cast to bf16 into scratch, fp32 sums. dx takes a bf16 W
/// as stored; an F32 W, fewer rows or Bf16Activations off take the fp32 SIMT kernel (matmul_backward.cu).
/// </summary>
public sealed unsafe partial class CudaBackend
{
    private const int GemmTcBwdTile = 128;
    /// <summary>3 stages x (A [128][40] + B [32][136]) bf16.</summary>
    private const int GemmTcBwdSmemBytes = 3 * (GemmTcBwdTile * 40 + 32 * 136) * 2;

    /// <summary>
    /// dx = alpha * dy W (+ dx) on tensor cores with dy already in bf16: dy BF16 [N, M], w BF16 [M, K], dx F32 [N, K].
    /// Any shape; M % 8 == 0 and K % 8 == 0 with 16-byte aligned operands take the cp.async path.
    /// </summary>
    public void MatMulBackwardInputBf16(Tensor dy, Tensor w, Tensor dx, float alpha = 1f, bool accumulate = false)
    {
        const string op = "matmul_backward_input_bf16";
        Expect(op, "dy", dy, DType.BF16);
        Expect(op, "w", w, DType.BF16);
        Expect(op, "dx", dx, DType.F32);
        if (w.Rank != 2) throw new ShapeMismatchException($"{op}: w is {w}, expected [out, in]");
        int m = w.Rows, k = w.Cols;
        if (dy.Cols != m) throw new ShapeMismatchException($"{op}: dy is {dy} but w is {w}: dy's rows must have {m} elements");
        int n = RowsOf(dy, m);
        ExpectLength(op, "dx", dx, (long)n * k);
        if (n == 0 || k == 0) return;
        GemmTcBwdLaunch("gemm_tc_bwd_input", dy, w, dx, n, m, k, n, alpha, accumulate);
    }

    /// <summary>
    /// dW = alpha * dy^T x (+ dW) on tensor cores with dy and x already in bf16: dy BF16 [N, M], x BF16 [N, K],
    /// dW F32 [M, K]. Any shape; M % 8 == 0 and K % 8 == 0 with 16-byte aligned operands take the cp.async path.
    /// </summary>
    public void MatMulBackwardWeightBf16(Tensor dy, Tensor x, Tensor dW, float alpha = 1f, bool accumulate = true)
    {
        const string op = "matmul_backward_weight_bf16";
        Expect(op, "dy", dy, DType.BF16);
        Expect(op, "x", x, DType.BF16);
        Expect(op, "dW", dW, DType.F32);
        if (dW.Rank != 2) throw new ShapeMismatchException($"{op}: dW is {dW}, expected [out, in]");
        int m = dW.Rows, k = dW.Cols;
        if (dy.Cols != m || x.Cols != k) throw new ShapeMismatchException($"{op}: dy {dy}, x {x}, dW {dW}");
        int n = RowsOf(dy, m);
        ExpectLength(op, "x", x, (long)n * k);
        if (m == 0 || k == 0) return;
        GemmTcBwdLaunch("gemm_tc_bwd_weight", dy, x, dW, n, m, k, m, alpha, accumulate);
    }

    /// <summary>MatMulBackwardInput's tensor-core path (shapes already checked): dy cast to bf16, then the kernel.</summary>
    private bool TryTensorCoreBackwardInput(Tensor dy, Tensor w, Tensor dx, int n, int m, int k, float alpha, bool accumulate)
    {
        if (w.DType != DType.BF16 || n < TensorCoreMinTokens || !Bf16Activations) return false;
        var dyb = Scratch("matmul_bwd_dy_bf16", DType.BF16, (long)n * m).Reshape(n, m);
        Cast(dy.Reshape(n, m), dyb);
        GemmTcBwdLaunch("gemm_tc_bwd_input", dyb, w, dx, n, m, k, n, alpha, accumulate);
        return true;
    }

    /// <summary>MatMulBackwardWeight's tensor-core path (shapes already checked): dy and x cast to bf16, then the kernel.</summary>
    private bool TryTensorCoreBackwardWeight(Tensor dy, Tensor x, Tensor dW, int n, int m, int k, float alpha, bool accumulate)
    {
        if (n < TensorCoreMinTokens || !Bf16Activations) return false;
        var dyb = Scratch("matmul_bwd_dy_bf16", DType.BF16, (long)n * m).Reshape(n, m);
        var xb = Scratch("matmul_bwd_x_bf16", DType.BF16, (long)n * k).Reshape(n, k);
        Cast(dy.Reshape(n, m), dyb);
        Cast(x.Reshape(n, k), xb);
        GemmTcBwdLaunch("gemm_tc_bwd_weight", dyb, xb, dW, n, m, k, m, alpha, accumulate);
        return true;
    }

    /// <summary>Grid: 128 x 128 tiles of the output [rows, k]; the aligned kernel when every 8-element chunk is 16-byte aligned.</summary>
    private void GemmTcBwdLaunch(string kernel, Tensor dy, Tensor b, Tensor output, int n, int m, int k, int rows, float alpha, bool accumulate)
    {
        bool aligned = m % 8 == 0 && k % 8 == 0 && dy.Pointer % 16 == 0 && b.Pointer % 16 == 0;
        var a = new KernelArgs();
        a.Add(dy); a.Add(b); a.Add(output); a.Add(n); a.Add(m); a.Add(k); a.Add(alpha); a.Add(accumulate ? 1 : 0);
        var grid = new Dim3((uint)((k + GemmTcBwdTile - 1) / GemmTcBwdTile), (uint)((rows + GemmTcBwdTile - 1) / GemmTcBwdTile));
        Launch("gemm_tc_backward", aligned ? kernel : kernel + "_ragged", grid, 256, GemmTcBwdSmemBytes, ref a);
    }
}
