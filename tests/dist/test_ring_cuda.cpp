// The GPU ring over the MPI transport with device buffers staged through pinned host memory
// (labels dist and gpu): every rank's shards live in device memory, all ranks may share one GPU,
// work is enqueued on a caller's non-default stream, and the gathered results meet the 2x-naive
// rule against the float64 reference of the whole sequence. Cases that need a device skip
// where there is none; without one, creating a CUDA context must fail cleanly on every rank.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <thread>
#include <tuple>

#include "ring_cases.h"
#if defined(RINGATTN_HAVE_NCCL)
#include "ringattn/ringattn_nccl.h"
#endif

namespace ringattn {
namespace test {
namespace {

bool have_device() {
  int n = 0;
  const bool ok = cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
  cudaGetLastError();
  return ok;
}

ringattn_dtype_t api_dtype(DType t) {
  return t == kF16 ? RINGATTN_FLOAT16 : t == kBF16 ? RINGATTN_BFLOAT16 : RINGATTN_FLOAT32;
}

// The ring's tensors as device copies, used on a caller's non-default stream: fetch() waits for
// the stream and copies every placed buffer back to its host tensor.
class DevicePlacement : public Placement {
 public:
  explicit DevicePlacement(cudaStream_t stream) : stream_(stream) {}
  ~DevicePlacement() override {
    for (const Buffer& b : bufs_) cudaFree(b.dev);
  }
  DevicePlacement(const DevicePlacement&) = delete;
  DevicePlacement& operator=(const DevicePlacement&) = delete;

  void* place(void* host, size_t bytes) override {
    void* dev = nullptr;
    if (cudaMalloc(&dev, bytes == 0 ? 256 : bytes) != cudaSuccess) return nullptr;
    bufs_.push_back(Buffer{host, dev, bytes});
    // A pageable upload may still be in flight when cudaMemcpy returns, and the calls run on a
    // non-blocking stream: synchronize.
    const bool ok = cudaMemcpy(dev, host, bytes, cudaMemcpyHostToDevice) == cudaSuccess &&
                    cudaDeviceSynchronize() == cudaSuccess;
    return ok ? dev : nullptr;
  }
  bool fetch() override {
    // The calls only enqueued work on the stream (and host-waited on their own staging copies).
    if (cudaStreamSynchronize(stream_) != cudaSuccess) return false;
    for (const Buffer& b : bufs_) {
      if (cudaMemcpy(b.host, b.dev, b.bytes, cudaMemcpyDeviceToHost) != cudaSuccess) return false;
    }
    return true;
  }
  void* stream() override { return stream_; }

