// The device-buffer transports on a GPU (labels dist and gpu; skipped without a device): the
// MPI transport staged through pinned host memory (ranks may share one GPU) and NCCL (one GPU
// per rank; at one rank the exchange goes to itself). Bytes move around the ring in stream order
// on a caller's non-default stream, and a rank whose stream stalls (a host function that blocks
// it) turns into RINGATTN_ERROR_TIMEOUT within the timeout instead of a hang.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "dist_util.h"
#include "mpi_transport.h"
#include "staged_device_transport.h"
#if defined(RINGATTN_HAVE_NCCL)
#include "nccl_transport.h"
#endif

namespace ringattn {
namespace test {
namespace {

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) n = 0;
  cudaGetLastError();
  return n;
}

unsigned char pattern(int from, size_t i) {
  return static_cast<unsigned char>((from * 131 + i * 7 + 5) & 0xff);
}

// A stream blocked by a host function until release() (or destruction).
class StalledStream {
 public:
  explicit StalledStream(cudaStream_t s) {
    ok_ = cudaLaunchHostFunc(s, &StalledStream::block, &released_) == cudaSuccess;
  }
  ~StalledStream() { release(); }
  StalledStream(const StalledStream&) = delete;
  StalledStream& operator=(const StalledStream&) = delete;
  bool ok() const { return ok_; }
  void release() { released_.store(true); }

