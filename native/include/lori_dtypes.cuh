// Loads and stores by element type, for kernels instantiated once per weight dtype.
// DT_F32 / DT_F16 / DT_BF16 match LoRI.Tensors.DType's F32 / F16 / BF16.
#pragma once
#include "lori_cuda.cuh"

#define DT_F32 0
#define DT_F16 1
#define DT_BF16 2

template <int DT> __device__ __forceinline__ float load_as_float(const void* p, long long i);
template <> __device__ __forceinline__ float load_as_float<DT_F32>(const void* p, long long i) { return static_cast<const float*>(p)[i]; }
template <> __device__ __forceinline__ float load_as_float<DT_F16>(const void* p, long long i) { return f16_to_float(static_cast<const f16*>(p)[i]); }
template <> __device__ __forceinline__ float load_as_float<DT_BF16>(const void* p, long long i) { return bf16_to_float(static_cast<const bf16*>(p)[i]); }

template <int DT> __device__ __forceinline__ void store_from_float(void* p, long long i, float v);
template <> __device__ __forceinline__ void store_from_float<DT_F32>(void* p, long long i, float v) { static_cast<float*>(p)[i] = v; }
template <> __device__ __forceinline__ void store_from_float<DT_F16>(void* p, long long i, float v) { static_cast<f16*>(p)[i] = float_to_f16(v); }
template <> __device__ __forceinline__ void store_from_float<DT_BF16>(void* p, long long i, float v) { static_cast<bf16*>(p)[i] = float_to_bf16(v); }