 private:
  struct Buffer {
    void* host;
    void* dev;
    size_t bytes;
  };
  cudaStream_t stream_;
  std::vector<Buffer> bufs_;
};

size_t tensor_bytes(const RingCase& c, int64_t b, int64_t n, int64_t h) {
  return static_cast<size_t>(b * n * h * (c.d + c.head_pad)) * (c.dtype == kF32 ? 4 : 2);
}

ringattn_tensor_t desc(void* data, const RingCase& c, int64_t b, int64_t s, int64_t h) {
  const int64_t sh = c.d + c.head_pad;
  ringattn_tensor_t x{};
  x.data = data;
  x.dtype = api_dtype(c.dtype);
  if (c.layout.packed) {
    x.ndim = 3;
    x.shape[0] = s, x.shape[1] = h, x.shape[2] = c.d;
    x.strides[0] = h * sh, x.strides[1] = sh, x.strides[2] = 1;
  } else {
    x.ndim = 4;
    x.shape[0] = b, x.shape[1] = s, x.shape[2] = h, x.shape[3] = c.d;
    x.strides[0] = s * h * sh, x.strides[1] = h * sh, x.strides[2] = sh, x.strides[3] = 1;
  }
  return x;
}

ringattn_tensor_t desc_lse(void* data, bool packed, int64_t b, int64_t h, int64_t s) {
  ringattn_tensor_t x{};
  x.data = data;
  x.dtype = RINGATTN_FLOAT32;
  if (packed) {
    x.ndim = 2;
    x.shape[0] = h, x.shape[1] = s;
    x.strides[0] = s, x.strides[1] = 1;
  } else {
    x.ndim = 3;
    x.shape[0] = b, x.shape[1] = h, x.shape[2] = s;
    x.strides[0] = h * s, x.strides[1] = s, x.strides[2] = 1;
  }
  return x;
}

TEST(RingCudaContext, WithoutADeviceCreationFailsCleanlyOnEveryRank) {
  if (have_device()) GTEST_SKIP() << "a CUDA device is present";
  ringattn_context_options_t opts = RINGATTN_CONTEXT_OPTIONS_INIT;
  ringattn_context_t ctx = reinterpret_cast<ringattn_context_t>(&opts);  // must be reset
  const ringattn_status_t st =
      ringattn_context_create(MPI_COMM_WORLD, RINGATTN_BACKEND_CUDA, &opts, &ctx);
  EXPECT_EQ(st, RINGATTN_ERROR_UNSUPPORTED);
  EXPECT_EQ(ctx, nullptr);
  EXPECT_NE(std::strstr(ringattn_get_last_error(), "cuda"), nullptr) << ringattn_get_last_error();
  // The failure was local and collective-free: the ranks still talk.
  EXPECT_TRUE(all_ranks(true));
}

#if defined(RINGATTN_HAVE_NCCL)
// Argument errors of the NCCL constructors need neither a device nor a communicator.
TEST(RingNcclContext, BadArgumentsReturnErrorsNamingThem) {
  ringattn_context_t ctx = nullptr;
  EXPECT_EQ(ringattn_context_create_nccl(nullptr, 0, 1, RINGATTN_BACKEND_CPU, nullptr, nullptr),
            RINGATTN_ERROR_NULL_POINTER);
  EXPECT_NE(std::strstr(ringattn_get_last_error(), "'ctx'"), nullptr) << ringattn_get_last_error();
  EXPECT_EQ(ringattn_context_create_nccl(nullptr, 0, 1, RINGATTN_BACKEND_CPU, nullptr, &ctx),
            RINGATTN_ERROR_UNSUPPORTED);
  EXPECT_NE(std::strstr(ringattn_get_last_error(), "'backend'"), nullptr)
      << ringattn_get_last_error();
  EXPECT_EQ(ctx, nullptr);
  EXPECT_EQ(ringattn_context_create_nccl_mpi(MPI_COMM_WORLD, RINGATTN_BACKEND_CPU, nullptr, &ctx),
            RINGATTN_ERROR_UNSUPPORTED);
  EXPECT_EQ(ctx, nullptr);
  if (have_device()) {
    EXPECT_EQ(ringattn_context_create_nccl(nullptr, 0, 1, RINGATTN_BACKEND_CUDA, nullptr, &ctx),
              RINGATTN_ERROR_NULL_POINTER);
    EXPECT_NE(std::strstr(ringattn_get_last_error(), "'comm'"), nullptr)
        << ringattn_get_last_error();
  } else {
    EXPECT_EQ(ringattn_context_create_nccl(nullptr, 0, 1, RINGATTN_BACKEND_CUDA, nullptr, &ctx),
              RINGATTN_ERROR_UNSUPPORTED);
  }
  EXPECT_EQ(ctx, nullptr);
}
#endif

// How the context moves device buffers.
enum Mode { kMpiStaged = 0, kNcclOverMpi = 1, kNcclCallerComm = 2 };
const char* mode_name(int m) {
  return m == kMpiStaged ? "mpi-staged" : m == kNcclOverMpi ? "nccl-over-mpi" : "nccl-caller-comm";
}

// A CUDA context of `mode` (collective), or a skip reason. `nccl` receives a communicator the
// test owns (kNcclCallerComm), destroyed by the caller after the context.
ringattn_status_t make_cuda_context(int mode, int64_t timeout_ms, ringattn_context_t* ctx,
                                    void** nccl, std::string* skip) {
  ringattn_context_options_t opts = RINGATTN_CONTEXT_OPTIONS_INIT;
  opts.timeout_ms = timeout_ms;
  *nccl = nullptr;
  if (mode == kMpiStaged) {
    return ringattn_context_create(MPI_COMM_WORLD, RINGATTN_BACKEND_CUDA, &opts, ctx);
  }
#if defined(RINGATTN_HAVE_NCCL)
  // NCCL refuses two ranks on one device, and the test machines have one GPU.
  if (world_size() > 1) {
    *skip = "NCCL needs one GPU per rank";
    return RINGATTN_SUCCESS;
  }
  if (mode == kNcclOverMpi) {
    return ringattn_context_create_nccl_mpi(MPI_COMM_WORLD, RINGATTN_BACKEND_CUDA, &opts, ctx);
  }
  ncclComm_t comm = nullptr;
  int dev = 0;
  cudaGetDevice(&dev);
  if (ncclCommInitAll(&comm, 1, &dev) != ncclSuccess) return RINGATTN_ERROR_COMM;
  *nccl = comm;
  return ringattn_context_create_nccl(comm, 0, 1, RINGATTN_BACKEND_CUDA, &opts, ctx);
#else
  *skip = "built without NCCL";
  return RINGATTN_SUCCESS;
#endif
}

void destroy_nccl(void* nccl) {
#if defined(RINGATTN_HAVE_NCCL)
  if (nccl != nullptr) ncclCommDestroy(static_cast<ncclComm_t>(nccl));
#else
  (void)nccl;
#endif
}

// One context per mode for the whole process, made by the first case of that mode (every rank
// runs the cases in the same order, so creation stays collective) and destroyed after the last
// test: a communicator init per case would cost more than the cases. A long-lived context that
// meets a new problem in every case is also how frameworks use it.
class SharedContexts : public ::testing::Environment {
 public:
  static SharedContexts& get() {
    static SharedContexts* env = [] {
      auto* e = new SharedContexts();
      ::testing::AddGlobalTestEnvironment(e);  // owned by gtest from here
      return e;
    }();
    return *env;
  }
  // The context of `mode`, or nullptr with `skip` set or the creation's status in `st`.
  ringattn_context_t context(int mode, std::string* skip, ringattn_status_t* st) {
    Entry& e = entries_[mode];
    if (!e.made) {
      e.made = true;
      e.status = make_cuda_context(mode, 0, &e.ctx, &e.nccl, &e.skip);
      if (!all_ranks(e.status == RINGATTN_SUCCESS)) e.ctx = nullptr;
    }
    *skip = e.skip;
    *st = e.status;
    return e.ctx;
  }
  void TearDown() override {
    for (Entry& e : entries_) {
      if (e.ctx != nullptr) ringattn_context_destroy(e.ctx);
      destroy_nccl(e.nccl);
      e = Entry{};
    }
  }

