// C++ convenience over the C ABI of ringattn.h and ringattn_ring.h: tensor descriptor builders,
// an exception that carries the status code and message, thin wrappers, and owning (RAII)
// handles for ring contexts and plans. Header-only: it compiles into the caller, so exceptions
// never cross the library boundary. Includes neither mpi.h nor nccl.h: create a context with the
// transport's C function and hand it to ringattn::Context, e.g.
//   ringattn_context_t raw = nullptr;
//   ringattn::check(ringattn_context_create(MPI_COMM_WORLD, RINGATTN_BACKEND_CPU, nullptr, &raw));
//   ringattn::Context ctx(raw);  // destroyed with ctx
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

#include "ringattn/ringattn.h"
#include "ringattn/ringattn_ring.h"

namespace ringattn {

// Thrown by the wrappers below when a C call fails.
class Error : public std::runtime_error {
 public:
  Error(ringattn_status_t status, const std::string& message)
      : std::runtime_error(message), status_(status) {}
  ringattn_status_t status() const noexcept { return status_; }

 private:
  ringattn_status_t status_;
};

inline void check(ringattn_status_t status) {
  if (status != RINGATTN_SUCCESS) {
    throw Error(status, std::string(ringattn_status_string(status)) + " (" +
                            ringattn_get_last_error() + ")");
  }
}

// Contiguous [B, S, H, D] tensor (Q, K, V, O and gradients).
inline ringattn_tensor_t tensor_bshd(void* data, ringattn_dtype_t dtype, int64_t b, int64_t s,
                                     int64_t h, int64_t d) {
  ringattn_tensor_t t{};
  t.data = data;
  t.dtype = dtype;
  t.ndim = 4;
  t.shape[0] = b, t.shape[1] = s, t.shape[2] = h, t.shape[3] = d;
  t.strides[0] = s * h * d, t.strides[1] = h * d, t.strides[2] = d, t.strides[3] = 1;
  return t;
}

// Contiguous packed [T, H, D] tensor.
inline ringattn_tensor_t tensor_thd(void* data, ringattn_dtype_t dtype, int64_t t_, int64_t h,
                                    int64_t d) {
  ringattn_tensor_t t{};
  t.data = data;
  t.dtype = dtype;
  t.ndim = 3;
  t.shape[0] = t_, t.shape[1] = h, t.shape[2] = d;
  t.strides[0] = h * d, t.strides[1] = d, t.strides[2] = 1;
  return t;
}

// Contiguous float32 LSE [B, H, S].
inline ringattn_tensor_t lse_bhs(float* data, int64_t b, int64_t h, int64_t s) {
  ringattn_tensor_t t{};
  t.data = data;
  t.dtype = RINGATTN_FLOAT32;
  t.ndim = 3;
  t.shape[0] = b, t.shape[1] = h, t.shape[2] = s;
  t.strides[0] = h * s, t.strides[1] = s, t.strides[2] = 1;
  return t;
}

// Contiguous float32 packed LSE [H, T].
inline ringattn_tensor_t lse_ht(float* data, int64_t h, int64_t t_) {
  ringattn_tensor_t t{};
  t.data = data;
  t.dtype = RINGATTN_FLOAT32;
  t.ndim = 2;
  t.shape[0] = h, t.shape[1] = t_;
  t.strides[0] = t_, t.strides[1] = 1;
  return t;
}

inline ringattn_attn_params_t default_params() {
  ringattn_attn_params_t p = RINGATTN_ATTN_PARAMS_INIT;
  return p;
}

inline void attention_forward(const ringattn_tensor_t& q, const ringattn_tensor_t& k,
                              const ringattn_tensor_t& v, ringattn_tensor_t& o,
                              ringattn_tensor_t* lse, const ringattn_attn_params_t& params,
                              ringattn_backend_t backend = RINGATTN_BACKEND_CPU,
                              void* stream = nullptr) {
  check(ringattn_attention_forward(&q, &k, &v, &o, lse, &params, backend, stream));
}

inline void attention_backward(const ringattn_tensor_t& q, const ringattn_tensor_t& k,
                               const ringattn_tensor_t& v, const ringattn_tensor_t& o,
                               const ringattn_tensor_t& lse, const ringattn_tensor_t& dout,
                               ringattn_tensor_t& dq, ringattn_tensor_t& dk, ringattn_tensor_t& dv,
                               const ringattn_attn_params_t& params,
                               ringattn_backend_t backend = RINGATTN_BACKEND_CPU,
                               void* stream = nullptr) {
  check(ringattn_attention_backward(&q, &k, &v, &o, &lse, &dout, &dq, &dk, &dv, &params, backend,
                                    stream));
}

inline int version() { return ringattn_get_version(); }

// Owns a ring context (ringattn_ring.h): destroyed with the object; move-only.
class Context {
 public:
  Context() = default;
  // Takes ownership of a context made by any constructor (MPI, NCCL, compute-only).
  explicit Context(ringattn_context_t ctx) noexcept : ctx_(ctx) {}
  Context(Context&& other) noexcept : ctx_(std::exchange(other.ctx_, nullptr)) {}
  Context& operator=(Context&& other) noexcept {
    if (this != &other) {
      reset();
      ctx_ = std::exchange(other.ctx_, nullptr);
    }
    return *this;
  }
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
  ~Context() { reset(); }

