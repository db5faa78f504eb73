// The ring plan on its own (no MPI): which block each step holds, chunk slicing, and which
// (step, chunk) pairs the mask hides, for the schemes, masks and packed batches of the ring.
#include <gtest/gtest.h>

#include <numeric>

#include "ring_plan.h"

namespace ringattn {
namespace {

RingProblem problem(int32_t world, int32_t rank, int32_t scheme, int64_t seq, MaskSpec mask,
                    int32_t chunks = 4) {
  RingProblem p;
  p.world = world;
  p.rank = rank;
  p.scheme = scheme;
  p.seq_len = seq;
  p.hq = p.hkv = 1;
  p.d = 32;
  p.mask = mask;
  p.chunks = chunks;
  return p;
}

int64_t rows_of(const RingPlan& plan, const RowChunk& c) { return posmap_rows(plan.map(c)); }

TEST(RingPlan, StepsVisitEveryBlockOnceStartingWithTheOwnBlock) {
  RingPlan plan;
  plan.build(problem(5, 3, kContiguous, 103, MaskSpec{-1, -1}));
  std::vector<int> seen(5, 0);
  for (int i = 0; i < 5; ++i) ++seen[plan.step_source(i)];
  EXPECT_EQ(plan.step_source(0), 3);
  EXPECT_EQ(plan.step_source(1), 2);
  EXPECT_EQ(seen, std::vector<int>(5, 1));
  int64_t total = 0;
  for (int s = 0; s < 5; ++s) total += plan.rows_of(s);
  EXPECT_EQ(total, 103);
  EXPECT_EQ(plan.max_rows(), 21);
}

TEST(RingPlan, ChunksCoverEachBlockExactlyAndAgreeWithTheirPositions) {
  for (int32_t scheme : {kContiguous, kZigzag, kStriped}) {
    RingPlan plan;
    plan.build(problem(3, 1, scheme, 50, MaskSpec{-1, 0}, 4));
    for (int s = 0; s < 3; ++s) {
      int64_t next = 0;
      for (int c = 0; c < 4; ++c) {
        const RowChunk& k = plan.k_chunk(s, c);
        EXPECT_EQ(k.row0, next);
        EXPECT_EQ(rows_of(plan, k), k.rows);
        EXPECT_LE(k.rows, plan.slot_rows());
        // Row i of the chunk is row row0 + i of the block.
        for (int64_t i = 0; i < k.rows; ++i) {
          int64_t sa, pa, sb, pb;
          posmap_lookup(plan.map(k), i, &sa, &pa);
          posmap_lookup(plan.block_map(s), k.row0 + i, &sb, &pb);
          EXPECT_EQ(pa, pb);
          EXPECT_EQ(sa, sb);
        }
        next += k.rows;
      }
      EXPECT_EQ(next, plan.rows_of(s));
    }
  }
}

TEST(RingPlan, HeadChunksSplitTheHeadsAndTakeWholeBlocks) {
  for (int64_t hkv : {4, 5, 11}) {
    RingProblem prob = problem(3, 1, kZigzag, 50, make_mask_spec(true, -1, -1), 4);
    prob.chunk_kv_heads = hkv;
    RingPlan plan;
    plan.build(prob);
    ASSERT_TRUE(plan.head_chunks());
    EXPECT_EQ(plan.slot_rows(), plan.max_rows());
    int64_t next = 0, most = 0;
    for (int c = 0; c < 4; ++c) {
      const HeadRange hr = plan.kv_heads(c, hkv);
      EXPECT_EQ(hr.h0, next) << hkv << " " << c;
      EXPECT_GE(hr.count, hkv / 4);
      EXPECT_LE(hr.count, hkv / 4 + 1);
      next += hr.count;
      most = hr.count > most ? hr.count : most;
      EXPECT_EQ(plan.q_chunk(c).rows, plan.rows_of(1));
      for (int s = 0; s < 3; ++s) {
        EXPECT_EQ(plan.k_chunk(s, c).row0, 0);
        EXPECT_EQ(plan.k_chunk(s, c).rows, plan.rows_of(s));
      }
      // Every chunk holds every row: its visibility is the step's.
      for (int i = 0; i < 3; ++i) {
        EXPECT_EQ(plan.fwd_visible(i, c), plan.step_visible_fwd(i));
        EXPECT_EQ(plan.bwd_visible(i, c), plan.step_visible_bwd(i));
      }
    }
    EXPECT_EQ(next, hkv);
    EXPECT_EQ(plan.slot_heads(hkv), most);
  }
  // Row chunks: every head in each chunk.
  RingPlan rows;
  rows.build(problem(3, 1, kZigzag, 50, MaskSpec{-1, -1}, 4));
  EXPECT_FALSE(rows.head_chunks());
  EXPECT_EQ(rows.kv_heads(2, 7).h0, 0);
  EXPECT_EQ(rows.kv_heads(2, 7).count, 7);
  EXPECT_EQ(rows.slot_heads(7), 7);
}

TEST(RingPlan, CausalContiguousHidesEveryLaterBlock) {
  const int P = 4;
  for (int r = 0; r < P; ++r) {
    RingPlan plan;
    plan.build(problem(P, r, kContiguous, 400, make_mask_spec(true, -1, -1)));
    for (int i = 0; i < P; ++i) {
      const bool later = plan.step_source(i) > r;
      EXPECT_EQ(plan.step_visible_fwd(i), !later) << "rank " << r << " step " << i;
      EXPECT_EQ(plan.step_visible_bwd(i), !later) << "rank " << r << " step " << i;
    }
  }
}

TEST(RingPlan, ZigzagCausalHasNoHiddenStepButHiddenChunks) {
  // Zigzag balances causal work: every step has visible work, and the first chunk of rank 0's
  // queries (positions 0..) sees nothing of any other block.
  const int P = 4;
  RingPlan plan;
  plan.build(problem(P, 0, kZigzag, 800, make_mask_spec(true, -1, -1), 2));
  for (int i = 0; i < P; ++i) EXPECT_TRUE(plan.step_visible_fwd(i));
  for (int i = 1; i < P; ++i) EXPECT_FALSE(plan.fwd_visible(i, 0)) << "step " << i;
  for (int i = 1; i < P; ++i) EXPECT_TRUE(plan.fwd_visible(i, 1)) << "step " << i;
}

TEST(RingPlan, SlidingWindowHidesStepsBeyondTheWindow) {
  RingPlan plan;
  // Blocks of 100 tokens, window 30 to the left: rank 5 sees blocks 5 and 4 only.
  plan.build(problem(8, 5, kContiguous, 800, make_mask_spec(true, 30, -1)));
  for (int i = 0; i < 8; ++i) {
    const int s = plan.step_source(i);
    EXPECT_EQ(plan.step_visible_fwd(i), s == 5 || s == 4) << "block " << s;
  }
}

TEST(RingPlan, PackedSequencesShorterThanTheRingLeaveRanksEmpty) {
  RingProblem p = problem(4, 3, kZigzag, 0, make_mask_spec(true, -1, -1));
  p.packed = true;
  p.cu_seqlens = {0, 3, 5, 6, 46};  // lengths 3, 2, 1, 40
  RingPlan plan;
  plan.build(p);
  int64_t total = 0;
  for (int s = 0; s < 4; ++s) total += plan.rows_of(s);
  EXPECT_EQ(total, 46);
  // Rank 3 holds zigzag chunks 3 and 4 of each sequence: nothing of the 3 short ones.
  PosMap m = plan.block_map(3);
  for (int32_t i = 0; i < m.num_runs; ++i) EXPECT_EQ(m.runs[i].seq, 3);
  // Different sequences never see each other.
  const PosRun a{0, 0, 3, 1}, b{1, 0, 2, 1};
  EXPECT_FALSE(runs_may_see(MaskSpec{-1, -1}, &a, 1, &b, 1));
  EXPECT_TRUE(runs_may_see(MaskSpec{-1, -1}, &a, 1, &a, 1));
}

// A plan's device copy of its runs (RingContext::upload_runs, for CUDA kernels that take at most
// 8 runs inline): max_map_runs says when one is needed, and every map then points at the copy of
// exactly its own runs.
TEST(RingPlan, DeviceRunsFollowEveryMapOfAPackedBatch) {
  RingProblem p = problem(2, 1, kZigzag, 0, make_mask_spec(true, -1, -1), 3);
  p.packed = true;
  p.cu_seqlens = {0};
  for (int b = 0; b < 12; ++b) p.cu_seqlens.push_back(p.cu_seqlens.back() + 8 + b);
  RingPlan plan;
  plan.build(p);
  // Zigzag at P = 2: two runs of each of the 12 sequences per block.
  EXPECT_EQ(plan.max_map_runs(), 24);
  EXPECT_EQ(plan.block_map(0).device_runs, nullptr);
  // A stand-in device buffer: the host runs shifted, so that a map pointing at the wrong place
  // shows.
  std::vector<PosRun> copy(plan.runs().size() + 5);
  for (size_t i = 0; i < plan.runs().size(); ++i) copy[i + 5] = plan.runs()[i];
  plan.set_device_runs(copy.data() + 5);
  auto same = [](const PosMap& m) {
    if (m.device_runs == nullptr) return false;
    for (int32_t i = 0; i < m.num_runs; ++i) {
      const PosRun &a = m.runs[i], &b = m.device_runs[i];
      if (a.seq != b.seq || a.start != b.start || a.count != b.count || a.stride != b.stride) {
        return false;
      }
    }
    return true;
  };
  for (int32_t s = 0; s < 2; ++s) {
    EXPECT_TRUE(same(plan.block_map(s))) << s;
    for (int32_t c = 0; c < 3; ++c) EXPECT_TRUE(same(plan.map(plan.k_chunk(s, c)))) << s << c;
  }
  for (int32_t c = 0; c < 3; ++c) EXPECT_TRUE(same(plan.map(plan.q_chunk(c)))) << c;
  // A rebuilt plan forgets the copy of its old runs.
  plan.build(problem(2, 1, kZigzag, 64, MaskSpec{-1, -1}));
  EXPECT_EQ(plan.block_map(0).device_runs, nullptr);
  EXPECT_LE(plan.max_map_runs(), 2);
}

TEST(RingPlan, EmptyProblemHasNothingVisible) {
  RingPlan plan;
  plan.build(problem(3, 0, kStriped, 2, MaskSpec{-1, -1}));
  EXPECT_EQ(plan.rows_of(2), 0);
  // Rank 0's queries against the empty block of rank 2 (step 1) see nothing.
  EXPECT_FALSE(plan.step_visible_fwd(1));
  EXPECT_TRUE(plan.step_visible_fwd(0));
}

}  // namespace
}  // namespace ringattn