 private:
  struct Entry {
    bool made = false;
    ringattn_status_t status = RINGATTN_SUCCESS;
    ringattn_context_t ctx = nullptr;
    void* nccl = nullptr;
    std::string skip;
  };
  Entry entries_[3];
};

class RingCuda : public ::testing::TestWithParam<std::tuple<RingCase, int>> {};

TEST_P(RingCuda, DeviceBuffersMatchFloat64ReferenceOfTheWholeSequence) {
  if (!have_device()) GTEST_SKIP() << "no CUDA device";
  const RingCase& c = std::get<0>(GetParam());
  const int mode = std::get<1>(GetParam());
#if !defined(RINGATTN_HAVE_CUDNN)
  if (c.local_kernel == RINGATTN_LOCAL_KERNEL_CUDNN) GTEST_SKIP() << "built without cuDNN";
#endif
  SCOPED_TRACE(describe(c) + " over " + mode_name(mode));
  std::string skip;
  ringattn_status_t st = RINGATTN_SUCCESS;
  ringattn_context_t ctx = SharedContexts::get().context(mode, &skip, &st);
  if (!skip.empty()) GTEST_SKIP() << skip;
  ASSERT_TRUE(all_ranks(ctx != nullptr))
      << "context creation: " << ringattn_status_string(st) << " " << ringattn_get_last_error();
  cudaStream_t stream = nullptr;
  ASSERT_TRUE(all_ranks(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess));
  const uint64_t seed = shared_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const RingInputs in = make_inputs(c, seed);
  RingResult r;
  {
    DevicePlacement on_device(stream);
    r = run_ring(c, in, ctx, MPI_COMM_WORLD, &on_device);
  }
  EXPECT_TRUE(check_against_reference(c, in, r, MPI_COMM_WORLD));
  cudaStreamDestroy(stream);
}

// The cuDNN path's statistics say which kernels ran: a causal zigzag bfloat16 problem is all
// cuDNN (full blocks and causal squares, forward and backward), a sliding window leaves its
// ragged edges to our kernels, and float32 (which cuDNN does not take) is all ours.
TEST(RingCudaCudnn, KernelStatsSayWhichKernelRan) {
  if (!have_device()) GTEST_SKIP() << "no CUDA device";
#if !defined(RINGATTN_HAVE_CUDNN)
  GTEST_SKIP() << "built without cuDNN";
#endif
  std::string skip;
  ringattn_status_t st = RINGATTN_SUCCESS;
  ringattn_context_t ctx = SharedContexts::get().context(kMpiStaged, &skip, &st);
  ASSERT_TRUE(all_ranks(ctx != nullptr)) << ringattn_get_last_error();
  cudaStream_t stream = nullptr;
  ASSERT_TRUE(all_ranks(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess));
  RingCase c;
  c.name = "cuDNN statistics";
  c.layout = fixed(1, 128 * world_size());
  c.hq = c.hkv = 2;
  c.d = 128;
  c.dtype = kBF16;
  c.causal = true;
  c.backward = true;
  c.local_kernel = RINGATTN_LOCAL_KERNEL_CUDNN;
  struct Want {
    bool window, f32;
  };
  for (const Want w : {Want{false, false}, Want{true, false}, Want{false, true}}) {
    RingCase rc = c;
    if (w.window) rc.window_left = 40;
    if (w.f32) rc.dtype = kF32;
    SCOPED_TRACE(describe(rc));
    const RingInputs in = make_inputs(rc, shared_seed());
    RingResult r;
    {
      DevicePlacement on_device(stream);
      r = run_ring(rc, in, ctx, MPI_COMM_WORLD, &on_device);
    }
    EXPECT_TRUE(check_against_reference(rc, in, r, MPI_COMM_WORLD));
    int64_t library = -1, own = -1;  // of the backward, the last call
    ASSERT_EQ(ringattn_context_kernel_stats(ctx, &library, &own), RINGATTN_SUCCESS);
    if (w.f32) {
      EXPECT_EQ(library, 0);
      EXPECT_GT(own, 0);
    } else if (w.window) {
      EXPECT_GT(library, 0);
      if (world_size() > 1) {
        EXPECT_GT(own, 0) << "the window's edges";
      }
    } else {
      EXPECT_GT(library, 0);
      EXPECT_EQ(own, 0);
    }
  }
  cudaStreamDestroy(stream);
}

// The hybrid layout on device buffers over the staged MPI transport (P ranks may share one
// GPU): every ulysses degree U > 1 dividing P, cases that cover the all-to-all's paths
// (fixed length, packed with empty sequences, replicated key/value heads with their float32
// gradient sums, half precision).
TEST(RingCudaHybrid, StagedUlyssesDegreesMatchFloat64ReferenceOfTheWholeSequence) {
  if (!have_device()) GTEST_SKIP() << "no CUDA device";
  if (world_size() < 2) GTEST_SKIP() << "needs a ulysses degree > 1";
  std::vector<RingCase> cases;
  RingCase c;
  c.backward = true;
  c.name = "hybrid causal";
  c.layout = fixed(2, 131);
  c.hq = 8;
  c.hkv = 2;
  c.d = 64;
  c.dtype = kBF16;
  c.causal = true;
  cases.push_back(c);
  c.name = "hybrid packed, MQA (replicated heads), window (7, 0)";
  c.layout = packed_lengths({17, 1, 0, 50, 4});
  c.hkv = 1;
  c.causal = false;
  c.window_left = 7;
  c.window_right = 0;
  c.dtype = kF16;
  cases.push_back(c);
  cudaStream_t stream = nullptr;
  ASSERT_TRUE(all_ranks(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess));
  for (int32_t u = 2; u <= world_size(); ++u) {
    if (world_size() % u != 0) continue;
    ringattn_context_options_t opts = RINGATTN_CONTEXT_OPTIONS_INIT;
    opts.ulysses_degree = u;
    ringattn_context_t ctx = nullptr;
    ASSERT_TRUE(all_ranks(ringattn_context_create(MPI_COMM_WORLD, RINGATTN_BACKEND_CUDA, &opts,
                                                  &ctx) == RINGATTN_SUCCESS))
        << ringattn_get_last_error();
    for (const RingCase& rc : cases) {
      SCOPED_TRACE(describe(rc) + ", ulysses_degree " + std::to_string(u));
      const RingInputs in = make_inputs(rc, shared_seed());
      RingResult r;
      {
        DevicePlacement on_device(stream);
        r = run_ring(rc, in, ctx, MPI_COMM_WORLD, &on_device);
      }
      EXPECT_TRUE(check_against_reference(rc, in, r, MPI_COMM_WORLD));
    }
    ringattn_context_destroy(ctx);
  }
  cudaStreamDestroy(stream);
}

// A dead peer (a rank that never calls) is an error on every other rank within the timeout,
// and the context fails fast afterwards.
TEST(RingCudaErrors, RankThatNeverCallsMakesTheOthersTimeOut) {
  if (!have_device()) GTEST_SKIP() << "no CUDA device";
  if (world_size() < 2) GTEST_SKIP() << "needs a missing peer";
  const int64_t n = 16, h = 1, d = 64;
  const size_t bytes = sizeof(float) * static_cast<size_t>(n * h * d);
  void* buf[4] = {nullptr, nullptr, nullptr, nullptr};
  bool ok = true;
  for (void*& b : buf) ok = ok && cudaMalloc(&b, bytes) == cudaSuccess;
  for (void* b : buf) ok = ok && cudaMemset(b, 0, bytes) == cudaSuccess;
  float* lse = nullptr;
  ok = ok && cudaMalloc(&lse, sizeof(float) * static_cast<size_t>(h * n)) == cudaSuccess;
  ASSERT_TRUE(all_ranks(ok));
  RingCase c;
  c.d = d;
  c.layout.packed = false;
  c.layout.batch = 1;
  ringattn_tensor_t tq = desc(buf[0], c, 1, n, h), tk = desc(buf[1], c, 1, n, h),
                    tv = desc(buf[2], c, 1, n, h), to = desc(buf[3], c, 1, n, h),
                    tl = desc_lse(lse, false, 1, h, n);
  ringattn_attn_params_t p = RINGATTN_ATTN_PARAMS_INIT;
  p.scheme = RINGATTN_SCHEME_CONTIGUOUS;
  ringattn_context_t ctx = nullptr;
  void* nccl = nullptr;
  std::string skip;
  ASSERT_EQ(make_cuda_context(kMpiStaged, 400, &ctx, &nccl, &skip), RINGATTN_SUCCESS)
      << ringattn_get_last_error();
  if (world_rank() != world_size() - 1) {
    const auto t0 = std::chrono::steady_clock::now();
    const ringattn_status_t st = ringattn_ring_forward(ctx, &tq, &tk, &tv, &to, &tl, &p, nullptr);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_EQ(st, RINGATTN_ERROR_TIMEOUT) << ringattn_get_last_error();
    EXPECT_LT(secs, 3.0);
    EXPECT_EQ(ringattn_ring_forward(ctx, &tq, &tk, &tv, &to, &tl, &p, nullptr),
              RINGATTN_ERROR_COMM);
  }
  EXPECT_EQ(ringattn_context_destroy(ctx), RINGATTN_SUCCESS);
  MPI_Barrier(MPI_COMM_WORLD);
  for (void* b : buf) cudaFree(b);
  cudaFree(lse);
}

// Device copies of one rank's tensors of a small bf16 causal zigzag problem (GQA), with the
// forward's and backward's outputs read back as bytes.
struct GraphProblem {
  static constexpr int64_t kRows = 64, kHq = 4, kHkv = 2, kD = 64;
  int64_t rows;  // local rows of every rank
  RingCase c;
  std::vector<void*> bufs;  // q k v o lse do dq dk dv
  ringattn_tensor_t t[9];
  ringattn_attn_params_t params = RINGATTN_ATTN_PARAMS_INIT;
  bool ok = true;

