// Per-call index of one side of an attention call (query rows or key rows): every row's
// (sequence, position) expanded once from the PosMap, and every tile's TileRange, so that tile
// classification and per-element masks cost no PosMap walks inside the loops.
#pragma once

#include <stdint.h>

#include "mask.h"
#include "positions.h"
#include "scratch.h"

namespace ringattn {
namespace cpu {

struct TileIndex {
  int64_t rows = 0, tile = 0, ntiles = 0;
  const int64_t* seq = nullptr;       // [rows]
  const int64_t* pos = nullptr;       // [rows]
  const TileRange* ranges = nullptr;  // [ntiles]

  int64_t tile_rows(int64_t t) const { return rows - t * tile < tile ? rows - t * tile : tile; }
};

// Builds the index in the calling thread's scratch slot `slot`; valid until that slot is reused.
inline TileIndex make_tile_index(const PosMap& map, int64_t rows, int64_t tile, ScratchSlot slot) {
  TileIndex ix;
  ix.rows = rows;
  ix.tile = tile;
  ix.ntiles = (rows + tile - 1) / tile;
  // One buffer: seq, pos, then the ranges (TileRange is 8-byte aligned like int64_t).
  const size_t range_words = (sizeof(TileRange) + 7) / 8;
  int64_t* buf = thread_scratch(slot).get<int64_t>(static_cast<size_t>(2 * rows) +
                                                   range_words * static_cast<size_t>(ix.ntiles));
  int64_t* seq = buf;
  int64_t* pos = buf + rows;
  int64_t row = 0;
  for (int32_t i = 0; i < map.num_runs && row < rows; ++i) {
    const PosRun& r = map.runs[i];
    for (int64_t j = 0; j < r.count && row < rows; ++j, ++row) {
      seq[row] = r.seq;
      pos[row] = r.start + j * r.stride;
    }
  }
  for (; row < rows; ++row) {  // a map shorter than the block: rows belong to no sequence
    seq[row] = -1;
    pos[row] = 0;
  }
  TileRange* ranges = reinterpret_cast<TileRange*>(buf + 2 * rows);
  for (int64_t t = 0; t < ix.ntiles; ++t) ranges[t] = tile_range(map, t * tile, ix.tile_rows(t));
  ix.seq = seq;
  ix.pos = pos;
  ix.ranges = ranges;
  return ix;
}

}  // namespace cpu
}  // namespace ringattn
