// The CUDA forward's online softmax rule (kernels/cuda/online_softmax.h), replayed on the host
// the way one warp of the kernel applies it (rows of a warp, key tiles of 64, P rounded to
// bfloat16 for the P V product), against float64 softmax: the lazy reference max keeps the
// 2x-naive rule of DESIGN.md against the eager one (moved on every tile), bounds every
// exponential by 2^kRescaleLog2, and moves rarely on ordinary scores.
#include <gtest/gtest.h>
#include <math.h>

#include <algorithm>
#include <random>
#include <vector>

#include "online_softmax.h"
#include "reference.h"

namespace ringattn {
namespace test {
namespace {

constexpr int kRows = 32;  // one warp of the D <= 128 forward: 2 x 16 rows
constexpr int kTile = 64;
constexpr int kDv = 8;

struct Replay {
  std::vector<double> out;  // [kRows][kDv], float32 arithmetic
  std::vector<double> lse;  // [kRows]
  int moves = 0;            // tiles on which the warp moved its reference maxima
  float max_p = 0.0f;       // largest exponential taken
};

// One warp over `cols` keys; scores s [kRows][cols] (raw, -inf = masked), values v [cols][kDv].
// lazy = false moves the maxima on every tile (the textbook online softmax).
Replay replay(const std::vector<float>& s, const std::vector<float>& v, int cols, float scale,
              bool lazy) {
  const float sl2 = scale * 1.4426950408889634f;
  std::vector<float> m(kRows, -INFINITY), l(kRows, 0.0f), o(kRows * kDv, 0.0f);
  Replay r;
  for (int t0 = 0; t0 < cols; t0 += kTile) {
    const int t1 = std::min(cols, t0 + kTile);
    std::vector<float> tmax(kRows);
    bool grow = false;
    for (int i = 0; i < kRows; ++i) {
      float mx = m[i];
      for (int j = t0; j < t1; ++j) mx = std::max(mx, s[i * cols + j]);
      tmax[i] = mx;
      grow = grow || (lazy ? cuda::softmax_must_rescale(m[i], mx, sl2) : mx > m[i]);
    }
    if (grow) {
      ++r.moves;
      for (int i = 0; i < kRows; ++i) {
        const float alpha = exp2f(m[i] * sl2 - (tmax[i] == -INFINITY ? 0.0f : tmax[i] * sl2));
        m[i] = tmax[i];
        l[i] *= alpha;
        for (int d = 0; d < kDv; ++d) o[i * kDv + d] *= alpha;
      }
    }
    for (int i = 0; i < kRows; ++i) {
      const float ms = m[i] == -INFINITY ? 0.0f : m[i] * sl2;
      for (int j = t0; j < t1; ++j) {
        const float p = exp2f(fmaf(s[i * cols + j], sl2, -ms));
        r.max_p = std::max(r.max_p, p);
        l[i] += p;
        const float p16 = static_cast<float>(bf16_value(bf16_bits(p)));  // the MMA's operand
        for (int d = 0; d < kDv; ++d) o[i * kDv + d] = fmaf(p16, v[j * kDv + d], o[i * kDv + d]);
      }
    }
  }
  r.out.resize(kRows * kDv);
  r.lse.resize(kRows);
  for (int i = 0; i < kRows; ++i) {
    const float inv = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
    for (int d = 0; d < kDv; ++d) r.out[i * kDv + d] = o[i * kDv + d] * inv;
    r.lse[i] = l[i] > 0.0f ? m[i] * scale + logf(l[i]) : -INFINITY;
  }
  return r;
}

struct Exact {
  std::vector<double> out, lse;
};

Exact exact(const std::vector<float>& s, const std::vector<float>& v, int cols, float scale) {
  Exact e{std::vector<double>(kRows * kDv, 0.0), std::vector<double>(kRows, -INFINITY)};
  for (int i = 0; i < kRows; ++i) {
    double mx = -INFINITY;
    for (int j = 0; j < cols; ++j) mx = std::max(mx, double(s[i * cols + j]) * scale);
    if (mx == -INFINITY) continue;
    double sum = 0.0;
    for (int j = 0; j < cols; ++j) {
      const double p = exp(double(s[i * cols + j]) * scale - mx);
      sum += p;
      for (int d = 0; d < kDv; ++d) e.out[i * kDv + d] += p * v[j * kDv + d];
    }
    for (int d = 0; d < kDv; ++d) e.out[i * kDv + d] /= sum;
    e.lse[i] = mx + log(sum);
  }
  return e;
}

double max_err(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] == -INFINITY || b[i] == -INFINITY) {
      EXPECT_EQ(a[i], b[i]) << i;
      continue;
    }
    m = std::max(m, fabs(a[i] - b[i]));
  }
  return m;
}