  explicit GraphProblem(int64_t local_rows = kRows) : rows(local_rows) {
    c.d = kD;
    c.dtype = kBF16;
    c.layout.packed = false;
    c.layout.batch = 1;
    const int64_t heads[9] = {kHq, kHkv, kHkv, kHq, kHq, kHq, kHq, kHkv, kHkv};
    for (int i = 0; i < 9; ++i) {
      const size_t bytes = i == 4 ? sizeof(float) * kHq * rows : tensor_bytes(c, 1, rows, heads[i]);
      void* p = nullptr;
      ok = ok && cudaMalloc(&p, bytes) == cudaSuccess;
      bufs.push_back(p);
      t[i] = i == 4 ? desc_lse(p, false, 1, kHq, rows) : desc(p, c, 1, rows, heads[i]);
    }
    params.causal = 1;
    params.scheme = RINGATTN_SCHEME_ZIGZAG;
  }
  ~GraphProblem() {
    for (void* p : bufs) cudaFree(p);
  }
  size_t bytes(int i) const {
    const int64_t heads[9] = {kHq, kHkv, kHkv, kHq, kHq, kHq, kHq, kHkv, kHkv};
    return i == 4 ? sizeof(float) * kHq * rows : tensor_bytes(c, 1, rows, heads[i]);
  }
  // Fresh inputs (q, k, v, dO) from `seed`; outputs poisoned (all bits set: NaN).
  bool fill(uint64_t seed) {
    const int inputs[4] = {0, 1, 2, 5};
    for (int i : inputs) {
      std::vector<unsigned char> host(bytes(i));
      uint64_t x = seed * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(i) + world_rank();
      for (size_t j = 0; j + 1 < host.size(); j += 2) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        // bf16 in [-1, 1): sign, exponent 120..126, random mantissa
        const uint16_t v = static_cast<uint16_t>(((x >> 8) & 0x8000) | ((120 + (x % 7)) << 7) |
                                                 ((x >> 20) & 0x7f));
        std::memcpy(&host[j], &v, 2);
      }
      if (cudaMemcpy(bufs[i], host.data(), host.size(), cudaMemcpyHostToDevice) != cudaSuccess) {
        return false;
      }
    }
    return poison();
  }
  bool poison() {
    const int outputs[5] = {3, 4, 6, 7, 8};
    for (int i : outputs) {
      if (cudaMemset(bufs[i], 0xff, bytes(i)) != cudaSuccess) return false;
    }
    // The legacy stream does not order against the non-blocking streams of the calls.
    return cudaDeviceSynchronize() == cudaSuccess;
  }
  ringattn_status_t enqueue(ringattn_context_t ctx, cudaStream_t s) {
    ringattn_status_t st =
        ringattn_ring_forward(ctx, &t[0], &t[1], &t[2], &t[3], &t[4], &params, s);
    if (st != RINGATTN_SUCCESS) return st;
    return ringattn_ring_backward(ctx, &t[0], &t[1], &t[2], &t[3], &t[4], &t[5], &t[6], &t[7],
                                  &t[8], &params, s);
  }
  std::vector<std::vector<unsigned char>> outputs() const {
    std::vector<std::vector<unsigned char>> out;
    const int outputs[5] = {3, 4, 6, 7, 8};
    for (int i : outputs) {
      out.emplace_back(bytes(i));
      if (cudaMemcpy(out.back().data(), bufs[i], bytes(i), cudaMemcpyDeviceToHost) != cudaSuccess) {
        out.back().clear();
      }
    }
    return out;
  }
};

// A workspace that grows on one stream while the previous call, on another stream, has not run
// yet: the old workspace is freed only after that call (an event recorded at its end), never
// under it. The previous call's stream is held behind a host gate, so without that ordering the
// grown workspace (often the freed memory, from the same pool) is written by the new call
// before the previous one reads its K/V there, and the previous call's outputs change.
TEST(RingCudaWorkspace, GrowthOnAnotherStreamWaitsForThePreviousCall) {
  if (!have_device()) GTEST_SKIP() << "no CUDA device";
  // P > 1 has host waits on device copies, which the gate would hold: one rank.
  if (world_size() > 1) GTEST_SKIP() << "runs at one rank";
  ringattn_context_t ctx = nullptr;
  void* nccl = nullptr;
  std::string skip;
  ASSERT_EQ(make_cuda_context(kMpiStaged, 0, &ctx, &nccl, &skip), RINGATTN_SUCCESS)
      << ringattn_get_last_error();
  cudaStream_t a = nullptr, b = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&a, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaStreamCreateWithFlags(&b, cudaStreamNonBlocking), cudaSuccess);
  const uint64_t seed = shared_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  GraphProblem small, big(8 * GraphProblem::kRows);
  ASSERT_TRUE(small.ok && big.ok && small.fill(seed) && big.fill(seed + 1));
  ASSERT_EQ(small.enqueue(ctx, a), RINGATTN_SUCCESS) << ringattn_get_last_error();
  ASSERT_EQ(cudaStreamSynchronize(a), cudaSuccess);
  const auto expected = small.outputs();
  ASSERT_TRUE(small.poison());

