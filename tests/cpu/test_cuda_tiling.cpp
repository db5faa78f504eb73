// The tile arithmetic of the CUDA kernels (kernels/cuda/tiling.h, flash_config.h, kernel_params.h)
// checked on the host against brute force, so CI covers it without a GPU.
#include <gtest/gtest.h>
#include <math.h>

#include <algorithm>
#include <random>
#include <set>
#include <vector>

#include "flash_config.h"
#include "kernel_params.h"
#include "pos_blocks.h"
#include "tiling.h"

namespace ringattn {
namespace test {
namespace {

using cuda::classify_block;

// Brute force: (any visible pair, every pair visible) over the in-range rows of a block.
struct Truth {
  bool any = false, all = true;
};
Truth brute(const MaskSpec& m, const PosBlock& q, int64_t q0, int64_t bm, const PosBlock& k,
            int64_t k0, int64_t bn) {
  const RowPositions qp = q.positions(), kp = k.positions();
  Truth t;
  for (int64_t i = q0; i < q0 + bm && i < qp.rows(); ++i) {
    for (int64_t j = k0; j < k0 + bn; ++j) {
      const bool vis = j < kp.rows() && mask_visible(m, qp.seq[i], qp.pos[i], kp.seq[j], kp.pos[j]);
      t.any = t.any || vis;
      t.all = t.all && vis;
    }
  }
  return t;
}

std::vector<std::pair<PosBlock, PosBlock>> block_pairs() {
  std::vector<std::pair<PosBlock, PosBlock>> v;
  v.push_back({run_block(300), run_block(300)});
  v.push_back({run_block(129, 500), run_block(1000)});
  v.push_back({shard_block(kZigzag, 1000, 4, 1), shard_block(kZigzag, 1000, 4, 3)});
  v.push_back({shard_block(kStriped, 1000, 3, 2), shard_block(kStriped, 1000, 3, 0)});
  v.push_back({packed_block({7, 129, 60, 1, 33}), packed_block({7, 129, 60, 1, 33})});
  v.push_back({run_block(200), run_block(150, 70)});
  return v;
}

std::vector<MaskSpec> masks() {
  return {make_mask_spec(false, -1, -1), make_mask_spec(true, -1, -1),
          make_mask_spec(false, 40, 10), make_mask_spec(true, 100, -1),
          make_mask_spec(false, 0, 0)};
}

TEST(CudaTiling, ClassifyBlockNeverClaimsMoreThanIsTrue) {
  for (const auto& pr : block_pairs()) {
    for (const MaskSpec& m : masks()) {
      const int64_t sq = pr.first.rows(), sk = pr.second.rows();
      for (int64_t bm : {16, 64, 128}) {
        for (int64_t bn : {32, 64}) {
          for (int64_t q0 = 0; q0 < sq; q0 += bm) {
            for (int64_t k0 = 0; k0 < sk; k0 += bn) {
              const TileClass c =
                  classify_block(m, pr.first.map(), sq, q0, bm, pr.second.map(), sk, k0, bn);
              const Truth t = brute(m, pr.first, q0, bm, pr.second, k0, bn);
              if (c == kTileHidden) {
                ASSERT_FALSE(t.any) << "q0=" << q0 << " k0=" << k0;
              }
              if (c == kTileFull) {
                ASSERT_TRUE(t.all) << "q0=" << q0 << " k0=" << k0;
              }
            }
          }
        }
      }
    }
  }
}

TEST(CudaTiling, ContiguousCausalDiagonalIsTheOnlyPartialTile) {
  const PosBlock b = run_block(512);
  const MaskSpec m = make_mask_spec(true, -1, -1);
  for (int64_t i = 0; i < 4; ++i) {
    for (int64_t j = 0; j < 8; ++j) {
      const TileClass c = classify_block(m, b.map(), 512, i * 128, 128, b.map(), 512, j * 64, 64);
      const int64_t k_lo = j * 64, k_hi = j * 64 + 63, q_lo = i * 128, q_hi = i * 128 + 127;
      const TileClass want = k_lo > q_hi ? kTileHidden : k_hi <= q_lo ? kTileFull : kTilePartial;
      EXPECT_EQ(c, want) << "i=" << i << " j=" << j;
    }
  }
  // A ragged last key tile is partial even when every in-range pair is visible.
  const PosBlock k = run_block(100);
  EXPECT_EQ(
      classify_block(make_mask_spec(false, -1, -1), b.map(), 512, 0, 128, k.map(), 100, 64, 64),
      kTilePartial);
}

TEST(CudaTiling, NextVisibleTileSkipsExactlyTheHiddenTiles) {
  for (const auto& pr : block_pairs()) {
    for (const MaskSpec& m : masks()) {
      const int64_t sq = pr.first.rows(), sk = pr.second.rows(), bm = 64, bn = 64;
      for (int64_t q0 = 0; q0 < sq; q0 += bm) {
        std::vector<int64_t> walked;
        for (int64_t j = cuda::next_visible_key_tile(m, pr.first.map(), sq, q0, bm, pr.second.map(),
                                                     sk, bn, 0);
             j < cuda::ceil_div(sk, bn);
             j = cuda::next_visible_key_tile(m, pr.first.map(), sq, q0, bm, pr.second.map(), sk, bn,
                                             j + 1)) {
          walked.push_back(j);
        }
        std::vector<int64_t> want;
        for (int64_t j = 0; j < cuda::ceil_div(sk, bn); ++j) {
          if (classify_block(m, pr.first.map(), sq, q0, bm, pr.second.map(), sk, j * bn, bn) !=
              kTileHidden) {
            want.push_back(j);
          }
          // Every tile left out must hold no visible pair.
          if (std::find(want.begin(), want.end(), j) == want.end()) {
            ASSERT_FALSE(brute(m, pr.first, q0, bm, pr.second, j * bn, bn).any);
          }
        }
        EXPECT_EQ(walked, want);
      }
      // The backward's walk over query tiles for one key tile.
      for (int64_t k0 = 0; k0 < sk; k0 += bn) {
        int64_t count = 0;
        for (int64_t i = cuda::next_visible_query_tile(m, pr.first.map(), sq, bm, pr.second.map(),
                                                       sk, k0, bn, 0);
             i < cuda::ceil_div(sq, bm);
             i = cuda::next_visible_query_tile(m, pr.first.map(), sq, bm, pr.second.map(), sk, k0,
                                               bn, i + 1)) {
          ASSERT_NE(classify_block(m, pr.first.map(), sq, i * bm, bm, pr.second.map(), sk, k0, bn),
                    kTileHidden);
          ++count;
        }
        int64_t any = 0;
        for (int64_t i = 0; i < cuda::ceil_div(sq, bm); ++i) {
          any += brute(m, pr.first, i * bm, bm, pr.second, k0, bn).any ? 1 : 0;
        }
        EXPECT_GE(count, any);
      }
    }
  }
}

TEST(CudaTiling, SwizzleIsABijectionAndLdmatrixPhasesAreConflictFree) {
  for (int d : {64, 128, 192, 256}) {
    const int chunks = d / 8;
    for (int row = 0; row < 64; ++row) {
      std::set<int> seen;
      for (int c = 0; c < chunks; ++c) {
        const int off = cuda::swizzle_offset(row, c, d);
        ASSERT_EQ(off % 8, 0);
        ASSERT_GE(off, row * d);
        ASSERT_LT(off, (row + 1) * d);
        seen.insert(off);
      }
      ASSERT_EQ(static_cast<int>(seen.size()), chunks);
    }
    // One ldmatrix phase: 8 consecutive rows at one logical chunk -> 8 distinct 16-byte bank
    // groups (bytes / 16 mod 8).
    for (int row0 = 0; row0 < 64; row0 += 8) {
      for (int c = 0; c < chunks; ++c) {
        std::set<int> groups;
        for (int r = row0; r < row0 + 8; ++r)
          groups.insert((cuda::swizzle_offset(r, c, d) / 8) % 8);
        ASSERT_EQ(groups.size(), 8u) << "d=" << d << " row0=" << row0 << " chunk=" << c;
      }
    }
  }
}

TEST(CudaTiling, MergeWeightsFollowLogAddExpAndAreMinusInfSafe) {
  const float ninf = -INFINITY;
  const cuda::MergeWeights both = cuda::merge_weights(ninf, ninf, ninf);
  EXPECT_EQ(both.lse, ninf);
  EXPECT_EQ(both.w1, 0.0f);
  EXPECT_EQ(both.w2, 0.0f);
  const cuda::MergeWeights left = cuda::merge_weights(ninf, 1.5f, ninf);
  EXPECT_EQ(left.lse, 1.5f);
  EXPECT_EQ(left.w1, 0.0f);
  EXPECT_EQ(left.w2, 1.0f);
  std::mt19937 gen(7);
  std::uniform_real_distribution<float> u(-30.0f, 30.0f);
  for (int i = 0; i < 1000; ++i) {
    const float a = u(gen), b = u(gen);
    const cuda::MergeWeights w = cuda::merge_weights(a, b, ninf);
    const double m = std::max<double>(a, b);
    const double L = m + log(exp(a - m) + exp(b - m));
    ASSERT_NEAR(w.lse, L, 1e-5 * std::max(1.0, fabs(L)));
    ASSERT_NEAR(w.w1, exp(a - L), 1e-6);
    ASSERT_NEAR(w.w2, exp(b - L), 1e-6);
  }
}

TEST(CudaTiling, PosMapsUpToEightRunsTravelInline) {
  const PosBlock small = packed_block({3, 4, 5, 6, 7, 8, 9, 10});
  cuda::InlinePosMap m;
  ASSERT_TRUE(cuda::fill_inline_posmap(small.map(), &m));
  const PosMap view = cuda::inline_view(m);
  EXPECT_EQ(posmap_rows(view), small.rows());
  for (int64_t r = 0; r < small.rows(); ++r) {
    int64_t s1, p1, s2, p2;
    posmap_lookup(view, r, &s1, &p1);
    posmap_lookup(small.map(), r, &s2, &p2);
    ASSERT_EQ(s1, s2);
    ASSERT_EQ(p1, p2);
  }
  const PosBlock big = packed_block({1, 2, 3, 4, 5, 6, 7, 8, 9});
  EXPECT_FALSE(cuda::fill_inline_posmap(big.map(), &m));
}

TEST(CudaTiling, EveryTileConfigFitsSm80SharedMemoryAndWarpShapes) {
  EXPECT_LE(cuda::fwd_smem_bytes<64>(), cuda::kMaxSmemSm80);
  EXPECT_LE(cuda::fwd_smem_bytes<128>(), cuda::kMaxSmemSm80);
  EXPECT_LE(cuda::bwd_kv_smem_bytes<128>(), cuda::kMaxSmemSm80);
  EXPECT_LE(cuda::bwd_q_smem_bytes<128>(), cuda::kMaxSmemSm80);
  EXPECT_EQ(cuda::FwdTileConfig<128>::kBM % (16 * cuda::FwdTileConfig<128>::kWarps), 0);
  EXPECT_EQ(cuda::FwdTileConfig<256>::kBM % (16 * cuda::FwdTileConfig<256>::kWarps), 0);
  EXPECT_EQ(cuda::BwdKvTileConfig<64>::kBN, 16 * cuda::BwdKvTileConfig<64>::kWarps);
  EXPECT_EQ(cuda::BwdQTileConfig<256>::kBM, 16 * cuda::BwdQTileConfig<256>::kWarps);
}

}  // namespace
}  // namespace test
}  // namespace ringattn
