// Ring plans (ringattn_ring_plan_*): runs of a plan give the bytes of the one-shot calls on the
// same tensors, again and again, in the plan's own workspace or the caller's, without growing
// the context's workspace; the problem is agreed once, at plan creation, where a mismatch is an
// error on every rank; runs check their tensors and workspace against the plan.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "dist_util.h"
#include "ringattn/ringattn.hpp"
#include "ringattn/ringattn_mpi.h"

namespace ringattn {
namespace test {
namespace {

// This rank's local tensors of a fixed-length problem: S_local rows of the scheme's share.
struct Local {
  ringattn_dtype_t dtype;
  int64_t s = 0, hq = 4, hkv = 2, d = 64;
  std::vector<unsigned char> q, k, v, o, dout, dq, dk, dv;
  std::vector<float> lse;
  ringattn_tensor_t tq{}, tk{}, tv{}, to{}, tlse{}, tdo{}, tdq{}, tdk{}, tdv{};

  Local(ringattn_dtype_t t, ringattn_scheme_t scheme, int64_t global_seq) : dtype(t) {
    ringattn_shard_length(scheme, global_seq, world_size(), world_rank(), &s);
    const size_t e = t == RINGATTN_FLOAT32 ? 4 : 2;
    std::mt19937 gen(77u + static_cast<unsigned>(world_rank()));
    auto make = [&](std::vector<unsigned char>* buf, ringattn_tensor_t* d_, int64_t h, bool fill) {
      buf->assign(static_cast<size_t>(s * h * d) * e, 0);
      if (fill) {
        for (size_t i = 0; i + 1 < buf->size(); i += e) {
          const float x = std::uniform_real_distribution<float>(-1.f, 1.f)(gen);
          if (e == 4) {
            std::memcpy(&(*buf)[i], &x, 4);
          } else {
            uint32_t b;
            std::memcpy(&b, &x, 4);
            const uint16_t h16 = static_cast<uint16_t>(b >> 16);  // bf16 (truncated)
            std::memcpy(&(*buf)[i], &h16, 2);
          }
        }
      }
      *d_ = tensor_bshd(buf->data(), t, 1, s, h, d);
    };
    make(&q, &tq, hq, true);
    make(&k, &tk, hkv, true);
    make(&v, &tv, hkv, true);
    make(&dout, &tdo, hq, true);
    make(&o, &to, hq, false);
    make(&dq, &tdq, hq, false);
    make(&dk, &tdk, hkv, false);
    make(&dv, &tdv, hkv, false);
    lse.assign(static_cast<size_t>(hq * s), 0.f);
    tlse = lse_bhs(lse.data(), 1, hq, s);
  }
  std::vector<std::vector<unsigned char>> outputs() const {
    std::vector<unsigned char> l(lse.size() * 4);
    std::memcpy(l.data(), lse.data(), l.size());
    return {o, l, dq, dk, dv};
  }
  void poison() {
    for (auto* b : {&o, &dq, &dk, &dv}) std::fill(b->begin(), b->end(), 0xff);
    std::fill(lse.begin(), lse.end(), -1.f);
  }
};

char* align64(double* p) {
  return reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(p) + 63) / 64 * 64);
}

ringattn_context_t make_ctx() {
  ringattn_context_options_t opts = RINGATTN_CONTEXT_OPTIONS_INIT;
  opts.timeout_ms = 20000;
  ringattn_context_t ctx = nullptr;
  EXPECT_EQ(ringattn_context_create(MPI_COMM_WORLD, RINGATTN_BACKEND_CPU, &opts, &ctx),
            RINGATTN_SUCCESS)
      << ringattn_get_last_error();
  return ctx;
}

ringattn_status_t one_shot(ringattn_context_t ctx, Local* l, const ringattn_attn_params_t& p) {
  ringattn_status_t st =
      ringattn_ring_forward(ctx, &l->tq, &l->tk, &l->tv, &l->to, &l->tlse, &p, nullptr);
  if (st != RINGATTN_SUCCESS) return st;
  return ringattn_ring_backward(ctx, &l->tq, &l->tk, &l->tv, &l->to, &l->tlse, &l->tdo, &l->tdq,
                                &l->tdk, &l->tdv, &p, nullptr);
}

ringattn_status_t plan_run(ringattn_ring_plan_t plan, Local* l, void* ws, size_t bytes) {
  ringattn_status_t st = ringattn_ring_plan_forward(plan, &l->tq, &l->tk, &l->tv, &l->to, &l->tlse,
                                                    ws, bytes, nullptr);
  if (st != RINGATTN_SUCCESS) return st;
  return ringattn_ring_plan_backward(plan, &l->tq, &l->tk, &l->tv, &l->to, &l->tlse, &l->tdo,
                                     &l->tdq, &l->tdk, &l->tdv, ws, bytes, nullptr);
}

TEST(RingPlanApi, RunsGiveTheOneShotBytesAndGrowNothing) {
  struct Case {
    ringattn_dtype_t dtype;
    ringattn_scheme_t scheme;
    bool causal;
    int64_t window_left;
  } cases[] = {{RINGATTN_BFLOAT16, RINGATTN_SCHEME_ZIGZAG, true, -1},
               {RINGATTN_FLOAT32, RINGATTN_SCHEME_CONTIGUOUS, false, -1},
               {RINGATTN_FLOAT32, RINGATTN_SCHEME_STRIPED, true, 17}};
  for (const Case& c : cases) {
    SCOPED_TRACE("dtype " + std::to_string(c.dtype) + " scheme " + std::to_string(c.scheme));
    ringattn_attn_params_t p = RINGATTN_ATTN_PARAMS_INIT;
    p.scheme = c.scheme;
    p.causal = c.causal;
    p.window_left = c.window_left;
    Local l(c.dtype, c.scheme, 149);
    ringattn_context_t ref_ctx = make_ctx();
    ASSERT_TRUE(all_ranks(one_shot(ref_ctx, &l, p) == RINGATTN_SUCCESS))
        << ringattn_get_last_error();
    const auto want = l.outputs();
    ringattn_context_destroy(ref_ctx);

    // The plan's own workspace; the context's stays empty.
    ringattn_context_t ctx = make_ctx();
    ringattn_ring_plan_t plan = nullptr;
    ASSERT_TRUE(all_ranks(ringattn_ring_plan_create(ctx, &l.tq, &l.tk, &l.tv, &p, 1, &plan) ==
                          RINGATTN_SUCCESS))
        << ringattn_get_last_error();
    for (int run = 0; run < 3; ++run) {
      l.poison();
      ASSERT_TRUE(all_ranks(plan_run(plan, &l, nullptr, 0) == RINGATTN_SUCCESS))
          << ringattn_get_last_error();
      EXPECT_TRUE(all_ranks(l.outputs() == want)) << "run " << run;
    }
    size_t ctx_ws = 1;
    ASSERT_EQ(ringattn_context_workspace_size(ctx, &ctx_ws), RINGATTN_SUCCESS);
    EXPECT_EQ(ctx_ws, 0u);
    ringattn_ring_stats_t stats{};
    ASSERT_EQ(ringattn_context_last_stats(ctx, &stats), RINGATTN_SUCCESS);
    EXPECT_EQ(stats.steps, world_size());

    // The caller's workspace, with a plan that has none.
    ringattn_ring_plan_t bare = nullptr;
    ASSERT_TRUE(all_ranks(ringattn_ring_plan_create(ctx, &l.tq, &l.tk, &l.tv, &p, 0, &bare) ==
                          RINGATTN_SUCCESS));
    size_t bytes = 0;
    ASSERT_EQ(ringattn_ring_plan_workspace_size(bare, &bytes), RINGATTN_SUCCESS);
    EXPECT_GT(bytes, 0u);
    std::vector<double> ws(bytes / sizeof(double) + 16);
    char* aligned = align64(ws.data());
    l.poison();
    ASSERT_TRUE(all_ranks(plan_run(bare, &l, aligned, bytes) == RINGATTN_SUCCESS))
        << ringattn_get_last_error();
    EXPECT_TRUE(all_ranks(l.outputs() == want));
    ringattn_ring_plan_destroy(bare);
    ringattn_ring_plan_destroy(plan);
    ringattn_context_destroy(ctx);
  }
}

// Argument errors of runs, made the same way on every rank (a run checks on its own rank only).
TEST(RingPlanApi, RunsCheckTheirTensorsAndWorkspace) {
  ringattn_attn_params_t p = RINGATTN_ATTN_PARAMS_INIT;
  p.scheme = RINGATTN_SCHEME_ZIGZAG;
  Local l(RINGATTN_FLOAT32, RINGATTN_SCHEME_ZIGZAG, 96);
  ringattn_context_t ctx = make_ctx();
  ringattn_ring_plan_t plan = nullptr;
  ASSERT_TRUE(all_ranks(ringattn_ring_plan_create(ctx, &l.tq, &l.tk, &l.tv, &p, 0, &plan) ==
                        RINGATTN_SUCCESS));
  EXPECT_EQ(
      ringattn_ring_plan_forward(plan, &l.tq, &l.tk, &l.tv, &l.to, &l.tlse, nullptr, 0, nullptr),
      RINGATTN_ERROR_NULL_POINTER);
  EXPECT_NE(std::string(ringattn_get_last_error()).find("own_workspace"), std::string::npos);
  size_t bytes = 0;
  ringattn_ring_plan_workspace_size(plan, &bytes);
  std::vector<double> ws(bytes / sizeof(double) + 16);
  char* aligned = align64(ws.data());
  EXPECT_EQ(ringattn_ring_plan_forward(plan, &l.tq, &l.tk, &l.tv, &l.to, &l.tlse, aligned,
                                       bytes - 1, nullptr),
            RINGATTN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(ringattn_ring_plan_forward(plan, &l.tq, &l.tk, &l.tv, &l.to, &l.tlse, aligned + 8,
                                       bytes, nullptr),
            RINGATTN_ERROR_INVALID_ARGUMENT);
  Local other(RINGATTN_FLOAT32, RINGATTN_SCHEME_ZIGZAG, 128);
  EXPECT_EQ(ringattn_ring_plan_forward(plan, &other.tq, &other.tk, &other.tv, &other.to,
                                       &other.tlse, aligned, bytes, nullptr),
            RINGATTN_ERROR_SHAPE_MISMATCH);
  EXPECT_NE(std::string(ringattn_get_last_error()).find("plan's"), std::string::npos)
      << ringattn_get_last_error();
  // The context is still usable: a good run follows.
  EXPECT_TRUE(all_ranks(plan_run(plan, &l, aligned, bytes) == RINGATTN_SUCCESS))
      << ringattn_get_last_error();
  EXPECT_EQ(ringattn_ring_plan_destroy(plan), RINGATTN_SUCCESS);
  EXPECT_EQ(ringattn_ring_plan_destroy(nullptr), RINGATTN_SUCCESS);
  ringattn_context_destroy(ctx);
}

// The problem is agreed at plan creation: a rank with another problem fails every rank there.
TEST(RingPlanApi, CreationAgreesOnTheProblemOnEveryRank) {
  if (world_size() < 2) GTEST_SKIP() << "needs two ranks to disagree";
  ringattn_attn_params_t p = RINGATTN_ATTN_PARAMS_INIT;
  p.scheme = RINGATTN_SCHEME_ZIGZAG;
  p.causal = world_rank() == 1 ? 1 : 0;
  Local l(RINGATTN_FLOAT32, RINGATTN_SCHEME_ZIGZAG, 64);
  ringattn_context_t ctx = make_ctx();
  ringattn_ring_plan_t plan = nullptr;
  EXPECT_EQ(ringattn_ring_plan_create(ctx, &l.tq, &l.tk, &l.tv, &p, 1, &plan),
            RINGATTN_ERROR_MISMATCH);
  EXPECT_NE(std::string(ringattn_get_last_error()).find("causal"), std::string::npos)
      << ringattn_get_last_error();
  EXPECT_EQ(plan, nullptr);
  ringattn_context_destroy(ctx);
}

}  // namespace
}  // namespace test
}  // namespace ringattn
