// Non-finite inputs on the CUDA backend (the cases of tests/common/nonfinite_cases.h): float32
// (the generic kernels) and bfloat16 at D = 64 (the tensor-core kernels), on device copies.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include "nonfinite_cases.h"
#include "ringattn/ringattn.hpp"

namespace ringattn {
namespace test {
namespace {

bool have_device() {
  int n = 0;
  const bool ok = cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
  cudaGetLastError();
  return ok;
}

// A device copy of host bytes, copied back by fetch().
struct Dev {
  std::vector<unsigned char>* host;
  void* ptr = nullptr;
  explicit Dev(std::vector<unsigned char>* h) : host(h) {
    if (cudaMalloc(&ptr, h->size()) == cudaSuccess) {
      cudaMemcpy(ptr, h->data(), h->size(), cudaMemcpyHostToDevice);
    }
  }
  ~Dev() { cudaFree(ptr); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  void fetch() { cudaMemcpy(host->data(), ptr, host->size(), cudaMemcpyDeviceToHost); }
};

ringattn_status_t run_cuda(NonfiniteProblem* p) {
  using P = NonfiniteProblem;
  const int64_t S = P::kS, Hq = P::kHq, Hkv = P::kHkv, D = P::kD;
  const ringattn_dtype_t dt = p->dtype;
  NonfiniteBytes b(*p);
  std::vector<unsigned char> hl = to_dtype_bytes(std::vector<float>(Hq * S), RINGATTN_FLOAT32);
  Dev q(&b.q), k(&b.k), v(&b.v), o(&b.o), lse(&hl), dout(&b.dout), dq(&b.dq), dk(&b.dk), dv(&b.dv);
  auto t = [dt](Dev& x, int64_t h) { return tensor_bshd(x.ptr, dt, 1, S, h, D); };
  ringattn_tensor_t tq = t(q, Hq), tk = t(k, Hkv), tv = t(v, Hkv), to = t(o, Hq), tdo = t(dout, Hq),
                    tdq = t(dq, Hq), tdk = t(dk, Hkv), tdv = t(dv, Hkv);
  ringattn_tensor_t tl = lse_bhs(static_cast<float*>(lse.ptr), 1, Hq, S);
  ringattn_status_t st = ringattn_attention_forward(&tq, &tk, &tv, &to, &tl, &p->params,
                                                    RINGATTN_BACKEND_CUDA, nullptr);
  if (st == RINGATTN_SUCCESS && p->backward) {
    st = ringattn_attention_backward(&tq, &tk, &tv, &to, &tl, &tdo, &tdq, &tdk, &tdv, &p->params,
                                     RINGATTN_BACKEND_CUDA, nullptr);
  }
  cudaDeviceSynchronize();
  for (Dev* d : {&o, &lse, &dq, &dk, &dv}) d->fetch();
  b.store_outputs(p);
  p->lse = from_dtype_bytes(hl, RINGATTN_FLOAT32);
  return st;
}

TEST(CudaNonfinite, NanAndInfScoresGiveNanRowsFloat32) {
  if (!have_device()) GTEST_SKIP() << "no CUDA device";
  check_nonfinite_cases(RINGATTN_FLOAT32, run_cuda);
}
TEST(CudaNonfinite, NanAndInfScoresGiveNanRowsBfloat16) {
  if (!have_device()) GTEST_SKIP() << "no CUDA device";
  check_nonfinite_cases(RINGATTN_BFLOAT16, run_cuda);
}

}  // namespace
}  // namespace test
}  // namespace ringattn