  // Stream a waits at a host gate, released by a thread after 300 ms (so that nothing here can
  // deadlock on it); the small problem is enqueued behind it, then the big one on stream b.
  std::atomic<bool> open{false};
  ASSERT_EQ(cudaLaunchHostFunc(
                a,
                [](void* flag) {
                  while (!static_cast<std::atomic<bool>*>(flag)->load()) {
                    std::this_thread::sleep_for(std::chrono::milliseconds(1));
                  }
                },
                &open),
            cudaSuccess);
  std::thread opener([&open] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    open = true;
  });
  const ringattn_status_t st_small = small.enqueue(ctx, a);
  const ringattn_status_t st_big = big.enqueue(ctx, b);
  opener.join();
  EXPECT_EQ(st_small, RINGATTN_SUCCESS);
  EXPECT_EQ(st_big, RINGATTN_SUCCESS) << ringattn_get_last_error();
  EXPECT_EQ(cudaStreamSynchronize(a), cudaSuccess);
  EXPECT_EQ(cudaStreamSynchronize(b), cudaSuccess);
  EXPECT_TRUE(small.outputs() == expected) << "the call before the growth read freed memory";
  EXPECT_EQ(ringattn_context_destroy(ctx), RINGATTN_SUCCESS);
  cudaStreamDestroy(a);
  cudaStreamDestroy(b);
}

