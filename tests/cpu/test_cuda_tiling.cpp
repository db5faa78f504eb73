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

// Every case of the walk tests: block pairs x masks x query tile rows x key tile rows.
template <typename F>
void for_each_walk_case(F f) {
  for (const auto& pr : block_pairs()) {
    for (const MaskSpec& m : masks()) {
      for (int64_t bm : {16, 64, 128}) {
        for (int64_t bn : {32, 64}) f(pr.first, pr.second, m, bm, bn);
      }
    }
  }
}

// The walks' claims against brute force: every tile with a visible pair is walked, in order and
// once; a tile walked as full has every in-range pair visible and no ragged key column.
TEST(CudaTiling, WalksVisitEveryTileWithAVisiblePairAndClaimFullOnlyWhenTrue) {
  for_each_walk_case([](const PosBlock& qb, const PosBlock& kb, const MaskSpec& m, int64_t bm,
                        int64_t bn) {
    const int64_t sq = qb.rows(), sk = kb.rows();
    const int64_t num_q = cuda::ceil_div(sq, bm), num_k = cuda::ceil_div(sk, bn);
    for (int64_t q0 = 0; q0 < sq; q0 += bm) {
      std::vector<int64_t> walked;
      TileClass c;
      for (int64_t j =
               cuda::next_visible_key_tile(m, qb.map(), sq, q0, bm, kb.map(), sk, bn, 0, &c);
           j < num_k;
           j = cuda::next_visible_key_tile(m, qb.map(), sq, q0, bm, kb.map(), sk, bn, j + 1, &c)) {
        ASSERT_TRUE(walked.empty() || j > walked.back());
        ASSERT_NE(c, kTileHidden);
        if (c == kTileFull) {
          ASSERT_TRUE(brute(m, qb, q0, bm, kb, j * bn, bn).all) << "q0=" << q0 << " j=" << j;
        }
        walked.push_back(j);
      }
      for (int64_t j = 0; j < num_k; ++j) {
        if (std::find(walked.begin(), walked.end(), j) == walked.end()) {
          ASSERT_FALSE(brute(m, qb, q0, bm, kb, j * bn, bn).any) << "q0=" << q0 << " j=" << j;
        }
      }
    }
    // The backward's walk over query tiles for one key tile.
    for (int64_t k0 = 0; k0 < sk; k0 += bn) {
      std::vector<int64_t> walked;
      TileClass c;
      for (int64_t i =
               cuda::next_visible_query_tile(m, qb.map(), sq, bm, kb.map(), sk, k0, bn, 0, &c);
           i < num_q; i = cuda::next_visible_query_tile(m, qb.map(), sq, bm, kb.map(), sk, k0, bn,
                                                        i + 1, &c)) {
        ASSERT_TRUE(walked.empty() || i > walked.back());
        ASSERT_NE(c, kTileHidden);
        if (c == kTileFull) {
          ASSERT_TRUE(brute(m, qb, i * bm, bm, kb, k0, bn).all) << "k0=" << k0 << " i=" << i;
        }
        walked.push_back(i);
      }
      for (int64_t i = 0; i < num_q; ++i) {
        if (std::find(walked.begin(), walked.end(), i) == walked.end()) {
          ASSERT_FALSE(brute(m, qb, i * bm, bm, kb, k0, bn).any) << "k0=" << k0 << " i=" << i;
        }
      }
    }
  });
}

