// C API: ring contexts and plans whatever their transport (include/ringattn/ringattn_ring.h):
// the compute-only constructor, plans, runs, queries and destroy.
#include <stddef.h>

#include <algorithm>
#include <cstring>
#include <new>

#include "compute_only_transport.h"
#include "context_create.h"
#include "ring_context.h"
#include "ringattn/ringattn_ring.h"

// A plan: an agreed problem of its context, and its own workspace when it was asked for one.
struct ringattn_ring_plan {
  ringattn_context* ctx = nullptr;
  ringattn::RingProblemState state;
  size_t ws_bytes = 0;
  char* own_ws = nullptr;
  // The last run's end (CUDA), after which the plan's own memory (workspace, device position
  // runs) may be freed.
  std::unique_ptr<ringattn::Backend::UseFence> fence;

  ~ringattn_ring_plan() {
    // As the context's workspace: leaked after a transport failure (a receive may still land).
    if (ctx->ring->transport()->broken()) return;
    ringattn::Backend* be = ctx->ring->backend();
    ringattn::release_after_use(be, fence.get(), state.device_runs, nullptr);
    ringattn::release_after_use(be, fence.get(), own_ws, nullptr);
  }
};

namespace ringattn {
namespace {

Status check_ctx(ringattn_context_t ctx) {
  if (ctx == nullptr || !ctx->ring) {
    return set_error(RINGATTN_ERROR_NULL_POINTER, "argument 'ctx' is NULL");
  }
  return RINGATTN_SUCCESS;
}

// Rank `rank` of a `world`-rank ring alone, moving nothing (ringattn_context_create_compute_only).
struct ComputeOnlyTransportMaker {
  static constexpr bool kCapturable = true;  // never waits on the host
  int32_t rank, world;
  std::unique_ptr<comm::Transport> operator()(int64_t /*timeout*/, Backend* /*be*/,
                                              bool /*capturable*/, Status* st,
                                              std::string* err) const {
    if (world < 1 || rank < 0 || rank >= world) {
      *st = RINGATTN_ERROR_INVALID_ARGUMENT;
      *err = "arguments 'rank' and 'world' (" + std::to_string(rank) + ", " +
             std::to_string(world) + "): need 0 <= rank < world";
      return nullptr;
    }
    return std::unique_ptr<comm::Transport>(new comm::ComputeOnlyTransport(rank, world));
  }
};

// A run of a plan: its workspace (the caller's, large and aligned enough, or the plan's own),
// the run itself (`run(ws, bytes)`), and the own workspace's last use, for its free.
template <typename Run>
ringattn_status_t plan_run(ringattn_ring_plan_t plan, void* workspace, size_t workspace_bytes,
                           void* stream, const Run& run) {
  clear_error();
  if (plan == nullptr) return set_error(RINGATTN_ERROR_NULL_POINTER, "argument 'plan' is NULL");
  RINGATTN_API_GUARD_BEGIN
  char* ws = plan->own_ws;
  size_t bytes = plan->ws_bytes;
  if (workspace == nullptr && ws == nullptr) {
    return set_error(RINGATTN_ERROR_NULL_POINTER,
                     "argument 'workspace' is NULL and the plan has none of its own (create it "
                     "with own_workspace = 1)");
  }
  if (workspace != nullptr) {
    if (workspace_bytes < plan->ws_bytes) {
      return set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT,
                        "argument 'workspace_bytes' is %zu, the plan needs %zu "
                        "(ringattn_ring_plan_workspace_size)",
                        workspace_bytes, plan->ws_bytes);
    }
    if (reinterpret_cast<uintptr_t>(workspace) % 64 != 0) {
      return set_error(RINGATTN_ERROR_INVALID_ARGUMENT,
                       "argument 'workspace' is not 64-byte aligned");
    }
    ws = static_cast<char*>(workspace);
    bytes = workspace_bytes;
  }
  const ringattn_status_t st = run(ws, bytes);
  if (plan->fence && !plan->ctx->ring->backend()->stream_capturing(stream)) {
    plan->fence->record(stream);
  }
  return st;
  RINGATTN_API_GUARD_END
}

}  // namespace
}  // namespace ringattn

