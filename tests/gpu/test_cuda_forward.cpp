// The CUDA forward kernels against the float64 reference, under the 2x-naive rule. Every
// tensor-core instantiation (dtype x head dim of this build) runs at lengths 1, 7, 129, 1000 and
// 4097, with GQA, causal and windowed masks, rows that see no key, sharded and packed blocks.
#include <gtest/gtest.h>
#include <math.h>
#include <string.h>

#include "gpu_runs.h"
#include "pos_blocks.h"
#include "reference.h"

namespace ringattn {
namespace test {
namespace {

const MaskSpec kFull = make_mask_spec(false, -1, -1);
const MaskSpec kCausal = make_mask_spec(true, -1, -1);

void check_forward_inputs(const KernelSpec& s, const KernelInputs& in, OutMode mode,
                          cuda::Path expect) {
  const GpuForward g = gpu_forward(s, in, mode);
  EXPECT_EQ(static_cast<int>(g.path), static_cast<int>(expect)) << "unexpected kernel family";
  const AttnCase c = s.attn_case();
  const FwdResult ref = reference_forward(c, in.q, in.k, in.v);
  const FwdResult naive = naive_forward(c, in.q, in.k, in.v, s.dtype);
  EXPECT_TRUE(within_2x_naive("O", g.out.o, ref.o, naive.o, s.dtype));
  EXPECT_TRUE(within_2x_naive("LSE", g.out.lse, ref.lse, naive.lse, s.dtype));
  // Rows that see no key: exactly O = 0 and LSE = -inf.
  EXPECT_TRUE(unseen_rows_are_zero(c.shape, g.out.o, ref.lse));
}

void check_forward(const KernelSpec& s, OutMode mode, cuda::Path expect) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed) + ": " + s.describe() + " mode " +
               std::to_string(static_cast<int>(mode)));
  check_forward_inputs(s, make_inputs(s, seed), mode, expect);
}

std::vector<int64_t> tc_head_dims() {
  std::vector<int64_t> dims;
  for (int i = 0; i < cuda::num_tensor_core_head_dims(); ++i) {
    dims.push_back(cuda::tensor_core_head_dim(i));
  }
  return dims;
}

const cuda::Path kTc = cuda::Path::kTensorCore;
const cuda::Path kGeneric = cuda::Path::kGeneric;

TEST(CudaForward, EveryInstantiationMatchesFp64AtLengths1To1000) {
  RINGATTN_REQUIRE_GPU();
  for (int64_t d : tc_head_dims()) {
    for (DType t : {kF16, kBF16}) {
      check_forward(whole_sequence_spec(t, 1, d, kFull), kOutFinal, kTc);
      check_forward(whole_sequence_spec(t, 7, d, kCausal, 4, 2), kOutFinal, kTc);
      check_forward(whole_sequence_spec(t, 129, d, kFull, 4, 1), kOutFinal, kTc);
      check_forward(whole_sequence_spec(t, 129, d, kCausal, 2, 2), kOutFinal, kTc);
      check_forward(whole_sequence_spec(t, 1000, d, kCausal, 4, 2), kOutFinal, kTc);
      check_forward(whole_sequence_spec(t, 1000, d, make_mask_spec(false, 100, 37)), kOutFinal,
                    kTc);
    }
  }
}

TEST(CudaForward, EveryInstantiationMatchesFp64AtLength4097) {
  RINGATTN_REQUIRE_GPU();
  for (int64_t d : tc_head_dims()) {
    check_forward(whole_sequence_spec(kBF16, 4097, d, kCausal, 1, 1), kOutFinal, kTc);
    check_forward(whole_sequence_spec(kF16, 4097, d, kFull, 1, 1), kOutFinal, kTc);
  }
}

