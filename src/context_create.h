// The C API's context object and what every context constructor shares (src/api_context*.cpp).
#pragma once

#include <stddef.h>

#include <memory>
#include <string>
#include <utility>

#include "backend.h"
#include "ring_context.h"
#include "ringattn/ringattn_ring.h"
#include "status.h"
#include "transport.h"
#include "validate.h"

struct ringattn_context {
  std::unique_ptr<ringattn::RingContext> ring;
};

namespace ringattn {

// The published versions of ringattn_context_options_t before this one: the first ended with
// chunks, the second with capturable.
constexpr size_t kOptionsFirstVersion =
    offsetof(ringattn_context_options_t, chunks) + sizeof(int32_t);
constexpr size_t kOptionsSecondVersion =
    offsetof(ringattn_context_options_t, capturable) + sizeof(int32_t);

// What every constructor shares (options, backend, the context); `make` builds the transport:
// std::unique_ptr<comm::Transport>(int64_t timeout_ms, Backend*, bool capturable, Status*,
// std::string*); null on failure with *Status and the message set. Make::kCapturable says
// whether the transport can run without host waits (options.capturable). The whole body of a
// C API constructor: clears the last error and turns exceptions into status codes.
template <typename Make>
Status create_with(const ringattn_backend_t& backend, const ringattn_context_options_t* options,
                   ringattn_context_t* out, const Make& make) {
  clear_error();
  RINGATTN_API_GUARD_BEGIN
  if (out == nullptr) return set_error(RINGATTN_ERROR_NULL_POINTER, "argument 'ctx' is NULL");
  *out = nullptr;
  ringattn_context_options_t opts = RINGATTN_CONTEXT_OPTIONS_INIT;
  if (options != nullptr &&
      !read_versioned(*options, {kOptionsFirstVersion, kOptionsSecondVersion}, &opts)) {
    return set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT,
                      "'options'.struct_size is %zu, expected %zu (or %zu or %zu, the earlier "
                      "versions): initialize with RINGATTN_CONTEXT_OPTIONS_INIT",
                      options->struct_size, sizeof(ringattn_context_options_t),
                      kOptionsFirstVersion, kOptionsSecondVersion);
  }
  if (opts.chunks > 1024) {
    return set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT, "'options'.chunks is %d, at most 1024",
                      static_cast<int>(opts.chunks));
  }
  const bool capturable = opts.capturable != 0;
  if (capturable && !Make::kCapturable) {
    return set_error(RINGATTN_ERROR_UNSUPPORTED,
                     "'options'.capturable: this transport waits on the host for device data; "
                     "graph capture needs the NCCL transport (ringattn_context_create_nccl or "
                     "ringattn_context_create_nccl_mpi)");
  }
  Backend* be = nullptr;
  RINGATTN_RETURN_IF_ERROR(get_backend(backend, &be));
  if (capturable && be->kind() != RINGATTN_BACKEND_CUDA) {
    return set_error(RINGATTN_ERROR_UNSUPPORTED,
                     "'options'.capturable needs backend RINGATTN_BACKEND_CUDA");
  }
  const int64_t timeout = opts.timeout_ms > 0 ? opts.timeout_ms : comm::default_timeout_ms();
  Status st = RINGATTN_SUCCESS;
  std::string err;
  std::unique_ptr<comm::Transport> transport = make(timeout, be, capturable, &st, &err);
  if (!transport) return set_error(st, err);
  // Collective: every rank checks and agrees on the hybrid layout.
  HybridLayout layout;
  RINGATTN_RETURN_IF_ERROR(
      agree_hybrid_layout(transport.get(), opts.ulysses_degree, opts.placement, &layout));
  const int32_t chunks = opts.chunks > 0 ? opts.chunks : 4;
  std::unique_ptr<ringattn_context> ctx(new ringattn_context);
  ctx->ring.reset(new RingContext(std::move(transport), be, chunks, capturable, std::move(layout)));
  *out = ctx.release();
  return RINGATTN_SUCCESS;
  RINGATTN_API_GUARD_END
}

}  // namespace ringattn
