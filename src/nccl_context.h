// What both NCCL context constructors share (src/api_context_nccl.cpp, src/api_context_mpi.cpp).
#pragma once

#include <memory>
#include <string>

#include "backend.h"
#include "nccl_transport.h"
#include "status.h"

namespace ringattn {

// NCCL moves device memory only.
inline bool nccl_backend_ok(Backend* be, Status* st, std::string* err) {
  if (be->kind() == RINGATTN_BACKEND_CUDA) return true;
  *st = RINGATTN_ERROR_UNSUPPORTED;
  *err = "argument 'backend': the NCCL transport moves device buffers, use RINGATTN_BACKEND_CUDA";
  return false;
}

// A capturable context's transport never waits on the host: no watchdog.
inline std::unique_ptr<comm::Transport> with_watchdog(std::unique_ptr<comm::NcclTransport> t,
                                                      bool capturable) {
  if (t) t->set_watchdog(!capturable);
  return t;
}

}  // namespace ringattn
