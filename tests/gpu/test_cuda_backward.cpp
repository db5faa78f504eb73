// The CUDA backward kernels against the float64 reference (2x-naive rule) for every tensor-core
// instantiation, the float32 accumulate mode of ring steps, GQA group sums, masks, and bitwise
// determinism across runs.
#include <gtest/gtest.h>
#include <math.h>

#include "gpu_runs.h"
#include "pos_blocks.h"
#include "reference.h"

namespace ringattn {
namespace test {
namespace {

const MaskSpec kFull = make_mask_spec(false, -1, -1);
const MaskSpec kCausal = make_mask_spec(true, -1, -1);
const cuda::Path kTc = cuda::Path::kTensorCore;
const cuda::Path kGeneric = cuda::Path::kGeneric;

void check_backward(const KernelSpec& s, cuda::Path expect) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed) + ": " + s.describe());
  const KernelInputs in = make_inputs(s, seed);
  const GpuBackward g = gpu_backward(s, in);
  EXPECT_EQ(static_cast<int>(g.path), static_cast<int>(expect)) << "unexpected kernel family";
  const AttnCase c = s.attn_case();
  const BwdResult ref = reference_backward(c, in.q, in.k, in.v, in.dout);
  const BwdResult naive = naive_backward(c, in.q, in.k, in.v, in.dout, s.dtype);
  EXPECT_TRUE(within_2x_naive("dQ", g.out.dq, ref.dq, naive.dq, s.dtype));
  EXPECT_TRUE(within_2x_naive("dK", g.out.dk, ref.dk, naive.dk, s.dtype));
  EXPECT_TRUE(within_2x_naive("dV", g.out.dv, ref.dv, naive.dv, s.dtype));
}

std::vector<int64_t> tc_head_dims() {
  std::vector<int64_t> dims;
  for (int i = 0; i < cuda::num_tensor_core_head_dims(); ++i) {
    dims.push_back(cuda::tensor_core_head_dim(i));
  }
  return dims;
}

TEST(CudaBackward, EveryInstantiationMatchesFp64AtLengths1To1000) {
  RINGATTN_REQUIRE_GPU();
  for (int64_t d : tc_head_dims()) {
    for (DType t : {kF16, kBF16}) {
      check_backward(whole_sequence_spec(t, 1, d, kFull), kTc);
      check_backward(whole_sequence_spec(t, 7, d, kCausal, 4, 2), kTc);
      check_backward(whole_sequence_spec(t, 129, d, kFull, 4, 1), kTc);
      check_backward(whole_sequence_spec(t, 1000, d, kCausal, 4, 2), kTc);
      check_backward(whole_sequence_spec(t, 1000, d, make_mask_spec(false, 100, 37)), kTc);
    }
  }
}

TEST(CudaBackward, Length4097CausalMatchesFp64) {
  RINGATTN_REQUIRE_GPU();
  check_backward(whole_sequence_spec(kBF16, 4097, tc_head_dims().front(), kCausal, 1, 1), kTc);
}

TEST(CudaBackward, ShardedBlocksAndRowsThatSeeNoKeyMatchFp64) {
  RINGATTN_REQUIRE_GPU();
  const int64_t d = tc_head_dims().front();
  KernelSpec s = whole_sequence_spec(kBF16, 0, d, kCausal, 4, 2);
  s.qb = shard_block(kZigzag, 1000, 4, 1);
  s.kb = shard_block(kZigzag, 1000, 4, 3);
  check_backward(s, kTc);
  s.dtype = kF16;
  s.qb = run_block(200, 0);
  s.kb = run_block(150, 70);  // rows 0..69 see nothing; keys past 199 get no gradient
  check_backward(s, kTc);
  s.qb = packed_block({7, 129, 60, 1, 33, 64, 65, 2, 100, 9});  // more runs than fit inline
  s.kb = s.qb;
  check_backward(s, kTc);
}

TEST(CudaBackward, AccumulateModeAddsIntoFloat32Gradients) {
  RINGATTN_REQUIRE_GPU();
  for (int64_t d : tc_head_dims()) {
    const KernelSpec s = whole_sequence_spec(kBF16, 129, d, kCausal, 4, 2);
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed) + ": " + s.describe());
    const KernelInputs in = make_inputs(s, seed);
    const AttnCase c = s.attn_case();
    BackwardOut init;
    init.dq = random_values(in.q.size(), seed + 10, kF32);
    init.dk = random_values(in.k.size(), seed + 11, kF32);
    init.dv = random_values(in.v.size(), seed + 12, kF32);
    const GpuBackward g = gpu_backward_accumulate(s, in, init);
    EXPECT_EQ(static_cast<int>(g.path), static_cast<int>(kTc));
    BwdResult ref = reference_backward(c, in.q, in.k, in.v, in.dout);
    BwdResult naive = naive_backward(c, in.q, in.k, in.v, in.dout, kBF16);
    for (size_t i = 0; i < ref.dq.size(); ++i) {
      ref.dq[i] += init.dq[i];
      naive.dq[i] += init.dq[i];
    }
    for (size_t i = 0; i < ref.dk.size(); ++i) {
      ref.dk[i] += init.dk[i];
      naive.dk[i] += init.dk[i];
      ref.dv[i] += init.dv[i];
      naive.dv[i] += init.dv[i];
    }
    EXPECT_TRUE(within_2x_naive("dQ (accumulated)", g.out.dq, ref.dq, naive.dq, kBF16));
    EXPECT_TRUE(within_2x_naive("dK (accumulated)", g.out.dk, ref.dk, naive.dk, kBF16));
    EXPECT_TRUE(within_2x_naive("dV (accumulated)", g.out.dv, ref.dv, naive.dv, kBF16));
  }
}

TEST(CudaBackward, GenericPathServesFloat32AndOtherHeadDims) {
  RINGATTN_REQUIRE_GPU();
  check_backward(whole_sequence_spec(kF32, 129, 64, kCausal, 4, 2), kGeneric);
  check_backward(whole_sequence_spec(kF32, 300, 128, make_mask_spec(false, 30, 30)), kGeneric);
  check_backward(whole_sequence_spec(kF16, 129, 96, kCausal, 4, 2), kGeneric);
  KernelSpec s = whole_sequence_spec(kBF16, 129, tc_head_dims().front(), kFull, 4, 2);
  s.head_pad = 3;
  check_backward(s, kGeneric);
}

TEST(CudaBackward, TwoRunsAreBitwiseEqual) {
  RINGATTN_REQUIRE_GPU();
  for (int64_t d : tc_head_dims()) {
    const KernelSpec s = whole_sequence_spec(kBF16, 1000, d, kCausal, 8, 2);
    const KernelInputs in = make_inputs(s, fresh_seed());
    EXPECT_EQ(gpu_backward_bytes(s, in), gpu_backward_bytes(s, in)) << "D=" << d;
  }
}

}  // namespace
}  // namespace test
}  // namespace ringattn
