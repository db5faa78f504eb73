// The host backward kernel against the float64 reference (2x-naive rule), against central finite
// differences of the float32 forward, in the ring's accumulate mode, and for determinism.
#include <gtest/gtest.h>
#include <math.h>
#include <omp.h>
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

void check_backward(const KernelSpec& s) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed) + ": " + s.describe());
  const KernelInputs in = make_inputs(s, seed);
  const BackwardOut out = run_backward(s, in);
  const AttnCase c = s.attn_case();
  const BwdResult ref = reference_backward(c, in.q, in.k, in.v, in.dout);
  const BwdResult naive = naive_backward(c, in.q, in.k, in.v, in.dout, s.dtype);
  EXPECT_TRUE(within_2x_naive("dQ", out.dq, ref.dq, naive.dq, s.dtype));
  EXPECT_TRUE(within_2x_naive("dK", out.dk, ref.dk, naive.dk, s.dtype));
  EXPECT_TRUE(within_2x_naive("dV", out.dv, ref.dv, naive.dv, s.dtype));
}

TEST(KernelBackward, WholeSequenceMatchesFp64AcrossHeadDimsLengthsAndDtypes) {
  struct Row {
    int64_t d, s;
    DType t;
    bool causal;
  };
  const Row rows[] = {{32, 1000, kF32, true}, {40, 129, kBF16, false}, {64, 7, kF16, true},
                      {96, 129, kF32, false}, {128, 1, kBF16, true},   {256, 129, kF16, true},
                      {128, 129, kF32, true}, {256, 7, kBF16, false},  {64, 1000, kBF16, true},
                      {40, 7, kF32, false},   {128, 1000, kF16, false}};
  for (const Row& r : rows)
    check_backward(whole_sequence_spec(r.t, r.s, r.d, r.causal ? kCausal : kFull, 2, 1));
}

TEST(KernelBackward, WindowsShardsAndPackedSequencesMatchFp64) {
  check_backward(whole_sequence_spec(kF32, 1000, 32, make_mask_spec(true, 100, -1)));
  check_backward(whole_sequence_spec(kBF16, 129, 64, make_mask_spec(false, 20, 10)));
  KernelSpec z = whole_sequence_spec(kF16, 0, 64, kCausal);
  z.qb = shard_block(kZigzag, 1000, 4, 1);
  z.kb = shard_block(kZigzag, 1000, 4, 3);
  check_backward(z);
  KernelSpec st = whole_sequence_spec(kF32, 0, 40, make_mask_spec(true, 60, -1));
  st.qb = shard_block(kStriped, 1000, 3, 2);
  st.kb = shard_block(kStriped, 1000, 3, 0);
  check_backward(st);
  KernelSpec pk = whole_sequence_spec(kBF16, 0, 64, kCausal, 4, 2);
  pk.qb = packed_block({7, 129, 60});
  pk.kb = pk.qb;
  pk.batch = 2;
  check_backward(pk);
}

TEST(KernelBackward, GqaRatios1248SumKeyGradientsOverTheGroup) {
  const DType types[] = {kBF16, kF32, kF16, kF32};
  const int64_t hkvs[] = {8, 4, 2, 1};
  for (int i = 0; i < 4; ++i)
    check_backward(whole_sequence_spec(types[i], 129, 64, kCausal, 8, hkvs[i]));
}

TEST(KernelBackward, RowsAndKeysThatSeeNothingGetZeroGradients) {
  KernelSpec s = whole_sequence_spec(kF32, 0, 32, kCausal);
  s.qb = run_block(100, 0);
  s.kb = run_block(100, 50);  // rows 0..49 see nothing; keys 100..149 are seen by nobody
  check_backward(s);
  const BackwardOut out = run_backward(s, make_inputs(s, fresh_seed()));
  for (size_t i = 0; i < static_cast<size_t>(50 * 2 * 32); ++i) ASSERT_EQ(out.dq[i], 0.0);
  for (size_t i = static_cast<size_t>(50 * 32); i < out.dk.size(); ++i) {
    ASSERT_EQ(out.dk[i], 0.0);
    ASSERT_EQ(out.dv[i], 0.0);
  }
}

