// The host forward kernel against the float64 reference, under the 2x-naive rule.
#include <gtest/gtest.h>
#include <math.h>
#include <string.h>

#include "attention_cpu.h"
#include "kernel_runs.h"
#include "pos_blocks.h"
#include "reference.h"

namespace ringattn {
namespace test {
namespace {

const MaskSpec kFull = make_mask_spec(false, -1, -1);
const MaskSpec kCausal = make_mask_spec(true, -1, -1);

// Runs the forward (kOutFinal) on fresh random inputs and checks O and LSE.
void check_forward(const KernelSpec& s, OutMode mode = kOutFinal) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed) + ": " + s.describe());
  const KernelInputs in = make_inputs(s, seed);
  const ForwardOut out = run_forward(s, in, mode);
  const AttnCase c = s.attn_case();
  const FwdResult ref = reference_forward(c, in.q, in.k, in.v);
  const FwdResult naive = naive_forward(c, in.q, in.k, in.v, s.dtype);
  EXPECT_TRUE(within_2x_naive("O", out.o, ref.o, naive.o, s.dtype));
  EXPECT_TRUE(within_2x_naive("LSE", out.lse, ref.lse, naive.lse, s.dtype));
  // Rows that see no key: exactly O = 0 and LSE = -inf.
  EXPECT_TRUE(unseen_rows_are_zero(c.shape, out.o, ref.lse));
}

TEST(KernelForward, WholeSequenceMatchesFp64AcrossHeadDimsLengthsAndDtypes) {
  // Head dims x lengths x dtypes x masks, covered pairwise rather than as a full product.
  struct Row {
    int64_t d, s;
    DType t;
    bool causal;
  };
  const Row rows[] = {{32, 1000, kF32, false}, {40, 129, kBF16, true},  {64, 7, kF16, false},
                      {96, 129, kF32, true},   {128, 1, kBF16, false},  {256, 129, kF16, true},
                      {128, 1000, kF16, true}, {256, 7, kBF16, false},  {64, 1000, kBF16, false},
                      {40, 1000, kF32, true},  {96, 7, kF16, true},     {32, 129, kBF16, false},
                      {256, 1, kF32, true},    {128, 129, kF32, false}, {64, 1, kF16, true}};
  for (const Row& r : rows)
    check_forward(whole_sequence_spec(r.t, r.s, r.d, r.causal ? kCausal : kFull));
}

TEST(KernelForward, SlidingWindowsCausalAndBidirectionalMatchFp64) {
  check_forward(whole_sequence_spec(kF32, 1000, 64, make_mask_spec(true, 100, -1)));
  check_forward(whole_sequence_spec(kBF16, 129, 128, make_mask_spec(false, 20, 10)));
  check_forward(whole_sequence_spec(kF16, 1000, 32, make_mask_spec(false, -1, 30)));
  check_forward(
      whole_sequence_spec(kF32, 129, 40, make_mask_spec(true, 0, -1)));  // only the diagonal
}

TEST(KernelForward, QueryBlockWithPositionOffsetAgainstEarlierKeys) {
  KernelSpec s = whole_sequence_spec(kF32, 0, 64, kCausal);
  s.qb = run_block(129, 500);  // a later shard of the sequence
  s.kb = run_block(1000, 0);
  check_forward(s);
  s.dtype = kBF16;
  s.mask = make_mask_spec(true, 64, -1);
  check_forward(s);
}

TEST(KernelForward, ZigzagShardsCausalMatchFp64) {
  // One ring step: rank 1's queries against rank 3's keys, and against its own keys.
  for (int32_t krank : {3, 1, 0}) {
    KernelSpec s = whole_sequence_spec(krank == 3   ? kF32
                                       : krank == 1 ? kF16
                                                    : kBF16,
                                       0, 64, kCausal);
    s.qb = shard_block(kZigzag, 1000, 4, 1);
    s.kb = shard_block(kZigzag, 1000, 4, krank);
    check_forward(s);
  }
}

