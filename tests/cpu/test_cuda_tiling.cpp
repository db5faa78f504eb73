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

TEST(CudaTiling, WalksVisitEveryTileWithAVisiblePairOnceInOrder) {
  for (const auto& pr : block_pairs()) {
    for (const MaskSpec& m : masks()) {
      const int64_t sq = pr.first.rows(), sk = pr.second.rows(), bm = 64, bn = 64;
      const int64_t num_q = cuda::ceil_div(sq, bm), num_k = cuda::ceil_div(sk, bn);
      for (int64_t q0 = 0; q0 < sq; q0 += bm) {
        std::vector<int64_t> walked;
        for (int64_t j = cuda::next_visible_key_tile(m, pr.first.map(), sq, q0, bm, pr.second.map(),
                                                     sk, bn, 0);
             j < num_k; j = cuda::next_visible_key_tile(m, pr.first.map(), sq, q0, bm,
                                                        pr.second.map(), sk, bn, j + 1)) {
          ASSERT_TRUE(walked.empty() || j > walked.back());
          ASSERT_NE(classify_block(m, pr.first.map(), sq, q0, bm, pr.second.map(), sk, j * bn, bn),
                    kTileHidden);
          walked.push_back(j);
        }
        // Every tile left out holds no visible pair; every tile with one is walked.
        for (int64_t j = 0; j < num_k; ++j) {
          if (std::find(walked.begin(), walked.end(), j) == walked.end()) {
            ASSERT_FALSE(brute(m, pr.first, q0, bm, pr.second, j * bn, bn).any)
                << "q0=" << q0 << " j=" << j;
          }
        }
      }
      // The backward's walk over query tiles for one key tile.
      for (int64_t k0 = 0; k0 < sk; k0 += bn) {
        std::vector<int64_t> walked;
        for (int64_t i = cuda::next_visible_query_tile(m, pr.first.map(), sq, bm, pr.second.map(),
                                                       sk, k0, bn, 0);
             i < num_q; i = cuda::next_visible_query_tile(m, pr.first.map(), sq, bm,
                                                          pr.second.map(), sk, k0, bn, i + 1)) {
          ASSERT_TRUE(walked.empty() || i > walked.back());
          ASSERT_NE(classify_block(m, pr.first.map(), sq, i * bm, bm, pr.second.map(), sk, k0, bn),
                    kTileHidden);
          walked.push_back(i);
        }
        for (int64_t i = 0; i < num_q; ++i) {
          if (std::find(walked.begin(), walked.end(), i) == walked.end()) {
            ASSERT_FALSE(brute(m, pr.first, i * bm, bm, pr.second, k0, bn).any)
                << "k0=" << k0 << " i=" << i;
          }
        }
      }
    }
  }
}

// Brute force of rows_with_positions: the exact set's hull.
cuda::IndexSpan brute_rows(const PosBlock& blk, int64_t rows, bool only_seq, int64_t seq,
                           bool has_lo, int64_t lo, bool has_hi, int64_t hi) {
  const RowPositions p = blk.positions();
  cuda::IndexSpan h{0, 0};
  for (int64_t r = 0; r < rows; ++r) {
    const bool in = (!only_seq || p.seq[r] == seq) && (!has_lo || p.pos[r] >= lo) &&
                    (!has_hi || p.pos[r] <= hi);
    if (!in) continue;
    if (h.begin >= h.end) h.begin = r;
    h.end = r + 1;
  }
  return h;
}

TEST(CudaTiling, RowsWithPositionsIsTheHullOfTheQualifyingRows) {
  std::vector<PosBlock> blocks = {run_block(100),
                                  run_block(50, 1000, 3),
                                  run_block(40, 500, -7),
                                  run_block(9, 42, 0),
                                  shard_block(kZigzag, 1000, 4, 1),
                                  shard_block(kStriped, 1000, 3, 2),
                                  packed_block({7, 129, 60, 1, 33}),
                                  join(run_block(30, 200, -2, 1), run_block(25, 0, 5, 1))};
  std::mt19937 gen(11);
  for (const PosBlock& blk : blocks) {
    const RowPositions p = blk.positions();
    const int64_t pmin = *std::min_element(p.pos.begin(), p.pos.end());
    const int64_t pmax = *std::max_element(p.pos.begin(), p.pos.end());
    std::uniform_int_distribution<int64_t> pos(pmin - 20, pmax + 20);
    std::uniform_int_distribution<int64_t> rows(0, blk.rows());
    for (int t = 0; t < 400; ++t) {
      int64_t lo = pos(gen), hi = pos(gen);
      if (t % 7 == 0) std::swap(lo, hi);  // empty position ranges too
      const bool has_lo = t % 3 != 0, has_hi = t % 5 != 0, only_seq = t % 2 == 0;
      const int64_t seq = t % 4 == 0 ? 1 : 0, n = t % 6 == 0 ? rows(gen) : blk.rows();
      const cuda::IndexSpan got =
          cuda::rows_with_positions(blk.map(), n, only_seq, seq, has_lo, lo, has_hi, hi);
      const cuda::IndexSpan want = brute_rows(blk, n, only_seq, seq, has_lo, lo, has_hi, hi);
      if (want.begin >= want.end) {
        ASSERT_GE(got.begin, got.end) << "t=" << t;
      } else {
        ASSERT_EQ(got.begin, want.begin) << "t=" << t;
        ASSERT_EQ(got.end, want.end) << "t=" << t;
      }
    }
  }
}