TEST(CudaForward, PartialF32AndMergeModesKeepFloat32AcrossTwoKeyBlocks) {
  RINGATTN_REQUIRE_GPU();
  for (int64_t d : tc_head_dims()) {
    for (DType t : {kF16, kBF16}) {
      check_forward(whole_sequence_spec(t, 129, d, kCausal, 4, 2), kOutPartialF32, kTc);
      // Two ring steps: keys [0, 500) then [500, 1000), merged in float32, against the whole.
      KernelSpec first = whole_sequence_spec(t, 0, d, kCausal, 4, 2);
      first.qb = run_block(1000);
      first.kb = run_block(500, 0);
      KernelSpec second = first;
      second.kb = run_block(500, 500);
      const uint64_t seed = fresh_seed();
      SCOPED_TRACE("seed " + std::to_string(seed) + ": merge " + first.describe());
      KernelSpec all = first;
      all.kb = run_block(1000);
      const KernelInputs in = make_inputs(all, seed);
      const size_t half = in.k.size() / 2;  // [B=1, S, H, D]: the first 500 key rows
      KernelInputs in1 = in, in2 = in;
      in1.k.assign(in.k.begin(), in.k.begin() + half);
      in1.v.assign(in.v.begin(), in.v.begin() + half);
      in2.k.assign(in.k.begin() + half, in.k.end());
      in2.v.assign(in.v.begin() + half, in.v.end());
      const GpuForward p1 = gpu_forward(first, in1, kOutPartialF32);
      const GpuForward p2 = gpu_forward_merge(second, in2, p1.out);
      EXPECT_EQ(static_cast<int>(p2.path), static_cast<int>(kTc));
      const AttnCase c = all.attn_case();
      const FwdResult ref = reference_forward(c, in.q, in.k, in.v);
      const FwdResult naive = naive_forward(c, in.q, in.k, in.v, t);
      EXPECT_TRUE(within_2x_naive("O (merged)", p2.out.o, ref.o, naive.o, t));
      EXPECT_TRUE(within_2x_naive("LSE (merged)", p2.out.lse, ref.lse, naive.lse, t));
    }
  }
}

TEST(CudaForward, ZigzagStripedAndContiguousShardsMatchFp64) {
  RINGATTN_REQUIRE_GPU();
  const int64_t d = tc_head_dims().front();
  for (int32_t krank : {3, 1, 0}) {
    KernelSpec s = whole_sequence_spec(krank == 1 ? kF16 : kBF16, 0, d, kCausal, 4, 2);
    s.qb = shard_block(kZigzag, 1000, 4, 1);
    s.kb = shard_block(kZigzag, 1000, 4, krank);
    check_forward(s, kOutFinal, kTc);
  }
  KernelSpec s = whole_sequence_spec(kBF16, 0, d, kCausal);
  s.qb = shard_block(kStriped, 1000, 3, 2);
  s.kb = shard_block(kStriped, 1000, 3, 0);
  check_forward(s, kOutFinal, kTc);
  s.mask = make_mask_spec(true, 40, -1);
  s.qb = shard_block(kStriped, 1000, 3, 0);
  s.kb = shard_block(kStriped, 1000, 3, 1);
  check_forward(s, kOutFinal, kTc);
  s.qb = shard_block(kContiguous, 1000, 3, 0);
  s.kb = shard_block(kContiguous, 1000, 3, 2);  // every pair hidden
  check_forward(s, kOutFinal, kTc);
}

TEST(CudaForward, RowsThatSeeNoKeyGetZeroOutputAndMinusInfLse) {
  RINGATTN_REQUIRE_GPU();
  const int64_t d = tc_head_dims().front();
  KernelSpec s = whole_sequence_spec(kBF16, 0, d, kCausal);
  s.qb = run_block(200, 0);
  s.kb = run_block(150, 70);  // causal: rows 0..69 see nothing
  check_forward(s, kOutFinal, kTc);
  s.dtype = kF16;
  s.qb = packed_block({7, 0, 30});
  s.kb = join(run_block(10, 0, 1, 1), run_block(30, 0, 1, 2));
  check_forward(s, kOutFinal, kTc);
}

TEST(CudaForward, PackedBatchesWithMoreRunsThanFitInlineMatchFp64) {
  RINGATTN_REQUIRE_GPU();
  const int64_t d = tc_head_dims().back();
  KernelSpec s = whole_sequence_spec(kBF16, 0, d, kCausal, 4, 2);
  s.qb = packed_block({7, 129, 60, 1, 33, 64, 65, 2, 100, 9, 17, 3});  // 12 runs > inline 8
  s.kb = s.qb;
  check_forward(s, kOutFinal, kTc);
  s.mask = make_mask_spec(false, 16, 16);
  s.batch = 2;
  check_forward(s, kOutFinal, kTc);
}