  // Rank `rank` of a `world`-rank ring run alone (ringattn_context_create_compute_only).
  static Context compute_only(int32_t rank, int32_t world, ringattn_backend_t backend,
                              const ringattn_context_options_t* options = nullptr) {
    ringattn_context_t raw = nullptr;
    check(ringattn_context_create_compute_only(rank, world, backend, options, &raw));
    return Context(raw);
  }

  ringattn_context_t get() const noexcept { return ctx_; }
  explicit operator bool() const noexcept { return ctx_ != nullptr; }
  void reset() noexcept {
    if (ctx_ != nullptr) ringattn_context_destroy(ctx_);
    ctx_ = nullptr;
  }
  ringattn_context_t release() noexcept { return std::exchange(ctx_, nullptr); }

  int32_t rank() const {
    int32_t r = 0;
    check(ringattn_context_rank(ctx_, &r, nullptr));
    return r;
  }
  int32_t world() const {
    int32_t w = 0;
    check(ringattn_context_rank(ctx_, nullptr, &w));
    return w;
  }
  ringattn_ring_stats_t last_stats() const {
    ringattn_ring_stats_t s{};
    check(ringattn_context_last_stats(ctx_, &s));
    return s;
  }
  // One-shot collective calls (each agrees on its problem; see RingPlan to agree once).
  void forward(const ringattn_tensor_t& q, const ringattn_tensor_t& k, const ringattn_tensor_t& v,
               ringattn_tensor_t& o, ringattn_tensor_t* lse, const ringattn_attn_params_t& params,
               void* stream = nullptr) {
    check(ringattn_ring_forward(ctx_, &q, &k, &v, &o, lse, &params, stream));
  }
  void backward(const ringattn_tensor_t& q, const ringattn_tensor_t& k, const ringattn_tensor_t& v,
                const ringattn_tensor_t& o, const ringattn_tensor_t& lse,
                const ringattn_tensor_t& dout, ringattn_tensor_t& dq, ringattn_tensor_t& dk,
                ringattn_tensor_t& dv, const ringattn_attn_params_t& params,
                void* stream = nullptr) {
    check(
        ringattn_ring_backward(ctx_, &q, &k, &v, &o, &lse, &dout, &dq, &dk, &dv, &params, stream));
  }

 private:
  ringattn_context_t ctx_ = nullptr;
};

// Owns a ring plan (ringattn_ring_plan_create): agreed once, run many times. The context must
// outlive the plan. Move-only.
class RingPlan {
 public:
  RingPlan() = default;
  // Collective over the context. own_workspace: the plan allocates its workspace now, and runs
  // may pass none.
  RingPlan(const Context& ctx, const ringattn_tensor_t& q, const ringattn_tensor_t& k,
           const ringattn_tensor_t& v, const ringattn_attn_params_t& params,
           bool own_workspace = true) {
    check(ringattn_ring_plan_create(ctx.get(), &q, &k, &v, &params, own_workspace ? 1 : 0, &plan_));
  }
  RingPlan(RingPlan&& other) noexcept : plan_(std::exchange(other.plan_, nullptr)) {}
  RingPlan& operator=(RingPlan&& other) noexcept {
    if (this != &other) {
      reset();
      plan_ = std::exchange(other.plan_, nullptr);
    }
    return *this;
  }
  RingPlan(const RingPlan&) = delete;
  RingPlan& operator=(const RingPlan&) = delete;
  ~RingPlan() { reset(); }

  ringattn_ring_plan_t get() const noexcept { return plan_; }
  explicit operator bool() const noexcept { return plan_ != nullptr; }
  void reset() noexcept {
    if (plan_ != nullptr) ringattn_ring_plan_destroy(plan_);
    plan_ = nullptr;
  }
  // Bytes of caller workspace a run needs (backend memory, 64-byte aligned).
  size_t workspace_size() const {
    size_t bytes = 0;
    check(ringattn_ring_plan_workspace_size(plan_, &bytes));
    return bytes;
  }
  // Runs; workspace NULL for the plan's own.
  void forward(const ringattn_tensor_t& q, const ringattn_tensor_t& k, const ringattn_tensor_t& v,
               ringattn_tensor_t& o, ringattn_tensor_t* lse, void* stream = nullptr,
               void* workspace = nullptr, size_t workspace_bytes = 0) {
    check(
        ringattn_ring_plan_forward(plan_, &q, &k, &v, &o, lse, workspace, workspace_bytes, stream));
  }
  void backward(const ringattn_tensor_t& q, const ringattn_tensor_t& k, const ringattn_tensor_t& v,
                const ringattn_tensor_t& o, const ringattn_tensor_t& lse,
                const ringattn_tensor_t& dout, ringattn_tensor_t& dq, ringattn_tensor_t& dk,
                ringattn_tensor_t& dv, void* stream = nullptr, void* workspace = nullptr,
                size_t workspace_bytes = 0) {
    check(ringattn_ring_plan_backward(plan_, &q, &k, &v, &o, &lse, &dout, &dq, &dk, &dv, workspace,
                                      workspace_bytes, stream));
  }

 private:
  ringattn_ring_plan_t plan_ = nullptr;
};

}  // namespace ringattn