#if defined(RINGATTN_HAVE_NCCL)
// Captures what `enqueue` puts on `stream` into a graph, launches it once and waits: "" or what
// failed (on every rank). The graph stays in *graph / *exec for more launches.
std::string capture_and_launch(cudaStream_t stream,
                               const std::function<ringattn_status_t()>& enqueue,
                               cudaGraph_t* graph, cudaGraphExec_t* exec) {
  if (cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal) != cudaSuccess) {
    return "cudaStreamBeginCapture failed";
  }
  const ringattn_status_t captured = enqueue();
  const std::string msg = ringattn_get_last_error();
  const cudaError_t end = cudaStreamEndCapture(stream, graph);
  if (!all_ranks(captured == RINGATTN_SUCCESS && end == cudaSuccess)) {
    return msg + " / " + cudaGetErrorString(end);
  }
  if (cudaGraphInstantiate(exec, *graph, 0) != cudaSuccess ||
      cudaGraphLaunch(*exec, stream) != cudaSuccess ||
      cudaStreamSynchronize(stream) != cudaSuccess) {
    return "instantiating or launching the graph failed";
  }
  return "";
}

// options.capturable: after one eager call of a problem, a forward and backward captured on the
// caller's stream replay to the eager results bitwise, also on new inputs written into the same
// buffers; a call that would grow the workspace during a capture is refused on every rank.
TEST(RingCudaGraph, CapturedCallsReplayTheEagerResultsBitwise) {
  if (!have_device()) GTEST_SKIP() << "no CUDA device";
  int count = 0;
  cudaGetDeviceCount(&count);
  if (count < world_size()) GTEST_SKIP() << "NCCL needs one GPU per rank";
  cudaSetDevice(world_rank());
  ringattn_context_options_t opts = RINGATTN_CONTEXT_OPTIONS_INIT;
  opts.capturable = 1;
  ringattn_context_t ctx = nullptr;
  ASSERT_TRUE(all_ranks(ringattn_context_create_nccl_mpi(MPI_COMM_WORLD, RINGATTN_BACKEND_CUDA,
                                                         &opts, &ctx) == RINGATTN_SUCCESS))
      << ringattn_get_last_error();
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  GraphProblem prob;
  // Two input sets: RINGATTN_TEST_SEED fixes the seed, so the second is drawn from seed + 1.
  const uint64_t seed = shared_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  ASSERT_TRUE(all_ranks(prob.ok && prob.fill(seed)));
  ASSERT_TRUE(all_ranks(prob.enqueue(ctx, stream) == RINGATTN_SUCCESS))
      << ringattn_get_last_error();
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  const auto eager = prob.outputs();
  ringattn_ring_stats_t stats{};
  ASSERT_EQ(ringattn_context_last_stats(ctx, &stats), RINGATTN_SUCCESS);
  EXPECT_EQ(stats.device_compute_seconds, 0.0);  // no device timer when capturable

  ASSERT_TRUE(prob.poison());
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  const std::string failed = capture_and_launch(
      stream, [&] { return prob.enqueue(ctx, stream); }, &graph, &exec);
  ASSERT_EQ(failed, "");
  EXPECT_TRUE(all_ranks(prob.outputs() == eager)) << "replay differs from the eager call";

  // New inputs in the same buffers: the replay and an eager call agree again.
  ASSERT_TRUE(prob.fill(seed + 1));
  ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  const auto replayed = prob.outputs();
  ASSERT_TRUE(prob.poison());
  ASSERT_TRUE(all_ranks(prob.enqueue(ctx, stream) == RINGATTN_SUCCESS))
      << ringattn_get_last_error();
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  EXPECT_TRUE(all_ranks(prob.outputs() == replayed)) << "replay on new inputs differs";
  EXPECT_NE(replayed, eager);

  // A plan of the problem: its runs do no agreement and grow nothing, so they are captured with
  // no eager run of the plan first, and replay to the same bytes.
  ringattn_ring_plan_t plan = nullptr;
  ASSERT_TRUE(all_ranks(ringattn_ring_plan_create(ctx, &prob.t[0], &prob.t[1], &prob.t[2],
                                                  &prob.params, 1, &plan) == RINGATTN_SUCCESS))
      << ringattn_get_last_error();
  ASSERT_TRUE(prob.poison());
  cudaGraph_t plan_graph = nullptr;
  cudaGraphExec_t plan_exec = nullptr;
  const std::string plan_failed = capture_and_launch(
      stream,
      [&] {
        const ringattn_status_t st = ringattn_ring_plan_forward(
            plan, &prob.t[0], &prob.t[1], &prob.t[2], &prob.t[3], &prob.t[4], nullptr, 0, stream);
        if (st != RINGATTN_SUCCESS) return st;
        return ringattn_ring_plan_backward(plan, &prob.t[0], &prob.t[1], &prob.t[2], &prob.t[3],
                                           &prob.t[4], &prob.t[5], &prob.t[6], &prob.t[7],
                                           &prob.t[8], nullptr, 0, stream);
      },
      &plan_graph, &plan_exec);
  ASSERT_EQ(plan_failed, "");
  EXPECT_TRUE(all_ranks(prob.outputs() == replayed)) << "captured plan runs differ";
  cudaGraphExecDestroy(plan_exec);
  cudaGraphDestroy(plan_graph);
  ringattn_ring_plan_destroy(plan);

  // A longer problem than any before would grow the workspace inside the capture: refused on
  // every rank, nothing captured, and the context stays usable.
  GraphProblem longer(2 * GraphProblem::kRows);
  ASSERT_TRUE(all_ranks(longer.ok && longer.fill(seed + 2)));
  cudaGraph_t refused = nullptr;
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), cudaSuccess);
  const ringattn_status_t st = longer.enqueue(ctx, stream);
  const std::string msg = ringattn_get_last_error();
  EXPECT_EQ(cudaStreamEndCapture(stream, &refused), cudaSuccess);
  if (refused != nullptr) cudaGraphDestroy(refused);
  EXPECT_TRUE(all_ranks(st == RINGATTN_ERROR_UNSUPPORTED)) << ringattn_status_string(st) << msg;
  EXPECT_NE(msg.find("before capturing"), std::string::npos) << msg;
  EXPECT_TRUE(all_ranks(longer.enqueue(ctx, stream) == RINGATTN_SUCCESS))
      << ringattn_get_last_error();
  EXPECT_EQ(cudaStreamSynchronize(stream), cudaSuccess);

  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  ringattn_context_destroy(ctx);
  cudaStreamDestroy(stream);
}
#endif  // RINGATTN_HAVE_NCCL