TEST(CudaTiling, TileSpansHoldEveryVisiblePair) {
  for (const auto& pr : block_pairs()) {
    for (const MaskSpec& m : masks()) {
      const PosBlock &qb = pr.first, &kb = pr.second;
      const int64_t sq = qb.rows(), sk = kb.rows();
      for (int64_t bm : {16, 64, 128}) {
        for (int64_t bn : {32, 64}) {
          for (int64_t q0 = 0; q0 < sq; q0 += bm) {
            const cuda::IndexSpan span = cuda::key_tile_span(
                m, cuda::query_tile_range(qb.map(), sq, q0, bm), kb.map(), sk, bn);
            for (int64_t k0 = 0; k0 < sk; k0 += bn) {
              if (k0 / bn < span.begin || k0 / bn >= span.end) {
                ASSERT_FALSE(brute(m, qb, q0, bm, kb, k0, bn).any) << "q0=" << q0 << " k0=" << k0;
              }
            }
          }
          for (int64_t k0 = 0; k0 < sk; k0 += bn) {
            const int64_t kn = std::min(bn, sk - k0);
            const cuda::IndexSpan span =
                cuda::query_tile_span(m, tile_range(kb.map(), k0, kn), qb.map(), sq, bm);
            for (int64_t q0 = 0; q0 < sq; q0 += bm) {
              if (q0 / bm < span.begin || q0 / bm >= span.end) {
                ASSERT_FALSE(brute(m, qb, q0, bm, kb, k0, bn).any) << "q0=" << q0 << " k0=" << k0;
              }
            }
          }
        }
      }
    }
  }
}

TEST(CudaTiling, CausalAndWindowWalksStopAtTheBandOfTheMask) {
  // Single-process causal attention at S = 8192 with the forward's 128 x 64 tiles: query tile i
  // reaches key tiles [0, 2i + 2) and no further, so the walk classifies no tile past the diagonal.
  const PosBlock b = run_block(8192);
  const MaskSpec causal = make_mask_spec(true, -1, -1);
  for (int64_t i = 0; i < 64; ++i) {
    const cuda::IndexSpan s = cuda::key_tile_span(
        causal, cuda::query_tile_range(b.map(), 8192, i * 128, 128), b.map(), 8192, 64);
    ASSERT_EQ(s.begin, 0);
    ASSERT_EQ(s.end, 2 * i + 2);
  }
  // The dK/dV walk of key tile j (64 keys, 64-row query tiles) starts at the diagonal.
  for (int64_t j = 0; j < 128; ++j) {
    const cuda::IndexSpan s =
        cuda::query_tile_span(causal, tile_range(b.map(), j * 64, 64), b.map(), 8192, 64);
    ASSERT_EQ(s.begin, j);
    ASSERT_EQ(s.end, 128);
  }
  // A sliding window of 256 to the left: query tile i (rows 128i .. 128i + 127) reaches keys
  // 128i - 256 .. 128i + 127.
  const MaskSpec window = make_mask_spec(true, 256, -1);
  for (int64_t i = 0; i < 64; ++i) {
    const cuda::IndexSpan s = cuda::key_tile_span(
        window, cuda::query_tile_range(b.map(), 8192, i * 128, 128), b.map(), 8192, 64);
    ASSERT_EQ(s.begin, std::max<int64_t>(0, 2 * i - 4));
    ASSERT_EQ(s.end, 2 * i + 2);
  }
  // Keys of another sequence are no candidates at all.
  const PosBlock other = run_block(512, 0, 1, 7);
  const cuda::IndexSpan none = cuda::key_tile_span(
      causal, cuda::query_tile_range(b.map(), 8192, 0, 128), other.map(), 512, 64);
  EXPECT_GE(none.begin, none.end);
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
