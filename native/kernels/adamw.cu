// adamw: one AdamW step over a parameter tensor, fp32 state, as torch.optim.AdamW does it:
//   g = grad * coef (coef from clipping, 1 when coef is null), g = 0 where mask[i] == 0 (mask optional)
//   p -= lr * weight_decay * p
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps)          bc1 = 1 - b1^t, bc2 = 1 - b2^t
// Clipping (torch clip_grad_norm_): grad_sumsq adds sum(g^2) (masked) into *sumsq; clip_coef turns it
// into coef = min(1, max_norm / (sqrt(sumsq) + 1e-6)). Per tensor: one sumsq per tensor; global: one
// sumsq shared by all tensors. Grid-stride loops; grad_sumsq needs blockDim.x a multiple of 32.
#include "../include/lori_cuda.cuh"

extern "C" __global__ void grad_sumsq(const float* grad, const unsigned char* mask, long long n, float* sumsq)
{
    __shared__ float scratch[32];
    float s = 0.f;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    {
        const float g = (mask && !mask[i]) ? 0.f : grad[i];
        s += g * g;
    }
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) atomicAdd(sumsq, s);
}
LORI_KERNEL(grad_sumsq)

extern "C" __global__ void clip_coef(const float* sumsq, float max_norm, float* coef)
{
    if (blockIdx.x == 0 && threadIdx.x == 0) *coef = fminf(1.0f, max_norm / (sqrtf(*sumsq) + 1e-6f));
}
LORI_KERNEL(clip_coef)

extern "C" __global__ void adamw_step(float* param, const float* grad, float* m, float* v, const unsigned char* mask, const float* coef,
                                      long long n, float lr, float beta1, float beta2, float eps, float weight_decay, float bc1, float bc2)
{
    const float scale = coef ? *coef : 1.0f;
    const float step = lr / bc1, rbc2 = 1.0f / sqrtf(bc2);
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    {
        const float g = (mask && !mask[i]) ? 0.f : grad[i] * scale;
        float p = param[i];
        p -= lr * weight_decay * p;
        const float mi = beta1 * m[i] + (1.0f - beta1) * g;
        const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        param[i] = p - step * mi / (sqrtf(vi) * rbc2 + eps);
    }
}
LORI_KERNEL(adamw_step)