TEST(CudaTiling, RunRowsInBandAreExactlyTheRowsWhosePositionsLieInIt) {
  const std::vector<PosRun> runs = {{0, 0, 100, 1}, {0, 1000, 50, 3}, {0, 500, 40, -7},
                                    {0, 42, 9, 0},  {0, -30, 20, 1},  {0, 7, 33, 4}};
  std::mt19937 gen(11);
  for (const PosRun& r : runs) {
    const int64_t last = r.start + (r.count - 1) * r.stride;
    std::uniform_int_distribution<int64_t> pos(std::min(r.start, last) - 20,
                                               std::max(r.start, last) + 20);
    std::uniform_int_distribution<int64_t> rows(0, r.count);
    for (int t = 0; t < 500; ++t) {
      const cuda::PosBand b{t % 3 != 0, pos(gen), t % 5 != 0, pos(gen)};
      const int64_t n = t % 4 == 0 ? rows(gen) : r.count;
      const cuda::IndexSpan got = cuda::run_rows_in_band(r, n, b);
      for (int64_t row = 0; row < n; ++row) {
        const int64_t p = r.start + row * r.stride;
        const bool want = (!b.has_lo || p >= b.lo) && (!b.has_hi || p <= b.hi);
        ASSERT_EQ(row >= got.begin && row < got.end, want)
            << "t=" << t << " row=" << row << " stride=" << r.stride;
      }
    }
  }
}

// A walk's claims about its tile `idx` (the block at q0, k0): nothing visible outside its band,
// every pair visible in its full range.
void check_walk_claims(const cuda::TileWalk& w, int64_t idx, const Truth& t, int64_t q0,
                       int64_t k0) {
  const bool outside = idx < w.begin || idx >= w.end;
  const bool full = idx >= w.full_begin && idx < w.full_end;
  EXPECT_FALSE(outside && t.any) << "q0=" << q0 << " k0=" << k0;
  EXPECT_FALSE(full && !t.all) << "q0=" << q0 << " k0=" << k0;
}

// Every tile outside a walk's band holds no visible pair; every tile of its full range has all
// pairs visible; and the walks are tight for the common single-sequence masks (below).
TEST(CudaTiling, TileWalkBandsAndFullRangesAgreeWithBruteForce) {
  for_each_walk_case([](const PosBlock& qb, const PosBlock& kb, const MaskSpec& m, int64_t bm,
                        int64_t bn) {
    const int64_t sq = qb.rows(), sk = kb.rows();
    for (int64_t q0 = 0; q0 < sq; q0 += bm) {
      const cuda::TileWalk w =
          cuda::key_tile_walk(m, cuda::query_tile_range(qb.map(), sq, q0, bm), kb.map(), sk, bn);
      for (int64_t k0 = 0; k0 < sk; k0 += bn) {
        check_walk_claims(w, k0 / bn, brute(m, qb, q0, bm, kb, k0, bn), q0, k0);
      }
    }
    for (int64_t k0 = 0; k0 < sk; k0 += bn) {
      const int64_t kn = std::min(bn, sk - k0);
      const cuda::TileWalk w =
          cuda::query_tile_walk(m, tile_range(kb.map(), k0, kn), kn < bn, qb.map(), sq, bm);
      for (int64_t q0 = 0; q0 < sq; q0 += bm) {
        check_walk_claims(w, q0 / bm, brute(m, qb, q0, bm, kb, k0, bn), q0, k0);
      }
    }
  });
}

