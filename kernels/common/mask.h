// Masks from global positions: the one rule that serves contiguous, zigzag and striped shards,
// packed sequences, causal attention and sliding windows.
//
// A query at (seq sq, position p) sees a key at (seq sk, position j) iff
//   sq == sk  and  p - left <= j <= p + right
// where left/right = -1 means unbounded and causal means right = 0 (combined with any window).
#pragma once

#include "positions.h"

namespace ringattn {

// The effective window. Built once per call from (causal, window_left, window_right).
struct MaskSpec {
  int64_t left;   // -1: unbounded
  int64_t right;  // -1: unbounded
};

// A window side this wide or wider reaches every key (positions stay below 2^48, validated), so
// it is unbounded: position +- window never overflows.
constexpr int64_t kUnboundedWindow = int64_t{1} << 61;

RINGATTN_HD MaskSpec make_mask_spec(bool causal, int64_t window_left, int64_t window_right) {
  MaskSpec m{window_left < 0 || window_left >= kUnboundedWindow ? -1 : window_left,
             window_right < 0 || window_right >= kUnboundedWindow ? -1 : window_right};
  if (causal && (m.right < 0 || m.right > 0)) m.right = 0;
  return m;
}

RINGATTN_HD bool mask_is_full(const MaskSpec& m) { return m.left < 0 && m.right < 0; }

RINGATTN_HD bool mask_visible(const MaskSpec& m, int64_t qseq, int64_t qpos, int64_t kseq,
                              int64_t kpos) {
  if (qseq != kseq) return false;
  if (m.left >= 0 && kpos < qpos - m.left) return false;
  if (m.right >= 0 && kpos > qpos + m.right) return false;
  return true;
}

// Summary of a tile of consecutive local rows: whether all rows are in one sequence, and the
// range of their positions.
struct TileRange {
  int64_t seq;   // the sequence, when uniform
  bool uniform;  // all rows belong to sequence `seq`
  int64_t pos_min;
  int64_t pos_max;
  bool empty;
};

// Summarize local rows [row0, row0 + rows) of `map`. O(num_runs).
RINGATTN_HD TileRange tile_range(const PosMap& map, int64_t row0, int64_t rows) {
  TileRange t{-1, true, 0, -1, true};
  int64_t base = 0;
  const int64_t row1 = row0 + rows;
  for (int32_t i = 0; i < map.num_runs && base < row1; ++i) {
    const PosRun& r = map.runs[i];
    const int64_t lo = row0 > base ? row0 : base;
    const int64_t hi = row1 < base + r.count ? row1 : base + r.count;
    if (lo < hi) {
      const int64_t a = r.start + (lo - base) * r.stride;
      const int64_t b = r.start + (hi - 1 - base) * r.stride;
      const int64_t mn = a < b ? a : b, mx = a < b ? b : a;
      if (t.empty) {
        t.seq = r.seq;
        t.pos_min = mn;
        t.pos_max = mx;
        t.empty = false;
      } else {
        if (r.seq != t.seq) t.uniform = false;
        if (mn < t.pos_min) t.pos_min = mn;
        if (mx > t.pos_max) t.pos_max = mx;
      }
    }
    base += r.count;
  }
  return t;
}

enum TileClass : int32_t {
  kTileHidden = 0,   // no (query, key) pair of the tile is visible: skip without compute
  kTilePartial = 1,  // some pairs visible: compute with per-element mask
  kTileFull = 2      // every pair visible: compute without mask arithmetic
};

// Classify a (query tile, key tile) pair. Conservative: kTileFull and kTileHidden are exact
// claims; anything uncertain is kTilePartial.
RINGATTN_HD TileClass classify_tile(const MaskSpec& m, const TileRange& q, const TileRange& k) {
  if (q.empty || k.empty) return kTileHidden;
  const bool same_seq = q.uniform && k.uniform && q.seq == k.seq;
  if (q.uniform && k.uniform && q.seq != k.seq) return kTileHidden;
  // Hidden by the window, whatever the sequences.
  if (m.left >= 0 && k.pos_max < q.pos_min - m.left) return kTileHidden;
  if (m.right >= 0 && k.pos_min > q.pos_max + m.right) return kTileHidden;
  if (!same_seq) return kTilePartial;
  const bool left_ok = m.left < 0 || k.pos_min >= q.pos_max - m.left;
  const bool right_ok = m.right < 0 || k.pos_max <= q.pos_min + m.right;
  return (left_ok && right_ok) ? kTileFull : kTilePartial;
}

}  // namespace ringattn
