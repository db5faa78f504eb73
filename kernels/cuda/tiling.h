// Tile arithmetic of the CUDA kernels that the host also needs (launch grids, skip decisions,
// shared-memory layout), compiled by nvcc and by the host compiler so CPU unit tests cover it.
#pragma once

#include <math.h>
#include <stdint.h>

#include "mask.h"
#include "positions.h"

namespace ringattn {
namespace cuda {

// Runs of a PosMap carried inside a kernel's by-value parameters, so that host-memory PosMaps
// reach the device with the launch itself (no copy, no synchronization). Maps with more runs
// are copied to device memory, stream-ordered, by the launcher.
constexpr int kInlineRuns = 8;

struct InlinePosMap {
  PosRun runs[kInlineRuns];
  int32_t num_runs;
  const PosRun* external;  // device copy when num_runs > kInlineRuns, else nullptr
};

RINGATTN_HD PosMap inline_view(const InlinePosMap& m) {
  return PosMap{m.external != nullptr ? m.external : m.runs, m.num_runs};
}

RINGATTN_HD int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Swizzled element offset of 16-byte chunk `chunk` of row `row` in a [rows][d] shared-memory tile
// of 2-byte elements. XOR with the low 3 row bits spreads the 8 rows that one ldmatrix phase reads
// over 8 distinct bank groups; needs d % 64 == 0 (at least 8 chunks per row).
RINGATTN_HD int swizzle_offset(int row, int chunk, int d) {
  return row * d + ((chunk ^ (row & 7)) << 3);
}

// Summary of query rows [q0, q0+bm) of qmap (rows past sq left out); empty when none remain.
RINGATTN_HD TileRange query_tile_range(const PosMap& qmap, int64_t sq, int64_t q0, int64_t bm) {
  const int64_t qn = q0 + bm <= sq ? bm : sq - q0;
  if (qn <= 0) return TileRange{-1, true, 0, -1, true};
  return tile_range(qmap, q0, qn);
}

// Class of key rows [k0, k0+bn) of kmap against a summarized query tile. Keys past sk are
// invisible: a ragged key tile is at best partial (its column bound must be applied). Ragged
// query rows need nothing here: the forward never stores them and the backward gives them
// zero probability through their LSE.
RINGATTN_HD TileClass classify_key_tile(const MaskSpec& m, const TileRange& qr, const PosMap& kmap,
                                        int64_t sk, int64_t k0, int64_t bn) {
  const int64_t kn = k0 + bn <= sk ? bn : sk - k0;
  if (kn <= 0 || qr.empty) return kTileHidden;
  const TileClass c = classify_tile(m, qr, tile_range(kmap, k0, kn));
  return c == kTileFull && kn < bn ? kTilePartial : c;
}

// Class of (query rows [q0, q0+bm) of qmap, key rows [k0, k0+bn) of kmap).
RINGATTN_HD TileClass classify_block(const MaskSpec& m, const PosMap& qmap, int64_t sq, int64_t q0,
                                     int64_t bm, const PosMap& kmap, int64_t sk, int64_t k0,
                                     int64_t bn) {
  return classify_key_tile(m, query_tile_range(qmap, sq, q0, bm), kmap, sk, k0, bn);
}

// Floor and ceiling of a / b for b > 0 and any sign of a.
RINGATTN_HD int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
RINGATTN_HD int64_t ceil_div_signed(int64_t a, int64_t b) { return -floor_div(-a, b); }
RINGATTN_HD int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }
RINGATTN_HD int64_t max_i64(int64_t a, int64_t b) { return a > b ? a : b; }

// A half-open range [begin, end) of row or tile indices; empty when begin >= end.
struct IndexSpan {
  int64_t begin, end;
};

// Hull of the rows among the first `rows` of `map` whose position lies in [pos_lo, pos_hi]
// (a bound with has_* false is unbounded) and, when only_seq, whose sequence is `seq`. Rows
// outside the hull are certainly outside that set. O(num_runs).
RINGATTN_HD IndexSpan rows_with_positions(const PosMap& map, int64_t rows, bool only_seq,
                                          int64_t seq, bool has_lo, int64_t pos_lo, bool has_hi,
                                          int64_t pos_hi) {
  IndexSpan h{0, 0};  // runs come in row order: the first qualifying run sets begin, the last end
  int64_t base = 0;
  for (int32_t i = 0; i < map.num_runs && base < rows; ++i) {
    const PosRun& r = map.runs[i];
    int64_t lo = 0, hi = min_i64(r.count, rows - base);  // rows [lo, hi) of the run that qualify
    if (only_seq && r.seq != seq) hi = 0;
    // Row t of the run has position start + t * stride; solve the bounds for t.
    if (r.stride == 1) {  // contiguous and zigzag shards: no division
      if (has_lo) lo = max_i64(lo, pos_lo - r.start);
      if (has_hi) hi = min_i64(hi, pos_hi - r.start + 1);
    } else if (r.stride > 0) {
      if (has_lo) lo = max_i64(lo, ceil_div_signed(pos_lo - r.start, r.stride));
      if (has_hi) hi = min_i64(hi, floor_div(pos_hi - r.start, r.stride) + 1);
    } else if (r.stride < 0) {
      if (has_hi) lo = max_i64(lo, ceil_div_signed(r.start - pos_hi, -r.stride));
      if (has_lo) hi = min_i64(hi, floor_div(r.start - pos_lo, -r.stride) + 1);
    } else if ((has_lo && r.start < pos_lo) || (has_hi && r.start > pos_hi)) {
      hi = 0;
    }
    if (lo < hi) {
      if (h.begin >= h.end) h.begin = base + lo;
      h.end = base + hi;
    }
    base += r.count;
  }
  return h;
}

// Key rows of kmap (its first sk) that some query of the summarized tile may see: positions in
// [pos_min - left, pos_max + right] of the tile's sequence (any sequence if the tile spans
// several). Every key row outside is hidden from every row of the tile.
RINGATTN_HD IndexSpan candidate_key_rows(const MaskSpec& m, const TileRange& qr, const PosMap& kmap,
                                         int64_t sk) {
  if (qr.empty) return IndexSpan{0, 0};
  return rows_with_positions(kmap, sk, qr.uniform, qr.seq, m.left >= 0, qr.pos_min - m.left,
                             m.right >= 0, qr.pos_max + m.right);
}

// Query rows of qmap (its first sq) that may see some key of the summarized tile: positions in
// [pos_min - right, pos_max + left] (q - left <= k <= q + right, solved for q).
RINGATTN_HD IndexSpan candidate_query_rows(const MaskSpec& m, const TileRange& kr,
                                           const PosMap& qmap, int64_t sq) {
  if (kr.empty) return IndexSpan{0, 0};
  return rows_with_positions(qmap, sq, kr.uniform, kr.seq, m.right >= 0, kr.pos_min - m.right,
                             m.left >= 0, kr.pos_max + m.left);
}

// Tiles of `tile` rows that meet a span of rows.
RINGATTN_HD IndexSpan tiles_of_rows(const IndexSpan& rows, int64_t tile) {
  if (rows.begin >= rows.end) return IndexSpan{0, 0};
  return IndexSpan{rows.begin / tile, ceil_div(rows.end, tile)};
}

// The key tiles a query tile's walk visits: every tile outside holds no visible pair, so the
// walk neither loads nor classifies the hidden tiles before and after the mask's band (the far
// side of the causal diagonal, the outside of a window).
RINGATTN_HD IndexSpan key_tile_span(const MaskSpec& m, const TileRange& qr, const PosMap& kmap,
                                    int64_t sk, int64_t bn) {
  return tiles_of_rows(candidate_key_rows(m, qr, kmap, sk), bn);
}

// The query tiles a key tile's walk (the backward's dK/dV pass) visits.
RINGATTN_HD IndexSpan query_tile_span(const MaskSpec& m, const TileRange& kr, const PosMap& qmap,
                                      int64_t sq, int64_t bm) {
  return tiles_of_rows(candidate_query_rows(m, kr, qmap, sq), bm);
}

// First key tile index in [from, end) (end <= ceil(sk / bn), the end of key_tile_span) that is
// not hidden for the summarized query tile, and its class; ceil(sk / bn) if none. The kernels
// keep the class for the next iteration, so each tile is classified once. Uniform over a CTA:
// every thread computes the same value.
RINGATTN_HD int64_t next_visible_key_tile(const MaskSpec& m, const TileRange& qr,
                                          const PosMap& kmap, int64_t sk, int64_t bn, int64_t from,
                                          int64_t end, TileClass* cls) {
  for (int64_t j = from; j < end; ++j) {
    const TileClass c = classify_key_tile(m, qr, kmap, sk, j * bn, bn);
    if (c != kTileHidden) {
      *cls = c;
      return j;
    }
  }
  *cls = kTileHidden;
  return ceil_div(sk, bn);
}

RINGATTN_HD int64_t next_visible_key_tile(const MaskSpec& m, const PosMap& qmap, int64_t sq,
                                          int64_t q0, int64_t bm, const PosMap& kmap, int64_t sk,
                                          int64_t bn, int64_t from) {
  const TileRange qr = query_tile_range(qmap, sq, q0, bm);
  const IndexSpan span = key_tile_span(m, qr, kmap, sk, bn);
  TileClass c;
  return next_visible_key_tile(m, qr, kmap, sk, bn, max_i64(from, span.begin), span.end, &c);
}

// The backward's walk for one key tile (summarized by kr; k_ragged when it runs past sk) over
// query tiles of bm rows: the first query tile index in [from, end) (end from query_tile_span)
// that is not hidden, and its class; ceil(sq / bm) if none.
RINGATTN_HD int64_t next_visible_query_tile(const MaskSpec& m, const PosMap& qmap, int64_t sq,
                                            int64_t bm, const TileRange& kr, bool k_ragged,
                                            int64_t from, int64_t end, TileClass* cls) {
  const int64_t num_q = ceil_div(sq, bm);
  for (int64_t i = from; i < end; ++i) {
    const TileRange qr = query_tile_range(qmap, sq, i * bm, bm);
    TileClass c = kr.empty ? kTileHidden : classify_tile(m, qr, kr);
    if (c == kTileFull && k_ragged) c = kTilePartial;
    if (c != kTileHidden) {
      *cls = c;
      return i;
    }
  }
  *cls = kTileHidden;
  return num_q;
}

RINGATTN_HD int64_t next_visible_query_tile(const MaskSpec& m, const PosMap& qmap, int64_t sq,
                                            int64_t bm, const PosMap& kmap, int64_t sk, int64_t k0,
                                            int64_t bn, int64_t from) {
  const int64_t kn = k0 + bn <= sk ? bn : sk - k0;
  const TileRange kr = kn > 0 ? tile_range(kmap, k0, kn) : TileRange{-1, true, 0, -1, true};
  const IndexSpan span = query_tile_span(m, kr, qmap, sq, bm);
  TileClass c;
  return next_visible_query_tile(m, qmap, sq, bm, kr, kn < bn, max_i64(from, span.begin), span.end,
                                 &c);
}

// Position lookups that skip the run search when a map is one run (contiguous and striped
// shards, single sequences): the per-element mask of partial tiles then costs a multiply-add.
// Like posmap_lookup, callers bound rows by the map's length themselves.
struct RowLocator {
  PosMap map;
  bool single;
  int64_t seq, start, stride;
};

RINGATTN_HD RowLocator make_locator(const PosMap& m) {
  if (m.num_runs == 1) return RowLocator{m, true, m.runs[0].seq, m.runs[0].start, m.runs[0].stride};
  return RowLocator{m, false, -1, 0, 0};
}

RINGATTN_HD void locate(const RowLocator& l, int64_t row, int64_t* seq, int64_t* pos) {
  if (l.single) {
    *seq = l.seq;
    *pos = l.start + row * l.stride;
  } else {
    posmap_lookup(l.map, row, seq, pos);
  }
}

// Merge of two float32 partial results (DESIGN.md merge rule), -inf safe: with both LSEs -inf
// the weights are 0 and the merged LSE is -inf. Returns the merged LSE and both weights.
struct MergeWeights {
  float lse, w1, w2;
};

RINGATTN_HD MergeWeights merge_weights(float l1, float l2, float neg_inf) {
  const float mx = l1 > l2 ? l1 : l2;
  if (mx == neg_inf) return MergeWeights{neg_inf, 0.0f, 0.0f};
  // Full-precision expf/logf: merges repeat once per ring step and their error accumulates.
  const float e1 = expf(l1 - mx), e2 = expf(l2 - mx);
  const float s = e1 + e2;
  return MergeWeights{mx + logf(s), e1 / s, e2 / s};
}

}  // namespace cuda
}  // namespace ringattn