TEST(CudaTiling, CausalAndWindowWalksStopAtTheBandAndClassifyOnlyItsEdges) {
  // Single-process attention at S = 8192 with the forward's 128 x 64 tiles. Causal: query tile i
  // reaches key tiles [0, 2i + 2), of which [0, 2i) are full; only the two diagonal tiles are
  // classified.
  const PosBlock b = run_block(8192);
  const MaskSpec causal = make_mask_spec(true, -1, -1);
  for (int64_t i = 0; i < 64; ++i) {
    const cuda::TileWalk w = cuda::key_tile_walk(
        causal, cuda::query_tile_range(b.map(), 8192, i * 128, 128), b.map(), 8192, 64);
    ASSERT_EQ(w.begin, 0);
    ASSERT_EQ(w.end, 2 * i + 2);
    if (i > 0) {
      ASSERT_EQ(w.full_begin, 0);
      ASSERT_EQ(w.full_end, 2 * i);
    } else {
      ASSERT_GE(w.full_begin, w.full_end);
    }
  }
  // Non-causal: every key tile is full, the ragged last one (S = 8000) excepted.
  const PosBlock b8000 = run_block(8000);
  const cuda::TileWalk all =
      cuda::key_tile_walk(make_mask_spec(false, -1, -1),
                          cuda::query_tile_range(b8000.map(), 8000, 0, 128), b8000.map(), 8000, 64);
  EXPECT_EQ(all.begin, 0);
  EXPECT_EQ(all.end, 125);
  EXPECT_EQ(all.full_begin, 0);
  EXPECT_EQ(all.full_end, 125);  // 8000 = 125 * 64: no ragged tile
  const cuda::TileWalk ragged =
      cuda::key_tile_walk(make_mask_spec(false, -1, -1),
                          cuda::query_tile_range(b8000.map(), 8000, 0, 128), b8000.map(), 7999, 64);
  EXPECT_EQ(ragged.end, 125);
  EXPECT_EQ(ragged.full_end, 124);
  // The dK/dV walk of key tile j (64 keys, 64-row query tiles) starts at the diagonal, and every
  // query tile after the diagonal one is full.
  for (int64_t j = 0; j < 128; ++j) {
    const cuda::TileWalk w =
        cuda::query_tile_walk(causal, tile_range(b.map(), j * 64, 64), false, b.map(), 8192, 64);
    ASSERT_EQ(w.begin, j);
    ASSERT_EQ(w.end, 128);
    if (j + 1 < 128) {
      ASSERT_EQ(w.full_begin, j + 1);
      ASSERT_EQ(w.full_end, 128);
    } else {
      ASSERT_GE(w.full_begin, w.full_end);
    }
  }
  // A sliding window of 256 to the left: query tile i (rows 128i .. 128i + 127) reaches keys
  // 128i - 256 .. 128i + 127; keys 128i - 129 .. 128i are seen by all of its rows.
  const MaskSpec window = make_mask_spec(true, 256, -1);
  for (int64_t i = 0; i < 64; ++i) {
    const cuda::TileWalk w = cuda::key_tile_walk(
        window, cuda::query_tile_range(b.map(), 8192, i * 128, 128), b.map(), 8192, 64);
    ASSERT_EQ(w.begin, std::max<int64_t>(0, 2 * i - 4));
    ASSERT_EQ(w.end, 2 * i + 2);
    if (i >= 2) {
      ASSERT_EQ(w.full_begin, 2 * i - 2);
      ASSERT_EQ(w.full_end, 2 * i);
    }
  }
  // Keys of another sequence are no candidates at all.
  const PosBlock other = run_block(512, 0, 1, 7);
  const cuda::TileWalk none = cuda::key_tile_walk(
      causal, cuda::query_tile_range(b.map(), 8192, 0, 128), other.map(), 512, 64);
  EXPECT_GE(none.begin, none.end);
  EXPECT_GE(none.full_begin, none.full_end);
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

// The byte form the backward's ldmatrix walks use: row base plus chunk offset stepped by XOR.
TEST(CudaTiling, SwizzleChunkStepsByXorMatchTheSwizzle) {
  for (int d : {64, 128, 192, 256}) {
    for (int row = 0; row < 256; ++row) {
      for (int c0 = 0; c0 < 2; ++c0) {
        for (int k = 0; 2 * k + c0 < d / 8; ++k) {
          const uint32_t want =
              2u * static_cast<uint32_t>(cuda::swizzle_offset(row, c0 + 2 * k, d));
          const uint32_t got = 2u * static_cast<uint32_t>(row * d) +
                               (cuda::swizzle_chunk_bytes(row, c0) ^ cuda::swizzle_chunk_step(k));
          ASSERT_EQ(got, want) << "d=" << d << " row=" << row << " c0=" << c0 << " k=" << k;
        }
        // Blocks of 8 rows further on are plain offsets: the chunk field does not change.
        for (int m = 1; m < 8; ++m) {
          ASSERT_EQ(cuda::swizzle_chunk_bytes(row + 8 * m, c0), cuda::swizzle_chunk_bytes(row, c0));
        }
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
