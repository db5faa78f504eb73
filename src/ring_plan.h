// The plan of one distributed problem, made once and reused by every call with the same problem:
// which block each ring step holds, how each block and the local Q shard are cut into chunks
// (compute runs chunk by chunk so that transfers progress in between), which (chunk, block)
// pairs the mask hides entirely, and the workspace layout.
//
// A chunk is a range of rows with every head (row chunks), or, where the backend asks for it
// (Backend::chunks_by_heads) and there are at least as many key/value heads as chunks, a range of
// key/value heads (and their query heads) with every row (head chunks): then each head's operands
// are used once per step, not once per chunk.
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
  // > 0: chunks split the ring's key/value heads (this many: H / U in a hybrid layout), whole
  // rows each; 0: chunks split rows.
  int64_t chunk_kv_heads = 0;
  // Hybrid layout (HybridLayout): the sequence is sharded over members.size() ranks, and ring
  // position s holds the rows of U = members.size() / world of them, members[s * U + u], one
  // after the other. Empty: the pure ring (ring position s holds the shard of rank s of world).
  std::vector<int32_t> members;
};

// A range of rows of a block, with its positions.
struct RowChunk {
  int64_t row0 = 0, rows = 0;
  int32_t run0 = 0, num_runs = 0;  // into RingPlan::runs_
};

// The key/value heads of a chunk: [h0, h0 + count).
struct HeadRange {
  int64_t h0 = 0, count = 0;
};

class RingPlan {
 public:
  void build(const RingProblem& prob);

  int32_t world() const { return prob_.world; }
  int32_t chunks() const { return prob_.chunks; }
  // Rows rank s holds (its local S or T).
  int64_t rows_of(int32_t s) const { return rows_[s]; }
  // Hybrid layout: rows of the u-th member of ring position s (its local S or T).
  int64_t member_rows(int32_t s, int32_t u) const {
    return member_rows_[static_cast<size_t>(s) * ulysses_ + u];
  }
  // Where the member's rows lie in the block of s: one segment per sequence it holds rows of
  // (fixed length: one), `local_row0` in its own tensors and `block_row0` in the block.
  struct Segment {
    int64_t local_row0, block_row0, rows;
  };
  const Segment* segments(int32_t s, int32_t u, int32_t* count) const {
    const size_t i = static_cast<size_t>(s) * ulysses_ + u;
    *count = segment0_[i + 1] - segment0_[i];
    return segments_.data() + segment0_[i];
  }
  int64_t max_rows() const { return max_rows_; }
  // Rows of the largest chunk of any block: with slot_heads(), the size of one
  // gradient-accumulator slot.
  int64_t slot_rows() const { return slot_rows_; }
  bool head_chunks() const { return prob_.chunk_kv_heads > 0; }
  // Chunk c's key/value heads of the ring's `hkv` (its query heads are the groups of these):
  // all of them for row chunks.
  HeadRange kv_heads(int32_t c, int64_t hkv) const {
    if (!head_chunks()) return HeadRange{0, hkv};
    return HeadRange{split_offset(prob_.chunk_kv_heads, prob_.chunks, c),
                     split_size(prob_.chunk_kv_heads, prob_.chunks, c)};
  }
  // The most key/value heads of one chunk (the first has the most).
  int64_t slot_heads(int64_t hkv) const { return kv_heads(0, hkv).count; }
  // The rank whose block this rank holds at step i (i = 0 is its own).
  int32_t step_source(int32_t i) const {
    return static_cast<int32_t>((prob_.rank - i + prob_.world) % prob_.world);
  }

  PosMap block_map(int32_t s) const { return map(block_[s]); }
  // Chunk c of the local Q rows, and chunk c of the block of rank s.
  const RowChunk& q_chunk(int32_t c) const { return q_chunks_[c]; }
  const RowChunk& k_chunk(int32_t s, int32_t c) const { return k_chunks_[s * prob_.chunks + c]; }
  PosMap map(const RowChunk& ch) const {
    return PosMap{runs_.data() + ch.run0, ch.num_runs,
                  device_runs_ != nullptr ? device_runs_ + ch.run0 : nullptr};
  }
  // Every position run of the plan, which the maps above point into.
  const std::vector<PosRun>& runs() const { return runs_; }
  // The most runs of any one map of the plan.
  int32_t max_map_runs() const { return max_map_runs_; }
  // A device copy of runs() (owned by the plan's holder), handed to the maps from now on.
  void set_device_runs(const PosRun* device_runs) { device_runs_ = device_runs; }
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
  std::vector<int64_t> rows_, member_rows_;
  std::vector<Segment> segments_;
  std::vector<int32_t> segment0_;  // segments of (s, u): [segment0_[s*U+u], segment0_[s*U+u+1])
  std::vector<RowChunk> block_;
  std::vector<RowChunk> q_chunks_, k_chunks_;
  std::vector<char> fwd_visible_, bwd_visible_;
  int64_t max_rows_ = 0, slot_rows_ = 0;
  int32_t max_map_runs_ = 0;
  int32_t ulysses_ = 1;  // members per ring position
  const PosRun* device_runs_ = nullptr;
};

// Whether any query of runs `a` may see any key of runs `b` (both ordered by sequence). Exact
// when it says no: used to skip work.
bool runs_may_see(const MaskSpec& m, const PosRun* a, int32_t na, const PosRun* b, int32_t nb);

}  // namespace ringattn
