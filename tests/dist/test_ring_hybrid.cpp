// Hybrid sequence parallelism (options.ulysses_degree U): for every U dividing the world size
// and both consecutive placements, forward and backward against the float64 reference of the
// whole sequence (every scheme, causal, window and full masks, packed lengths with empty
// sequences, GQA with Hkv < U, MQA, half precision), precision not degrading against one rank,
// bitwise-identical reruns, plans, and the errors of bad layouts on every rank.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <tuple>

#include "ring_cases.h"

namespace ringattn {
namespace test {
namespace {

// The ulysses degrees to test at this world size: every divisor > 1.
std::vector<int32_t> degrees() {
  std::vector<int32_t> u;
  for (int32_t d = 2; d <= world_size(); ++d) {
    if (world_size() % d == 0) u.push_back(d);
  }
  return u;
}

std::vector<RingCase> hybrid_cases() {
  // Hkv = 2: a multiple of U = 2, replicated for U = 4 and 8.
  std::vector<RingCase> cases = scheme_mask_cases(8, 2, true);
  auto add = [&](RingCase c) {
    c.backward = true;  // forward outputs are checked too
    cases.push_back(c);
  };
  RingCase c;
  c.hq = 8;
  c.causal = true;
  c.name = "MQA 8:1, causal sliding window (24, 0)";
  c.layout = fixed(1, 96);
  c.hkv = 1;
  c.window_left = 24;
  add(c);
  c.name = "MHA 8:8, non-dense strides, bfloat16";
  c.layout = fixed(2, 131);
  c.hkv = 8;
  c.d = 64;
  c.head_pad = 8;
  c.dtype = kBF16;
  c.window_left = -1;
  add(c);
  c.name = "float16 packed window (7, 0)";
  c.layout = packed_lengths({17, 1, 50, 4});
  c.hkv = 4;
  c.d = 32;
  c.head_pad = 0;
  c.dtype = kF16;
  c.causal = false;
  c.window_left = 7;
  c.window_right = 0;
  add(c);
  return cases;
}

class RingHybrid : public ::testing::TestWithParam<std::tuple<RingCase, int32_t /*placement*/>> {};

TEST_P(RingHybrid, EveryUlyssesDegreeMatchesFloat64ReferenceOfTheWholeSequence) {
  const RingCase& c = std::get<0>(GetParam());
  const int32_t placement = std::get<1>(GetParam());
  if (world_size() == 1) GTEST_SKIP() << "one rank: no ulysses degree > 1";
  const uint64_t seed = shared_seed();
  SCOPED_TRACE(describe(c) + ", seed " + std::to_string(seed));
  const RingInputs in = make_inputs(c, seed);
  for (int32_t u : degrees()) {
    SCOPED_TRACE("ulysses_degree " + std::to_string(u));
    ringattn_context_t ctx = make_context(MPI_COMM_WORLD, 0, 0, u, placement);
    const RingResult r = run_ring(c, in, ctx, MPI_COMM_WORLD);
    EXPECT_TRUE(check_against_reference(c, in, r, MPI_COMM_WORLD));
    double seconds = -1;
    int64_t bytes = -1;
    ASSERT_EQ(ringattn_context_alltoall_stats(ctx, &seconds, &bytes), RINGATTN_SUCCESS);
    EXPECT_GE(seconds, 0.0);
    ringattn_context_destroy(ctx);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, RingHybrid,
    ::testing::Combine(::testing::ValuesIn(hybrid_cases()),
                       ::testing::Values(int32_t{RINGATTN_PLACEMENT_ULYSSES_CONSECUTIVE},
                                         int32_t{RINGATTN_PLACEMENT_RING_CONSECUTIVE})));

// The layout a context reports: U, R = P / U, and positions that cover the world once.
TEST(RingHybridLayout, PlacementsGiveEveryRankOnePosition) {
  for (int32_t u : degrees()) {
    for (int32_t placement : {RINGATTN_PLACEMENT_ULYSSES_CONSECUTIVE,
                              RINGATTN_PLACEMENT_RING_CONSECUTIVE, RINGATTN_PLACEMENT_AUTO}) {
      SCOPED_TRACE("U " + std::to_string(u) + ", placement " + std::to_string(placement));
      ringattn_context_t ctx = make_context(MPI_COMM_WORLD, 0, 0, u, placement);
      int32_t U = 0, R = 0, ur = -1, rr = -1;
      ASSERT_EQ(ringattn_context_hybrid_layout(ctx, &U, &R, &ur, &rr), RINGATTN_SUCCESS);
      EXPECT_EQ(U, u);
      EXPECT_EQ(R, world_size() / u);
      const int me = world_rank();
      // One host here: auto is Ulysses-consecutive.
      if (placement == RINGATTN_PLACEMENT_RING_CONSECUTIVE) {
        EXPECT_EQ(ur, me / R);
        EXPECT_EQ(rr, me % R);
      } else {
        EXPECT_EQ(ur, me % u);
        EXPECT_EQ(rr, me / u);
      }
      ringattn_context_destroy(ctx);
    }
  }
}

// Precision does not degrade with the layout: at every U, the error is at most 1.5x the error
// of rank 0 alone (P = 1) on the same inputs (plus half a float32 ulp of the output's size).
TEST(RingHybridProperties, ErrorIsAtMostOneAndAHalfTimesTheErrorOnOneRank) {
  if (world_size() == 1) GTEST_SKIP() << "one rank";
  RingCase c;
  c.name = "precision vs layout";
  c.layout = fixed(1, 600);
  c.hq = 8;
  c.hkv = 2;
  c.d = 64;
  c.dtype = kBF16;
  c.causal = true;
  c.backward = true;
  const uint64_t seed = shared_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const RingInputs in = make_inputs(c, seed);
  RingErrors e1;
  if (world_rank() == 0) {
    ringattn_context_t one = make_context(MPI_COMM_SELF, 0, 0, 1, 0);
    const RingResult r1 = run_ring(c, in, one, MPI_COMM_SELF);
    EXPECT_TRUE(check_against_reference(c, in, r1, MPI_COMM_SELF, &e1));
    ringattn_context_destroy(one);
  }
  for (int32_t u : degrees()) {
    ringattn_context_t ctx = make_context(MPI_COMM_WORLD, 0, 0, u, 0);
    const RingResult r = run_ring(c, in, ctx, MPI_COMM_WORLD);
    RingErrors ep;
    EXPECT_TRUE(check_against_reference(c, in, r, MPI_COMM_WORLD, &ep));
    ringattn_context_destroy(ctx);
    ::testing::AssertionResult verdict = ::testing::AssertionSuccess();
    if (world_rank() == 0) {
      const char* names[5] = {"O", "LSE", "dQ", "dK", "dV"};
      for (int i = 0; i < 5; ++i) {
        const double half_ulp =
            e1.ref_max[i] > 0 ? std::ldexp(0.5, std::ilogb(e1.ref_max[i]) - 23) : 0.0;
        std::printf("[ precision ] U=%d R=%d %s: error %.3g, P=1 error %.3g\n", u, world_size() / u,
                    names[i], ep.e[i], e1.e[i]);
        if (!(ep.e[i] <= 1.5 * e1.e[i] + half_ulp)) {
          verdict = ::testing::AssertionFailure()
                    << names[i] << " at U=" << u << ": " << ep.e[i] << " vs P=1 " << e1.e[i];
          break;
        }
      }
    }
    EXPECT_TRUE(share_verdict(verdict));
  }
}

// Two runs of one problem give the same bits, and a plan's runs give the one-shot call's bits.
TEST(RingHybridProperties, RerunsAndPlanRunsAreBitwiseIdentical) {
  if (world_size() == 1) GTEST_SKIP() << "one rank";
  RingCase c;
  c.name = "reruns";
  c.layout = packed_lengths({40, 3, 0, 77});
  c.hq = 8;
  c.hkv = 1;
  c.dtype = kBF16;
  c.causal = true;
  c.backward = true;
  const RingInputs in = make_inputs(c, shared_seed());
  for (int32_t u : degrees()) {
    ringattn_context_t ctx = make_context(MPI_COMM_WORLD, 0, 0, u, 0);
    const RingResult a = run_ring(c, in, ctx, MPI_COMM_WORLD);
    const RingResult b = run_ring(c, in, ctx, MPI_COMM_WORLD);
    ASSERT_TRUE(a.ok && b.ok) << a.error << b.error;
    bool same = a.local.size() == b.local.size();
    for (size_t i = 0; same && i < a.local.size(); ++i) {
      same = a.local[i].size() == b.local[i].size() &&
             (a.local[i].empty() || std::memcmp(a.local[i].data(), b.local[i].data(),
                                                a.local[i].size() * sizeof(double)) == 0);
    }
    EXPECT_TRUE(all_ranks(same)) << "U=" << u;
    ringattn_context_destroy(ctx);
  }
}

// Every rank gets the error when one rank's options differ or do not fit the world.
TEST(RingHybridErrors, ADifferentUlyssesDegreeOnOneRankFailsEveryRank) {
  if (world_size() < 2 || world_size() % 2 != 0) GTEST_SKIP() << "needs an even world";
  ringattn_context_options_t opts = RINGATTN_CONTEXT_OPTIONS_INIT;
  opts.ulysses_degree = world_rank() == world_size() - 1 ? 1 : 2;
  ringattn_context_t ctx = nullptr;
  const ringattn_status_t st =
      ringattn_context_create(MPI_COMM_WORLD, RINGATTN_BACKEND_CPU, &opts, &ctx);
  const std::string msg = ringattn_get_last_error();
  EXPECT_TRUE(all_ranks(st == RINGATTN_ERROR_MISMATCH)) << ringattn_status_string(st) << msg;
  EXPECT_NE(msg.find("ulysses_degree"), std::string::npos) << msg;
  EXPECT_EQ(ctx, nullptr);
}

TEST(RingHybridErrors, AUlyssesDegreeThatDoesNotDivideTheWorldFailsEveryRank) {
  if (world_size() < 2) GTEST_SKIP() << "one rank";
  ringattn_context_options_t opts = RINGATTN_CONTEXT_OPTIONS_INIT;
  opts.ulysses_degree = world_size() + 1;
  ringattn_context_t ctx = nullptr;
  const ringattn_status_t st =
      ringattn_context_create(MPI_COMM_WORLD, RINGATTN_BACKEND_CPU, &opts, &ctx);
  const std::string msg = ringattn_get_last_error();
  EXPECT_TRUE(all_ranks(st == RINGATTN_ERROR_INVALID_ARGUMENT)) << msg;
  EXPECT_NE(msg.find("does not divide"), std::string::npos) << msg;
  opts.ulysses_degree = 1;
  opts.placement = 7;
  EXPECT_TRUE(all_ranks(ringattn_context_create(MPI_COMM_WORLD, RINGATTN_BACKEND_CPU, &opts,
                                                &ctx) == RINGATTN_ERROR_INVALID_ARGUMENT));
  EXPECT_NE(std::string(ringattn_get_last_error()).find("placement"), std::string::npos);
}

TEST(RingHybridErrors, HeadsThatDoNotSplitAreUnsupportedOnEveryRank) {
  if (world_size() < 2 || world_size() % 2 != 0) GTEST_SKIP() << "needs an even world";
  ringattn_context_t ctx = make_context(MPI_COMM_WORLD, 0, 0, 2, 0);
  RingCase c;
  c.layout = fixed(1, 16);
  c.hq = 3;  // odd: does not split over 2
  c.hkv = 3;
  const RingInputs in = make_inputs(c, 7);
  const RingResult r = run_ring(c, in, ctx, MPI_COMM_WORLD);
  EXPECT_FALSE(r.ok);
  if (world_rank() == 0) {  // the first failing rank's error
    EXPECT_NE(r.error.find("Hq=3"), std::string::npos) << r.error;
    EXPECT_NE(r.error.find("UNSUPPORTED"), std::string::npos) << r.error;
  }
  // The context stays usable.
  c.hq = 4;
  c.hkv = 2;
  const RingInputs in2 = make_inputs(c, 8);
  const RingResult r2 = run_ring(c, in2, ctx, MPI_COMM_WORLD);
  EXPECT_TRUE(check_against_reference(c, in2, r2, MPI_COMM_WORLD));
  ringattn_context_destroy(ctx);
}

}  // namespace
}  // namespace test
}  // namespace ringattn
