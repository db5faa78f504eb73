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

// First key tile index >= from (of ceil(sk / bn) tiles) that is not hidden for the summarized
// query tile, and its class; num_k if none. The kernels keep the class for the next iteration,
// so each tile is classified once. Uniform over a CTA: every thread computes the same value.
RINGATTN_HD int64_t next_visible_key_tile(const MaskSpec& m, const TileRange& qr,
                                          const PosMap& kmap, int64_t sk, int64_t bn, int64_t from,
                                          TileClass* cls) {
  const int64_t num_k = ceil_div(sk, bn);
  for (int64_t j = from; j < num_k; ++j) {
    const TileClass c = classify_key_tile(m, qr, kmap, sk, j * bn, bn);
    if (c != kTileHidden) {
      *cls = c;
      return j;
    }
  }
  *cls = kTileHidden;
  return num_k;
}

RINGATTN_HD int64_t next_visible_key_tile(const MaskSpec& m, const PosMap& qmap, int64_t sq,
                                          int64_t q0, int64_t bm, const PosMap& kmap, int64_t sk,
                                          int64_t bn, int64_t from) {
  TileClass c;
  return next_visible_key_tile(m, query_tile_range(qmap, sq, q0, bm), kmap, sk, bn, from, &c);
}

// The backward's walk for one key tile (summarized by kr; k_ragged when it runs past sk) over
// query tiles of bm rows: the first query tile index >= from that is not hidden, and its class.
RINGATTN_HD int64_t next_visible_query_tile(const MaskSpec& m, const PosMap& qmap, int64_t sq,
                                            int64_t bm, const TileRange& kr, bool k_ragged,
                                            int64_t from, TileClass* cls) {
  const int64_t num_q = ceil_div(sq, bm);
  for (int64_t i = from; i < num_q; ++i) {
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
  TileClass c;
  return next_visible_query_tile(m, qmap, sq, bm, kr, kn < bn, from, &c);
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
