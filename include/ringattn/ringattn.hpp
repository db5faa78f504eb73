// C++ convenience over the C ABI of ringattn.h: tensor descriptor builders, an exception that
// carries the status code and message, and thin wrappers. Header-only: it compiles into the
// caller, so exceptions never cross the library boundary.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "ringattn/ringattn.h"

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
                               ringattn_tensor_t& dq, ringattn_tensor_t& dk,
                               ringattn_tensor_t& dv, const ringattn_attn_params_t& params,
                               ringattn_backend_t backend = RINGATTN_BACKEND_CPU,
                               void* stream = nullptr) {
  check(ringattn_attention_backward(&q, &k, &v, &o, &lse, &dout, &dq, &dk, &dv, &params, backend,
                                    stream));
}

inline int version() { return ringattn_get_version(); }

}  // namespace ringattn
