// A C++ program built against the installed package: the RAII context and plan of ringattn.hpp
// (a one-rank ring, no communicator), checked against the single-process call.
#include <cmath>
#include <cstdio>
#include <ringattn/ringattn.hpp>
#include <vector>

int main() {
  constexpr int64_t S = 64, H = 2, D = 32;
  std::vector<float> q(S * H * D), k(q.size()), v(q.size()), o(q.size()), o_ring(q.size());
  for (size_t i = 0; i < q.size(); ++i) {
    q[i] = 0.01f * static_cast<float>(i % 13);
    k[i] = 0.02f * static_cast<float>(i % 7);
    v[i] = 0.05f * static_cast<float>(i % 5);
  }
  auto t = [](std::vector<float>& x) {
    return ringattn::tensor_bshd(x.data(), RINGATTN_FLOAT32, 1, S, H, D);
  };
  ringattn_tensor_t tq = t(q), tk = t(k), tv = t(v), to = t(o), tr = t(o_ring);
  ringattn_attn_params_t params = ringattn::default_params();
  params.causal = 1;
  try {
    ringattn::attention_forward(tq, tk, tv, to, nullptr, params);
    ringattn::Context ctx = ringattn::Context::compute_only(0, 1, RINGATTN_BACKEND_CPU);
    ringattn::RingPlan plan(ctx, tq, tk, tv, params);
    plan.forward(tq, tk, tv, tr, nullptr);
  } catch (const ringattn::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  double err = 0.0;
  for (size_t i = 0; i < o.size(); ++i) err = std::fmax(err, std::fabs(o[i] - o_ring[i]));
  if (err > 1e-5) {
    std::fprintf(stderr, "ring and single process differ by %g\n", err);
    return 1;
  }
  std::printf("ringattn %d C++ ok (max diff %g)\n", ringattn::version(), err);
  return 0;
}
