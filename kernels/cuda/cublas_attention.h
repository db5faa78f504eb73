// Unfused attention forward with materialized scores: S = Q K^T (cuBLAS, float32 accumulate and
// output), masked softmax (float32, P rounded to the input dtype like any unfused
// implementation), O = P V (cuBLAS). A GPU reference at moderate sizes and the speed baseline of
// the fused kernels; not part of the library (target ringattn_cublas_baseline).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <stddef.h>

#include "local_params.h"

namespace ringattn {
namespace cuda {

// Device workspace bytes for p: one head's scores (float32) and probabilities (input dtype)
// over the batch.
size_t cublas_attention_workspace(const FwdParams& p);

// Forward for p with out_mode kOutFinal (O in the input dtype, LSE float32 when p.lse.data).
// The PosMaps of p must point to DEVICE memory here. Returns nullptr on success, else the name
// of the call that failed.
const char* cublas_attention_forward(const FwdParams& p, void* workspace, cublasHandle_t handle,
                                     cudaStream_t stream);

}  // namespace cuda
}  // namespace ringattn