TEST(KernelBackward, EmptyQueryOrKeyBlockWritesZeroGradients) {
  KernelSpec s = whole_sequence_spec(kF16, 0, 64, kFull);
  s.qb = run_block(0);
  s.kb = run_block(70);  // dK = dV = 0, written over the poison
  check_backward(s);
  s.qb = run_block(70);
  s.kb = run_block(0);  // dQ = 0
  check_backward(s);
}

TEST(KernelBackward, HonoursNonDenseStridesAndBatches) {
  KernelSpec s = whole_sequence_spec(kF16, 129, 64, kCausal, 4, 2);
  s.batch = 3;
  s.head_pad = 8;
  check_backward(s);
}

// L = sum(O * G): its gradient is the backward with dO = G. Central differences of the float32
// forward at a tiny size; step 1e-2 keeps float32 rounding of L (~1e-6 / 2e-2) and the O(h^2)
// truncation both near 1e-4, so 2e-3 separates a right gradient from a wrong one (missing scale,
// wrong mask or head: errors of order 0.1).
TEST(KernelBackward, MatchesCentralFiniteDifferencesOfTheForward) {
  KernelSpec s = whole_sequence_spec(kF32, 0, 32, make_mask_spec(true, 3, -1), 2, 1);
  s.qb = run_block(6, 2);
  s.kb = run_block(8, 0);
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  KernelInputs in = make_inputs(s, seed);
  const BackwardOut g = run_backward(s, in);
  auto loss = [&](const KernelInputs& x) {
    const ForwardOut o = run_forward(s, x, kOutFinal);
    double l = 0;
    for (size_t i = 0; i < o.o.size(); ++i) l += o.o[i] * x.dout[i];
    return l;
  };
  const double h = 1e-2;
  double worst = 0;
  auto probe = [&](std::vector<double>* x, const std::vector<double>& grad, const char* name) {
    for (size_t i = 0; i < x->size(); ++i) {
      const double keep = (*x)[i];
      (*x)[i] = keep + h;
      const double up = loss(in);
      (*x)[i] = keep - h;
      const double down = loss(in);
      (*x)[i] = keep;
      const double fd = (up - down) / (2 * h);
      worst = std::max(worst, fabs(fd - grad[i]));
      ASSERT_NEAR(grad[i], fd, 2e-3) << name << "[" << i << "]";
    }
  };
  probe(&in.q, g.dq, "dQ");
  probe(&in.k, g.dk, "dK");
  probe(&in.v, g.dv, "dV");
  RecordProperty("worst_fd_error", std::to_string(worst));
}

