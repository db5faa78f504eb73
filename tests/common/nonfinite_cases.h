// Non-finite inputs through the C API, shared by the backends' tests: a NaN or +inf score makes
// its row's O and LSE NaN and the gradients that depend on it NaN (never a row that looks like
// it saw no key), and rows that do not see it stay finite. B = 1, S = 48, Hq = 2, Hkv = 1,
// D = 64, in float32 or bfloat16 (the runner converts; NaN, inf and 1e30 survive the rounding).
#pragma once

#include <gtest/gtest.h>
#include <stdint.h>

#include <functional>
#include <vector>

#include "ringattn/ringattn.h"

namespace ringattn {
namespace test {

struct NonfiniteProblem {
  static constexpr int64_t kS = 48, kHq = 2, kHkv = 1, kD = 64;
  ringattn_dtype_t dtype = RINGATTN_FLOAT32;  // of q, k, v, o, dout and the gradients
  std::vector<float> q, k, v, dout;           // inputs [1, S, H, D]
  std::vector<float> o, lse, dq, dk, dv;      // outputs, filled by the runner
  ringattn_attn_params_t params = RINGATTN_ATTN_PARAMS_INIT;
  bool backward = false;
};

// Runs the forward (and the backward when p->backward) on one backend; returns the status of
// the first call that failed, or RINGATTN_SUCCESS.
using NonfiniteRunner = std::function<ringattn_status_t(NonfiniteProblem* p)>;

// Every case in `dtype`, as gtest expectations.
void check_nonfinite_cases(ringattn_dtype_t dtype, const NonfiniteRunner& run);

// The problem's tensors as bytes in its dtype: inputs filled, outputs zero; store_outputs puts
// O, dQ, dK and dV back into the problem as float (the LSE is float32 already).
struct NonfiniteBytes {
  std::vector<unsigned char> q, k, v, dout, o, dq, dk, dv;
  explicit NonfiniteBytes(const NonfiniteProblem& p);
  void store_outputs(NonfiniteProblem* p) const;
};

// The tensors in the problem's dtype (bytes of float32 or bfloat16 values), and back.
std::vector<unsigned char> to_dtype_bytes(const std::vector<float>& x, ringattn_dtype_t dtype);
std::vector<float> from_dtype_bytes(const std::vector<unsigned char>& b, ringattn_dtype_t dtype);

}  // namespace test
}  // namespace ringattn
