// rmsnorm: y = x / sqrt(mean(x^2) + eps) * w per row (fp32 arithmetic; w in f32/f16/bf16), and its
// backward. x, y, dy, dx f32 [N, D]; w [D]. One block per row; blockDim.x a multiple of 32 (<= 1024).
//
// Backward, with r = 1/sqrt(mean(x^2)+eps) and g = dy * w:
//   dx = r * g - x * r^3 * sum(g * x) / D   (written, or added to dx when accumulate != 0)
//   dw += sum over rows of dy * x * r          (only when dw is not null; atomically)
#include "../include/lori_dtypes.cuh"

template <int DT>
__device__ __forceinline__ void rmsnorm_forward_impl(const float* x, const void* w, float* y, int d, float eps)
{
    __shared__ float scratch[32];
    const float* xr = x + (long long)blockIdx.x * d;
    float* yr = y + (long long)blockIdx.x * d;
    float ss = 0.f;
    for (int j = threadIdx.x; j < d; j += blockDim.x) ss += xr[j] * xr[j];
    ss = block_sum(ss, scratch);
    const float r = 1.0f / sqrtf(ss / (float)d + eps);
    for (int j = threadIdx.x; j < d; j += blockDim.x) yr[j] = xr[j] * r * load_as_float<DT>(w, j);
}

extern "C" __global__ void rmsnorm_forward_f32(const float* x, const float* w, float* y, int d, float eps) { rmsnorm_forward_impl<DT_F32>(x, w, y, d, eps); }
LORI_KERNEL(rmsnorm_forward_f32)
extern "C" __global__ void rmsnorm_forward_f16(const float* x, const f16* w, float* y, int d, float eps) { rmsnorm_forward_impl<DT_F16>(x, w, y, d, eps); }
LORI_KERNEL(rmsnorm_forward_f16)
extern "C" __global__ void rmsnorm_forward_bf16(const float* x, const bf16* w, float* y, int d, float eps) { rmsnorm_forward_impl<DT_BF16>(x, w, y, d, eps); }
LORI_KERNEL(rmsnorm_forward_bf16)

template <int DT>
__device__ __forceinline__ void rmsnorm_backward_impl(const float* x, const void* w, const float* dy, float* dx, float* dw, int d, float eps, int accumulate)
{
    __shared__ float scratch[32];
    const long long row = (long long)blockIdx.x * d;
    const float* xr = x + row;
    const float* dyr = dy + row;
    float ss = 0.f, gx = 0.f;
    for (int j = threadIdx.x; j < d; j += blockDim.x)
    {
        const float xv = xr[j];
        ss += xv * xv;
        gx += dyr[j] * load_as_float<DT>(w, j) * xv;
    }
    ss = block_sum(ss, scratch);
    gx = block_sum(gx, scratch);
    const float r = 1.0f / sqrtf(ss / (float)d + eps);
    const float c = r * r * r * gx / (float)d;
    for (int j = threadIdx.x; j < d; j += blockDim.x)
    {
        const float xv = xr[j];
        const float g = r * dyr[j] * load_as_float<DT>(w, j) - xv * c;
        dx[row + j] = accumulate ? dx[row + j] + g : g;
        if (dw) atomicAdd(&dw[j], dyr[j] * xv * r);
    }
}

extern "C" __global__ void rmsnorm_backward_f32(const float* x, const float* w, const float* dy, float* dx, float* dw, int d, float eps, int accumulate) { rmsnorm_backward_impl<DT_F32>(x, w, dy, dx, dw, d, eps, accumulate); }
LORI_KERNEL(rmsnorm_backward_f32)
extern "C" __global__ void rmsnorm_backward_f16(const float* x, const f16* w, const float* dy, float* dx, float* dw, int d, float eps, int accumulate) { rmsnorm_backward_impl<DT_F16>(x, w, dy, dx, dw, d, eps, accumulate); }
LORI_KERNEL(rmsnorm_backward_f16)
extern "C" __global__ void rmsnorm_backward_bf16(const float* x, const bf16* w, const float* dy, float* dx, float* dw, int d, float eps, int accumulate) { rmsnorm_backward_impl<DT_BF16>(x, w, dy, dx, dw, d, eps, accumulate); }
LORI_KERNEL(rmsnorm_backward_bf16)