TEST(KernelForward, StripedShardsCausalAndWindowedMatchFp64) {
  KernelSpec s = whole_sequence_spec(kF32, 0, 96, kCausal);
  s.qb = shard_block(kStriped, 1000, 3, 2);
  s.kb = shard_block(kStriped, 1000, 3, 0);
  check_forward(s);
  s.dtype = kBF16;
  s.mask = make_mask_spec(true, 40, -1);
  s.qb = shard_block(kStriped, 1000, 3, 0);
  s.kb = shard_block(kStriped, 1000, 3, 1);
  check_forward(s);
}

TEST(KernelForward, ContiguousShardsFullyVisibleAndFullyHidden) {
  KernelSpec s = whole_sequence_spec(kF16, 0, 128, kCausal);
  s.qb = shard_block(kContiguous, 1000, 3, 2);
  s.kb = shard_block(kContiguous, 1000, 3, 0);  // every pair visible
  check_forward(s);
  s.qb = shard_block(kContiguous, 1000, 3, 0);
  s.kb = shard_block(kContiguous, 1000, 3, 2);  // every pair hidden: O = 0, LSE = -inf
  check_forward(s);
}

TEST(KernelForward, GqaRatios1248MatchFp64) {
  const DType types[] = {kF32, kBF16, kF16, kF32};
  const int64_t hkvs[] = {8, 4, 2, 1};
  for (int i = 0; i < 4; ++i)
    check_forward(whole_sequence_spec(types[i], 129, 64, kCausal, 8, hkvs[i]));
}

TEST(KernelForward, RowsThatSeeNoKeyGetZeroOutputAndMinusInfLse) {
  KernelSpec s = whole_sequence_spec(kF32, 0, 32, kCausal);
  s.qb = run_block(100, 0);
  s.kb = run_block(100, 50);  // causal: rows 0..49 see nothing
  check_forward(s);
  s.dtype = kBF16;
  s.qb = packed_block({7, 0, 30});  // keys only of sequence 1 and 2: sequence 0 sees nothing
  s.kb = join(run_block(10, 0, 1, 1), run_block(30, 0, 1, 2));
  check_forward(s);
}

TEST(KernelForward, PackedMultiSequenceBlocksMatchFp64) {
  KernelSpec s = whole_sequence_spec(kF32, 0, 64, kCausal, 4, 2);
  s.qb = packed_block({7, 129, 60});
  s.kb = s.qb;
  check_forward(s);
  s.dtype = kF16;
  s.mask = kFull;
  check_forward(s);
  s.dtype = kBF16;
  s.mask = make_mask_spec(false, 16, 16);
  s.batch = 2;
  check_forward(s);
}

TEST(KernelForward, PartialF32OutputMatchesFp64AndEqualsFinalForF32) {
  check_forward(whole_sequence_spec(kBF16, 129, 64, kCausal), kOutPartialF32);
  check_forward(whole_sequence_spec(kF16, 7, 40, kFull), kOutPartialF32);
  const KernelSpec s = whole_sequence_spec(kF32, 129, 64, kCausal);
  const KernelInputs in = make_inputs(s, fresh_seed());
  const ForwardOut a = run_forward(s, in, kOutFinal);
  const ForwardOut b = run_forward(s, in, kOutPartialF32);
  EXPECT_EQ(a.o, b.o);
  EXPECT_EQ(a.lse, b.lse);
}

TEST(KernelForward, HonoursNonDenseStridesAndBatches) {
  KernelSpec s = whole_sequence_spec(kBF16, 129, 64, kCausal, 4, 2);
  s.batch = 3;
  s.head_pad = 8;
  check_forward(s);
  s.dtype = kF32;
  check_forward(s);
}

TEST(KernelForward, EmptyKeyBlockGivesEmptyRowsAndLeavesAMergeTargetUnchanged) {
  KernelSpec s = whole_sequence_spec(kBF16, 0, 32, kFull);
  s.qb = run_block(9);  // no key rows at all
  check_forward(s);
  KernelSpec full = s;
  full.kb = run_block(20);
  const KernelInputs in = make_inputs(full, fresh_seed());
  const ForwardOut prior = run_forward(full, in, kOutPartialF32);
  const ForwardOut merged = run_forward_merge(s, in, prior);
  EXPECT_EQ(merged.o, prior.o);
  EXPECT_EQ(merged.lse, prior.lse);
}