std::vector<RingCase> cuda_cases() {
  std::vector<RingCase> all = ring_cases(false), bwd = ring_cases(true);
  all.insert(all.end(), bwd.begin(), bwd.end());
  return all;
}

// The same cases through the cuDNN path, in 16-bit precision (bfloat16 and float16 in turn) so
// that cuDNN computes what it can: every scheme, mask and packed layout splits into the
// sub-blocks cuDNN takes, with our kernels for the rest (the windows' edges).
std::vector<RingCase> cudnn_cases() {
  std::vector<RingCase> all = cuda_cases();
  for (size_t i = 0; i < all.size(); ++i) {
    if (all[i].dtype == kF32) all[i].dtype = i % 2 == 0 ? kBF16 : kF16;
    all[i].local_kernel = RINGATTN_LOCAL_KERNEL_CUDNN;
  }
  return all;
}

// Staged MPI and NCCL are separate instantiations, so that a run can pick one by name
// (--gtest_filter='Staged/*' or 'Nccl/*'): NCCL needs one GPU per rank, the staged transport
// runs P ranks on one GPU.
INSTANTIATE_TEST_SUITE_P(Staged, RingCuda,
                         ::testing::Combine(::testing::ValuesIn(cuda_cases()),
                                            ::testing::Values(kMpiStaged)));
INSTANTIATE_TEST_SUITE_P(Cudnn, RingCuda,
                         ::testing::Combine(::testing::ValuesIn(cudnn_cases()),
                                            ::testing::Values(kMpiStaged)));
INSTANTIATE_TEST_SUITE_P(Nccl, RingCuda,
                         ::testing::Combine(::testing::ValuesIn(cuda_cases()),
                                            ::testing::Values(kNcclOverMpi, kNcclCallerComm)));

}  // namespace
}  // namespace test
}  // namespace ringattn
