// Ring forward over MPI against the float64 reference of the whole sequence (2x-naive rule):
// O and LSE, every scheme, masks, packed and uneven lengths, GQA, head dims, dtypes.
#include <gtest/gtest.h>

#include "ring_cases.h"

namespace ringattn {
namespace test {
namespace {

class RingForward : public ::testing::TestWithParam<RingCase> {};

TEST_P(RingForward, MatchesFloat64ReferenceOfTheWholeSequence) {
  const RingCase& c = GetParam();
  SCOPED_TRACE(describe(c));
  ringattn_context_t ctx = make_context(MPI_COMM_WORLD);
  const uint64_t seed = shared_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const RingInputs in = make_inputs(c, seed);
  const RingResult r = run_ring(c, in, ctx, MPI_COMM_WORLD);
  EXPECT_TRUE(check_against_reference(c, in, r, MPI_COMM_WORLD));
  ringattn_context_destroy(ctx);
}

INSTANTIATE_TEST_SUITE_P(Cases, RingForward, ::testing::ValuesIn(ring_cases(false)));

}  // namespace
}  // namespace test
}  // namespace ringattn
