// C API: ring contexts over a caller's NCCL communicator (include/ringattn/ringattn_nccl.h).
// No MPI: this file builds in every configuration with NCCL.
#include <memory>
#include <string>

#include "context_create.h"
#include "nccl_context.h"
#include "nccl_transport.h"
#include "ringattn/ringattn_nccl.h"

namespace ringattn {
namespace {

// NCCL over the caller's communicator (never destroyed by the library).
struct NcclTransportMaker {
  static constexpr bool kCapturable = true;
  ncclComm_t comm;
  int32_t rank, world;
  std::unique_ptr<comm::Transport> operator()(int64_t timeout, Backend* be, bool capturable,
                                              Status* st, std::string* err) const {
    if (!nccl_backend_ok(be, st, err)) return nullptr;
    return with_watchdog(comm::NcclTransport::wrap(comm, rank, world, timeout, st, err),
                         capturable);
  }
};

}  // namespace
}  // namespace ringattn

extern "C" {

ringattn_status_t ringattn_context_create_nccl(ncclComm_t comm, int32_t rank, int32_t world,
                                               ringattn_backend_t backend,
                                               const ringattn_context_options_t* options,
                                               ringattn_context_t* ctx) {
  return ringattn::create_with(backend, options, ctx,
                               ringattn::NcclTransportMaker{comm, rank, world});
}

}  // extern "C"