// The ring's accumulate mode: contributions of two key halves (into dQ) and of two query halves
// (into dK, dV) added into float32 accumulators equal the whole.
TEST(KernelBackward, AccumulateModeAddsContributionsOfBlocks) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const int64_t S = 200, half = 90, H = 2, D = 64;
  const KernelSpec s = whole_sequence_spec(kBF16, S, D, kCausal, H, 1);
  const KernelInputs in = make_inputs(s, seed);
  HostTensor q(kBF16, 1, S, H, D), k(kBF16, 1, S, 1, D), v(kBF16, 1, S, 1, D);
  HostTensor dout(kBF16, 1, S, H, D), o(kBF16, 1, S, H, D);
  q.fill(in.q);
  k.fill(in.k);
  v.fill(in.v);
  dout.fill(in.dout);
  HostRowStat lse(1, H, S), delta(1, H, S);
  const PosBlock all = run_block(S);
  FwdParams f{};
  f.batch = 1;
  f.sq = f.sk = S;
  f.hq = H;
  f.hkv = 1;
  f.d = D;
  f.q = q.ref();
  f.k = k.ref();
  f.v = v.ref();
  f.scale = static_cast<float>(1.0 / sqrt(D));
  f.mask = s.mask;
  f.q_pos = f.k_pos = all.map();
  f.o = o.ref();
  f.lse = lse.ref();
  f.out_mode = kOutFinal;
  cpu::attention_forward(f);
  cpu::compute_delta(1, S, H, D, dout.ref(), o.ref(), delta.ref());

  // Accumulators start from a known nonzero value (1.0) that must be kept.
  HostTensor dq(kF32, 1, S, H, D), dk(kF32, 1, S, 1, D), dv(kF32, 1, S, 1, D);
  dq.fill(std::vector<double>(static_cast<size_t>(S * H * D), 1.0));
  dk.fill(std::vector<double>(static_cast<size_t>(S * D), 1.0));
  dv.fill(std::vector<double>(static_cast<size_t>(S * D), 1.0));
  auto sub = [](TensorRef t, int64_t row0) {
    t.data = static_cast<char*>(t.data) + row0 * t.stride_s * (t.dtype == kF32 ? 4 : 2);
    return t;
  };
  auto sub_stat = [](RowStatRef r, int64_t row0) {
    r.data += row0;
    return r;
  };
  const PosBlock lo = run_block(half, 0), hi = run_block(S - half, half);
  for (int qi = 0; qi < 2; ++qi) {
    for (int ki = 0; ki < 2; ++ki) {
      const int64_t q0 = qi ? half : 0, k0 = ki ? half : 0;
      const int64_t nq = qi ? S - half : half, nk = ki ? S - half : half;
      BwdParams p{};
      p.batch = 1;
      p.sq = nq;
      p.sk = nk;
      p.hq = H;
      p.hkv = 1;
      p.d = D;
      p.q = sub(q.ref(), q0);
      p.k = sub(k.ref(), k0);
      p.v = sub(v.ref(), k0);
      p.scale = f.scale;
      p.mask = s.mask;
      p.q_pos = (qi ? hi : lo).map();
      p.k_pos = (ki ? hi : lo).map();
      p.dout = sub(dout.ref(), q0);
      p.lse = sub_stat(lse.ref(), q0);
      p.delta = sub_stat(delta.ref(), q0);
      p.dq = sub(dq.ref(), q0);
      p.dk = sub(dk.ref(), k0);
      p.dv = sub(dv.ref(), k0);
      p.accumulate = true;
      cpu::attention_backward(p);
    }
  }
  const AttnCase c = s.attn_case();
  BwdResult ref = reference_backward(c, in.q, in.k, in.v, in.dout);
  BwdResult naive = naive_backward(c, in.q, in.k, in.v, in.dout, kBF16);
  for (auto* t : {&ref.dq, &ref.dk, &ref.dv, &naive.dq, &naive.dk, &naive.dv})
    for (double& x : *t) x += 1.0;
  EXPECT_TRUE(within_2x_naive("dQ accumulated", dq.values(), ref.dq, naive.dq, kBF16));
  EXPECT_TRUE(within_2x_naive("dK accumulated", dk.values(), ref.dk, naive.dk, kBF16));
  EXPECT_TRUE(within_2x_naive("dV accumulated", dv.values(), ref.dv, naive.dv, kBF16));
}

TEST(KernelBackward, AnyThreadCountMatchesFp64) {
  // dQ is reduced over per-thread buffers: 1 and 3 threads take other paths than the default.
  const int saved = omp_get_max_threads();
  for (int threads : {1, 3}) {
    SCOPED_TRACE("threads " + std::to_string(threads));
    omp_set_num_threads(threads);
    check_backward(whole_sequence_spec(kF32, 300, 64, kCausal, 4, 2));
  }
  omp_set_num_threads(saved);
}

TEST(KernelBackward, TwoRunsAreBitwiseEqual) {
  const KernelSpec s = whole_sequence_spec(kF32, 1000, 64, kCausal, 4, 2);
  const KernelInputs in = make_inputs(s, fresh_seed());
  const BackwardOut a = run_backward(s, in);
  const BackwardOut b = run_backward(s, in);
  EXPECT_EQ(0, memcmp(a.dq.data(), b.dq.data(), a.dq.size() * sizeof(double)));
  EXPECT_EQ(0, memcmp(a.dk.data(), b.dk.data(), a.dk.size() * sizeof(double)));
  EXPECT_EQ(0, memcmp(a.dv.data(), b.dv.data(), a.dv.size() * sizeof(double)));
}

}  // namespace
}  // namespace test
}  // namespace ringattn
