// The log-sum-exp merge of one row, shared by merge_partial and the forward's kOutMergeF32 mode.
#pragma once

#include <math.h>
#include <stdint.h>

namespace ringattn {
namespace cpu {

// (o1, *l1) <- merge of (o1, *l1) and (o2 * o2_mul, l2), float32, -inf safe: a side with
// L = -inf contributes nothing, and two empty sides stay (o1 as is, -inf).
inline void merge_row(float* o1, float* l1, const float* o2, float o2_mul, float l2, int64_t d) {
  const float a = *l1;
  if (l2 == -INFINITY) return;
  if (a == -INFINITY) {
    for (int64_t i = 0; i < d; ++i) o1[i] = o2[i] * o2_mul;
    *l1 = l2;
    return;
  }
  const float mx = a > l2 ? a : l2;
  const float mn = a > l2 ? l2 : a;
  const float l = mx + log1pf(expf(mn - mx));
  const float w1 = expf(a - l);
  const float w2 = expf(l2 - l) * o2_mul;
  for (int64_t i = 0; i < d; ++i) o1[i] = w1 * o1[i] + w2 * o2[i];
  *l1 = l;
}

}  // namespace cpu
}  // namespace ringattn
