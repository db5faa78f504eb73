// Failures of distributed calls: ranks that disagree on the problem, a rank with invalid
// arguments, a rank that never calls, bad context arguments. Every rank must return an error
// that names the difference, within seconds, never hang.
#include <gtest/gtest.h>
#include <stddef.h>

#include <chrono>
#include <functional>
#include <string>

#include "dist_util.h"
#include "ringattn/ringattn_mpi.h"

namespace ringattn {
namespace test {
namespace {

ringattn_dtype_t api_dtype(DType t) {
  return t == kF16 ? RINGATTN_FLOAT16 : t == kBF16 ? RINGATTN_BFLOAT16 : RINGATTN_FLOAT32;
}

// Local zero tensors of one rank for a fixed-length or packed problem.
struct Local {
  DType dtype = kF32;
  bool packed = false;
  int64_t b = 1, s = 0, hq = 2, hkv = 1, d = 32;
  std::vector<unsigned char> q, k, v, o, dout, dq, dk, dv;
  std::vector<float> lse;
  ringattn_tensor_t tq{}, tk{}, tv{}, to{}, tlse{}, tdo{}, tdq{}, tdk{}, tdv{};

  void build() {
    const size_t e = dtype == kF32 ? 4 : 2;
    auto make = [&](std::vector<unsigned char>* buf, ringattn_tensor_t* t, int64_t h) {
      buf->assign(static_cast<size_t>(b * s * h * d) * e, 0);
      t->data = buf->data();
      t->dtype = api_dtype(dtype);
      if (packed) {
        t->ndim = 3;
        t->shape[0] = s, t->shape[1] = h, t->shape[2] = d;
        t->strides[0] = h * d, t->strides[1] = d, t->strides[2] = 1;
      } else {
        t->ndim = 4;
        t->shape[0] = b, t->shape[1] = s, t->shape[2] = h, t->shape[3] = d;
        t->strides[0] = s * h * d, t->strides[1] = h * d, t->strides[2] = d, t->strides[3] = 1;
      }
    };
    make(&q, &tq, hq);
    make(&k, &tk, hkv);
    make(&v, &tv, hkv);
    make(&o, &to, hq);
    make(&dout, &tdo, hq);
    make(&dq, &tdq, hq);
    make(&dk, &tdk, hkv);
    make(&dv, &tdv, hkv);
    lse.assign(static_cast<size_t>(b * hq * s), 0.0f);
    tlse.data = lse.data();
    tlse.dtype = RINGATTN_FLOAT32;
    if (packed) {
      tlse.ndim = 2;
      tlse.shape[0] = hq, tlse.shape[1] = s;
      tlse.strides[0] = s, tlse.strides[1] = 1;
    } else {
      tlse.ndim = 3;
      tlse.shape[0] = b, tlse.shape[1] = hq, tlse.shape[2] = s;
      tlse.strides[0] = hq * s, tlse.strides[1] = s, tlse.strides[2] = 1;
    }
  }
};

int64_t share(ringattn_scheme_t scheme, int64_t len) {
  int64_t n = 0;
  ringattn_shard_length(scheme, len, world_size(), world_rank(), &n);
  return n;
}

struct Outcome {
  ringattn_status_t status;
  std::string message;
  double seconds;
};

// Every rank runs `call` (its own variant of the problem) on a fresh context with a short
// timeout.
Outcome run(const std::function<ringattn_status_t(ringattn_context_t)>& call,
            int64_t timeout_ms = 5000) {
  ringattn_context_options_t opts = RINGATTN_CONTEXT_OPTIONS_INIT;
  opts.timeout_ms = timeout_ms;
  ringattn_context_t ctx = nullptr;
  EXPECT_EQ(ringattn_context_create(MPI_COMM_WORLD, RINGATTN_BACKEND_CPU, &opts, &ctx),
            RINGATTN_SUCCESS);
  const auto t0 = std::chrono::steady_clock::now();
  Outcome out;
  out.status = call(ctx);
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  out.message = ringattn_get_last_error();
  ringattn_context_destroy(ctx);
  MPI_Barrier(MPI_COMM_WORLD);
  return out;
}

// A forward of a fixed-length problem of global S = 100 where the last rank changes something.
Outcome forward_where_last_rank(
    const std::function<void(Local*, ringattn_attn_params_t*)>& change) {
  Local l;
  ringattn_attn_params_t p = RINGATTN_ATTN_PARAMS_INIT;
  p.scheme = RINGATTN_SCHEME_ZIGZAG;
  p.causal = 1;
  l.s = share(p.scheme, 100);
  if (world_rank() == world_size() - 1) change(&l, &p);
  l.build();
  return run([&](ringattn_context_t ctx) {
    return ringattn_ring_forward(ctx, &l.tq, &l.tk, &l.tv, &l.to, &l.tlse, &p, nullptr);
  });
}

void expect_everywhere(const Outcome& o, ringattn_status_t code, const std::string& words) {
  EXPECT_EQ(o.status, code) << o.message;
  EXPECT_NE(o.message.find(words), std::string::npos) << "message: " << o.message;
  EXPECT_LT(o.seconds, 3.0);
  EXPECT_TRUE(all_ranks(o.status == code));
}

class RingMismatch : public ::testing::Test {
 protected:
  void SetUp() override {
    if (world_size() < 2) GTEST_SKIP() << "needs two ranks to disagree";
  }
};

TEST_F(RingMismatch, CausalFlag) {
  expect_everywhere(
      forward_where_last_rank([](Local*, ringattn_attn_params_t* p) { p->causal = 0; }),
      RINGATTN_ERROR_MISMATCH, "causal");
}

TEST_F(RingMismatch, Window) {
  expect_everywhere(
      forward_where_last_rank([](Local*, ringattn_attn_params_t* p) { p->window_left = 16; }),
      RINGATTN_ERROR_MISMATCH, "window_left");
}

TEST_F(RingMismatch, Scheme) {
  expect_everywhere(forward_where_last_rank([](Local* l, ringattn_attn_params_t* p) {
                      p->scheme = RINGATTN_SCHEME_STRIPED;
                      l->s = share(p->scheme, 100);
                    }),
                    RINGATTN_ERROR_MISMATCH, "scheme");
}

TEST_F(RingMismatch, Scale) {
  expect_everywhere(
      forward_where_last_rank([](Local*, ringattn_attn_params_t* p) { p->softmax_scale = 0.5f; }),
      RINGATTN_ERROR_MISMATCH, "softmax scale");
}

TEST_F(RingMismatch, Dtype) {
  expect_everywhere(
      forward_where_last_rank([](Local* l, ringattn_attn_params_t*) { l->dtype = kBF16; }),
      RINGATTN_ERROR_MISMATCH, "dtype");
}

TEST_F(RingMismatch, HeadDim) {
  expect_everywhere(forward_where_last_rank([](Local* l, ringattn_attn_params_t*) { l->d = 64; }),
                    RINGATTN_ERROR_MISMATCH, "head dim");
}

TEST_F(RingMismatch, KvHeads) {
  expect_everywhere(forward_where_last_rank([](Local* l, ringattn_attn_params_t*) { l->hkv = 2; }),
                    RINGATTN_ERROR_MISMATCH, "key/value heads");
}

TEST_F(RingMismatch, LocalLengthThatIsNotTheSchemesShare) {
  expect_everywhere(forward_where_last_rank([](Local* l, ringattn_attn_params_t*) { l->s += 3; }),
                    RINGATTN_ERROR_SHAPE_MISMATCH, "share");
}

TEST_F(RingMismatch, LseGivenOnSomeRanksOnly) {
  Local l;
  ringattn_attn_params_t p = RINGATTN_ATTN_PARAMS_INIT;
  l.s = share(p.scheme, 50);
  l.build();
  const bool last = world_rank() == world_size() - 1;
  expect_everywhere(run([&](ringattn_context_t ctx) {
                      return ringattn_ring_forward(ctx, &l.tq, &l.tk, &l.tv, &l.to,
                                                   last ? nullptr : &l.tlse, &p, nullptr);
                    }),
                    RINGATTN_ERROR_MISMATCH, "'lse'");
}

TEST_F(RingMismatch, CuSeqlens) {
  Local l;
  l.packed = true;
  ringattn_attn_params_t p = RINGATTN_ATTN_PARAMS_INIT;
  p.scheme = RINGATTN_SCHEME_ZIGZAG;
  const bool last = world_rank() == world_size() - 1;
  // Same total, different split: {30, 20} against {20, 30}.
  const int64_t cu_a[3] = {0, 30, 50}, cu_b[3] = {0, 20, 50};
  const int64_t* cu = last ? cu_b : cu_a;
  p.cu_seqlens = cu;
  p.num_seqs = 2;
  l.s = share(p.scheme, cu[1]) + share(p.scheme, cu[2] - cu[1]);
  l.build();
  expect_everywhere(run([&](ringattn_context_t ctx) {
                      return ringattn_ring_forward(ctx, &l.tq, &l.tk, &l.tv, &l.to, &l.tlse, &p,
                                                   nullptr);
                    }),
                    RINGATTN_ERROR_MISMATCH, "cu_seqlens");
}

TEST_F(RingMismatch, ForwardOnSomeRanksBackwardOnOthers) {
  Local l;
  ringattn_attn_params_t p = RINGATTN_ATTN_PARAMS_INIT;
  l.s = share(p.scheme, 40);
  l.build();
  const bool last = world_rank() == world_size() - 1;
  expect_everywhere(run([&](ringattn_context_t ctx) {
                      if (last) {
                        return ringattn_ring_backward(ctx, &l.tq, &l.tk, &l.tv, &l.to, &l.tlse,
                                                      &l.tdo, &l.tdq, &l.tdk, &l.tdv, &p, nullptr);
                      }
                      return ringattn_ring_forward(ctx, &l.tq, &l.tk, &l.tv, &l.to, &l.tlse, &p,
                                                   nullptr);
                    }),
                    RINGATTN_ERROR_MISMATCH, "operation");
}

TEST(RingErrors, InvalidArgumentOnOneRankFailsEveryRank) {
  Local l;
  ringattn_attn_params_t p = RINGATTN_ATTN_PARAMS_INIT;
  l.s = share(p.scheme, 64);
  l.build();
  const bool last = world_rank() == world_size() - 1;
  const Outcome o = run([&](ringattn_context_t ctx) {
    return ringattn_ring_forward(ctx, last ? nullptr : &l.tq, &l.tk, &l.tv, &l.to, &l.tlse, &p,
                                 nullptr);
  });
  expect_everywhere(o, RINGATTN_ERROR_NULL_POINTER, last ? "'q'" : "rejected its arguments");
}

TEST(RingErrors, PackedLocalLengthMustBeTheRanksShare) {
  Local l;
  l.packed = true;
  ringattn_attn_params_t p = RINGATTN_ATTN_PARAMS_INIT;
  p.scheme = RINGATTN_SCHEME_STRIPED;
  const int64_t cu[3] = {0, 7, 40};
  p.cu_seqlens = cu;
  p.num_seqs = 2;
  l.s = share(p.scheme, 7) + share(p.scheme, 33) + 1;  // one token too many on every rank
  l.build();
  const Outcome o = run([&](ringattn_context_t ctx) {
    return ringattn_ring_forward(ctx, &l.tq, &l.tk, &l.tv, &l.to, &l.tlse, &p, nullptr);
  });
  EXPECT_EQ(o.status, RINGATTN_ERROR_SHAPE_MISMATCH) << o.message;
  EXPECT_NE(o.message.find("share"), std::string::npos) << o.message;
}

TEST(RingErrors, UnsupportedHeadDimIsUnsupportedEverywhere) {
  const Outcome o = forward_where_last_rank([](Local*, ringattn_attn_params_t*) {});
  EXPECT_EQ(o.status, RINGATTN_SUCCESS) << o.message;  // the baseline is valid
  Local l;
  l.d = 20;
  ringattn_attn_params_t p = RINGATTN_ATTN_PARAMS_INIT;
  l.s = share(p.scheme, 30);
  l.build();
  const Outcome u = run([&](ringattn_context_t ctx) {
    return ringattn_ring_forward(ctx, &l.tq, &l.tk, &l.tv, &l.to, &l.tlse, &p, nullptr);
  });
  EXPECT_EQ(u.status, RINGATTN_ERROR_UNSUPPORTED) << u.message;
}

TEST(RingErrors, RankThatNeverCallsMakesTheOthersTimeOut) {
  if (world_size() < 2) GTEST_SKIP() << "needs a missing peer";
  Local l;
  ringattn_attn_params_t p = RINGATTN_ATTN_PARAMS_INIT;
  l.s = share(p.scheme, 64);
  l.build();
  const bool last = world_rank() == world_size() - 1;
  ringattn_context_options_t opts = RINGATTN_CONTEXT_OPTIONS_INIT;
  opts.timeout_ms = 400;
  ringattn_context_t ctx = nullptr;
  ASSERT_EQ(ringattn_context_create(MPI_COMM_WORLD, RINGATTN_BACKEND_CPU, &opts, &ctx),
            RINGATTN_SUCCESS);
  if (!last) {
    const auto t0 = std::chrono::steady_clock::now();
    const ringattn_status_t st =
        ringattn_ring_forward(ctx, &l.tq, &l.tk, &l.tv, &l.to, &l.tlse, &p, nullptr);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_EQ(st, RINGATTN_ERROR_TIMEOUT) << ringattn_get_last_error();
    const std::string msg = ringattn_get_last_error();
    EXPECT_NE(msg.find("did not"), std::string::npos);
    EXPECT_LT(secs, 3.0);
    // Queries after the failure leave its message in place (tools read the statistics first).
    ringattn_ring_stats_t stats{};
    int32_t rank = -1;
    size_t ws = 0;
    EXPECT_EQ(ringattn_context_last_stats(ctx, &stats), RINGATTN_SUCCESS);
    EXPECT_EQ(ringattn_context_rank(ctx, &rank, nullptr), RINGATTN_SUCCESS);
    EXPECT_EQ(ringattn_context_workspace_size(ctx, &ws), RINGATTN_SUCCESS);
    EXPECT_EQ(std::string(ringattn_get_last_error()), msg);
    // The context is unusable afterwards and says so at once.
    EXPECT_EQ(ringattn_ring_forward(ctx, &l.tq, &l.tk, &l.tv, &l.to, &l.tlse, &p, nullptr),
              RINGATTN_ERROR_COMM);
  }
  EXPECT_EQ(ringattn_context_destroy(ctx), RINGATTN_SUCCESS);
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(RingErrors, ContextArguments) {
  ringattn_context_t ctx = nullptr;
  EXPECT_EQ(ringattn_context_create(MPI_COMM_WORLD, RINGATTN_BACKEND_CPU, nullptr, nullptr),
            RINGATTN_ERROR_NULL_POINTER);
  ringattn_context_options_t bad = RINGATTN_CONTEXT_OPTIONS_INIT;
  bad.struct_size = 4;
  EXPECT_EQ(ringattn_context_create(MPI_COMM_WORLD, RINGATTN_BACKEND_CPU, &bad, &ctx),
            RINGATTN_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(ringattn_get_last_error()).find("struct_size"), std::string::npos);
  EXPECT_EQ(ringattn_context_create(MPI_COMM_NULL, RINGATTN_BACKEND_CPU, nullptr, &ctx),
            RINGATTN_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(ringattn_context_create(MPI_COMM_WORLD, RINGATTN_BACKEND_CUDA, nullptr, &ctx),
            RINGATTN_SUCCESS);
  EXPECT_EQ(ctx, nullptr);
  EXPECT_EQ(ringattn_context_destroy(nullptr), RINGATTN_SUCCESS);
  EXPECT_EQ(
      ringattn_ring_forward(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr),
      RINGATTN_ERROR_NULL_POINTER);
  int32_t r = -1, w = -1;
  ASSERT_EQ(ringattn_context_create(MPI_COMM_WORLD, RINGATTN_BACKEND_CPU, nullptr, &ctx),
            RINGATTN_SUCCESS);
  EXPECT_EQ(ringattn_context_rank(ctx, &r, &w), RINGATTN_SUCCESS);
  EXPECT_EQ(r, world_rank());
  EXPECT_EQ(w, world_size());
  ringattn_context_destroy(ctx);
}

// options.capturable needs the NCCL transport: the MPI transports wait on the host. An options
// struct of the first version (without `capturable`) is still accepted, its later fields
// defaulted; the CPU backend has no device timer.
TEST(RingErrors, ContextOptionsVersionsAndCapturable) {
  ringattn_context_t ctx = nullptr;
  ringattn_context_options_t opts = RINGATTN_CONTEXT_OPTIONS_INIT;
  opts.capturable = 1;
  EXPECT_EQ(ringattn_context_create(MPI_COMM_WORLD, RINGATTN_BACKEND_CPU, &opts, &ctx),
            RINGATTN_ERROR_UNSUPPORTED);
  EXPECT_NE(std::string(ringattn_get_last_error()).find("'options'.capturable"), std::string::npos)
      << ringattn_get_last_error();
  EXPECT_EQ(ctx, nullptr);
  EXPECT_EQ(ringattn_context_create(MPI_COMM_WORLD, RINGATTN_BACKEND_CUDA, &opts, &ctx),
            RINGATTN_ERROR_UNSUPPORTED);
  EXPECT_EQ(ctx, nullptr);

  // Version 1: struct_size up to `chunks`; `capturable` beyond it is not read.
  opts.struct_size = offsetof(ringattn_context_options_t, capturable);
  opts.chunks = 3;
  ASSERT_EQ(ringattn_context_create(MPI_COMM_WORLD, RINGATTN_BACKEND_CPU, &opts, &ctx),
            RINGATTN_SUCCESS)
      << ringattn_get_last_error();
  Local l;
  ringattn_attn_params_t p = RINGATTN_ATTN_PARAMS_INIT;
  l.s = share(p.scheme, 64);
  l.build();
  ASSERT_EQ(ringattn_ring_forward(ctx, &l.tq, &l.tk, &l.tv, &l.to, &l.tlse, &p, nullptr),
            RINGATTN_SUCCESS)
      << ringattn_get_last_error();
  ringattn_ring_stats_t stats{};
  stats.device_compute_seconds = -1;
  ASSERT_EQ(ringattn_context_last_stats(ctx, &stats), RINGATTN_SUCCESS);
  EXPECT_EQ(stats.device_compute_seconds, 0.0);
  EXPECT_GT(stats.compute_seconds, 0.0);
  EXPECT_EQ(stats.steps, world_size());
  ringattn_context_destroy(ctx);
}

TEST(RingErrors, DestroyNeverTouchesTheCallersCommunicator) {
  MPI_Comm user;
  MPI_Comm_dup(MPI_COMM_WORLD, &user);
  ringattn_context_t ctx = nullptr;
  ASSERT_EQ(ringattn_context_create(user, RINGATTN_BACKEND_CPU, nullptr, &ctx), RINGATTN_SUCCESS);
  EXPECT_EQ(ringattn_context_destroy(ctx), RINGATTN_SUCCESS);
  int one = 1, sum = 0;
  EXPECT_EQ(MPI_Allreduce(&one, &sum, 1, MPI_INT, MPI_SUM, user), MPI_SUCCESS);
  EXPECT_EQ(sum, world_size());
  int cmp = MPI_UNEQUAL;
  MPI_Comm_compare(user, MPI_COMM_WORLD, &cmp);
  EXPECT_EQ(cmp, MPI_CONGRUENT);
  MPI_Comm_free(&user);
}

}  // namespace
}  // namespace test
}  // namespace ringattn
