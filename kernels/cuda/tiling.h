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

// The same in bytes, split for the ldmatrix walks: row `row` starts at 2 * row * d and its chunk
// c0 + 2k (c0 in {0, 1}) lies swizzle_chunk_bytes(row, c0) ^ swizzle_chunk_step(k) further on.
// (c0 + 2k == c0 ^ 2k, and the swizzle XORs the chunk index with row % 8, so stepping k is an XOR
// of the chunk field that never carries into the row part.) A kernel keeps one per-lane offset
// and steps it with one XOR per k instead of recomputing the swizzle.
RINGATTN_HD uint32_t swizzle_chunk_bytes(int row, int c0) {
  return static_cast<uint32_t>((c0 ^ (row & 7)) << 4);
}
RINGATTN_HD uint32_t swizzle_chunk_step(int k) { return static_cast<uint32_t>(k) << 5; }

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

// A closed range of positions [lo, hi]; a bound with has_* false is unbounded.
struct PosBand {
  bool has_lo;
  int64_t lo;
  bool has_hi;
  int64_t hi;
};

// Rows [begin, end) among the first n rows of run r whose positions lie in the band (row t has
// position start + t * stride, so they are consecutive).
RINGATTN_HD IndexSpan run_rows_in_band(const PosRun& r, int64_t n, const PosBand& b) {
  int64_t lo = 0, hi = n;
  if (r.stride == 1) {  // contiguous and zigzag shards: no division
    if (b.has_lo) lo = max_i64(lo, b.lo - r.start);
    if (b.has_hi) hi = min_i64(hi, b.hi - r.start + 1);
  } else if (r.stride > 0) {
    if (b.has_lo) lo = max_i64(lo, ceil_div_signed(b.lo - r.start, r.stride));
    if (b.has_hi) hi = min_i64(hi, floor_div(b.hi - r.start, r.stride) + 1);
  } else if (r.stride < 0) {
    if (b.has_hi) lo = max_i64(lo, ceil_div_signed(r.start - b.hi, -r.stride));
    if (b.has_lo) hi = min_i64(hi, floor_div(r.start - b.lo, -r.stride) + 1);
  } else if ((b.has_lo && r.start < b.lo) || (b.has_hi && r.start > b.hi)) {
    hi = 0;
  }
  return IndexSpan{lo, hi};
}

// The tiles a kernel's walk visits for one tile of the other side (summarized by `other`), and
// among them the tiles it need not classify:
// - tiles outside [begin, end) hold no visible pair, so the walk neither classifies nor loads the
//   hidden tiles before and after the mask's band (the far side of the causal diagonal, the
//   outside of a window);
// - tiles inside [full_begin, full_end) are full (every pair visible, no ragged rows): the walk
//   takes them without classification, which leaves the mask arithmetic of a walk to the few
//   tiles along the band's edges.
struct TileWalk {
  int64_t begin, end;
  int64_t full_begin, full_end;
};

// Walk over the tiles (of `tile` rows) of the first `rows` rows of `map`. A row of the map may
// be visible to some row of `other` only if its position lies in `any` (and its sequence is
// other's, when other is uniform), and is visible to every row of `other` if its position lies
// in `all` and its sequence is other's. full_ok = false: no tile is claimed full.
RINGATTN_HD TileWalk make_tile_walk(const PosMap& map, int64_t rows, int64_t tile,
                                    const TileRange& other, const PosBand& any, const PosBand& all,
                                    bool full_ok) {
  TileWalk w{0, 0, 0, 0};
  if (other.empty) return w;
  IndexSpan hull{0,
                 0};  // runs come in row order: the first qualifying run sets begin, the last end
  int64_t base = 0;
  for (int32_t i = 0; i < map.num_runs && base < rows; ++i) {
    const PosRun& r = map.runs[i];
    const int64_t n = min_i64(r.count, rows - base);
    if (!other.uniform || r.seq == other.seq) {
      const IndexSpan a = run_rows_in_band(r, n, any);
      if (a.begin < a.end) {
        if (hull.begin >= hull.end) hull.begin = base + a.begin;
        hull.end = base + a.end;
      }
      if (full_ok && other.uniform) {
        // Whole tiles inside one run's all-visible rows; the longest such stretch is kept.
        const IndexSpan f = run_rows_in_band(r, n, all);
        if (f.begin < f.end) {
          const int64_t fb = ceil_div(base + f.begin, tile), fe = (base + f.end) / tile;
          if (fe - fb > w.full_end - w.full_begin) {
            w.full_begin = fb;
            w.full_end = fe;
          }
        }
      }
    }
    base += r.count;
  }
  if (hull.begin < hull.end) {
    w.begin = hull.begin / tile;
    w.end = ceil_div(hull.end, tile);
  }
  return w;
}

