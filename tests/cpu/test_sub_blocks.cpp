// The split of local calls into sub-blocks for a fused attention library (src/sub_blocks.h),
// checked against brute-force masks from global positions: every scheme, ring size, rank, step,
// query chunk, mask kind, fixed-length and packed layout.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "sub_blocks.h"

namespace ringattn {
namespace {

// The runs of rank `rank` of a `world`-rank ring over sequences of the given lengths.
std::vector<PosRun> rank_runs(int32_t scheme, const std::vector<int64_t>& lens, int32_t world,
                              int32_t rank) {
  std::vector<PosRun> runs;
  for (size_t s = 0; s < lens.size(); ++s) {
    PosRun r[2];
    const int32_t n = scheme_runs(scheme, static_cast<int64_t>(s), lens[s], world, rank, r);
    for (int32_t i = 0; i < n; ++i) runs.push_back(r[i]);
  }
  return runs;
}

// Local rows [row0, row0 + rows) of the runs (a query chunk), as runs.
std::vector<PosRun> slice_runs(const std::vector<PosRun>& runs, int64_t row0, int64_t rows) {
  std::vector<PosRun> out;
  int64_t base = 0;
  for (const PosRun& r : runs) {
    const int64_t lo = std::max(row0, base), hi = std::min(row0 + rows, base + r.count);
    if (lo < hi) out.push_back(PosRun{r.seq, r.start + (lo - base) * r.stride, hi - lo, r.stride});
    base += r.count;
  }
  return out;
}

int64_t count_rows(const std::vector<PosRun>& runs) {
  int64_t c = 0;
  for (const PosRun& r : runs) c += r.count;
  return c;
}

struct Case {
  std::string name;
  MaskSpec mask;
  bool library_only;  // full and causal masks: no block may be left to our kernels
};

std::vector<Case> mask_cases() {
  return {{"full", make_mask_spec(false, -1, -1), true},
          {"causal", make_mask_spec(true, -1, -1), true},
          {"causal_window0", make_mask_spec(true, 0, -1), false},
          {"causal_window1", make_mask_spec(true, 1, -1), false},
          {"causal_window3", make_mask_spec(true, 3, -1), false},
          {"causal_window10", make_mask_spec(true, 10, -1), false},
          {"window_2_3", make_mask_spec(false, 2, 3), false},
          {"window_left4", make_mask_spec(false, 4, -1), false},
          {"window_right2", make_mask_spec(false, -1, 2), false},
          {"window_0_0", make_mask_spec(false, 0, 0), false}};
}

// Checks one call: every visible pair covered exactly once, no hidden pair covered by a library
// block, positions of every block's rows exact. Returns the number of blocks left to our kernels.
int64_t check_call(const std::vector<PosRun>& qruns, const std::vector<PosRun>& kruns,
                   const MaskSpec& mask, const std::string& what) {
  const PosMap qm{qruns.data(), static_cast<int32_t>(qruns.size())};
  const PosMap km{kruns.data(), static_cast<int32_t>(kruns.size())};
  const int64_t sq = count_rows(qruns), sk = count_rows(kruns);
  std::vector<SubBlock> blocks;
  split_sub_blocks(qm, km, mask, &blocks);
  std::vector<int> covered(static_cast<size_t>(sq * sk), 0);
  auto visible = [&](int64_t i, int64_t j) {
    int64_t qs, qp, ks, kp;
    posmap_lookup(qm, i, &qs, &qp);
    posmap_lookup(km, j, &ks, &kp);
    return mask_visible(mask, qs, qp, ks, kp);
  };
  int64_t own = 0;
  for (const SubBlock& b : blocks) {
    EXPECT_GE(b.q0, 0) << what;
    EXPECT_GE(b.k0, 0) << what;
    EXPECT_GT(b.m, 0) << what;
    EXPECT_GT(b.n, 0) << what;
    EXPECT_LE(b.q0 + b.m, sq) << what;
    EXPECT_LE(b.k0 + b.n, sk) << what;
    if (b.kind == kSubCausal) {
      EXPECT_EQ(b.m, b.n) << what;
      EXPECT_TRUE(b.window == -1 || (b.window >= 0 && b.window < b.m - 1)) << what;
    }
    if (b.kind != kSubFull) {  // exact runs: the block's rows have these positions
      for (int64_t i = 0; i < b.m; ++i) {
        int64_t s, p;
        posmap_lookup(qm, b.q0 + i, &s, &p);
        EXPECT_EQ(s, b.q_run.seq) << what;
        EXPECT_EQ(p, b.q_run.start + i * b.q_run.stride) << what;
      }
      for (int64_t j = 0; j < b.n; ++j) {
        int64_t s, p;
        posmap_lookup(km, b.k0 + j, &s, &p);
        EXPECT_EQ(s, b.k_run.seq) << what;
        EXPECT_EQ(p, b.k_run.start + j * b.k_run.stride) << what;
      }
    }
    if (b.kind == kSubOwn) ++own;
    for (int64_t i = 0; i < b.m; ++i) {
      for (int64_t j = 0; j < b.n; ++j) {
        const int64_t gi = b.q0 + i, gj = b.k0 + j;
        bool covers;
        if (b.kind == kSubFull) {
          covers = true;
        } else if (b.kind == kSubCausal) {
          covers = j <= i && (b.window < 0 || j >= i - b.window);
        } else {
          covers = visible(gi, gj);  // our kernels mask exactly
        }
        if (!covers) continue;
        if (b.kind != kSubOwn && !visible(gi, gj)) {
          ADD_FAILURE() << what << ": library block covers hidden pair (" << gi << ", " << gj
                        << ")";
          return own;
        }
        ++covered[static_cast<size_t>(gi * sk + gj)];
      }
    }
  }
  for (int64_t i = 0; i < sq; ++i) {
    for (int64_t j = 0; j < sk; ++j) {
      const int want = visible(i, j) ? 1 : 0;
      if (covered[static_cast<size_t>(i * sk + j)] != want) {
        ADD_FAILURE() << what << ": pair (" << i << ", " << j << ") covered "
                      << covered[static_cast<size_t>(i * sk + j)] << " times, want " << want;
        return own;
      }
    }
  }
  return own;
}

void check_layout(const std::vector<int64_t>& lens, const char* layout) {
  const char* scheme_names[] = {"contiguous", "zigzag", "striped"};
  for (const Case& c : mask_cases()) {
    for (int32_t scheme : {kContiguous, kZigzag, kStriped}) {
      for (int32_t world : {1, 2, 3, 4, 8}) {
        for (int32_t rank = 0; rank < world; ++rank) {
          const std::vector<PosRun> q = rank_runs(scheme, lens, world, rank);
          for (int32_t src = 0; src < world; ++src) {
            const std::vector<PosRun> k = rank_runs(scheme, lens, world, src);
            for (int32_t chunks : {1, 3}) {
              const int64_t rows = count_rows(q);
              for (int32_t ch = 0; ch < chunks; ++ch) {
                const std::vector<PosRun> qc =
                    slice_runs(q, split_offset(rows, chunks, ch), split_size(rows, chunks, ch));
                const std::string what = std::string(layout) + " " + scheme_names[scheme] +
                                         " mask " + c.name + " P=" + std::to_string(world) +
                                         " rank " + std::to_string(rank) + " block of " +
                                         std::to_string(src) + " chunk " + std::to_string(ch) +
                                         "/" + std::to_string(chunks);
                const int64_t own = check_call(qc, k, c.mask, what);
                if (c.library_only) {
                  EXPECT_EQ(own, 0) << what << ": left to our kernels";
                }
                if (::testing::Test::HasFailure()) return;
              }
            }
          }
        }
      }
    }
  }
}

TEST(SubBlocks, FixedLengthEveryScheme) {
  check_layout({48}, "S=48");
  check_layout({37}, "S=37");
}

TEST(SubBlocks, PackedSequencesEveryScheme) { check_layout({5, 13, 1, 24, 0, 9}, "packed"); }

TEST(SubBlocks, ZigzagCausalStepsAreFewLibraryBlocks) {
  // The shapes TransformerEngine's ring uses: the own step is two causal squares and one full
  // block; every other step is one full block (half the queries or half the keys).
  const std::vector<int64_t> lens{64};
  const MaskSpec causal = make_mask_spec(true, -1, -1);
  for (int32_t rank = 0; rank < 4; ++rank) {
    const std::vector<PosRun> q = rank_runs(kZigzag, lens, 4, rank);
    for (int32_t src = 0; src < 4; ++src) {
      const std::vector<PosRun> k = rank_runs(kZigzag, lens, 4, src);
      std::vector<SubBlock> blocks;
      split_sub_blocks(PosMap{q.data(), 2}, PosMap{k.data(), 2}, causal, &blocks);
      if (src == rank) {
        ASSERT_EQ(blocks.size(), 3u);
        int causal_blocks = 0;
        for (const SubBlock& b : blocks) causal_blocks += b.kind == kSubCausal ? 1 : 0;
        EXPECT_EQ(causal_blocks, 2);
      } else {
        ASSERT_EQ(blocks.size(), 1u) << rank << " " << src;
        EXPECT_EQ(blocks[0].kind, kSubFull);
        EXPECT_EQ(blocks[0].m * blocks[0].n, 8 * 16);
      }
    }
  }
}

TEST(SubBlocks, SingleLibraryBlockOnlyWhenItCoversTheCall) {
  const PosRun q{0, 0, 16, 1};
  std::vector<SubBlock> blocks;
  split_sub_blocks(PosMap{&q, 1}, PosMap{&q, 1}, make_mask_spec(true, -1, -1), &blocks);
  EXPECT_TRUE(single_library_block(blocks, 16, 16));
  EXPECT_FALSE(single_library_block(blocks, 16, 17));
  split_sub_blocks(PosMap{&q, 1}, PosMap{&q, 1}, make_mask_spec(true, 2, -1), &blocks);
  EXPECT_TRUE(single_library_block(blocks, 16, 16));
  EXPECT_EQ(blocks[0].window, 2);
  const PosRun k{0, 8, 16, 1};  // keys 8..23 against queries 0..15: causal is not aligned
  split_sub_blocks(PosMap{&q, 1}, PosMap{&k, 1}, make_mask_spec(true, -1, -1), &blocks);
  EXPECT_FALSE(single_library_block(blocks, 16, 16));
}

}  // namespace
}  // namespace ringattn
