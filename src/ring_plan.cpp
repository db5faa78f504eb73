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
  device_runs_ = nullptr;  // a copy of the previous runs, if any, is its holder's to free
  runs_.clear();
  rows_.assign(P, 0);
  block_.assign(P, RowChunk{});
  const int32_t layout_world = prob.members.empty() ? P : static_cast<int32_t>(prob.members.size());
  const int32_t U = layout_world / P;
  ulysses_ = U;
  member_rows_.assign(static_cast<size_t>(P) * U, 0);
  segments_.clear();
  segment0_.assign(static_cast<size_t>(P) * U + 1, 0);
  // Whole blocks: the runs of every rank, sequence after sequence (hybrid: within a sequence,
  // the part of each member in turn, so that runs stay ordered by sequence). Each member's rows
  // of a sequence are one segment of the block.
  std::vector<std::vector<Segment>> member_segments(static_cast<size_t>(U));
  for (int32_t s = 0; s < P; ++s) {
    RowChunk& blk = block_[s];
    blk.run0 = static_cast<int32_t>(runs_.size());
    std::vector<int64_t> local(static_cast<size_t>(U), 0);  // each member's rows so far
    for (auto& m : member_segments) m.clear();
    const size_t nseq = prob.packed ? prob.cu_seqlens.size() - 1 : 1;
    for (size_t b = 0; b < nseq; ++b) {
      for (int32_t u = 0; u < U; ++u) {
        const int32_t owner =
            prob.members.empty() ? s : prob.members[static_cast<size_t>(s) * U + u];
        const int64_t len =
            prob.packed ? prob.cu_seqlens[b + 1] - prob.cu_seqlens[b] : prob.seq_len;
        PosRun tmp[2];
        const int32_t n = scheme_runs(prob.scheme, prob.packed ? static_cast<int64_t>(b) : 0, len,
                                      layout_world, owner, tmp);
        int64_t rows = 0;
        for (int32_t i = 0; i < n; ++i) {
          runs_.push_back(tmp[i]);
          rows += tmp[i].count;
        }
        if (rows > 0) member_segments[u].push_back(Segment{local[u], blk.rows, rows});
        local[u] += rows;
        blk.rows += rows;
      }
    }
    for (int32_t u = 0; u < U; ++u) {
      member_rows_[static_cast<size_t>(s) * U + u] = local[u];
      segments_.insert(segments_.end(), member_segments[u].begin(), member_segments[u].end());
      segment0_[static_cast<size_t>(s) * U + u + 1] = static_cast<int32_t>(segments_.size());
    }
    blk.num_runs = static_cast<int32_t>(runs_.size()) - blk.run0;
    rows_[s] = blk.rows;
  }
  max_rows_ = 0;
  for (int32_t s = 0; s < P; ++s) max_rows_ = rows_[s] > max_rows_ ? rows_[s] : max_rows_;
  // Row chunks split rows evenly (sizes differ by at most one), the same rule on every rank, so
  // a sender and a receiver agree on the bytes of each gradient chunk; head chunks (heads split
  // the same way) take every row.
  const int32_t row_parts = head_chunks() ? 1 : C;
  slot_rows_ = (max_rows_ + row_parts - 1) / row_parts;
  auto part = [&](const RowChunk& whole, int32_t c) {
    return head_chunks()
               ? whole
               : slice(whole, split_offset(whole.rows, C, c), split_size(whole.rows, C, c));
  };
  const RowChunk own = block_[prob.rank];
  q_chunks_.clear();
  for (int32_t c = 0; c < C; ++c) q_chunks_.push_back(part(own, c));
  k_chunks_.clear();
  for (int32_t s = 0; s < P; ++s) {
    const RowChunk blk = block_[s];
    for (int32_t c = 0; c < C; ++c) k_chunks_.push_back(part(blk, c));
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
  max_map_runs_ = 0;
  for (const std::vector<RowChunk>* maps : {&block_, &q_chunks_, &k_chunks_}) {
    for (const RowChunk& ch : *maps) {
      max_map_runs_ = ch.num_runs > max_map_runs_ ? ch.num_runs : max_map_runs_;
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
