// Scalar element loads and stores by run-time dtype, for the row-wise kernels and the generic
// (non-tensor-core) attention path.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "device_utils.cuh"
#include "local_params.h"

namespace ringattn {
namespace cuda {

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

__device__ __forceinline__ float load_elem(const void* base, DType dt, int64_t i) {
  if (dt == kF32) return static_cast<const float*>(base)[i];
  if (dt == kF16) return __half2float(static_cast<const __half*>(base)[i]);
  return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[i]);
}

__device__ __forceinline__ void store_elem(void* base, DType dt, int64_t i, float v) {
  if (dt == kF32) {
    static_cast<float*>(base)[i] = v;
  } else if (dt == kF16) {
    static_cast<__half*>(base)[i] = __float2half_rn(v);
  } else {
    static_cast<__nv_bfloat16*>(base)[i] = __float2bfloat16_rn(v);
  }
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

}  // namespace cuda
}  // namespace ringattn