// The forward's and the dQ pass's walk over key tiles for a query tile: a key at position k is
// visible to a query at q iff q - left <= k <= q + right (same sequence). A ragged last key tile
// is never full (its column bound must be applied).
RINGATTN_HD TileWalk key_tile_walk(const MaskSpec& m, const TileRange& qr, const PosMap& kmap,
                                   int64_t sk, int64_t bn) {
  const bool l = m.left >= 0, r = m.right >= 0;
  return make_tile_walk(kmap, sk, bn, qr, PosBand{l, qr.pos_min - m.left, r, qr.pos_max + m.right},
                        PosBand{l, qr.pos_max - m.left, r, qr.pos_min + m.right}, true);
}

// The dK/dV pass's walk over query tiles for a key tile (k_ragged: it runs past sk, so no query
// tile is full against it): k - right <= q <= k + left.
RINGATTN_HD TileWalk query_tile_walk(const MaskSpec& m, const TileRange& kr, bool k_ragged,
                                     const PosMap& qmap, int64_t sq, int64_t bm) {
  const bool l = m.left >= 0, r = m.right >= 0;
  return make_tile_walk(qmap, sq, bm, kr, PosBand{r, kr.pos_min - m.right, l, kr.pos_max + m.left},
                        PosBand{r, kr.pos_max - m.right, l, kr.pos_min + m.left}, !k_ragged);
}

// First key tile index >= from of the walk that is not hidden for the summarized query tile, and
// its class; ceil(sk / bn) if none. The kernels keep the class for the next iteration, so each
// tile is classified at most once. Uniform over a CTA: every thread computes the same value.
RINGATTN_HD int64_t next_visible_key_tile(const MaskSpec& m, const TileRange& qr,
                                          const PosMap& kmap, int64_t sk, int64_t bn, int64_t from,
                                          const TileWalk& w, TileClass* cls) {
  for (int64_t j = max_i64(from, w.begin); j < w.end; ++j) {
    if (j >= w.full_begin && j < w.full_end) {
      *cls = kTileFull;
      return j;
    }
    const TileClass c = classify_key_tile(m, qr, kmap, sk, j * bn, bn);
    if (c != kTileHidden) {
      *cls = c;
      return j;
    }
  }
  *cls = kTileHidden;
  return ceil_div(sk, bn);
}

// The same from scratch, for host code and tests.
RINGATTN_HD int64_t next_visible_key_tile(const MaskSpec& m, const PosMap& qmap, int64_t sq,
                                          int64_t q0, int64_t bm, const PosMap& kmap, int64_t sk,
                                          int64_t bn, int64_t from, TileClass* cls) {
  const TileRange qr = query_tile_range(qmap, sq, q0, bm);
  return next_visible_key_tile(m, qr, kmap, sk, bn, from, key_tile_walk(m, qr, kmap, sk, bn), cls);
}

// The backward's walk for one key tile (summarized by kr; k_ragged when it runs past sk) over
// query tiles of bm rows: the first query tile index >= from of the walk that is not hidden, and
// its class; ceil(sq / bm) if none.
RINGATTN_HD int64_t next_visible_query_tile(const MaskSpec& m, const PosMap& qmap, int64_t sq,
                                            int64_t bm, const TileRange& kr, bool k_ragged,
                                            int64_t from, const TileWalk& w, TileClass* cls) {
  for (int64_t i = max_i64(from, w.begin); i < w.end; ++i) {
    if (i >= w.full_begin && i < w.full_end) {
      *cls = kTileFull;
      return i;
    }
    const TileRange qr = query_tile_range(qmap, sq, i * bm, bm);
    TileClass c = kr.empty ? kTileHidden : classify_tile(m, qr, kr);
    if (c == kTileFull && k_ragged) c = kTilePartial;
    if (c != kTileHidden) {
      *cls = c;
      return i;
    }
  }
  *cls = kTileHidden;
  return ceil_div(sq, bm);
}

// The same from scratch, for host code and tests.
RINGATTN_HD int64_t next_visible_query_tile(const MaskSpec& m, const PosMap& qmap, int64_t sq,
                                            int64_t bm, const PosMap& kmap, int64_t sk, int64_t k0,
                                            int64_t bn, int64_t from, TileClass* cls) {
  const int64_t kn = k0 + bn <= sk ? bn : sk - k0;
  const TileRange kr = kn > 0 ? tile_range(kmap, k0, kn) : TileRange{-1, true, 0, -1, true};
  return next_visible_query_tile(m, qmap, sq, bm, kr, kn < bn, from,
                                 query_tile_walk(m, kr, kn < bn, qmap, sq, bm), cls);
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
  // A NaN partial (a NaN score in its block) makes the merged row NaN, also against an empty one.
  if (!(l1 == l1) || !(l2 == l2)) {
    const float nan = l1 + l2;
    return MergeWeights{nan, nan, nan};
  }
  const float mx = l1 > l2 ? l1 : l2;
  if (mx == neg_inf) return MergeWeights{neg_inf, 0.0f, 0.0f};
  // Full-precision expf/logf: merges repeat once per ring step and their error accumulates.
  const float e1 = expf(l1 - mx), e2 = expf(l2 - mx);
  const float s = e1 + e2;
  return MergeWeights{mx + logf(s), e1 / s, e2 / s};
}

}  // namespace cuda
}  // namespace ringattn