// Lazy against eager, both against float64: the 2x-naive rule (with a floor of float32 epsilon
// for cases where the eager error happens to be near zero).
void check(const std::vector<float>& s, const std::vector<float>& v, int cols, float scale,
           Replay* lazy_out = nullptr) {
  const Replay lazy = replay(s, v, cols, scale, true), eager = replay(s, v, cols, scale, false);
  const Exact ex = exact(s, v, cols, scale);
  const double eo = max_err(eager.out, ex.out), lo = max_err(lazy.out, ex.out);
  const double el = max_err(eager.lse, ex.lse), ll = max_err(lazy.lse, ex.lse);
  EXPECT_LE(lo, 2.0 * eo + 1.2e-7) << "output: lazy " << lo << " eager " << eo;
  EXPECT_LE(ll, 2.0 * el + 1.2e-7 * 64) << "lse: lazy " << ll << " eager " << el;
  EXPECT_LE(lazy.max_p, exp2f(cuda::kRescaleLog2) * 1.0001f);
  if (lazy_out != nullptr) *lazy_out = lazy;
}

std::vector<float> normal(size_t n, float sd, std::mt19937* gen) {
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> x(n);
  for (float& e : x) e = d(*gen);
  return x;
}

TEST(CudaOnlineSoftmax, OrdinaryScoresMoveTheMaximaAlmostOnlyOnTheFirstTile) {
  std::mt19937 gen(3);
  const int cols = 8192;
  // Scores of unit-variance q and k at D = 128 (raw q.k has variance 128; scale 1/sqrt(128)).
  const float scale = 1.0f / sqrtf(128.0f);
  const std::vector<float> s = normal(size_t(kRows) * cols, sqrtf(128.0f), &gen);
  const std::vector<float> v = normal(size_t(cols) * kDv, 1.0f, &gen);
  Replay lazy;
  check(s, v, cols, scale, &lazy);
  EXPECT_LE(lazy.moves, 2) << "of " << cols / kTile << " tiles";
  // The eager rule moves whenever some row's max grows, which stays common to the end.
  EXPECT_GT(replay(s, v, cols, scale, false).moves, 20);
}

TEST(CudaOnlineSoftmax, RisingScoresMoveOnEveryLargeStepAndStayExact) {
  std::mt19937 gen(5);
  const int cols = 1024;
  std::vector<float> s = normal(size_t(kRows) * cols, 1.0f, &gen);
  // Each tile's scores 12 log2 units above the previous tile's: every tile must move.
  for (int i = 0; i < kRows; ++i) {
    for (int j = 0; j < cols; ++j) s[i * cols + j] += float(j / kTile) * 12.0f / 1.4426950f;
  }
  const std::vector<float> v = normal(size_t(cols) * kDv, 1.0f, &gen);
  Replay lazy;
  check(s, v, cols, 1.0f, &lazy);
  EXPECT_EQ(lazy.moves, cols / kTile);
  // Small steps (0.4 log2 units per tile, some noise): the row max grows by about 6 log2 units
  // over 16 tiles, under the threshold: no move after the first tile, exponentials far above 1.
  const std::vector<float> noise = normal(size_t(kRows) * cols, 0.3f, &gen);
  for (int i = 0; i < kRows; ++i) {
    for (int j = 0; j < cols; ++j) {
      s[i * cols + j] = float(j / kTile) * 0.4f / 1.4426950f + noise[i * cols + j];
    }
  }
  check(s, v, cols, 1.0f, &lazy);
  EXPECT_EQ(lazy.moves, 1);
  EXPECT_GT(lazy.max_p, 32.0f);
}

TEST(CudaOnlineSoftmax, MaskedRowsAndLateFirstKeysAreExact) {
  std::mt19937 gen(7);
  const int cols = 300;  // a ragged last tile
  std::vector<float> s = normal(size_t(kRows) * cols, 3.0f, &gen);
  for (int i = 0; i < kRows; ++i) {
    for (int j = 0; j < cols; ++j) {
      // Row 0 sees nothing; row i > 0 sees keys from 9 * i on (its first keys in a later tile);
      // every third row a causal-like diagonal.
      const bool hidden = i == 0 || j < 9 * i || (i % 3 == 0 && j > 5 * i + 20);
      if (hidden) s[i * cols + j] = -INFINITY;
    }
  }
  const std::vector<float> v = normal(size_t(cols) * kDv, 1.0f, &gen);
  Replay lazy;
  check(s, v, cols, 0.25f, &lazy);
  EXPECT_EQ(lazy.lse[0], -INFINITY);
  for (int d = 0; d < kDv; ++d) EXPECT_EQ(lazy.out[d], 0.0);
}

TEST(CudaOnlineSoftmax, TheRuleItself) {
  const float sl2 = 1.0f;
  EXPECT_TRUE(cuda::softmax_must_rescale(-INFINITY, 0.0f, sl2));
  EXPECT_FALSE(cuda::softmax_must_rescale(-INFINITY, -INFINITY, sl2));
  EXPECT_FALSE(cuda::softmax_must_rescale(1.0f, 1.0f, sl2));
  EXPECT_FALSE(cuda::softmax_must_rescale(1.0f, 1.0f + cuda::kRescaleLog2, sl2));
  EXPECT_TRUE(cuda::softmax_must_rescale(1.0f, 1.5f + cuda::kRescaleLog2, sl2));
  EXPECT_FALSE(cuda::softmax_must_rescale(1.0f, 5.0f, 2.0f));
  EXPECT_TRUE(cuda::softmax_must_rescale(1.0f, 5.5f, 2.0f));
}

}  // namespace
}  // namespace test
}  // namespace ringattn
