#include "ring_plan.h"

namespace ringattn {
namespace {

TileRange run_range(const PosRun& r) {
  const int64_t last = r.start + (r.count - 1) * r.stride;
  return TileRange{r.seq, true, r.start < last ? r.start : last, r.start < last ? last : r.start,
                   r.count <= 0};
}

}  // namespace

bool runs_may_see(const MaskSpec& m, const PosRun* a, int32_t na, const PosRun* b, int32_t nb) {
  // Runs come sorted by sequence id; walk both lists group by group.
  int32_t j0 = 0;
  for (int32_t i = 0; i < na; ++i) {
    while (j0 < nb && b[j0].seq < a[i].seq) ++j0;
    const TileRange qa = run_range(a[i]);
    for (int32_t j = j0; j < nb && b[j].seq == a[i].seq; ++j) {
      if (classify_tile(m, qa, run_range(b[j])) != kTileHidden) return true;
    }
  }
  return false;
}

RowChunk RingPlan::slice(const RowChunk& whole, int64_t row0, int64_t rows) {
  RowChunk out;
  out.row0 = row0;
  out.rows = rows;
  out.run0 = static_cast<int32_t>(runs_.size());
  int64_t base = 0;
  const int64_t row1 = row0 + rows;
  for (int32_t i = 0; i < whole.num_runs && base < row1; ++i) {
    // Copy: push_back below may move runs_.
    const PosRun r = runs_[whole.run0 + i];
    const int64_t lo = row0 > base ? row0 : base;
    const int64_t hi = row1 < base + r.count ? row1 : base + r.count;
    if (lo < hi) {
      runs_.push_back(PosRun{r.seq, r.start + (lo - base) * r.stride, hi - lo, r.stride});
    }
    base += r.count;
  }
  out.num_runs = static_cast<int32_t>(runs_.size()) - out.run0;
  return out;
}

void RingPlan::build(const RingProblem& prob) {
  prob_ = prob;
  const int32_t P = prob.world, C = prob.chunks;
  runs_.clear();
  rows_.assign(P, 0);
  block_.assign(P, RowChunk{});
  // Whole blocks: the runs of every rank, sequence after sequence.
  for (int32_t s = 0; s < P; ++s) {
    RowChunk& blk = block_[s];
    blk.run0 = static_cast<int32_t>(runs_.size());
    if (prob.packed) {
      for (size_t b = 0; b + 1 < prob.cu_seqlens.size(); ++b) {
        PosRun tmp[2];
        const int64_t len = prob.cu_seqlens[b + 1] - prob.cu_seqlens[b];
        const int32_t n = scheme_runs(prob.scheme, static_cast<int64_t>(b), len, P, s, tmp);
        for (int32_t i = 0; i < n; ++i) runs_.push_back(tmp[i]);
      }
    } else {
      PosRun tmp[2];
      const int32_t n = scheme_runs(prob.scheme, 0, prob.seq_len, P, s, tmp);
      for (int32_t i = 0; i < n; ++i) runs_.push_back(tmp[i]);
    }
    blk.num_runs = static_cast<int32_t>(runs_.size()) - blk.run0;
    for (int32_t i = 0; i < blk.num_runs; ++i) blk.rows += runs_[blk.run0 + i].count;
    rows_[s] = blk.rows;
  }
  max_rows_ = 0;
  for (int32_t s = 0; s < P; ++s) max_rows_ = rows_[s] > max_rows_ ? rows_[s] : max_rows_;
  slot_rows_ = (max_rows_ + C - 1) / C;

  // Chunks split rows evenly (sizes differ by at most one), the same rule on every rank, so a
  // sender and a receiver agree on the bytes of each gradient chunk.
  const RowChunk own = block_[prob.rank];
  q_chunks_.clear();
  for (int32_t c = 0; c < C; ++c) {
    q_chunks_.push_back(slice(own, split_offset(own.rows, C, c), split_size(own.rows, C, c)));
  }
  k_chunks_.clear();
  for (int32_t s = 0; s < P; ++s) {
    const RowChunk blk = block_[s];
    for (int32_t c = 0; c < C; ++c) {
      k_chunks_.push_back(slice(blk, split_offset(blk.rows, C, c), split_size(blk.rows, C, c)));
    }
  }

  fwd_visible_.assign(static_cast<size_t>(P) * C, 0);
  bwd_visible_.assign(static_cast<size_t>(P) * C, 0);
  for (int32_t i = 0; i < P; ++i) {
    const int32_t s = step_source(i);
    const RowChunk& blk = block_[s];
    for (int32_t c = 0; c < C; ++c) {
      const RowChunk& qc = q_chunks_[c];
      fwd_visible_[i * C + c] = qc.rows > 0 && blk.rows > 0 &&
                                runs_may_see(prob.mask, runs_.data() + qc.run0, qc.num_runs,
                                             runs_.data() + blk.run0, blk.num_runs);
      const RowChunk& kc = k_chunks_[s * C + c];
      bwd_visible_[i * C + c] = own.rows > 0 && kc.rows > 0 &&
                                runs_may_see(prob.mask, runs_.data() + own.run0, own.num_runs,
                                             runs_.data() + kc.run0, kc.num_runs);
    }
  }
}

bool RingPlan::step_visible_fwd(int32_t i) const {
  for (int32_t c = 0; c < prob_.chunks; ++c) {
    if (fwd_visible(i, c)) return true;
  }
  return false;
}

bool RingPlan::step_visible_bwd(int32_t i) const {
  for (int32_t c = 0; c < prob_.chunks; ++c) {
    if (bwd_visible(i, c)) return true;
  }
  return false;
}

}  // namespace ringattn
