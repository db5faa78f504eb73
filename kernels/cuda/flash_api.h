// Declarations of the tensor-core launchers; their definitions are explicitly instantiated once
// per (dtype, head dim) in the generated files of instantiations/ (see CMakeLists.txt), so each
// combination compiles in its own translation unit and RINGATTN_HEADDIMS trims the list.
#pragma once

#include <cuda_runtime_api.h>

#include "kernel_params.h"

namespace ringattn {
namespace cuda {

template <typename T, int kD>
cudaError_t launch_flash_fwd(const FwdKernelParams& p, cudaStream_t stream);

template <typename T, int kD>
cudaError_t launch_flash_bwd(const BwdKernelParams& p, cudaStream_t stream);

}  // namespace cuda
}  // namespace ringattn
