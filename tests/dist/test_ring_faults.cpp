// Failure paths of the ring executor that no real backend can be made to take on demand: the
// executor is compiled into this test from its sources and run over the real MPI transport with
// a backend that delegates to the CPU backend and fails one chosen operation. After such a
// failure no exchange may outlive the call: the next call on the same context must run, and
// give the same bytes as a context that never failed.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend.h"
#include "mpi_transport.h"
#include "ring_context.h"

namespace ringattn {
namespace {

int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

bool all_ranks(bool mine) {
  int in = mine ? 1 : 0, out = 0;
  MPI_Allreduce(&in, &out, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return out == 1;
}

// The CPU backend, except that a convert writing into [fail_begin, fail_end) fails (while
// armed) with RINGATTN_ERROR_INTERNAL.
class FaultyBackend final : public Backend {
 public:
  FaultyBackend() : cpu_(cpu_backend()) {}
  const char* fail_begin = nullptr;
  const char* fail_end = nullptr;
  bool armed = false;
  int failures = 0;

  ringattn_backend_t kind() const override { return cpu_->kind(); }
  Status forward(const FwdParams& p, void* s) override { return cpu_->forward(p, s); }
  Status backward(const BwdParams& p, void* s) override { return cpu_->backward(p, s); }
  size_t backward_query_pack_bytes(const BwdParams& p) const override {
    return cpu_->backward_query_pack_bytes(p);
  }
  Status pack_backward_queries(const BwdParams& p, void* pack, void* s) override {
    return cpu_->pack_backward_queries(p, pack, s);
  }
  Status compute_delta(int64_t b, int64_t n, int64_t h, int64_t d, const TensorRef& dout,
                       const TensorRef& o, const RowStatRef& delta, void* s) override {
    return cpu_->compute_delta(b, n, h, d, dout, o, delta, s);
  }
  Status convert(int64_t b, int64_t n, int64_t h, int64_t d, const TensorRef& src,
                 const TensorRef& dst, void* s) override {
    const char* at = static_cast<const char*>(dst.data);
    if (armed && at >= fail_begin && at < fail_end) {
      ++failures;
      return set_error(RINGATTN_ERROR_INTERNAL, "injected convert failure");
    }
    return cpu_->convert(b, n, h, d, src, dst, s);
  }
  Status accumulate(int64_t b, int64_t n, int64_t h, int64_t d, const TensorRef& src,
                    const TensorRef& dst, void* s) override {
    return cpu_->accumulate(b, n, h, d, src, dst, s);
  }
  Status fill_rowstat(int64_t b, int64_t h, int64_t n, const RowStatRef& dst, float value,
                      void* s) override {
    return cpu_->fill_rowstat(b, h, n, dst, value, s);
  }
  Status upload(void* dst, const void* host, size_t bytes, void* s) override {
    return cpu_->upload(dst, host, bytes, s);
  }
  void* alloc(size_t bytes, void* s) override { return cpu_->alloc(bytes, s); }
  void free(void* ptr, void* s) override { cpu_->free(ptr, s); }

 private:
  Backend* cpu_;
};

// One rank's float32 tensors of a contiguous full-attention problem: B = 1, `rows` local rows,
// Hq = 2, Hkv = 1, D = 32.
struct Problem {
  static constexpr int64_t kHq = 2, kHkv = 1, kD = 32;
  int64_t rows;
  std::vector<float> q, k, v, o, lse, dout, dq, dk, dv;
  ringattn_tensor_t tq{}, tk{}, tv{}, to{}, tlse{}, tdo{}, tdq{}, tdk{}, tdv{};
  ringattn_attn_params_t params = RINGATTN_ATTN_PARAMS_INIT;

  explicit Problem(int64_t local_rows) : rows(local_rows) {
    std::mt19937 gen(1234u + static_cast<unsigned>(world_rank()));
    std::uniform_real_distribution<float> dist(-1.f, 1.f);
    auto make = [&](std::vector<float>* buf, ringattn_tensor_t* t, int64_t h, bool fill) {
      buf->assign(static_cast<size_t>(rows * h * kD), 0.f);
      if (fill) {
        for (float& x : *buf) x = dist(gen);
      }
      t->data = buf->data();
      t->dtype = RINGATTN_FLOAT32;
      t->ndim = 4;
      t->shape[0] = 1, t->shape[1] = rows, t->shape[2] = h, t->shape[3] = kD;
      t->strides[0] = rows * h * kD, t->strides[1] = h * kD, t->strides[2] = kD;
      t->strides[3] = 1;
    };
    make(&q, &tq, kHq, true);
    make(&k, &tk, kHkv, true);
    make(&v, &tv, kHkv, true);
    make(&o, &to, kHq, false);
    make(&dout, &tdo, kHq, true);
    make(&dq, &tdq, kHq, false);
    make(&dk, &tdk, kHkv, false);
    make(&dv, &tdv, kHkv, false);
    lse.assign(static_cast<size_t>(kHq * rows), 0.f);
    tlse.data = lse.data();
    tlse.dtype = RINGATTN_FLOAT32;
    tlse.ndim = 3;
    tlse.shape[0] = 1, tlse.shape[1] = kHq, tlse.shape[2] = rows;
    tlse.strides[0] = kHq * rows, tlse.strides[1] = rows, tlse.strides[2] = 1;
    params.scheme = RINGATTN_SCHEME_CONTIGUOUS;
  }
  Status forward(RingContext* ctx) {
    return ctx->forward(&tq, &tk, &tv, &to, &tlse, &params, nullptr);
  }
  Status backward(RingContext* ctx) {
    return ctx->backward(&tq, &tk, &tv, &to, &tlse, &tdo, &tdq, &tdk, &tdv, &params, nullptr);
  }
};

std::unique_ptr<RingContext> make_ring(Backend* backend, int32_t chunks) {
  ringattn_status_t st = RINGATTN_SUCCESS;
  std::string err;
  std::unique_ptr<comm::Transport> t = comm::MpiTransport::create(MPI_COMM_WORLD, 20000, &st, &err);
  if (!t) return nullptr;
  return std::unique_ptr<RingContext>(new RingContext(std::move(t), backend, chunks));
}

// The backward's last loop casts each chunk's finished dK/dV accumulators while later chunks'
// accumulators are still arriving. A failure in that cast on one rank must not leave those
// receives in flight: the rank's next call would fail with "exchange started twice".
TEST(RingFaults, FailureInTheBackwardsFinalCastLeavesNoExchangeInFlight) {
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  if (world < 2) GTEST_SKIP() << "needs a ring of two ranks or more";
  constexpr int32_t kChunks = 4;
  const int64_t rows = 64;  // 16 key rows per chunk on every rank

  // The bytes a context that never failed produces.
  Problem clean(rows);
  FaultyBackend healthy;
  std::unique_ptr<RingContext> ref = make_ring(&healthy, kChunks);
  ASSERT_TRUE(all_ranks(ref != nullptr));
  ASSERT_TRUE(all_ranks(clean.forward(ref.get()) == RINGATTN_SUCCESS)) << last_error();
  ASSERT_TRUE(all_ranks(clean.backward(ref.get()) == RINGATTN_SUCCESS)) << last_error();

  Problem prob(rows);
  FaultyBackend faulty;
  std::unique_ptr<RingContext> ctx = make_ring(&faulty, kChunks);
  ASSERT_TRUE(all_ranks(ctx != nullptr));
  ASSERT_TRUE(all_ranks(prob.forward(ctx.get()) == RINGATTN_SUCCESS)) << last_error();
  // Rank 0 fails its first chunk's cast into dK.
  faulty.fail_begin = reinterpret_cast<const char*>(prob.dk.data());
  faulty.fail_end = faulty.fail_begin + prob.dk.size() * sizeof(float);
  faulty.armed = world_rank() == 0;
  const Status failed = prob.backward(ctx.get());
  faulty.armed = false;
  if (world_rank() == 0) {
    EXPECT_EQ(failed, RINGATTN_ERROR_INTERNAL);
    EXPECT_NE(std::string(last_error()).find("injected"), std::string::npos) << last_error();
    EXPECT_EQ(faulty.failures, 1);
  } else {
    EXPECT_EQ(failed, RINGATTN_SUCCESS) << last_error();
  }

  // The same context runs the next call on every rank, to the clean context's bytes.
  const Status again = prob.backward(ctx.get());
  EXPECT_TRUE(all_ranks(again == RINGATTN_SUCCESS)) << last_error();
  EXPECT_TRUE(all_ranks(prob.dq == clean.dq && prob.dk == clean.dk && prob.dv == clean.dv));
  EXPECT_TRUE(all_ranks(prob.o == clean.o && prob.lse == clean.lse));
}

}  // namespace
}  // namespace ringattn

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  ::testing::InitGoogleTest(&argc, argv);
  if (ringattn::world_rank() != 0) {
    ::testing::TestEventListeners& l = ::testing::UnitTest::GetInstance()->listeners();
    delete l.Release(l.default_result_printer());
  }
  const int local = RUN_ALL_TESTS();
  int any = 0;
  MPI_Allreduce(&local, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return any != 0 ? 1 : 0;
}
