// C API: ring contexts over a caller's MPI communicator (include/ringattn/ringattn_mpi.h): MPI
// itself (device buffers staged), or NCCL bootstrapped over MPI.
#include <memory>
#include <string>
#include <utility>

#include "context_create.h"
#include "mpi_transport.h"
#include "ringattn/ringattn_mpi.h"
#if defined(RINGATTN_HAVE_CUDA)
#include "staged_device_transport.h"
#endif
#if defined(RINGATTN_HAVE_NCCL)
#include "nccl_context.h"
#include "nccl_transport.h"
#endif

namespace ringattn {
namespace {

// The MPI transport; device buffers (backend CUDA) are staged through pinned host memory.
struct MpiTransportMaker {
  static constexpr bool kCapturable = false;
  MPI_Comm comm;
  std::unique_ptr<comm::Transport> operator()(int64_t timeout, Backend* be, bool /*capturable*/,
                                              Status* st, std::string* err) const {
    std::unique_ptr<comm::Transport> t = comm::MpiTransport::create(comm, timeout, st, err);
#if defined(RINGATTN_HAVE_CUDA)
    if (t && be->kind() == RINGATTN_BACKEND_CUDA) {
      t.reset(new comm::StagedDeviceTransport(std::move(t)));
    }
#else
    (void)be;
#endif
    return t;
  }
};

#if defined(RINGATTN_HAVE_NCCL)
// NCCL with a communicator of its own, bootstrapped over MPI.
struct NcclMpiTransportMaker {
  static constexpr bool kCapturable = true;
  MPI_Comm comm;
  std::unique_ptr<comm::Transport> operator()(int64_t timeout, Backend* be, bool capturable,
                                              Status* st, std::string* err) const {
    if (!nccl_backend_ok(be, st, err)) return nullptr;
    std::unique_ptr<comm::Transport> side = comm::MpiTransport::create(comm, timeout, st, err);
    if (!side) return nullptr;
    return with_watchdog(comm::NcclTransport::bootstrap(std::move(side), timeout, st, err),
                         capturable);
  }
};
#endif

}  // namespace
}  // namespace ringattn

extern "C" {

ringattn_status_t ringattn_context_create(MPI_Comm comm, ringattn_backend_t backend,
                                          const ringattn_context_options_t* options,
                                          ringattn_context_t* ctx) {
  return ringattn::create_with(backend, options, ctx, ringattn::MpiTransportMaker{comm});
}

ringattn_status_t ringattn_context_create_nccl_mpi(MPI_Comm comm, ringattn_backend_t backend,
                                                   const ringattn_context_options_t* options,
                                                   ringattn_context_t* ctx) {
#if defined(RINGATTN_HAVE_NCCL)
  return ringattn::create_with(backend, options, ctx, ringattn::NcclMpiTransportMaker{comm});
#else
  ringattn::clear_error();
  (void)comm;
  (void)backend;
  (void)options;
  if (ctx != nullptr) *ctx = nullptr;
  return ringattn::set_error(RINGATTN_ERROR_UNSUPPORTED,
                             "ringattn_context_create_nccl_mpi: this library was built without "
                             "NCCL (RINGATTN_HAVE_NCCL)");
#endif
}

}  // extern "C"
