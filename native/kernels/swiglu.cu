// swiglu: y = silu(g) * u with silu(g) = g * sigmoid(g), elementwise over n f32 values, and its
// backward: with s = sigmoid(g), dg = dy * u * s * (1 + g * (1 - s)), du = dy * g * s.
// Grid-stride loops: any grid and block size covers all n.
#include "../include/lori_cuda.cuh"

extern "C" __global__ void swiglu_forward(const float* gate, const float* up, float* y, long long n)
{
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    {
        const float g = gate[i];
        y[i] = g / (1.0f + expf(-g)) * up[i];
    }
}
LORI_KERNEL(swiglu_forward)

extern "C" __global__ void swiglu_backward(const float* gate, const float* up, const float* dy, float* dgate, float* dup, long long n)
{
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    {
        const float g = gate[i], u = up[i], d = dy[i];
        const float s = 1.0f / (1.0f + expf(-g));
        dgate[i] = d * u * s * (1.0f + g * (1.0f - s));
        dup[i] = d * g * s;
    }
}
LORI_KERNEL(swiglu_backward)