 private:
  static void CUDART_CB block(void* flag) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!static_cast<std::atomic<bool>*>(flag)->load() &&
           std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  std::atomic<bool> released_{false};
  bool ok_ = false;
};

// A non-default stream and two device buffers of `bytes` (send, receive), freed on scope exit.
struct StreamAndBuffers {
  explicit StreamAndBuffers(size_t n) : bytes(n) {
    ok = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess &&
         cudaMalloc(&buf[0], n) == cudaSuccess && cudaMalloc(&buf[1], n) == cudaSuccess;
  }
  ~StreamAndBuffers() {
    cudaStreamSynchronize(stream);
    cudaGetLastError();
    cudaFree(buf[0]);
    cudaFree(buf[1]);
    cudaStreamDestroy(stream);
  }
  StreamAndBuffers(const StreamAndBuffers&) = delete;
  StreamAndBuffers& operator=(const StreamAndBuffers&) = delete;
  // One exchange with the ring neighbours (send to rank + 1, receive from rank - 1).
  ringattn_status_t exchange(comm::Transport* t) {
    const int P = t->size(), me = t->rank();
    comm::Exchange ex;
    ringattn_status_t st =
        t->start_exchange(buf[0], bytes, (me + 1) % P, buf[1], bytes, (me - 1 + P) % P, 1, &ex);
    if (st == RINGATTN_SUCCESS) st = t->wait(&ex);
    return st;
  }
  size_t bytes;
  cudaStream_t stream = nullptr;
  void* buf[2] = {nullptr, nullptr};
  bool ok = false;
};

// P ring hops of a device block of `bytes` per rank on `stream`; true on every rank when each
// rank ends with its own block (checked after every hop). `relay`: hops after the first pass
// the received block on with start_relay.
bool ring_round_trip(comm::Transport* t, cudaStream_t stream, size_t bytes, bool relay = false) {
  const int P = t->size(), me = t->rank();
  std::vector<unsigned char> host(bytes);
  for (size_t i = 0; i < bytes; ++i) host[i] = pattern(me, i);
  void* buf[2] = {nullptr, nullptr};
  // A pageable upload may still be in flight when cudaMemcpy returns: synchronize before the
  // non-blocking stream reads the buffer.
  bool ok = cudaMalloc(&buf[0], bytes) == cudaSuccess &&
            cudaMalloc(&buf[1], bytes) == cudaSuccess &&
            cudaMemcpy(buf[0], host.data(), bytes, cudaMemcpyHostToDevice) == cudaSuccess &&
            cudaDeviceSynchronize() == cudaSuccess;
  t->set_stream(stream);
  int holder = me, cur = 0;
  for (int step = 0; ok && step < P; ++step) {
    comm::Exchange ex;
    ok = (relay && step > 0 ? t->start_relay(buf[cur], bytes, (me + 1) % P, buf[1 - cur], bytes,
                                             (me - 1 + P) % P, 1, &ex)
                            : t->start_exchange(buf[cur], bytes, (me + 1) % P, buf[1 - cur], bytes,
                                                (me - 1 + P) % P, 1, &ex)) == RINGATTN_SUCCESS;
    ok = ok && t->wait(&ex) == RINGATTN_SUCCESS;
    EXPECT_TRUE(ok) << t->error();
    holder = (holder - 1 + P) % P;
    cur = 1 - cur;
    // Stream-ordered: the copy back runs after the received block has landed.
    ok = ok &&
         cudaMemcpyAsync(host.data(), buf[cur], bytes, cudaMemcpyDeviceToHost, stream) ==
             cudaSuccess &&
         cudaStreamSynchronize(stream) == cudaSuccess;
    for (size_t i = 0; ok && i < bytes; ++i) ok = host[i] == pattern(holder, i);
  }
  cudaFree(buf[0]);
  cudaFree(buf[1]);
  return all_ranks(ok && holder == me);
}

std::unique_ptr<comm::Transport> staged(int64_t timeout_ms) {
  ringattn_status_t st = RINGATTN_SUCCESS;
  std::string err;
  std::unique_ptr<comm::Transport> inner =
      comm::MpiTransport::create(MPI_COMM_WORLD, timeout_ms, &st, &err);
  EXPECT_EQ(st, RINGATTN_SUCCESS) << err;
  if (!inner) return nullptr;
  return std::unique_ptr<comm::Transport>(new comm::StagedDeviceTransport(std::move(inner)));
}

TEST(StagedDeviceTransport, RingMovesDeviceBlocksInStreamOrder) {
  if (device_count() == 0) GTEST_SKIP() << "no CUDA device";
  auto t = staged(60000);
  ASSERT_TRUE(t);
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  EXPECT_TRUE(ring_round_trip(t.get(), stream, (3u << 20) + 17));  // not a multiple of anything
  EXPECT_TRUE(ring_round_trip(t.get(), stream, 100));              // staging reused, not regrown
  cudaStreamDestroy(stream);
}

// Passing received blocks on (start_relay) sends the staged copy without a device-to-host copy,
// and the blocks still arrive intact; a relay whose buffer was not the last receive copies.
TEST(StagedDeviceTransport, RelaySendsTheStagedCopy) {
  if (device_count() == 0) GTEST_SKIP() << "no CUDA device";
  auto t = staged(60000);
  ASSERT_TRUE(t);
  auto* st = static_cast<comm::StagedDeviceTransport*>(t.get());
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  EXPECT_TRUE(ring_round_trip(t.get(), stream, (1u << 20) + 3, /*relay=*/true));
  EXPECT_EQ(st->relayed(), t->size() - 1);
  EXPECT_TRUE(ring_round_trip(t.get(), stream, 5000, /*relay=*/true));  // smaller: staging reused
  EXPECT_EQ(st->relayed(), 2 * (t->size() - 1));
  // A relay of a buffer that was not the last receive (sb.buf[1] was) is a plain send.
  StreamAndBuffers sb(4096);
  ASSERT_TRUE(sb.ok);
  t->set_stream(sb.stream);
  ASSERT_EQ(sb.exchange(t.get()), RINGATTN_SUCCESS) << t->error();
  comm::Exchange ex;
  const int P = t->size(), me = t->rank();
  ASSERT_EQ(t->start_relay(sb.buf[0], sb.bytes, (me + 1) % P, sb.buf[1], sb.bytes, (me - 1 + P) % P,
                           1, &ex),
            RINGATTN_SUCCESS);
  ASSERT_EQ(t->wait(&ex), RINGATTN_SUCCESS);
  EXPECT_EQ(st->relayed(), 2 * (t->size() - 1));
  cudaStreamDestroy(stream);
}

// Rank 0's stream never reaches the exchange: its staging copy cannot finish, so it times out;
// rank 1, which never receives rank 0's block, times out too (ranks further along the ring may
// finish this one exchange: in a ring call the stall reaches them at the next step).
TEST(StagedDeviceTransport, StalledStreamIsATimeoutNotAHang) {
  if (device_count() == 0) GTEST_SKIP() << "no CUDA device";
  auto t = staged(500);
  ASSERT_TRUE(t);
  const int me = t->rank();
  {
    StreamAndBuffers sb(1 << 16);
    ASSERT_TRUE(sb.ok);
    std::unique_ptr<StalledStream> stall;
    if (me == 0) {
      stall.reset(new StalledStream(sb.stream));
      ASSERT_TRUE(stall->ok());
    }
    t->set_stream(sb.stream);
    const auto t0 = std::chrono::steady_clock::now();
    const ringattn_status_t st = sb.exchange(t.get());
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (me == 0 || me == 1) {
      EXPECT_EQ(st, RINGATTN_ERROR_TIMEOUT) << t->error();
      EXPECT_NE(t->error().find("did not"), std::string::npos) << t->error();
      EXPECT_TRUE(t->broken());
    } else {
      EXPECT_TRUE(st == RINGATTN_SUCCESS || st == RINGATTN_ERROR_TIMEOUT) << t->error();
    }
    EXPECT_LT(secs, 5.0);
    if (stall) stall->release();
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

#if defined(RINGATTN_HAVE_NCCL)
// NCCL needs one GPU per rank; at one rank the exchange goes to the rank itself.
bool nccl_runnable(std::string* why) {
  if (device_count() < world_size()) {
    *why = "NCCL needs one GPU per rank";
    return false;
  }
  cudaSetDevice(world_rank());
  return true;
}

std::unique_ptr<comm::NcclTransport> nccl(int64_t timeout_ms) {
  ringattn_status_t st = RINGATTN_SUCCESS;
  std::string err;
  std::unique_ptr<comm::Transport> side =
      comm::MpiTransport::create(MPI_COMM_WORLD, timeout_ms, &st, &err);
  EXPECT_EQ(st, RINGATTN_SUCCESS) << err;
  if (!side) return nullptr;
  auto t = comm::NcclTransport::bootstrap(std::move(side), timeout_ms, &st, &err);
  EXPECT_EQ(st, RINGATTN_SUCCESS) << err;
  return t;
}

TEST(NcclTransport, RingMovesDeviceBlocksInStreamOrder) {
  std::string why;
  if (!nccl_runnable(&why)) GTEST_SKIP() << why;
  auto t = nccl(60000);
  ASSERT_TRUE(t);
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  EXPECT_TRUE(ring_round_trip(t.get(), stream, (3u << 20) + 17));
  t->set_watchdog(false);  // the capturable mode: stream order alone
  EXPECT_TRUE(ring_round_trip(t.get(), stream, 4096));
  int64_t mine[2] = {world_rank(), 7}, all[2 * 64];
  ASSERT_LE(world_size(), 64);
  ASSERT_EQ(t->allgather_i64(mine, 2, all), RINGATTN_SUCCESS) << t->error();
  for (int r = 0; r < world_size(); ++r) {
    EXPECT_EQ(all[2 * r], r);
    EXPECT_EQ(all[2 * r + 1], 7);
  }
  cudaStreamDestroy(stream);
}

// Watchdog off (the capturable mode): wait() never blocks the host, even while the stream
// cannot reach the transfer; the transfer completes once the stream moves.
TEST(NcclTransport, WithoutTheWatchdogWaitNeverBlocksTheHost) {
  std::string why;
  if (!nccl_runnable(&why)) GTEST_SKIP() << why;
  const int P = world_size(), me = world_rank();
  StreamAndBuffers sb(1 << 16);
  ASSERT_TRUE(sb.ok);
  std::vector<unsigned char> host(sb.bytes);
  for (size_t i = 0; i < sb.bytes; ++i) host[i] = pattern(me, i);
  ASSERT_EQ(cudaMemcpy(sb.buf[0], host.data(), sb.bytes, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  auto t = nccl(60000);
  ASSERT_TRUE(t);
  t->set_watchdog(false);
  t->set_stream(sb.stream);
  StalledStream stall(sb.stream);
  ASSERT_TRUE(stall.ok());
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(sb.exchange(t.get()), RINGATTN_SUCCESS) << t->error();
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 1.0);
  stall.release();
  ASSERT_EQ(cudaMemcpyAsync(host.data(), sb.buf[1], sb.bytes, cudaMemcpyDeviceToHost, sb.stream),
            cudaSuccess);
  EXPECT_EQ(cudaStreamSynchronize(sb.stream), cudaSuccess);
  bool ok = true;
  for (size_t i = 0; i < sb.bytes; ++i) ok = ok && host[i] == pattern((me - 1 + P) % P, i);
  EXPECT_TRUE(ok);
  MPI_Barrier(MPI_COMM_WORLD);
}

// A dead peer (the last rank never starts its transfer): the watchdog turns the others' waits
// into RINGATTN_ERROR_TIMEOUT within the timeout and aborts the communicator they own.
TEST(NcclTransport, DeadPeerIsATimeoutOnTheOthers) {
  std::string why;
  if (!nccl_runnable(&why)) GTEST_SKIP() << why;
  const int P = world_size(), me = world_rank();
  if (P < 2) GTEST_SKIP() << "needs a peer";
  StreamAndBuffers sb(1 << 16);
  ASSERT_TRUE(sb.ok);
  auto t = nccl(400);
  ASSERT_TRUE(t);
  t->set_stream(sb.stream);
  if (me != P - 1) {
    const auto t0 = std::chrono::steady_clock::now();
    const ringattn_status_t st = sb.exchange(t.get());
    EXPECT_TRUE(st == RINGATTN_ERROR_TIMEOUT || st == RINGATTN_ERROR_COMM) << t->error();
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0);
    EXPECT_TRUE(t->broken());
  }
  MPI_Barrier(MPI_COMM_WORLD);
}
#endif  // RINGATTN_HAVE_NCCL

}  // namespace
}  // namespace test
}  // namespace ringattn
