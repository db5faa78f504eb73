// Built when the library is compiled without CUDA: the CUDA backend is reported unsupported.
#include "backend.h"

namespace ringattn {

Backend* cuda_backend() {
  set_error(RINGATTN_ERROR_UNSUPPORTED,
            "backend 'cuda' is not available: ringattn was built without CUDA "
            "(RINGATTN_ENABLE_CUDA=OFF or no nvcc at configure time)");
  return nullptr;
}

}  // namespace ringattn
