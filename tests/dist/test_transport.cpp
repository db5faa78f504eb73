// The MPI transport: ring exchanges of raw bytes (uneven and empty sizes, concurrent tags),
// agreement on host values, timeouts that turn a missing peer into an error, and the caller's
// communicator left untouched.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <vector>

#include "dist_util.h"
#include "mpi_transport.h"

namespace ringattn {
namespace test {
namespace {

std::unique_ptr<comm::MpiTransport> make(MPI_Comm c, int64_t timeout_ms) {
  ringattn_status_t st = RINGATTN_SUCCESS;
  std::string err;
  auto t = comm::MpiTransport::create(c, timeout_ms, &st, &err);
  EXPECT_EQ(st, RINGATTN_SUCCESS) << err;
  return t;
}

// Bytes that rank `from` sends at step `step`: recognisable, different per rank and step.
unsigned char pattern(int from, int step, size_t i) {
  return static_cast<unsigned char>((from * 131 + step * 17 + i * 7) & 0xff);
}

TEST(Transport, RingExchangeMovesBytesAroundTheRing) {
  auto t = make(MPI_COMM_WORLD, 60000);
  ASSERT_TRUE(t);
  const int P = t->size(), me = t->rank();
  EXPECT_EQ(me, world_rank());
  EXPECT_EQ(P, world_size());
  // Rank r sends (r * 1000 + 3) bytes, rank 0 sends nothing: sizes differ and may be zero.
  auto bytes_of = [](int r) { return static_cast<size_t>(r == 0 ? 0 : r * 100000 + 3); };
  std::vector<unsigned char> cur(bytes_of(me)), next;
  for (size_t i = 0; i < cur.size(); ++i) cur[i] = pattern(me, 0, i);
  int holder = me;  // whose block `cur` is
  bool ok = true;
  for (int step = 0; step < P; ++step) {
    const int from = (holder - 1 + P) % P;
    next.assign(bytes_of(from), 0);
    comm::Exchange ex;
    ASSERT_EQ(t->start_exchange(cur.data(), cur.size(), (me + 1) % P, next.data(), next.size(),
                                (me - 1 + P) % P, 1, &ex),
              RINGATTN_SUCCESS)
        << t->error();
    t->progress(&ex);
    ASSERT_EQ(t->wait(&ex), RINGATTN_SUCCESS) << t->error();
    for (size_t i = 0; i < next.size(); ++i) ok = ok && next[i] == pattern(from, 0, i);
    cur.swap(next);
    holder = from;
  }
  EXPECT_TRUE(ok);
  EXPECT_EQ(holder, me);  // after P hops every block is home
  EXPECT_TRUE(all_ranks(ok));
}

TEST(Transport, ConcurrentExchangesWithDifferentTagsDoNotMix) {
  auto t = make(MPI_COMM_WORLD, 60000);
  ASSERT_TRUE(t);
  const int P = t->size(), me = t->rank();
  const size_t n = 4096;
  std::vector<unsigned char> a(n), b(n), ra(n), rb(n);
  for (size_t i = 0; i < n; ++i) {
    a[i] = pattern(me, 1, i);
    b[i] = pattern(me, 2, i);
  }
  comm::Exchange ea, eb;
  ASSERT_EQ(t->start_exchange(a.data(), n, (me + 1) % P, ra.data(), n, (me - 1 + P) % P, 5, &ea),
            RINGATTN_SUCCESS);
  ASSERT_EQ(t->start_exchange(b.data(), n, (me + 1) % P, rb.data(), n, (me - 1 + P) % P, 6, &eb),
            RINGATTN_SUCCESS);
  // Finish them in the opposite order.
  ASSERT_EQ(t->wait(&eb), RINGATTN_SUCCESS);
  ASSERT_EQ(t->wait(&ea), RINGATTN_SUCCESS);
  const int from = (me - 1 + P) % P;
  bool ok = true;
  for (size_t i = 0; i < n; ++i)
    ok = ok && ra[i] == pattern(from, 1, i) && rb[i] == pattern(from, 2, i);
  EXPECT_TRUE(all_ranks(ok));
}

TEST(Transport, AllgatherGivesEveryRankEveryValue) {
  auto t = make(MPI_COMM_WORLD, 60000);
  ASSERT_TRUE(t);
  const int P = t->size(), me = t->rank();
  const int64_t mine[3] = {me, -me * 7, int64_t{1} << 40};
  std::vector<int64_t> all(static_cast<size_t>(3 * P));
  ASSERT_EQ(t->allgather_i64(mine, 3, all.data()), RINGATTN_SUCCESS) << t->error();
  bool ok = true;
  for (int r = 0; r < P; ++r) {
    ok = ok && all[3 * r] == r && all[3 * r + 1] == -r * 7 && all[3 * r + 2] == int64_t{1} << 40;
  }
  EXPECT_TRUE(all_ranks(ok));
}

TEST(Transport, MissingPeerTimesOutInsteadOfHanging) {
  if (world_size() < 2) GTEST_SKIP() << "needs a peer";
  MPI_Comm sub;
  MPI_Comm_dup(MPI_COMM_WORLD, &sub);
  auto t = make(sub, 300);
  ASSERT_TRUE(t);
  const int P = t->size(), me = t->rank();
  // Rank 0 expects a message from rank P-1, which never sends.
  if (me == 0) {
    std::vector<unsigned char> buf(1 << 20);
    comm::Exchange ex;
    ASSERT_EQ(t->start_exchange(nullptr, 0, 0, buf.data(), buf.size(), P - 1, 9, &ex),
              RINGATTN_SUCCESS);
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(t->wait(&ex), RINGATTN_ERROR_TIMEOUT);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_GE(secs, 0.25);
    EXPECT_LT(secs, 5.0);
    EXPECT_NE(t->error().find("rank " + std::to_string(P - 1)), std::string::npos) << t->error();
    EXPECT_TRUE(t->broken());
    // Later calls fail fast.
    int64_t v = 0, all[64];
    EXPECT_EQ(t->allgather_i64(&v, 1, all), RINGATTN_ERROR_COMM);
  }
  // Agreement where rank 0 never takes part: every other rank times out.
  if (me != 0) {
    int64_t v = me;
    std::vector<int64_t> all(static_cast<size_t>(P));
    EXPECT_EQ(t->allgather_i64(&v, 1, all.data()), RINGATTN_ERROR_TIMEOUT) << t->error();
  }
  t.reset();
  MPI_Barrier(MPI_COMM_WORLD);
  // `sub` is the test's own communicator: it may hold a cancelled message, so it is not reused.
}

TEST(Transport, DestroyLeavesTheCallersCommunicatorUsable) {
  MPI_Comm user;
  MPI_Comm_dup(MPI_COMM_WORLD, &user);
  {
    auto t = make(user, 60000);
    ASSERT_TRUE(t);
    EXPECT_NE(t->comm(), user);
  }
  int sum = 0, one = 1;
  EXPECT_EQ(MPI_Allreduce(&one, &sum, 1, MPI_INT, MPI_SUM, user), MPI_SUCCESS);
  EXPECT_EQ(sum, world_size());
  MPI_Comm_free(&user);
}

TEST(Transport, TimeoutDefaultsFromTheEnvironment) {
  setenv("RINGATTN_TIMEOUT_MS", "1234", 1);
  EXPECT_EQ(comm::default_timeout_ms(), 1234);
  setenv("RINGATTN_TIMEOUT_MS", "junk", 1);
  EXPECT_EQ(comm::default_timeout_ms(), 300000);
  unsetenv("RINGATTN_TIMEOUT_MS");
  EXPECT_EQ(comm::default_timeout_ms(), 300000);
}

}  // namespace
}  // namespace test
}  // namespace ringattn
