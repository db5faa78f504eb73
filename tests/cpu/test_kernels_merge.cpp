// Merging partial results (merge_partial and the forward's kOutMergeF32 mode), Delta, and dtype
// conversion of the host kernels.
#include <gtest/gtest.h>
#include <math.h>

#include <cmath>
#include <cstring>

#include "attention_cpu.h"
#include "kernel_runs.h"
#include "pos_blocks.h"
#include "reference.h"

namespace ringattn {
namespace test {
namespace {

// Rows [r0, r1) of a dense [B, S, H, D] tensor.
std::vector<double> slice_rows(const std::vector<double>& x, int64_t b, int64_t s, int64_t h,
                               int64_t d, int64_t r0, int64_t r1) {
  std::vector<double> out;
  for (int64_t bi = 0; bi < b; ++bi)
    for (int64_t i = r0; i < r1; ++i)
      for (int64_t e = 0; e < h * d; ++e)
        out.push_back(x[static_cast<size_t>((bi * s + i) * h * d + e)]);
  return out;
}

// The spec and inputs of the key rows [r0, r1) of `s`.
KernelSpec key_part(const KernelSpec& s, int64_t r0, int64_t r1) {
  KernelSpec p = s;
  p.kb.runs.clear();
  const RowPositions all = s.kb.positions();
  for (int64_t i = r0; i < r1; ++i)  // one run per row keeps any block shape
    p.kb.runs.push_back(PosRun{all.seq[i], all.pos[i], 1, 1});
  return p;
}
KernelInputs key_part_inputs(const KernelSpec& s, const KernelInputs& in, int64_t r0, int64_t r1) {
  KernelInputs p = in;
  p.k = slice_rows(in.k, s.batch, s.kb.rows(), s.hkv, s.d, r0, r1);
  p.v = slice_rows(in.v, s.batch, s.kb.rows(), s.hkv, s.d, r0, r1);
  return p;
}

ForwardOut merge_with_kernel(const KernelSpec& s, const ForwardOut& a, const ForwardOut& b) {
  const int64_t sq = s.qb.rows();
  HostTensor o1(kF32, s.batch, sq, s.hq, s.d), o2(kF32, s.batch, sq, s.hq, s.d);
  HostRowStat l1(s.batch, s.hq, sq), l2(s.batch, s.hq, sq);
  o1.fill(a.o);
  l1.fill(a.lse);
  o2.fill(b.o);
  l2.fill(b.lse);
  cpu::merge_partial(s.batch, sq, s.hq, s.d, o1.ref(), l1.ref(), o2.ref(), l2.ref());
  return ForwardOut{o1.values(), l1.values()};
}

// Splits the key block of `s` at `split`, computes both halves as partial results, merges them
// in both orders and with kOutMergeF32, and checks each against the whole.
void check_split(const KernelSpec& s, int64_t split) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed) + " split " + std::to_string(split) + ": " +
               s.describe());
  const KernelInputs in = make_inputs(s, seed);
  const int64_t sk = s.kb.rows();
  const KernelSpec s1 = key_part(s, 0, split), s2 = key_part(s, split, sk);
  const KernelInputs in1 = key_part_inputs(s, in, 0, split),
                     in2 = key_part_inputs(s, in, split, sk);
  const ForwardOut p1 = run_forward(s1, in1, kOutPartialF32);
  const ForwardOut p2 = run_forward(s2, in2, kOutPartialF32);

  const AttnCase c = s.attn_case();
  const FwdResult ref = reference_forward(c, in.q, in.k, in.v);
  const FwdResult naive = naive_forward(c, in.q, in.k, in.v, s.dtype);
  const ForwardOut m12 = merge_with_kernel(s, p1, p2);
  const ForwardOut m21 = merge_with_kernel(s, p2, p1);
  const ForwardOut fused = run_forward_merge(s2, in2, p1);
  for (const ForwardOut* m : {&m12, &m21, &fused}) {
    EXPECT_TRUE(within_2x_naive("merged O", m->o, ref.o, naive.o, s.dtype));
    EXPECT_TRUE(within_2x_naive("merged LSE", m->lse, ref.lse, naive.lse, s.dtype));
  }
}

