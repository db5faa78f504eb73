#include "nonfinite_cases.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <string>

namespace ringattn {
namespace test {
namespace {

constexpr int64_t S = NonfiniteProblem::kS, Hq = NonfiniteProblem::kHq,
                  Hkv = NonfiniteProblem::kHkv, D = NonfiniteProblem::kD;

ringattn_dtype_t g_dtype = RINGATTN_FLOAT32;

NonfiniteProblem make(bool causal, bool backward) {
  NonfiniteProblem p;
  p.dtype = g_dtype;
  auto fill = [](std::vector<float>* x, int64_t n, unsigned salt) {
    x->resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      (*x)[i] = static_cast<float>(((i * 2654435761u + salt) >> 7) % 2001) / 1000.0f - 1.0f;
    }
  };
  fill(&p.q, S * Hq * D, 1);
  fill(&p.k, S * Hkv * D, 2);
  fill(&p.v, S * Hkv * D, 3);
  fill(&p.dout, S * Hq * D, 4);
  p.params.causal = causal ? 1 : 0;
  p.backward = backward;
  return p;
}

bool row_has_nan(const std::vector<float>& t, int64_t s, int64_t h, int64_t heads) {
  for (int64_t x = 0; x < D; ++x) {
    if (std::isnan(t[(s * heads + h) * D + x])) return true;
  }
  return false;
}
bool row_finite(const std::vector<float>& t, int64_t s, int64_t h, int64_t heads) {
  for (int64_t x = 0; x < D; ++x) {
    if (!std::isfinite(t[(s * heads + h) * D + x])) return false;
  }
  return true;
}
float lse_at(const NonfiniteProblem& p, int64_t h, int64_t s) { return p.lse[h * S + s]; }

}  // namespace

std::vector<unsigned char> to_dtype_bytes(const std::vector<float>& x, ringattn_dtype_t dtype) {
  std::vector<unsigned char> out;
  if (dtype == RINGATTN_FLOAT32) {
    out.resize(x.size() * 4);
    std::memcpy(out.data(), x.data(), out.size());
    return out;
  }
  out.resize(x.size() * 2);
  for (size_t i = 0; i < x.size(); ++i) {
    uint32_t b;
    std::memcpy(&b, &x[i], 4);
    // Round to nearest even; NaN stays a (quiet) NaN.
    const uint32_t rounded = (b + 0x7fff + ((b >> 16) & 1)) >> 16;
    const uint16_t h = static_cast<uint16_t>(std::isnan(x[i]) ? (b >> 16) | 0x40 : rounded);
    std::memcpy(&out[2 * i], &h, 2);
  }
  return out;
}

std::vector<float> from_dtype_bytes(const std::vector<unsigned char>& b, ringattn_dtype_t dtype) {
  std::vector<float> out(b.size() / (dtype == RINGATTN_FLOAT32 ? 4 : 2));
  for (size_t i = 0; i < out.size(); ++i) {
    if (dtype == RINGATTN_FLOAT32) {
      std::memcpy(&out[i], &b[4 * i], 4);
    } else {
      uint16_t h;
      std::memcpy(&h, &b[2 * i], 2);
      const uint32_t w = static_cast<uint32_t>(h) << 16;
      std::memcpy(&out[i], &w, 4);
    }
  }
  return out;
}

NonfiniteBytes::NonfiniteBytes(const NonfiniteProblem& p)
    : q(to_dtype_bytes(p.q, p.dtype)),
      k(to_dtype_bytes(p.k, p.dtype)),
      v(to_dtype_bytes(p.v, p.dtype)),
      dout(to_dtype_bytes(p.dout, p.dtype)),
      o(to_dtype_bytes(std::vector<float>(S * Hq * D), p.dtype)),
      dq(o),
      dk(to_dtype_bytes(std::vector<float>(S * Hkv * D), p.dtype)),
      dv(dk) {}

void NonfiniteBytes::store_outputs(NonfiniteProblem* p) const {
  p->o = from_dtype_bytes(o, p->dtype);
  p->dq = from_dtype_bytes(dq, p->dtype);
  p->dk = from_dtype_bytes(dk, p->dtype);
  p->dv = from_dtype_bytes(dv, p->dtype);
}

void check_nonfinite_cases(ringattn_dtype_t dtype, const NonfiniteRunner& run) {
  g_dtype = dtype;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  {
    SCOPED_TRACE("NaN in one element of query row 10, head 0, causal");
    NonfiniteProblem p = make(true, true);
    p.q[(10 * Hq + 0) * D + 3] = nan;
    ASSERT_EQ(run(&p), RINGATTN_SUCCESS) << ringattn_get_last_error();
    for (int64_t s = 0; s < S; ++s) {
      for (int64_t h = 0; h < Hq; ++h) {
        const bool bad = s == 10 && h == 0;
        EXPECT_EQ(row_has_nan(p.o, s, h, Hq), bad) << "O row " << s << " head " << h;
        EXPECT_EQ(std::isnan(lse_at(p, h, s)), bad) << "LSE row " << s << " head " << h;
        EXPECT_EQ(row_has_nan(p.dq, s, h, Hq), bad) << "dQ row " << s << " head " << h;
        if (!bad) {
          EXPECT_TRUE(row_finite(p.o, s, h, Hq) && row_finite(p.dq, s, h, Hq)) << s << " " << h;
        }
      }
      // Keys 0..10 are seen by query row 10: their gradients depend on it. (Later keys' may be
      // NaN too, as in a dense float implementation: 0 x NaN where a masked entry meets the NaN
      // query row in a product.)
      if (s <= 10) {
        EXPECT_TRUE(row_has_nan(p.dk, s, 0, Hkv)) << "dK row " << s;
        EXPECT_TRUE(row_has_nan(p.dv, s, 0, Hkv)) << "dV row " << s;
      }
    }
  }
  {
    SCOPED_TRACE("NaN in key row 20, causal: every query row from 20 on sees it");
    NonfiniteProblem p = make(true, false);
    p.k[(20 * Hkv + 0) * D + 0] = nan;
    ASSERT_EQ(run(&p), RINGATTN_SUCCESS) << ringattn_get_last_error();
    for (int64_t s = 0; s < S; ++s) {
      for (int64_t h = 0; h < Hq; ++h) {
        EXPECT_EQ(row_has_nan(p.o, s, h, Hq), s >= 20) << "O row " << s << " head " << h;
        EXPECT_EQ(std::isnan(lse_at(p, h, s)), s >= 20) << "LSE row " << s << " head " << h;
      }
    }
  }
  {
    SCOPED_TRACE("+inf in query row 5 (every dim), full mask: scores +-inf or NaN");
    NonfiniteProblem p = make(false, false);
    for (int64_t x = 0; x < D; ++x) p.q[(5 * Hq + 1) * D + x] = inf;
    ASSERT_EQ(run(&p), RINGATTN_SUCCESS) << ringattn_get_last_error();
    EXPECT_TRUE(row_has_nan(p.o, 5, 1, Hq));
    EXPECT_TRUE(std::isnan(lse_at(p, 1, 5)));
    EXPECT_TRUE(row_finite(p.o, 5, 0, Hq) && row_finite(p.o, 6, 1, Hq));
  }
  {
    SCOPED_TRACE("logits beyond float32: q = k = 1e30 (every score +inf)");
    NonfiniteProblem p = make(true, false);
    for (float& x : p.q) x = 1e30f;
    for (float& x : p.k) x = 1e30f;
    ASSERT_EQ(run(&p), RINGATTN_SUCCESS) << ringattn_get_last_error();
    for (int64_t s = 0; s < S; ++s) {
      EXPECT_TRUE(row_has_nan(p.o, s, 0, Hq)) << "O row " << s;
      EXPECT_TRUE(std::isnan(lse_at(p, 0, s))) << "LSE row " << s;
    }
  }
  {
    SCOPED_TRACE("softmax scale 1e38 with positive scores: every score +inf");
    NonfiniteProblem p = make(false, false);
    for (float& x : p.q) x = 0.5f;
    for (float& x : p.k) x = 0.25f;
    p.params.softmax_scale = 1e38f;
    ASSERT_EQ(run(&p), RINGATTN_SUCCESS) << ringattn_get_last_error();
    for (int64_t s = 0; s < S; ++s) {
      EXPECT_TRUE(row_has_nan(p.o, s, 1, Hq)) << "O row " << s;
      EXPECT_TRUE(std::isnan(lse_at(p, 1, s))) << "LSE row " << s;
    }
  }
}

}  // namespace test
}  // namespace ringattn
