// The plan of one distributed problem, made once and reused by every call with the same problem:
// which block each ring step holds, how each block and the local Q shard are cut into chunks
// (compute runs chunk by chunk so that transfers progress in between), which (chunk, block)
// pairs the mask hides entirely, and the workspace layout.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <vector>

#include "mask.h"
#include "positions.h"

namespace ringattn {

// The agreed description of the global problem, identical on every rank.
struct RingProblem {
  int32_t world = 1, rank = 0;
  int32_t scheme = kContiguous;
  bool packed = false;
  int64_t batch = 1;                // B of fixed-length tensors (1 when packed)
  int64_t seq_len = 0;              // fixed length: the global S
  std::vector<int64_t> cu_seqlens;  // packed: global offsets
  int64_t hq = 0, hkv = 0, d = 0;
  MaskSpec mask{-1, -1};
  int32_t chunks = 4;  // compute chunks per ring step
};

// A range of rows of a block, with its positions.
struct RowChunk {
  int64_t row0 = 0, rows = 0;
  int32_t run0 = 0, num_runs = 0;  // into RingPlan::runs_
};

class RingPlan {
 public:
  void build(const RingProblem& prob);

  int32_t world() const { return prob_.world; }
  int32_t chunks() const { return prob_.chunks; }
  // Rows rank s holds (its local S or T).
  int64_t rows_of(int32_t s) const { return rows_[s]; }
  int64_t max_rows() const { return max_rows_; }
  // Rows of the largest chunk of any block: the size of one gradient-accumulator slot.
  int64_t slot_rows() const { return slot_rows_; }
  // The rank whose block this rank holds at step i (i = 0 is its own).
  int32_t step_source(int32_t i) const {
    return static_cast<int32_t>((prob_.rank - i + prob_.world) % prob_.world);
  }

  PosMap block_map(int32_t s) const { return map(block_[s]); }
  // Chunk c of the local Q rows, and chunk c of the block of rank s.
  const RowChunk& q_chunk(int32_t c) const { return q_chunks_[c]; }
  const RowChunk& k_chunk(int32_t s, int32_t c) const { return k_chunks_[s * prob_.chunks + c]; }
  PosMap map(const RowChunk& ch) const { return PosMap{runs_.data() + ch.run0, ch.num_runs}; }
  // Forward: Q chunk c against the whole block of step i sees at least one key.
  bool fwd_visible(int32_t i, int32_t c) const { return fwd_visible_[i * prob_.chunks + c]; }
  // Backward: the whole local Q against chunk c of the block of step i.
  bool bwd_visible(int32_t i, int32_t c) const { return bwd_visible_[i * prob_.chunks + c]; }
  // Whether any chunk of step i is visible (a step that is not is skipped; its data still moves).
  bool step_visible_fwd(int32_t i) const;
  bool step_visible_bwd(int32_t i) const;

 private:
  RowChunk slice(const RowChunk& whole, int64_t row0, int64_t rows);

  RingProblem prob_;
  std::vector<PosRun> runs_;
  std::vector<int64_t> rows_;
  std::vector<RowChunk> block_;
  std::vector<RowChunk> q_chunks_, k_chunks_;
  std::vector<char> fwd_visible_, bwd_visible_;
  int64_t max_rows_ = 0, slot_rows_ = 0;
};

// Whether any query of runs `a` may see any key of runs `b` (both ordered by sequence). Exact
// when it says no: used to skip work.
bool runs_may_see(const MaskSpec& m, const PosRun* a, int32_t na, const PosRun* b, int32_t nb);

}  // namespace ringattn
