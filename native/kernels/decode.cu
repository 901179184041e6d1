// decode: the small device-side steps of a captured decode graph (CudaGraphDecoder), so that a replayed
// step needs nothing from the host.
// positions_advance: positions[i] += 1 for i < n (the next step's positions). One thread per entry.
#include "../include/lori_cuda.cuh"

extern "C" __global__ void positions_advance(int* positions, int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) positions[i] += 1;
}
LORI_KERNEL(positions_advance)
