// Non-finite inputs on the CPU backend (the cases of tests/common/nonfinite_cases.h), float32
// and bfloat16.
#include "nonfinite_cases.h"
#include "ringattn/ringattn.hpp"

namespace ringattn {
namespace test {
namespace {

ringattn_status_t run_cpu(NonfiniteProblem* p) {
  using P = NonfiniteProblem;
  const int64_t S = P::kS, Hq = P::kHq, Hkv = P::kHkv, D = P::kD;
  const ringattn_dtype_t dt = p->dtype;
  std::vector<unsigned char> q = to_dtype_bytes(p->q, dt), k = to_dtype_bytes(p->k, dt),
                             v = to_dtype_bytes(p->v, dt), dout = to_dtype_bytes(p->dout, dt);
  std::vector<unsigned char> o = to_dtype_bytes(std::vector<float>(S * Hq * D), dt), dq = o,
                             dk = to_dtype_bytes(std::vector<float>(S * Hkv * D), dt), dv = dk;
  p->lse.assign(static_cast<size_t>(Hq * S), 0.0f);
  auto t = [dt](std::vector<unsigned char>& x, int64_t h) {
    return tensor_bshd(x.data(), dt, 1, S, h, D);
  };
  ringattn_tensor_t tq = t(q, Hq), tk = t(k, Hkv), tv = t(v, Hkv), to = t(o, Hq),
                    tdo = t(dout, Hq), tdq = t(dq, Hq), tdk = t(dk, Hkv), tdv = t(dv, Hkv);
  ringattn_tensor_t tl = lse_bhs(p->lse.data(), 1, Hq, S);
  ringattn_status_t st = ringattn_attention_forward(&tq, &tk, &tv, &to, &tl, &p->params,
                                                    RINGATTN_BACKEND_CPU, nullptr);
  if (st == RINGATTN_SUCCESS && p->backward) {
    st = ringattn_attention_backward(&tq, &tk, &tv, &to, &tl, &tdo, &tdq, &tdk, &tdv, &p->params,
                                     RINGATTN_BACKEND_CPU, nullptr);
  }
  p->o = from_dtype_bytes(o, dt);
  p->dq = from_dtype_bytes(dq, dt);
  p->dk = from_dtype_bytes(dk, dt);
  p->dv = from_dtype_bytes(dv, dt);
  return st;
}

TEST(Nonfinite, NanAndInfScoresGiveNanRowsFloat32) {
  check_nonfinite_cases(RINGATTN_FLOAT32, run_cpu);
}
TEST(Nonfinite, NanAndInfScoresGiveNanRowsBfloat16) {
  check_nonfinite_cases(RINGATTN_BFLOAT16, run_cpu);
}

}  // namespace
}  // namespace test
}  // namespace ringattn
