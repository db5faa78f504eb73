// Sharding schemes, position runs and mask classification: the arithmetic that CPU and CUDA
// kernels and the runtime share (kernels/common).
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>
#include <vector>

#include "mask.h"
#include "positions.h"
#include "ringattn/ringattn.h"

namespace ringattn {
namespace {

std::vector<int64_t> expand(int32_t scheme, int64_t len, int32_t world, int32_t rank) {
  PosRun runs[2];
  const int32_t n = scheme_runs(scheme, 0, len, world, rank, runs);
  std::vector<int64_t> out;
  for (int32_t i = 0; i < n; ++i) {
    EXPECT_GT(runs[i].count, 0) << "empty runs are omitted";
    for (int64_t c = 0; c < runs[i].count; ++c) out.push_back(runs[i].start + c * runs[i].stride);
  }
  return out;
}

TEST(Schemes, EveryPositionOwnedExactlyOnceForAnyLengthAndWorld) {
  for (int32_t scheme : {kContiguous, kZigzag, kStriped}) {
    for (int32_t world : {1, 2, 3, 4, 5, 8}) {
      for (int64_t len : {0, 1, 2, 7, 15, 16, 17, 100, 3816, 3824}) {
        std::vector<int> seen(static_cast<size_t>(len), 0);
        size_t max_sz = 0, min_sz = SIZE_MAX;
        for (int32_t r = 0; r < world; ++r) {
          const auto pos = expand(scheme, len, world, r);
          EXPECT_EQ(static_cast<int64_t>(pos.size()), scheme_local_len(scheme, len, world, r));
          max_sz = std::max(max_sz, pos.size());
          min_sz = std::min(min_sz, pos.size());
          for (size_t i = 0; i < pos.size(); ++i) {
            ASSERT_GE(pos[i], 0);
            ASSERT_LT(pos[i], len);
            seen[static_cast<size_t>(pos[i])]++;
            int32_t owner = -1;
            int64_t local = -1;
            scheme_owner(scheme, len, world, pos[i], &owner, &local);
            EXPECT_EQ(owner, r) << "scheme " << scheme << " len " << len << " pos " << pos[i];
            EXPECT_EQ(local, static_cast<int64_t>(i));
          }
          // Ascending within each chunk; striped and contiguous ascending overall.
          if (scheme != kZigzag) {
            EXPECT_TRUE(std::is_sorted(pos.begin(), pos.end()));
          }
        }
        for (int64_t p = 0; p < len; ++p) EXPECT_EQ(seen[static_cast<size_t>(p)], 1);
        // Balance: contiguous and striped differ by at most one token; zigzag by at most two
        // (two chunks, each differing by at most one).
        if (len > 0) {
          EXPECT_LE(max_sz - min_sz, scheme == kZigzag ? 2u : 1u);
        }
      }
    }
  }
}

TEST(Schemes, ZigzagRankHoldsChunkRThenChunk2PMinus1MinusR) {
  // 16 tokens, 4 ranks: 8 chunks of 2. Rank 1 holds chunk 1 [2,3] and chunk 6 [12,13].
  EXPECT_EQ(expand(kZigzag, 16, 4, 1), (std::vector<int64_t>{2, 3, 12, 13}));
  EXPECT_EQ(expand(kStriped, 10, 4, 2), (std::vector<int64_t>{2, 6}));
  EXPECT_EQ(expand(kContiguous, 10, 4, 3), (std::vector<int64_t>{8, 9}));
  // A sequence shorter than the number of chunks leaves some ranks empty.
  EXPECT_TRUE(expand(kZigzag, 3, 4, 3).empty());
}

TEST(Schemes, CApiHelpersMatchTheRunsAndRejectBadArguments) {
  int64_t n = -1;
  ASSERT_EQ(ringattn_shard_length(RINGATTN_SCHEME_ZIGZAG, 3824, 8, 5, &n), RINGATTN_SUCCESS);
  EXPECT_EQ(n, scheme_local_len(kZigzag, 3824, 8, 5));
  std::vector<int64_t> pos(static_cast<size_t>(n));
  ASSERT_EQ(ringattn_shard_positions(RINGATTN_SCHEME_ZIGZAG, 3824, 8, 5, pos.data(), n),
            RINGATTN_SUCCESS);
  EXPECT_EQ(pos, expand(kZigzag, 3824, 8, 5));
  EXPECT_EQ(ringattn_shard_positions(RINGATTN_SCHEME_ZIGZAG, 3824, 8, 5, pos.data(), n - 1),
            RINGATTN_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(ringattn_get_last_error()).find("capacity"), std::string::npos);
  EXPECT_EQ(ringattn_shard_length(RINGATTN_SCHEME_STRIPED, 10, 4, 4, &n),
            RINGATTN_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(ringattn_get_last_error()).find("rank"), std::string::npos);
  EXPECT_EQ(ringattn_shard_length(RINGATTN_SCHEME_STRIPED, 10, 4, 0, nullptr),
            RINGATTN_ERROR_NULL_POINTER);
  EXPECT_EQ(ringattn_shard_length(static_cast<ringattn_scheme_t>(7), 10, 4, 0, &n),
            RINGATTN_ERROR_INVALID_ARGUMENT);
}

TEST(PosMap, LookupWalksRunsInOrder) {
  const PosRun runs[3] = {{0, 10, 3, 1}, {1, 0, 2, 4}, {1, 100, 1, 1}};
  const PosMap map{runs, 3};
  EXPECT_EQ(posmap_rows(map), 6);
  int64_t seq, pos;
  posmap_lookup(map, 2, &seq, &pos);
  EXPECT_EQ(seq, 0);
  EXPECT_EQ(pos, 12);
  posmap_lookup(map, 4, &seq, &pos);
  EXPECT_EQ(seq, 1);
  EXPECT_EQ(pos, 4);
  posmap_lookup(map, 5, &seq, &pos);
  EXPECT_EQ(pos, 100);
}

TEST(Mask, CausalIsRightZeroAndCombinesWithWindow) {
  const MaskSpec c = make_mask_spec(true, -1, -1);
  EXPECT_EQ(c.left, -1);
  EXPECT_EQ(c.right, 0);
  const MaskSpec w = make_mask_spec(true, 5, 7);
  EXPECT_EQ(w.left, 5);
  EXPECT_EQ(w.right, 0);
  EXPECT_TRUE(mask_is_full(make_mask_spec(false, -1, -1)));
  EXPECT_TRUE(mask_visible(c, 0, 5, 0, 5));
  EXPECT_FALSE(mask_visible(c, 0, 5, 0, 6));
  EXPECT_FALSE(mask_visible(c, 0, 5, 1, 1)) << "other sequence";
  EXPECT_FALSE(mask_visible(w, 0, 10, 0, 4));
  EXPECT_TRUE(mask_visible(w, 0, 10, 0, 5));
}

// classify_tile must never claim Full or Hidden wrongly: check against every element, over
// random tiles of random shard-like runs.
TEST(Mask, TileClassificationAgreesWithElementwiseMaskOnRandomShards) {
  std::mt19937_64 rng(12345);
  int full = 0, hidden = 0, partial = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    const int32_t world = 1 + static_cast<int32_t>(rng() % 5);
    const int32_t scheme = static_cast<int32_t>(rng() % 3);
    const int64_t len = 1 + static_cast<int64_t>(rng() % 200);
    std::vector<PosRun> qr, kr;
    PosRun tmp[2];
    const int32_t nq = scheme_runs(scheme, 0, len, world, static_cast<int32_t>(rng() % world), tmp);
    for (int32_t i = 0; i < nq; ++i) qr.push_back(tmp[i]);
    const int32_t nk = scheme_runs(scheme, 0, len, world, static_cast<int32_t>(rng() % world), tmp);
    for (int32_t i = 0; i < nk; ++i) kr.push_back(tmp[i]);
    if (rng() % 4 == 0) kr.push_back(PosRun{1, 0, 1 + static_cast<int64_t>(rng() % 9), 1});
    const PosMap qm{qr.data(), static_cast<int32_t>(qr.size())};
    const PosMap km{kr.data(), static_cast<int32_t>(kr.size())};
    const int64_t qrows = posmap_rows(qm), krows = posmap_rows(km);
    if (qrows == 0 || krows == 0) continue;
    const bool causal = rng() % 2;
    const int64_t wl = rng() % 3 == 0 ? -1 : static_cast<int64_t>(rng() % 50);
    const int64_t wr = rng() % 3 == 0 ? -1 : static_cast<int64_t>(rng() % 50);
    const MaskSpec m = make_mask_spec(causal, wl, wr);
    const int64_t q0 = static_cast<int64_t>(rng() % qrows);
    const int64_t k0 = static_cast<int64_t>(rng() % krows);
    const int64_t qn = 1 + static_cast<int64_t>(rng() % std::min<int64_t>(64, qrows - q0));
    const int64_t kn = 1 + static_cast<int64_t>(rng() % std::min<int64_t>(64, krows - k0));
    const TileClass cls = classify_tile(m, tile_range(qm, q0, qn), tile_range(km, k0, kn));
    int visible = 0;
    for (int64_t i = q0; i < q0 + qn; ++i) {
      for (int64_t j = k0; j < k0 + kn; ++j) {
        int64_t qs, qp, ks, kp;
        posmap_lookup(qm, i, &qs, &qp);
        posmap_lookup(km, j, &ks, &kp);
        visible += mask_visible(m, qs, qp, ks, kp);
      }
    }
    if (cls == kTileHidden) {
      ++hidden;
      ASSERT_EQ(visible, 0) << "iter " << iter;
    } else if (cls == kTileFull) {
      ++full;
      ASSERT_EQ(visible, qn * kn) << "iter " << iter;
    } else {
      ++partial;
    }
  }
  // The classifier is useful, not just conservative.
  EXPECT_GT(full, 100);
  EXPECT_GT(hidden, 100);
  EXPECT_GT(partial, 100);
}

TEST(Split, SizesDifferByAtMostOneAndOffsetsTile) {
  for (int64_t n : {0, 1, 5, 17, 1000}) {
    for (int64_t parts : {1, 2, 3, 16}) {
      int64_t off = 0;
      for (int64_t i = 0; i < parts; ++i) {
        EXPECT_EQ(split_offset(n, parts, i), off);
        off += split_size(n, parts, i);
      }
      EXPECT_EQ(off, n);
    }
  }
}

}  // namespace
}  // namespace ringattn