TEST(CudaForward, GenericPathServesFloat32OtherHeadDimsAndMisalignedStrides) {
  RINGATTN_REQUIRE_GPU();
  check_forward(whole_sequence_spec(kF32, 129, 64, kCausal, 4, 2), kOutFinal, kGeneric);
  check_forward(whole_sequence_spec(kF32, 1000, 128, kFull), kOutFinal, kGeneric);
  check_forward(whole_sequence_spec(kF32, 7, 256, make_mask_spec(true, 3, -1)), kOutPartialF32,
                kGeneric);
  check_forward(whole_sequence_spec(kF16, 129, 96, kCausal, 4, 2), kOutFinal, kGeneric);
  check_forward(whole_sequence_spec(kBF16, 129, 40, kFull), kOutFinal, kGeneric);
  KernelSpec s = whole_sequence_spec(kBF16, 129, tc_head_dims().front(), kCausal, 4, 2);
  s.head_pad = 3;  // rows no longer 16-byte aligned
  check_forward(s, kOutFinal, kGeneric);
  s.head_pad = 8;  // padded but aligned: tensor cores
  s.batch = 3;
  check_forward(s, kOutFinal, kTc);
}

// Random inputs move a row's reference max on its first key tiles only (online_softmax.h). Here
// the scores rise along the keys by about 12 log2 units per 64 keys, so every warp moves its
// maxima on every tile, and the exponentials of the tiles in between reach up to 2^8.
TEST(CudaForward, ScoresRisingAlongTheKeysMoveTheReferenceMaxOnEveryTile) {
  RINGATTN_REQUIRE_GPU();
  for (int64_t d : tc_head_dims()) {
    for (DType t : {kF16, kBF16}) {
      for (const MaskSpec& m : {kFull, kCausal}) {
        for (double step : {12.0, 6.0}) {  // log2 units per 64 keys: above and below 2^8
          const KernelSpec s = whole_sequence_spec(t, 1000, d, m, 2, 1);
          const uint64_t seed = fresh_seed();
          SCOPED_TRACE("seed " + std::to_string(seed) + ": rising scores, step " +
                       std::to_string(step) + ", " + s.describe());
          KernelInputs in = make_inputs(s, seed);
          // q[., 0] = 1 and k[j, 0] = a * j: the score of key j rises by a / sqrt(d) per key.
          const double a = step * sqrt(double(d)) / (64.0 * 1.4426950408889634);
          const AttnShape sh = s.attn_case().shape;
          for (int64_t i = 0; i < sh.batch * sh.sq * sh.hq; ++i) in.q[i * sh.d] = 1.0;
          for (int64_t b = 0; b < sh.batch; ++b) {
            for (int64_t j = 0; j < sh.sk; ++j) {
              for (int64_t h = 0; h < sh.hkv; ++h) {
                const int64_t at = ((b * sh.sk + j) * sh.hkv + h) * sh.d;
                in.k[at] = round_to(a * double(j), t);  // exact in t
              }
            }
          }
          check_forward_inputs(s, in, kOutFinal, kTc);
        }
      }
    }
  }
}

TEST(CudaForward, TwoRunsAreBitwiseEqual) {
  RINGATTN_REQUIRE_GPU();
  const KernelSpec s = whole_sequence_spec(kBF16, 1000, tc_head_dims().front(), kCausal, 4, 2);
  const KernelInputs in = make_inputs(s, fresh_seed());
  const GpuForward a = gpu_forward(s, in, kOutFinal);
  const GpuForward b = gpu_forward(s, in, kOutFinal);
  ASSERT_EQ(a.out.o.size(), b.out.o.size());
  EXPECT_EQ(0, memcmp(a.out.o.data(), b.out.o.data(), a.out.o.size() * sizeof(double)));
  EXPECT_EQ(0, memcmp(a.out.lse.data(), b.out.lse.data(), a.out.lse.size() * sizeof(double)));
}

}  // namespace
}  // namespace test
}  // namespace ringattn