extern "C" {

ringattn_status_t ringattn_context_create_compute_only(int32_t rank, int32_t world,
                                                       ringattn_backend_t backend,
                                                       const ringattn_context_options_t* options,
                                                       ringattn_context_t* ctx) {
  return ringattn::create_with(backend, options, ctx,
                               ringattn::ComputeOnlyTransportMaker{rank, world});
}

ringattn_status_t ringattn_ring_plan_create(ringattn_context_t ctx, const ringattn_tensor_t* q,
                                            const ringattn_tensor_t* k, const ringattn_tensor_t* v,
                                            const ringattn_attn_params_t* params,
                                            int32_t own_workspace, ringattn_ring_plan_t* plan) {
  ringattn::clear_error();
  RINGATTN_RETURN_IF_ERROR(ringattn::check_ctx(ctx));
  if (plan == nullptr) {
    return ringattn::set_error(RINGATTN_ERROR_NULL_POINTER, "argument 'plan' is NULL");
  }
  *plan = nullptr;
  RINGATTN_API_GUARD_BEGIN
  std::unique_ptr<ringattn_ring_plan> p(new ringattn_ring_plan);
  p->ctx = ctx;
  RINGATTN_RETURN_IF_ERROR(ctx->ring->make_plan(q, k, v, params, &p->state, &p->ws_bytes));
  // The plan's own memory, on the default stream: its position runs where the kernels would
  // otherwise upload them per call, and the workspace when asked for. Every rank learns whether
  // every rank got it.
  ringattn::Backend* be = ctx->ring->backend();
  p->fence = be->make_use_fence();
  bool ok = ctx->ring->upload_runs(&p->state, nullptr) == RINGATTN_SUCCESS;
  if (ok && own_workspace != 0) {
    p->own_ws = static_cast<char*>(be->alloc(p->ws_bytes, nullptr));
    ok = p->own_ws != nullptr;
  }
  if (p->fence) {
    // Usable on the runs' streams once it is done.
    p->fence->record(nullptr);
    p->fence->wait();
  }
  RINGATTN_RETURN_IF_ERROR(ctx->ring->agree_allocation(ok, "its plan workspace or position maps"));
  *plan = p.release();
  return RINGATTN_SUCCESS;
  RINGATTN_API_GUARD_END
}

ringattn_status_t ringattn_ring_plan_workspace_size(ringattn_ring_plan_t plan, size_t* bytes) {
  if (plan == nullptr) {
    return ringattn::set_error(RINGATTN_ERROR_NULL_POINTER, "argument 'plan' is NULL");
  }
  if (bytes == nullptr) {
    return ringattn::set_error(RINGATTN_ERROR_NULL_POINTER, "argument 'bytes' is NULL");
  }
  *bytes = plan->ws_bytes;
  return RINGATTN_SUCCESS;
}

ringattn_status_t ringattn_ring_plan_forward(ringattn_ring_plan_t plan, const ringattn_tensor_t* q,
                                             const ringattn_tensor_t* k, const ringattn_tensor_t* v,
                                             ringattn_tensor_t* o, ringattn_tensor_t* lse,
                                             void* workspace, size_t workspace_bytes,
                                             void* stream) {
  return ringattn::plan_run(plan, workspace, workspace_bytes, stream, [&](char* ws, size_t n) {
    return plan->ctx->ring->plan_forward(plan->state, q, k, v, o, lse, ws, n, stream);
  });
}

ringattn_status_t ringattn_ring_plan_backward(
    ringattn_ring_plan_t plan, const ringattn_tensor_t* q, const ringattn_tensor_t* k,
    const ringattn_tensor_t* v, const ringattn_tensor_t* o, const ringattn_tensor_t* lse,
    const ringattn_tensor_t* dout, ringattn_tensor_t* dq, ringattn_tensor_t* dk,
    ringattn_tensor_t* dv, void* workspace, size_t workspace_bytes, void* stream) {
  return ringattn::plan_run(plan, workspace, workspace_bytes, stream, [&](char* ws, size_t n) {
    return plan->ctx->ring->plan_backward(plan->state, q, k, v, o, lse, dout, dq, dk, dv, ws, n,
                                          stream);
  });
}

ringattn_status_t ringattn_ring_plan_destroy(ringattn_ring_plan_t plan) {
  ringattn::clear_error();
  RINGATTN_API_GUARD_BEGIN
  delete plan;
  return RINGATTN_SUCCESS;
  RINGATTN_API_GUARD_END
}

ringattn_status_t ringattn_context_destroy(ringattn_context_t ctx) {
  ringattn::clear_error();
  RINGATTN_API_GUARD_BEGIN
  delete ctx;
  return RINGATTN_SUCCESS;
  RINGATTN_API_GUARD_END
}

ringattn_status_t ringattn_context_rank(ringattn_context_t ctx, int32_t* rank, int32_t* world) {
  // A query leaves the last error as it is: it is read after a failed call.
  RINGATTN_RETURN_IF_ERROR(ringattn::check_ctx(ctx));
  if (rank != nullptr) *rank = ctx->ring->transport()->rank();
  if (world != nullptr) *world = ctx->ring->transport()->size();
  return RINGATTN_SUCCESS;
}

ringattn_status_t ringattn_context_workspace_size(ringattn_context_t ctx, size_t* bytes) {
  // A query leaves the last error as it is: it is read after a failed call.
  RINGATTN_RETURN_IF_ERROR(ringattn::check_ctx(ctx));
  if (bytes == nullptr) {
    return ringattn::set_error(RINGATTN_ERROR_NULL_POINTER, "argument 'bytes' is NULL");
  }
  *bytes = ctx->ring->workspace_bytes();
  return RINGATTN_SUCCESS;
}

ringattn_status_t ringattn_context_last_stats(ringattn_context_t ctx,
                                              ringattn_ring_stats_t* stats) {
  // A query leaves the last error as it is: it is read after a failed call.
  RINGATTN_RETURN_IF_ERROR(ringattn::check_ctx(ctx));
  if (stats == nullptr) {
    return ringattn::set_error(RINGATTN_ERROR_NULL_POINTER, "argument 'stats' is NULL");
  }
  const ringattn::RingStats& s = ctx->ring->stats();
  stats->total_seconds = s.total_seconds;
  stats->compute_seconds = s.compute_seconds;
  stats->comm_wait_seconds = s.comm_wait_seconds;
  stats->bytes_sent = s.bytes_sent;
  stats->steps = s.steps;
  stats->steps_skipped = s.steps_skipped;
  stats->device_compute_seconds = ctx->ring->device_compute_seconds();
  return RINGATTN_SUCCESS;
}

ringattn_status_t ringattn_context_alltoall_stats(ringattn_context_t ctx, double* seconds,
                                                  int64_t* bytes_sent) {
  // A query leaves the last error as it is: it is read after a failed call.
  RINGATTN_RETURN_IF_ERROR(ringattn::check_ctx(ctx));
  const ringattn::RingStats& s = ctx->ring->stats();
  if (seconds != nullptr) *seconds = s.alltoall_seconds;
  if (bytes_sent != nullptr) *bytes_sent = s.alltoall_bytes;
  return RINGATTN_SUCCESS;
}

ringattn_status_t ringattn_context_kernel_stats(ringattn_context_t ctx, int64_t* library_blocks,
                                                int64_t* own_calls) {
  RINGATTN_RETURN_IF_ERROR(ringattn::check_ctx(ctx));
  const ringattn::RingStats& s = ctx->ring->stats();
  if (library_blocks != nullptr) *library_blocks = s.kernels.library_blocks;
  if (own_calls != nullptr) *own_calls = s.kernels.own_calls;
  return RINGATTN_SUCCESS;
}

ringattn_status_t ringattn_context_hybrid_layout(ringattn_context_t ctx, int32_t* ulysses_degree,
                                                 int32_t* ring_size, int32_t* ulysses_rank,
                                                 int32_t* ring_rank) {
  RINGATTN_RETURN_IF_ERROR(ringattn::check_ctx(ctx));
  const ringattn::HybridLayout& l = ctx->ring->layout();
  if (ulysses_degree != nullptr) *ulysses_degree = l.ulysses;
  if (ring_size != nullptr) *ring_size = l.rings;
  if (ulysses_rank != nullptr) *ulysses_rank = l.uly_rank;
  if (ring_rank != nullptr) *ring_rank = l.ring_rank;
  return RINGATTN_SUCCESS;
}

ringattn_status_t ringattn_ring_forward(ringattn_context_t ctx, const ringattn_tensor_t* q,
                                        const ringattn_tensor_t* k, const ringattn_tensor_t* v,
                                        ringattn_tensor_t* o, ringattn_tensor_t* lse,
                                        const ringattn_attn_params_t* params, void* stream) {
  ringattn::clear_error();
  RINGATTN_RETURN_IF_ERROR(ringattn::check_ctx(ctx));
  RINGATTN_API_GUARD_BEGIN
  return ctx->ring->forward(q, k, v, o, lse, params, stream);
  RINGATTN_API_GUARD_END
}

ringattn_status_t ringattn_ring_backward(ringattn_context_t ctx, const ringattn_tensor_t* q,
                                         const ringattn_tensor_t* k, const ringattn_tensor_t* v,
                                         const ringattn_tensor_t* o, const ringattn_tensor_t* lse,
                                         const ringattn_tensor_t* dout, ringattn_tensor_t* dq,
                                         ringattn_tensor_t* dk, ringattn_tensor_t* dv,
                                         const ringattn_attn_params_t* params, void* stream) {
  ringattn::clear_error();
  RINGATTN_RETURN_IF_ERROR(ringattn::check_ctx(ctx));
  RINGATTN_API_GUARD_BEGIN
  return ctx->ring->backward(q, k, v, o, lse, dout, dq, dk, dv, params, stream);
  RINGATTN_API_GUARD_END
}

}  // extern "C"
