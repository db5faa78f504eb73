// API usage: causal attention forward and backward on one process, through the C++ header.
// Prints the output of one row and the gradient norm; exits non-zero on any error.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "ringattn/ringattn.hpp"

int main() {
  const int64_t b = 1, s = 256, hq = 8, hkv = 2, d = 64;  // GQA: 4 query heads per kv head
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  auto randn = [&](size_t n) {
    std::vector<float> x(n);
    for (float& e : x) e = normal(rng);
    return x;
  };
  std::vector<float> q = randn(b * s * hq * d), k = randn(b * s * hkv * d),
                     v = randn(b * s * hkv * d), dout = randn(b * s * hq * d);
  std::vector<float> o(q.size()), lse(b * hq * s), dq(q.size()), dk(k.size()), dv(v.size());

  auto tq = ringattn::tensor_bshd(q.data(), RINGATTN_FLOAT32, b, s, hq, d);
  auto tk = ringattn::tensor_bshd(k.data(), RINGATTN_FLOAT32, b, s, hkv, d);
  auto tv = ringattn::tensor_bshd(v.data(), RINGATTN_FLOAT32, b, s, hkv, d);
  auto to = ringattn::tensor_bshd(o.data(), RINGATTN_FLOAT32, b, s, hq, d);
  auto tdo = ringattn::tensor_bshd(dout.data(), RINGATTN_FLOAT32, b, s, hq, d);
  auto tdq = ringattn::tensor_bshd(dq.data(), RINGATTN_FLOAT32, b, s, hq, d);
  auto tdk = ringattn::tensor_bshd(dk.data(), RINGATTN_FLOAT32, b, s, hkv, d);
  auto tdv = ringattn::tensor_bshd(dv.data(), RINGATTN_FLOAT32, b, s, hkv, d);
  auto tlse = ringattn::lse_bhs(lse.data(), b, hq, s);

  ringattn_attn_params_t params = ringattn::default_params();
  params.causal = 1;
  try {
    ringattn::attention_forward(tq, tk, tv, to, &tlse, params);
    ringattn::attention_backward(tq, tk, tv, to, tlse, tdo, tdq, tdk, tdv, params);
  } catch (const ringattn::Error& e) {
    std::fprintf(stderr, "ringattn failed: %s\n", e.what());
    return 1;
  }
  double norm = 0;
  for (float g : dq) norm += double(g) * g;
  // Row 0 sees only key 0: its output is V[0] of kv head 0, and its LSE is scale * q0.k0.
  std::printf("o[0,0,0,:4] = %.4f %.4f %.4f %.4f (v[0,0,0,:4] = %.4f %.4f %.4f %.4f)\n", o[0], o[1],
              o[2], o[3], v[0], v[1], v[2], v[3]);
  std::printf("|dq| = %.4f, lse[0,0,0] = %.4f\n", std::sqrt(norm), lse[0]);
  return 0;
}