TEST(KernelForward, TwoRunsAreBitwiseEqual) {
  for (DType t : {kF32, kBF16}) {
    const KernelSpec s = whole_sequence_spec(t, 1000, 64, kCausal, 4, 2);
    const KernelInputs in = make_inputs(s, fresh_seed());
    const ForwardOut a = run_forward(s, in, kOutFinal);
    const ForwardOut b = run_forward(s, in, kOutFinal);
    ASSERT_EQ(a.o.size(), b.o.size());
    EXPECT_EQ(0, memcmp(a.o.data(), b.o.data(), a.o.size() * sizeof(double)));
    EXPECT_EQ(0, memcmp(a.lse.data(), b.lse.data(), a.lse.size() * sizeof(double)));
  }
}

}  // namespace
}  // namespace test
}  // namespace ringattn

namespace ringattn {
namespace test {
namespace {

// The ring's query chunks of one step share the key side packed once (FwdParams::key_pack,
// cpu::pack_forward_keys): calls that read the pack give bitwise the results of calls that pack
// for themselves, and they really read it.
TEST(KernelForward, ChunkCallsReadingTheKeyPackAreBitwiseThoseThatPackThemselves) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const int64_t S = 301, H = 4, HKV = 2, D = 64, half = 150;
  for (DType t : {kF32, kBF16}) {
    for (bool causal : {false, true}) {
      SCOPED_TRACE(std::string(dtype_name(t)) + (causal ? " causal" : " full"));
      const KernelSpec s = whole_sequence_spec(t, S, D, make_mask_spec(causal, -1, -1), H, HKV);
      const KernelInputs in = make_inputs(s, seed);
      HostTensor q(t, 1, S, H, D), k(t, 1, S, HKV, D), v(t, 1, S, HKV, D);
      q.fill(in.q);
      k.fill(in.k);
      v.fill(in.v);
      const PosBlock all = run_block(S), lo = run_block(half), hi = run_block(S - half, half);
      auto rows_of = [](TensorRef r, int64_t row0) {
        r.data = static_cast<char*>(r.data) + row0 * r.stride_s * (r.dtype == kF32 ? 4 : 2);
        return r;
      };
      // mode 0: each call packs; 1: the calls read one pack; 2: a garbage pack.
      std::vector<double> o[3], lse[3];
      for (int mode = 0; mode < 3; ++mode) {
        HostTensor out(kF32, 1, S, H, D);
        HostRowStat l(1, H, S);
        FwdParams p{};
        p.batch = 1;
        p.sq = p.sk = S;
        p.hq = H;
        p.hkv = HKV;
        p.d = D;
        p.q = q.ref();
        p.k = k.ref();
        p.v = v.ref();
        p.scale = static_cast<float>(1.0 / sqrt(static_cast<double>(D)));
        p.mask = s.mask;
        p.k_pos = all.map();
        p.out_mode = kOutPartialF32;
        std::vector<float> pack(cpu::forward_key_pack_bytes(p) / sizeof(float) + 16, 0.0f);
        if (mode == 1) cpu::pack_forward_keys(p, pack.data());
        if (mode > 0) p.key_pack = pack.data();
        for (int c = 0; c < 2; ++c) {
          FwdParams call = p;
          const int64_t row0 = c == 0 ? 0 : half;
          call.sq = c == 0 ? half : S - half;
          call.q = rows_of(q.ref(), row0);
          call.o = rows_of(out.ref(), row0);
          call.lse = l.ref();
          call.lse.data += row0;
          call.q_pos = (c == 0 ? lo : hi).map();
          cpu::attention_forward(call);
        }
        o[mode] = out.values();
        lse[mode] = l.values();
      }
      EXPECT_TRUE(o[0] == o[1] && lse[0] == lse[1]) << "the pack changed the results";
      EXPECT_FALSE(o[0] == o[2]) << "a zero pack gave the same results: the calls do not read it";
    }
  }
}

}  // namespace
}  // namespace test
}  // namespace ringattn
