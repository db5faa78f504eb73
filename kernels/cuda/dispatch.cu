// The single place that turns run-time (dtype, head dim) into a tensor-core instantiation. The
// head-dim list comes from RINGATTN_HEADDIMS through the generated head_dims.h.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "attention_cuda.h"
#include "flash_api.h"
#include "head_dims.h"

namespace ringattn {
namespace cuda {
namespace {

constexpr int kHeadDims[] = {RINGATTN_CUDA_HEADDIMS};

}  // namespace

int num_tensor_core_head_dims() { return static_cast<int>(sizeof(kHeadDims) / sizeof(int)); }
int tensor_core_head_dim(int i) { return kHeadDims[i]; }
bool has_tensor_core_head_dim(int64_t d) {
  for (int v : kHeadDims) {
    if (v == d) return true;
  }
  return false;
}

#define RINGATTN_FWD_CASE(D)                                                   \
  case D:                                                                      \
    return p.in_dtype == kBF16 ? launch_flash_fwd<__nv_bfloat16, D>(p, stream) \
                               : launch_flash_fwd<__half, D>(p, stream);
#define RINGATTN_BWD_CASE(D)                                                   \
  case D:                                                                      \
    return p.in_dtype == kBF16 ? launch_flash_bwd<__nv_bfloat16, D>(p, stream) \
                               : launch_flash_bwd<__half, D>(p, stream);

cudaError_t tensor_core_forward(const FwdKernelParams& p, cudaStream_t stream) {
  switch (p.d) {
    RINGATTN_CUDA_FOR_EACH_HEADDIM(RINGATTN_FWD_CASE)
    default:
      return cudaErrorInvalidValue;
  }
}

cudaError_t tensor_core_backward(const BwdKernelParams& p, cudaStream_t stream) {
  switch (p.d) {
    RINGATTN_CUDA_FOR_EACH_HEADDIM(RINGATTN_BWD_CASE)
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace cuda
}  // namespace ringattn
