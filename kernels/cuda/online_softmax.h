// The forward's online softmax rule, shared by the kernel and its CPU test: when a row's
// reference max moves.
//
// A row keeps a reference max m (raw score units) and takes its exponentials against it:
// p = 2^((s - m) * scale_log2). The exact softmax only needs m to be the same for the row's
// running sum, its output accumulator and its LSE (lse = m * scale + ln(sum)); it need not be
// the true max, as long as no exponential overflows. So m moves, and the sum and the output are
// rescaled by 2^((m_old - m_new) * scale_log2), only when a tile's max exceeds m by more than
// kRescaleLog2; otherwise the exponentials of the tile are at most 2^kRescaleLog2 = 256, well
// inside float32 and bfloat16 range, and 16-bit rounding of p keeps the same relative error.
// The kernel moves all rows of a warp together when any of them must move, so after the first
// tiles (the running max of a row rarely grows by a factor of 256 later) the rescale of the
// output accumulator, 2 * D / 8 multiplies per row pair and key tile, is skipped.
#pragma once

#include <math.h>

#include "positions.h"  // RINGATTN_HD

namespace ringattn {
namespace cuda {

constexpr float kRescaleLog2 = 8.0f;

// Whether a row whose reference max is m_ref must move it for a tile whose max (including
// m_ref) is tile_max. A row with no visible score yet (m_ref = -inf) moves to its first one.
RINGATTN_HD bool softmax_must_rescale(float m_ref, float tile_max, float scale_log2) {
  return tile_max > m_ref && (m_ref == -INFINITY || (tile_max - m_ref) * scale_log2 > kRescaleLog2);
}

}  // namespace cuda
}  // namespace ringattn
