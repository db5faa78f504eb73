// Vectorized row operations of the online softmax (float32, Highway; exp is Highway's
// contrib Exp, within about 1 ulp of expf).
#pragma once

#include <hwy/contrib/math/math-inl.h>
#include <hwy/highway.h>
#include <math.h>
#include <stdint.h>

namespace ringattn {
namespace cpu {

namespace hn = hwy::HWY_NAMESPACE;

// Number of float32 lanes; tile widths are padded to a multiple of it.
inline int64_t simd_lanes() { return static_cast<int64_t>(hn::Lanes(hn::ScalableTag<float>())); }

// One online-softmax step of a row of scores s[0, n) (n a multiple of the lane count; masked
// entries are -inf). Replaces s by p = exp(s - m_new), updates the running max *m and sum *l, and
// returns the factor by which the row's output accumulator must be rescaled.
//
// Non-finite scores propagate as in plain float arithmetic: a NaN score gives p = NaN, so the
// row's sum and output become NaN (never an empty row); a +inf score makes the max +inf and its
// own p = exp(inf - inf) = NaN; a -inf score weighs nothing, like a masked key.
inline float online_softmax_row(float* s, int64_t n, float* m, float* l) {
  const hn::ScalableTag<float> df;
  const int64_t L = static_cast<int64_t>(hn::Lanes(df));
  const auto vneg = hn::Set(df, -INFINITY);
  auto vmax = vneg, vnan = hn::Zero(df);
  for (int64_t j = 0; j < n; j += L) {
    const auto x = hn::Load(df, s + j);
    const auto nan = hn::IsNaN(x);
    vmax = hn::Max(vmax, hn::IfThenElse(nan, vneg, x));  // the max of the numbers
    vnan = hn::Or(vnan, hn::VecFromMask(df, nan));
  }
  const bool any_nan = !hn::AllFalse(df, hn::MaskFromVec(vnan));
  const float tile_max = hn::GetLane(hn::MaxOfLanes(df, vmax));
  const float m_old = *m;
  const float m_new = tile_max > m_old ? tile_max : m_old;
  if (m_new == -INFINITY && !any_nan) {  // nothing visible yet: p = 0, accumulator untouched
    for (int64_t j = 0; j < n; j += L) hn::Store(hn::Zero(df), df, s + j);
    return 1.0f;
  }
  // NaN scores and nothing else visible yet: exponentials against 0 (NaN stays NaN, -inf is 0).
  const auto vm = hn::Set(df, m_new == -INFINITY ? 0.0f : m_new);
  auto sum0 = hn::Zero(df), sum1 = hn::Zero(df);
  int64_t j = 0;
  for (; j + 2 * L <= n; j += 2 * L) {
    const auto p0 = hn::Exp(df, hn::Sub(hn::Load(df, s + j), vm));
    const auto p1 = hn::Exp(df, hn::Sub(hn::Load(df, s + j + L), vm));
    hn::Store(p0, df, s + j);
    hn::Store(p1, df, s + j + L);
    sum0 = hn::Add(sum0, p0);
    sum1 = hn::Add(sum1, p1);
  }
  for (; j < n; j += L) {
    const auto p0 = hn::Exp(df, hn::Sub(hn::Load(df, s + j), vm));
    hn::Store(p0, df, s + j);
    sum0 = hn::Add(sum0, p0);
  }
  const float alpha = m_old == -INFINITY ? 0.0f : expf(m_old - m_new);
  *l = *l * alpha + hn::GetLane(hn::SumOfLanes(df, hn::Add(sum0, sum1)));
  // A NaN score, or a +inf one (whose p is exp(inf - inf) = NaN): the sum, and with it O and
  // LSE, becomes NaN here, whatever Highway's Exp returns for a NaN argument.
  if (any_nan || m_new == INFINITY) *l = NAN;
  *m = m_new;
  return alpha;
}

inline void scale_row(float* x, int64_t n, float a) {
  const hn::ScalableTag<float> df;
  const int64_t L = static_cast<int64_t>(hn::Lanes(df));
  const auto va = hn::Set(df, a);
  int64_t j = 0;
  for (; j + L <= n; j += L) hn::StoreU(hn::Mul(hn::LoadU(df, x + j), va), df, x + j);
  for (; j < n; ++j) x[j] *= a;
}

}  // namespace cpu
}  // namespace ringattn
