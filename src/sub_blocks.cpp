#include "sub_blocks.h"

#include <algorithm>
#include <tuple>

namespace ringattn {
namespace {

int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
int64_t ceil_div(int64_t a, int64_t b) { return -floor_div(-a, b); }

// One pair of runs (same sequence) whose local rows are i in [0, m), j in [0, n), with the
// visibility band lo + i <= j <= hi + i (a side may be unbounded) of equal strides.
class PairSplitter {
 public:
  PairSplitter(const PosRun& qr, int64_t qoff, const PosRun& kr, int64_t koff,
               std::vector<SubBlock>* out)
      : qr_(qr), kr_(kr), qoff_(qoff), koff_(koff), out_(out) {}

  void run_band(bool has_lo, int64_t lo, bool has_hi, int64_t hi) {
    has_lo_ = has_lo;
    lo_ = lo;
    has_hi_ = has_hi;
    hi_ = hi;
    const int64_t m = qr_.count, n = kr_.count;
    if (has_lo && has_hi && lo > hi) return;  // strided rows fall between the window's sides
    if (!has_hi && !has_lo) {
      rect(0, m, 0, n);
      return;
    }
    if (!has_hi) {
      // Only a left side: rows with i + lo <= 0 see every key, the others a ragged edge.
      const int64_t a = std::min(m, std::max<int64_t>(0, 1 - lo));
      rect(0, a, 0, n);
      rect(a, std::min(m, n - lo), std::max<int64_t>(0, a + lo), n);
      return;
    }
    const int64_t r0 = std::max<int64_t>(0, -hi);         // rows above see nothing (i + hi < 0)
    const int64_t r1 = has_lo ? std::min(m, n - lo) : m;  // rows below see nothing
    if (r0 >= r1) return;
    // Band rows [r0, rb): their last visible key i + hi is inside the block (<= n - 1).
    const int64_t rb = std::min(r1, std::max(r0, n - hi));
    const int64_t c0 = r0 + hi;  // the square's first key: i' = i - r0 sees j' = j - c0 <= i'
    const int64_t size = rb - r0;
    if (size == 1) {
      rect(r0, rb, std::max<int64_t>(0, has_lo ? r0 + lo : 0), c0 + 1);
    } else if (size > 1) {
      rect(r0, rb, std::max<int64_t>(0, has_lo ? r0 + lo : 0), c0);  // left of the square
      const int64_t w = has_lo && hi - lo < size - 1 ? hi - lo : -1;
      push(kSubCausal, r0, rb, c0, c0 + size, w);
    }
    rect(rb, r1, has_lo ? std::max<int64_t>(0, rb + lo) : 0, n);  // rows that reach the end
  }

  // Runs of different strides: the whole rectangle, classified from its position ranges.
  void run_unaligned(const MaskSpec& mask) {
    const TileRange q = range(qr_), k = range(kr_);
    const TileClass c = classify_tile(mask, q, k);
    if (c == kTileFull) push(kSubFull, 0, qr_.count, 0, kr_.count, -1);
    if (c == kTilePartial) push(kSubOwn, 0, qr_.count, 0, kr_.count, -1);
  }

 private:
  static TileRange range(const PosRun& r) {
    const int64_t last = r.start + (r.count - 1) * r.stride;
    return TileRange{r.seq, true, std::min(r.start, last), std::max(r.start, last), false};
  }

  // Rows [i0, i1) x keys [j0, j1) under the band: nothing, a full block, or ours.
  void rect(int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
    if (i0 >= i1 || j0 >= j1) return;
    if (has_hi_ && j0 > i1 - 1 + hi_) return;
    if (has_lo_ && j1 - 1 < i0 + lo_) return;
    const bool full = (!has_hi_ || j1 - 1 <= i0 + hi_) && (!has_lo_ || j0 >= i1 - 1 + lo_);
    push(full ? kSubFull : kSubOwn, i0, i1, j0, j1, -1);
  }