KernelSpec causal_whole(DType t, int64_t len, int64_t d) {
  KernelSpec s;
  s.dtype = t;
  s.d = d;
  s.hq = 4;
  s.hkv = 2;
  s.qb = run_block(len);
  s.kb = run_block(len);
  s.mask = make_mask_spec(true, -1, -1);
  return s;
}

TEST(KernelMerge, TwoKeyHalvesMergedInEitherOrderEqualTheWhole) {
  check_split(causal_whole(kF32, 129, 64), 64);
  check_split(causal_whole(kBF16, 129, 32), 37);
  check_split(causal_whole(kF16, 1000, 40), 500);
  KernelSpec s = causal_whole(kF32, 0, 64);
  s.qb = shard_block(kZigzag, 1000, 3, 1);
  s.kb = shard_block(kZigzag, 1000, 3, 2);
  s.mask = make_mask_spec(true, 100, -1);
  check_split(s, 100);
}

TEST(KernelMerge, HalvesThatAreEntirelyMaskedContributeNothing) {
  // Causal, queries 0..99: the second key half (positions 100..199) is hidden from every row.
  KernelSpec s = causal_whole(kF32, 0, 64);
  s.qb = run_block(100);
  s.kb = run_block(200);
  check_split(s, 100);
  // Queries 0..99 against keys 50..249: rows 0..49 see neither half (O = 0, LSE = -inf stay).
  s.dtype = kBF16;
  s.kb = run_block(200, 50);
  check_split(s, 60);
}

TEST(KernelMerge, MergeOfTwoEmptyRowsStaysEmptyAndNeverNaN) {
  KernelSpec s = causal_whole(kF32, 0, 32);
  s.qb = run_block(10);
  s.kb = run_block(20, 100);  // all hidden
  const KernelInputs in = make_inputs(s, fresh_seed());
  const ForwardOut a = run_forward(s, in, kOutPartialF32);
  const ForwardOut m = merge_with_kernel(s, a, a);
  for (double x : m.lse) EXPECT_EQ(x, -INFINITY);
  for (double x : m.o) EXPECT_EQ(x, 0.0);
  const ForwardOut f = run_forward_merge(s, in, a);
  for (double x : f.lse) EXPECT_EQ(x, -INFINITY);
  for (double x : f.o) EXPECT_EQ(x, 0.0);
}

TEST(KernelDelta, RowSumOfDoutTimesOutMatchesFp64) {
  for (DType t : {kF32, kF16, kBF16}) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE(std::string(dtype_name(t)) + " seed " + std::to_string(seed));
    const int64_t b = 2, s = 37, h = 3, d = 96;
    const auto dout = random_values(static_cast<size_t>(b * s * h * d), seed, t);
    const auto o = random_values(static_cast<size_t>(b * s * h * d), seed + 1, t);
    HostTensor td(t, b, s, h, d, 8), to(t, b, s, h, d, 8);
    td.fill(dout);
    to.fill(o);
    HostRowStat delta(b, h, s);
    delta.poison();
    cpu::compute_delta(b, s, h, d, td.ref(), to.ref(), delta.ref());
    const std::vector<double> got = delta.values();
    for (int64_t bi = 0; bi < b; ++bi)
      for (int64_t hi = 0; hi < h; ++hi)
        for (int64_t si = 0; si < s; ++si) {
          double want = 0;
          for (int64_t x = 0; x < d; ++x) {
            const size_t e = static_cast<size_t>(((bi * s + si) * h + hi) * d + x);
            want += dout[e] * o[e];
          }
          // float32 accumulation of d products of magnitude <= 1.
          ASSERT_NEAR(got[static_cast<size_t>((bi * h + hi) * s + si)], want, 1e-5);
        }
  }
}

