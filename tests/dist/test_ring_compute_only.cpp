// Compute-only contexts (ringattn_context_create_compute_only): rank R of a P-rank ring run alone
// must run the same plan as rank R of the real ring (the same steps, the same steps hidden by
// the mask, the same bytes it would send), compute the real result where no block moves (P = 1),
// and refuse what it cannot stand in for.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "ring_harness.h"

namespace ringattn {
namespace test {
namespace {

ringattn_context_t compute_only(int32_t rank, int32_t world) {
  ringattn_context_t ctx = nullptr;
  const ringattn_status_t st =
      ringattn_context_create_compute_only(rank, world, RINGATTN_BACKEND_CPU, nullptr, &ctx);
  EXPECT_EQ(st, RINGATTN_SUCCESS) << ringattn_get_last_error();
  return ctx;
}

ringattn_ring_stats_t last_stats(ringattn_context_t ctx) {
  ringattn_ring_stats_t s{};
  EXPECT_EQ(ringattn_context_last_stats(ctx, &s), RINGATTN_SUCCESS);
  return s;
}

TEST(RingComputeOnly, BadRankOrWorldIsAnErrorNamingThem) {
  ringattn_context_t ctx = nullptr;
  const int32_t bad[3][2] = {{0, 0}, {2, 2}, {-1, 4}};
  for (const auto& b : bad) {
    EXPECT_EQ(ringattn_context_create_compute_only(b[0], b[1], RINGATTN_BACKEND_CPU, nullptr, &ctx),
              RINGATTN_ERROR_INVALID_ARGUMENT);
    EXPECT_NE(std::strstr(ringattn_get_last_error(), "'rank' and 'world'"), nullptr)
        << ringattn_get_last_error();
    EXPECT_EQ(ctx, nullptr);
  }
  EXPECT_EQ(ringattn_context_create_compute_only(0, 1, RINGATTN_BACKEND_CPU, nullptr, nullptr),
            RINGATTN_ERROR_NULL_POINTER);
}

// Every rank runs its share on the real ring and alone: the statistics of the plan agree.
TEST(RingComputeOnly, RunsTheSamePlanAsTheRealRing) {
  const int P = world_size(), me = world_rank();
  for (ringattn_scheme_t scheme : {RINGATTN_SCHEME_CONTIGUOUS, RINGATTN_SCHEME_ZIGZAG}) {
    RingCase c;
    c.name = "causal, equal shares";
    c.scheme = scheme;
    c.layout.batch = 1;
    c.layout.seq = 48 * P;
    c.causal = true;
    c.backward = true;
    SCOPED_TRACE(describe(c));
    const RingInputs in = make_inputs(c, shared_seed());
    ringattn_context_t real = make_context(MPI_COMM_WORLD);
    ringattn_context_t alone = compute_only(me, P);
    ASSERT_TRUE(all_ranks(real != nullptr && alone != nullptr));
    const RingResult r = run_ring(c, in, real, MPI_COMM_WORLD);
    ASSERT_TRUE(all_ranks(r.ok)) << r.error;
    const ringattn_ring_stats_t want = last_stats(real);
    const RingResult a = run_ring(c, in, alone, MPI_COMM_WORLD);
    ASSERT_TRUE(all_ranks(a.ok)) << a.error;
    const ringattn_ring_stats_t got = last_stats(alone);
    EXPECT_EQ(got.steps, P);
    EXPECT_EQ(got.steps, want.steps);
    EXPECT_EQ(got.steps_skipped, want.steps_skipped);
    EXPECT_EQ(got.bytes_sent, want.bytes_sent);
    if (P == 1) {
      // Nothing moves at P = 1: the compute-only ring computes the real result.
      EXPECT_TRUE(check_against_reference(c, in, a, MPI_COMM_WORLD));
      EXPECT_EQ(a.local, r.local);
    }
    if (scheme == RINGATTN_SCHEME_CONTIGUOUS) {
      EXPECT_EQ(got.steps_skipped, P - 1 - me);  // causal: blocks after this rank's are hidden
    }
    ringattn_context_destroy(alone);
    ringattn_context_destroy(real);
  }
}

TEST(RingComputeOnly, PackedProblemsAreRefused) {
  RingCase c;
  c.layout.packed = true;
  c.layout.cu = {0, 4 * world_size()};
  const RingInputs in = make_inputs(c, shared_seed());
  ringattn_context_t alone = compute_only(world_rank(), world_size());
  ASSERT_NE(alone, nullptr);
  const RingResult r = run_ring(c, in, alone, MPI_COMM_WORLD);
  EXPECT_FALSE(r.ok);
  if (world_rank() == 0) {  // the first failure's message is kept on rank 0
    EXPECT_NE(r.error.find("compute-only"), std::string::npos) << r.error;
  }
  ringattn_context_destroy(alone);
}

}  // namespace
}  // namespace test
}  // namespace ringattn