  void push(SubBlockKind kind, int64_t i0, int64_t i1, int64_t j0, int64_t j1, int64_t window) {
    SubBlock b;
    b.q0 = qoff_ + i0;
    b.m = i1 - i0;
    b.k0 = koff_ + j0;
    b.n = j1 - j0;
    b.kind = kind;
    b.window = window;
    b.q_run = PosRun{qr_.seq, qr_.start + i0 * qr_.stride, b.m, qr_.stride};
    b.k_run = PosRun{kr_.seq, kr_.start + j0 * kr_.stride, b.n, kr_.stride};
    out_->push_back(b);
  }

  PosRun qr_, kr_;
  int64_t qoff_, koff_;
  std::vector<SubBlock>* out_;
  bool has_lo_ = false, has_hi_ = false;
  int64_t lo_ = 0, hi_ = 0;
};

// Joins neighbouring full blocks: first those over the same query rows with adjacent keys, then
// those over the same keys with adjacent query rows. In place (the caller's vector is reused from
// call to call, so a ring step allocates nothing here); full blocks end up first.
void join_full_blocks(std::vector<SubBlock>* blocks) {
  const auto full_end = std::partition(blocks->begin(), blocks->end(),
                                       [](const SubBlock& b) { return b.kind == kSubFull; });
  auto last = full_end;  // end of the joined full blocks
  for (const bool by_rows : {true, false}) {
    std::sort(blocks->begin(), last, [by_rows](const SubBlock& a, const SubBlock& b) {
      return by_rows ? std::tie(a.q0, a.m, a.k0) < std::tie(b.q0, b.m, b.k0)
                     : std::tie(a.k0, a.n, a.q0) < std::tie(b.k0, b.n, b.q0);
    });
    auto out = blocks->begin();
    for (auto it = blocks->begin(); it != last; ++it) {
      if (out != blocks->begin()) {
        SubBlock& p = *(out - 1);
        if (by_rows && p.q0 == it->q0 && p.m == it->m && p.k0 + p.n == it->k0) {
          p.n += it->n;
          continue;
        }
        if (!by_rows && p.k0 == it->k0 && p.n == it->n && p.q0 + p.m == it->q0) {
          p.m += it->m;
          continue;
        }
      }
      *out++ = *it;
    }
    last = out;
  }
  blocks->erase(last, full_end);  // the joined blocks' old places; the others follow
}

}  // namespace

void split_sub_blocks(const PosMap& q, const PosMap& k, const MaskSpec& mask,
                      std::vector<SubBlock>* out) {
  out->clear();
  int64_t qoff = 0;
  for (int32_t a = 0; a < q.num_runs; qoff += q.runs[a].count, ++a) {
    int64_t koff = 0;
    for (int32_t b = 0; b < k.num_runs; koff += k.runs[b].count, ++b) {
      PosRun qr = q.runs[a], kr = k.runs[b];
      if (qr.count <= 0 || kr.count <= 0 || qr.seq != kr.seq) continue;
      // A single row takes any stride: the other side's.
      if (qr.count == 1) qr.stride = kr.stride;
      if (kr.count == 1) kr.stride = qr.stride;
      PairSplitter pair(qr, qoff, kr, koff, out);
      if (mask_is_full(mask)) {
        pair.run_band(false, 0, false, 0);
      } else if (qr.stride != kr.stride || qr.stride <= 0) {
        pair.run_unaligned(mask);
      } else {
        // Query i (position qa + i s) sees key j (ka + j s) iff
        // qa + i s - left <= ka + j s <= qa + i s + right.
        const int64_t s = qr.stride, off = qr.start - kr.start;
        const bool has_lo = mask.left >= 0, has_hi = mask.right >= 0;
        pair.run_band(has_lo, has_lo ? ceil_div(off - mask.left, s) : 0, has_hi,
                      has_hi ? floor_div(off + mask.right, s) : 0);
      }
    }
  }
  join_full_blocks(out);
}

bool single_library_block(const std::vector<SubBlock>& blocks, int64_t sq, int64_t sk) {
  if (blocks.size() != 1) return false;
  const SubBlock& b = blocks[0];
  return b.kind != kSubOwn && b.q0 == 0 && b.m == sq && b.k0 == 0 && b.n == sk;
}

}  // namespace ringattn
