// Local attention on NVIDIA GPUs: one Q shard against one K/V block (kernels/common/
// local_params.h), the same contracts as kernels/cpu. Device pointers; PosMaps in HOST memory
// (they reach the device inside the launch parameters, or through a stream-ordered upload when
// long). Every function enqueues on `stream`, never synchronizes the host, and returns the CUDA
// error of its launches. Arguments are assumed valid: src/ validates before calling.
#pragma once

#include <cuda_runtime_api.h>
#include <stdint.h>

#include "kernel_params.h"
#include "local_params.h"

namespace ringattn {
namespace cuda {

// Which kernel family serves a call.
enum class Path : int32_t {
  kTensorCore = 0,  // fused tensor-core kernels (fp16/bf16, instantiated head dims, aligned)
  kGeneric = 1      // float32 arithmetic, one warp per row (float32 inputs, other head dims)
};

// Head dims compiled into tensor-core kernels in this build (RINGATTN_HEADDIMS).
int num_tensor_core_head_dims();
int tensor_core_head_dim(int i);
bool has_tensor_core_head_dim(int64_t d);

// Compute capability (major * 10 + minor) of the calling thread's current device, queried once
// per device and cached; -1 when there is no device.
int device_arch();

Path forward_path(const FwdParams& p);
Path backward_path(const BwdParams& p);

cudaError_t forward(const FwdParams& p, cudaStream_t stream);
cudaError_t backward(const BwdParams& p, cudaStream_t stream);

// Delta[b, h, s] = sum_d dO * O in float32.
cudaError_t compute_delta(int64_t batch, int64_t s, int64_t h, int64_t d, const TensorRef& dout,
                          const TensorRef& o, const RowStatRef& delta, cudaStream_t stream);
// (o1, lse1) <- merge of (o1, lse1) and (o2, lse2); o1 float32, o2 any dtype, -inf safe.
cudaError_t merge_partial(int64_t batch, int64_t s, int64_t h, int64_t d, const TensorRef& o1,
                          const RowStatRef& lse1, const TensorRef& o2, const RowStatRef& lse2,
                          cudaStream_t stream);
// Cast/copy [B, S, H, D]; src.data == nullptr zero-fills dst.
cudaError_t convert(int64_t batch, int64_t s, int64_t h, int64_t d, const TensorRef& src,
                    const TensorRef& dst, cudaStream_t stream);
// dst (float32) += src (any dtype) over [B, S, H, D].
cudaError_t accumulate(int64_t batch, int64_t s, int64_t h, int64_t d, const TensorRef& src,
                       const TensorRef& dst, cudaStream_t stream);
cudaError_t fill_rowstat(int64_t batch, int64_t h, int64_t s, const RowStatRef& dst, float value,
                         cudaStream_t stream);

// ---- internal entry points (one family each) ----------------------------------------------
cudaError_t generic_forward(const FwdKernelParams& p, cudaStream_t stream);
cudaError_t generic_backward(const BwdKernelParams& p, cudaStream_t stream);
// The single dispatch from (dtype, head dim) to the generated instantiations.
cudaError_t tensor_core_forward(const FwdKernelParams& p, cudaStream_t stream);
cudaError_t tensor_core_backward(const BwdKernelParams& p, cudaStream_t stream);

}  // namespace cuda
}  // namespace ringattn
