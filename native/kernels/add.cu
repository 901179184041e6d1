// add: y = a + b elementwise (the residual add); y may alias a or b. Grid-stride loop over n f32.
#include "../include/lori_cuda.cuh"

extern "C" __global__ void add_forward(const float* a, const float* b, float* y, long long n)
{
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        y[i] = a[i] + b[i];
}
LORI_KERNEL(add_forward)