TEST(KernelConvert, CastsRoundToNearestEvenAndZeroFills) {
  const int64_t b = 1, s = 5, h = 2, d = 40;
  const size_t n = static_cast<size_t>(b * s * h * d);
  // Magnitudes 2^-27 .. 2^17: f16 subnormals, normals and overflow to infinity, bf16 normals.
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::vector<double> x = random_values(n, seed, kF32, -27.0, 17.0);
  const std::vector<double> sign = random_values(n, seed + 1, kF32, -1.0, 1.0);
  for (size_t i = 0; i < n; ++i) x[i] = round_to(copysign(exp2(x[i]), sign[i]), kF32);
  HostTensor src(kF32, b, s, h, d, 8);
  src.fill(x);
  for (DType t : {kF16, kBF16, kF32}) {
    SCOPED_TRACE(dtype_name(t));
    HostTensor dst(t, b, s, h, d, 4);
    dst.poison();
    cpu::convert(b, s, h, d, src.ref(), dst.ref());
    const std::vector<double> got = dst.values();
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(got[i], round_to(x[i], t)) << "element " << i;
    // And back to float32, exactly.
    HostTensor back(kF32, b, s, h, d);
    back.poison();
    cpu::convert(b, s, h, d, dst.ref(), back.ref());
    EXPECT_EQ(back.values(), got);
    // src == nullptr zero-fills.
    TensorRef none = src.ref();
    none.data = nullptr;
    cpu::convert(b, s, h, d, none, dst.ref());
    for (double v : dst.values()) ASSERT_EQ(v, 0.0);
  }
  // Ties go to even: 1 + 2^-8 (between bf16 1 and 1 + 2^-7) -> 1; 1 + 3 * 2^-8 -> 1 + 2^-6.
  HostTensor tie(kF32, 1, 1, 1, 8);
  tie.fill({1.0 + ldexp(1.0, -8), 1.0 + 3 * ldexp(1.0, -8), 1.0 + ldexp(1.0, -11),
            1.0 + 3 * ldexp(1.0, -11), -1.0, 0.0, 65504.0, 1e-8});
  HostTensor tb(kBF16, 1, 1, 1, 8), th(kF16, 1, 1, 1, 8);
  cpu::convert(1, 1, 1, 8, tie.ref(), tb.ref());
  cpu::convert(1, 1, 1, 8, tie.ref(), th.ref());
  EXPECT_EQ(tb.values()[0], 1.0);
  EXPECT_EQ(tb.values()[1], 1.0 + ldexp(1.0, -6));
  EXPECT_EQ(th.values()[2], 1.0);
  EXPECT_EQ(th.values()[3], 1.0 + ldexp(1.0, -9));
  EXPECT_EQ(th.values()[6], 65504.0);
}

TEST(KernelConvert, Bf16RoundingOfEveryKindOfFloatMatchesTheReference) {
  // Raw float32 bit patterns (subnormals, ties, values rounding up to infinity, infinities, NaN)
  // in rows of 37 elements, so that both whole vectors and the scalar tail are exercised.
  const int64_t s = 64, d = 37;
  const size_t n = static_cast<size_t>(s * d);
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  uint64_t state = seed * 0x9e3779b97f4a7c15ull + 1;
  std::vector<uint32_t> bits(n);
  const uint32_t special[] = {0x00000000u, 0x80000000u, 0x00000001u, 0x807fffffu, 0x3f808000u,
                              0x3f818000u, 0x3f80ffffu, 0x7f7fffffu, 0xff7f8000u, 0x7f800000u,
                              0xff800000u, 0x7fc00000u, 0xff800001u, 0x7f80ffffu, 0x7fffffffu};
  for (size_t i = 0; i < n; ++i) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    bits[i] = static_cast<uint32_t>(state >> 32);
    if (i % 5 == 0) bits[i] &= 0xffff8000u, bits[i] |= 0x8000u;  // a tie
    if (i % 7 == 0) bits[i] = special[(i / 7) % (sizeof(special) / sizeof(special[0]))];
  }
  HostTensor src(kF32, 1, s, 1, d), dst(kBF16, 1, s, 1, d);
  std::memcpy(src.data(), bits.data(), n * 4);
  dst.poison();
  cpu::convert(1, s, 1, d, src.ref(), dst.ref());
  const uint16_t* got = static_cast<const uint16_t*>(dst.data());
  for (size_t i = 0; i < n; ++i) {
    float f;
    std::memcpy(&f, &bits[i], 4);
    if (std::isnan(f)) {  // a NaN of the same sign
      ASSERT_EQ(got[i] & 0x7f80u, 0x7f80u) << "element " << i;
      ASSERT_NE(got[i] & 0x7fu, 0u) << "element " << i;
      ASSERT_EQ(got[i] >> 15, bits[i] >> 31) << "element " << i;
    } else {
      ASSERT_EQ(got[i], bf16_bits(static_cast<double>(f)))
          << "element " << i << " bits " << bits[i];
    }
  }
}

}  // namespace
}  // namespace test
}  // namespace ringattn
