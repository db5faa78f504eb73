// The CUDA backend's cuDNN path (params.local_kernel RINGATTN_LOCAL_KERNEL_CUDNN): a local call
// split into sub-blocks (sub_blocks.h), cuDNN's fused attention on those it can compute, our
// kernels on the rest, each partial merged into the call's float32 accumulators. Built only
// with cuDNN (RINGATTN_HAVE_CUDNN); used by backend_cuda.cpp.
#pragma once

#include <cuda_runtime_api.h>

#include "local_params.h"
#include "status.h"

namespace ringattn {

// RINGATTN_SUCCESS when cuDNN can run here; RINGATTN_ERROR_UNSUPPORTED naming why otherwise.
Status cudnn_path_available();

// Runs the call through the path when it applies (p.local_kernel is cuDNN, 16-bit inputs, and
// the output mode allows: a final output needs the whole call as one cuDNN block; a backward
// needs p.o), setting *handled; leaves *handled false otherwise, for our kernels to run the
// whole call. Counts into p.counts.
Status cudnn_path_forward(const FwdParams& p, cudaStream_t stream, bool* handled);
Status cudnn_path_backward(const BwdParams& p, cudaStream_t stream, bool* handled);

}  // namespace ringattn
