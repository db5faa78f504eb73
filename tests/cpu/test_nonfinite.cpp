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
  NonfiniteBytes b(*p);
  p->lse.assign(static_cast<size_t>(Hq * S), 0.0f);
  auto t = [dt](std::vector<unsigned char>& x, int64_t h) {
    return tensor_bshd(x.data(), dt, 1, S, h, D);
  };
  ringattn_tensor_t tq = t(b.q, Hq), tk = t(b.k, Hkv), tv = t(b.v, Hkv), to = t(b.o, Hq),
                    tdo = t(b.dout, Hq), tdq = t(b.dq, Hq), tdk = t(b.dk, Hkv), tdv = t(b.dv, Hkv);
  ringattn_tensor_t tl = lse_bhs(p->lse.data(), 1, Hq, S);
  ringattn_status_t st = ringattn_attention_forward(&tq, &tk, &tv, &to, &tl, &p->params,
                                                    RINGATTN_BACKEND_CPU, nullptr);
  if (st == RINGATTN_SUCCESS && p->backward) {
    st = ringattn_attention_backward(&tq, &tk, &tv, &to, &tl, &tdo, &tdq, &tdk, &tdv, &p->params,
                                     RINGATTN_BACKEND_CPU, nullptr);
  }
  b.store_outputs(p);
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
