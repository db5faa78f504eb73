// Ring contexts and plans without MPI (ringattn_ring.h, ringattn.hpp): this executable links
// no MPI, so it also runs in a -DRINGATTN_ENABLE_MPI=OFF build. A one-rank ring (the
// compute-only context at world size 1 is the whole ring: step 0 computes on the rank's own
// K/V) against the float64 reference; plan runs bitwise equal to one-shot calls, in the plan's
// workspace and in the caller's, with no allocation after the first run (counted by
// interposing malloc); struct-size version skew of the params and the context options.
#include <gtest/gtest.h>
#include <stddef.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "reference.h"
#include "ringattn/ringattn.hpp"

// ---- allocation counter ------------------------------------------------------------------------
// Every heap allocation of the process goes through these while g_counting is set (ELF symbol
// interposition reaches the library's malloc, aligned_alloc and operator new). Not under ASan,
// which interposes them itself.
#if defined(__SANITIZE_ADDRESS__)
#define RINGATTN_COUNT_ALLOCATIONS 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RINGATTN_COUNT_ALLOCATIONS 0
#endif
#endif
#ifndef RINGATTN_COUNT_ALLOCATIONS
#define RINGATTN_COUNT_ALLOCATIONS 1
#endif

namespace {
std::atomic<bool> g_counting{false};
std::atomic<long> g_allocations{0};
}  // namespace

#if RINGATTN_COUNT_ALLOCATIONS
extern "C" {
void* __libc_malloc(size_t);
void* __libc_calloc(size_t, size_t);
void* __libc_realloc(void*, size_t);
void* __libc_memalign(size_t, size_t);

static inline void count_one() {
  if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1);
}
void* malloc(size_t n) {
  count_one();
  return __libc_malloc(n);
}
void* calloc(size_t n, size_t m) {
  count_one();
  return __libc_calloc(n, m);
}
void* realloc(void* p, size_t n) {
  count_one();
  return __libc_realloc(p, n);
}
void* aligned_alloc(size_t align, size_t n) {
  count_one();
  return __libc_memalign(align, n);
}
void* memalign(size_t align, size_t n) {
  count_one();
  return __libc_memalign(align, n);
}
int posix_memalign(void** out, size_t align, size_t n) {
  count_one();
  void* p = __libc_memalign(align, n);
  if (p == nullptr) return 12;  // ENOMEM
  *out = p;
  return 0;
}
}  // extern "C"
#endif

namespace ringattn {
namespace test {
namespace {

// A fixed-length problem [1, S, H, D] in one dtype, with its C descriptors.
struct Problem {
  DType dtype;
  ringattn_dtype_t cdtype;
  int64_t s, hq, hkv, d;
  std::vector<double> q, k, v, dout;
  HostTensor tq, tk, tv, to, tdo, tdq, tdk, tdv;
  std::vector<float> lse;
  ringattn_tensor_t cq{}, ck{}, cv{}, co{}, clse{}, cdo{}, cdq{}, cdk{}, cdv{};

  Problem(DType t, int64_t s_, int64_t hq_, int64_t hkv_, int64_t d_, uint64_t seed)
      : dtype(t),
        cdtype(static_cast<ringattn_dtype_t>(t)),
        s(s_),
        hq(hq_),
        hkv(hkv_),
        d(d_),
        q(random_values(static_cast<size_t>(s * hq * d), seed, t)),
        k(random_values(static_cast<size_t>(s * hkv * d), seed + 1, t)),
        v(random_values(static_cast<size_t>(s * hkv * d), seed + 2, t)),
        dout(random_values(static_cast<size_t>(s * hq * d), seed + 3, t)),
        tq(t, 1, s, hq, d),
        tk(t, 1, s, hkv, d),
        tv(t, 1, s, hkv, d),
        to(t, 1, s, hq, d),
        tdo(t, 1, s, hq, d),
        tdq(t, 1, s, hq, d),
        tdk(t, 1, s, hkv, d),
        tdv(t, 1, s, hkv, d),
        lse(static_cast<size_t>(hq * s)) {
    tq.fill(q);
    tk.fill(k);
    tv.fill(v);
    tdo.fill(dout);
    cq = tensor_bshd(tq.data(), cdtype, 1, s, hq, d);
    ck = tensor_bshd(tk.data(), cdtype, 1, s, hkv, d);
    cv = tensor_bshd(tv.data(), cdtype, 1, s, hkv, d);
    co = tensor_bshd(to.data(), cdtype, 1, s, hq, d);
    cdo = tensor_bshd(tdo.data(), cdtype, 1, s, hq, d);
    cdq = tensor_bshd(tdq.data(), cdtype, 1, s, hq, d);
    cdk = tensor_bshd(tdk.data(), cdtype, 1, s, hkv, d);
    cdv = tensor_bshd(tdv.data(), cdtype, 1, s, hkv, d);
    clse = lse_bhs(lse.data(), 1, hq, s);
    poison();
  }
  void poison() {
    for (HostTensor* t : {&to, &tdq, &tdk, &tdv}) t->poison();
    std::fill(lse.begin(), lse.end(), -1.f);
  }
  // The outputs' bytes, for bitwise comparisons.
  std::vector<unsigned char> bytes() {
    std::vector<unsigned char> all;
    for (HostTensor* t : {&to, &tdq, &tdk, &tdv}) {
      const auto* p = static_cast<const unsigned char*>(t->data());
      all.insert(all.end(), p, p + t->size_bytes());
    }
    const auto* l = reinterpret_cast<const unsigned char*>(lse.data());
    all.insert(all.end(), l, l + lse.size() * sizeof(float));
    return all;
  }
  AttnCase attn_case(const ringattn_attn_params_t& p) const {
    AttnCase c;
    c.shape = AttnShape{1, s, s, hq, hkv, d};
    c.scale = 1.0 / std::sqrt(static_cast<double>(d));
    c.mask = make_mask_spec(p.causal != 0, p.window_left, p.window_right);
    c.qpos = whole_sequence(s);
    c.kpos = whole_sequence(s);
    return c;
  }
};

void one_shot(Context& ctx, Problem* pr, const ringattn_attn_params_t& p) {
  ctx.forward(pr->cq, pr->ck, pr->cv, pr->co, &pr->clse, p);
  ctx.backward(pr->cq, pr->ck, pr->cv, pr->co, pr->clse, pr->cdo, pr->cdq, pr->cdk, pr->cdv, p);
}

void plan_run(RingPlan& plan, Problem* pr, void* ws = nullptr, size_t bytes = 0) {
  plan.forward(pr->cq, pr->ck, pr->cv, pr->co, &pr->clse, nullptr, ws, bytes);
  plan.backward(pr->cq, pr->ck, pr->cv, pr->co, pr->clse, pr->cdo, pr->cdq, pr->cdk, pr->cdv,
                nullptr, ws, bytes);
}

TEST(RingLocal, OneRankRingMatchesTheReference) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  for (DType t : {kF32, kBF16}) {
    for (bool causal : {false, true}) {
      SCOPED_TRACE(std::string(dtype_name(t)) + (causal ? " causal" : " full"));
      Problem pr(t, 77, 4, 2, 64, seed);
      ringattn_attn_params_t p = RINGATTN_ATTN_PARAMS_INIT;
      p.causal = causal;
      p.scheme = RINGATTN_SCHEME_ZIGZAG;
      Context ctx = Context::compute_only(0, 1, RINGATTN_BACKEND_CPU);
      EXPECT_EQ(ctx.world(), 1);
      one_shot(ctx, &pr, p);
      const AttnCase c = pr.attn_case(p);
      const FwdResult ref = reference_forward(c, pr.q, pr.k, pr.v);
      const FwdResult naive = naive_forward(c, pr.q, pr.k, pr.v, t);
      EXPECT_TRUE(within_2x_naive("O", pr.to.values(), ref.o, naive.o, t));
      const BwdResult gref = reference_backward(c, pr.q, pr.k, pr.v, pr.dout);
      const BwdResult gnaive = naive_backward(c, pr.q, pr.k, pr.v, pr.dout, t);
      EXPECT_TRUE(within_2x_naive("dQ", pr.tdq.values(), gref.dq, gnaive.dq, t));
      EXPECT_TRUE(within_2x_naive("dK", pr.tdk.values(), gref.dk, gnaive.dk, t));
      EXPECT_TRUE(within_2x_naive("dV", pr.tdv.values(), gref.dv, gnaive.dv, t));
    }
  }
}

TEST(RingLocal, PlanRunsAreBitwiseTheOneShotCallsAndAllocateNothing) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  for (DType t : {kBF16, kF32}) {
    SCOPED_TRACE(dtype_name(t));
    Problem pr(t, 96, 4, 2, 64, seed);
    ringattn_attn_params_t p = RINGATTN_ATTN_PARAMS_INIT;
    p.causal = 1;
    p.window_left = 40;
    {
      Context ref_ctx = Context::compute_only(0, 1, RINGATTN_BACKEND_CPU);
      one_shot(ref_ctx, &pr, p);
    }
    const std::vector<unsigned char> want = pr.bytes();

    Context ctx = Context::compute_only(0, 1, RINGATTN_BACKEND_CPU);
    RingPlan own(ctx, pr.cq, pr.ck, pr.cv, p, /*own_workspace=*/true);
    RingPlan bare(ctx, pr.cq, pr.ck, pr.cv, p, /*own_workspace=*/false);
    const size_t bytes = bare.workspace_size();
    EXPECT_EQ(bytes, own.workspace_size());
    EXPECT_EQ(bytes % 64, 0u);
    std::vector<double> caller_ws(bytes / sizeof(double) + 8);
    char* ws =
        reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(caller_ws.data()) + 63) / 64 * 64);
    // The first run warms the per-thread scratch of the CPU kernels; later runs allocate nothing.
    pr.poison();
    plan_run(own, &pr);
    EXPECT_EQ(pr.bytes(), want);
    for (int run = 0; run < 3; ++run) {
      pr.poison();
      g_allocations = 0;
      g_counting = true;
      plan_run(own, &pr);
      plan_run(bare, &pr, ws, bytes);
      g_counting = false;
      EXPECT_EQ(pr.bytes(), want) << "run " << run;
      if (RINGATTN_COUNT_ALLOCATIONS) {
        EXPECT_EQ(g_allocations.load(), 0) << "run " << run << " allocated";
      }
    }
    // Another thread's first run grows that thread's scratch only: still the same bytes.
    size_t ctx_ws = 1;
    ASSERT_EQ(ringattn_context_workspace_size(ctx.get(), &ctx_ws), RINGATTN_SUCCESS);
    EXPECT_EQ(ctx_ws, 0u) << "plan runs do not grow the context's workspace";
    // A run with too small a workspace is an error naming the size, and changes nothing.
    pr.poison();
    EXPECT_EQ(ringattn_ring_plan_forward(bare.get(), &pr.cq, &pr.ck, &pr.cv, &pr.co, &pr.clse, ws,
                                         bytes - 64, nullptr),
              RINGATTN_ERROR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(ringattn_get_last_error()).find("ringattn_ring_plan_workspace_size"),
              std::string::npos)
        << ringattn_get_last_error();
  }
}

// A caller compiled against an older header passes a shorter struct: the fields it lacks take
// their defaults (whatever bytes follow it in memory), and a struct shorter than the first
// version is an error naming the sizes.
TEST(RingLocal, StructSizeVersionSkew) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  Problem pr(kF32, 40, 2, 2, 64, seed);
  ringattn_attn_params_t p = RINGATTN_ATTN_PARAMS_INIT;
  p.causal = 1;
  Context ctx = Context::compute_only(0, 1, RINGATTN_BACKEND_CPU);
  ctx.forward(pr.cq, pr.ck, pr.cv, pr.co, &pr.clse, p);
  const std::vector<double> want = pr.to.values();
  attention_forward(pr.cq, pr.ck, pr.cv, pr.co, &pr.clse, p);
  const std::vector<double> want_single = pr.to.values();

  // Version 1 ended with window_right; garbage after it must not be read.
  ringattn_attn_params_t old = p;
  old.struct_size = offsetof(ringattn_attn_params_t, window_right) + sizeof(int64_t);
  old.scheme = static_cast<ringattn_scheme_t>(77);
  old.num_seqs = 5;
  old.cu_seqlens = reinterpret_cast<const int64_t*>(&old);
  for (int single = 0; single < 2; ++single) {
    pr.poison();
    const ringattn_status_t st =
        single ? ringattn_attention_forward(&pr.cq, &pr.ck, &pr.cv, &pr.co, &pr.clse, &old,
                                            RINGATTN_BACKEND_CPU, nullptr)
               : ringattn_ring_forward(ctx.get(), &pr.cq, &pr.ck, &pr.cv, &pr.co, &pr.clse, &old,
                                       nullptr);
    ASSERT_EQ(st, RINGATTN_SUCCESS) << ringattn_get_last_error();
    EXPECT_EQ(max_abs_error(pr.to.values(), single ? want_single : want), 0.0);
  }
  ringattn_ring_plan_t plan = nullptr;
  ASSERT_EQ(ringattn_ring_plan_create(ctx.get(), &pr.cq, &pr.ck, &pr.cv, &old, 1, &plan),
            RINGATTN_SUCCESS)
      << ringattn_get_last_error();
  ringattn_ring_plan_destroy(plan);

  // Version 2 ended with num_seqs; a local_kernel after it (cuDNN, refused on the CPU backend)
  // must not be read.
  ringattn_attn_params_t second = p;
  second.struct_size = offsetof(ringattn_attn_params_t, num_seqs) + sizeof(int64_t);
  second.local_kernel = RINGATTN_LOCAL_KERNEL_CUDNN;
  pr.poison();
  ASSERT_EQ(
      ringattn_ring_forward(ctx.get(), &pr.cq, &pr.ck, &pr.cv, &pr.co, &pr.clse, &second, nullptr),
      RINGATTN_SUCCESS)
      << ringattn_get_last_error();
  EXPECT_EQ(max_abs_error(pr.to.values(), want), 0.0);
  // The current size reads it: refused on every call that asks for it, then accepted again.
  ringattn_attn_params_t cudnn = p;
  cudnn.local_kernel = RINGATTN_LOCAL_KERNEL_CUDNN;
  EXPECT_EQ(
      ringattn_ring_forward(ctx.get(), &pr.cq, &pr.ck, &pr.cv, &pr.co, &pr.clse, &cudnn, nullptr),
      RINGATTN_ERROR_UNSUPPORTED);
  EXPECT_NE(std::string(ringattn_get_last_error()).find("local_kernel"), std::string::npos);
  ASSERT_EQ(ringattn_ring_forward(ctx.get(), &pr.cq, &pr.ck, &pr.cv, &pr.co, &pr.clse, &p, nullptr),
            RINGATTN_SUCCESS)
      << ringattn_get_last_error();
  int64_t library = -1, own = -1;
  ASSERT_EQ(ringattn_context_kernel_stats(ctx.get(), &library, &own), RINGATTN_SUCCESS);
  EXPECT_EQ(library, 0);
  EXPECT_GT(own, 0);

  // A newer, longer struct: the fields this library knows are read.
  struct Newer {
    ringattn_attn_params_t p;
    int64_t future_field;
  } newer{p, 123};
  newer.p.struct_size = sizeof(Newer);
  pr.poison();
  ASSERT_EQ(
      ringattn_ring_forward(ctx.get(), &pr.cq, &pr.ck, &pr.cv, &pr.co, &pr.clse, &newer.p, nullptr),
      RINGATTN_SUCCESS)
      << ringattn_get_last_error();
  EXPECT_EQ(max_abs_error(pr.to.values(), want), 0.0);

  // Too short to be any version, or a size that would cut a field (half of cu_seqlens).
  ringattn_attn_params_t cut = p;
  cut.struct_size = offsetof(ringattn_attn_params_t, cu_seqlens) + 4;
  cut.cu_seqlens = reinterpret_cast<const int64_t*>(&cut);
  EXPECT_EQ(ringattn_attention_forward(&pr.cq, &pr.ck, &pr.cv, &pr.co, &pr.clse, &cut,
                                       RINGATTN_BACKEND_CPU, nullptr),
            RINGATTN_ERROR_INVALID_ARGUMENT);
  ringattn_attn_params_t bad = p;
  bad.struct_size = sizeof(size_t);
  EXPECT_EQ(
      ringattn_ring_forward(ctx.get(), &pr.cq, &pr.ck, &pr.cv, &pr.co, &pr.clse, &bad, nullptr),
      RINGATTN_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(ringattn_get_last_error()).find("struct_size"), std::string::npos);
  EXPECT_EQ(ringattn_attention_forward(&pr.cq, &pr.ck, &pr.cv, &pr.co, &pr.clse, &bad,
                                       RINGATTN_BACKEND_CPU, nullptr),
            RINGATTN_ERROR_INVALID_ARGUMENT);

  // Context options: the first version ended with chunks; a garbage `capturable` after it is not
  // read (on the CPU backend it would be RINGATTN_ERROR_UNSUPPORTED).
  ringattn_context_options_t opts = RINGATTN_CONTEXT_OPTIONS_INIT;
  opts.struct_size = offsetof(ringattn_context_options_t, chunks) + sizeof(int32_t);
  opts.capturable = 1;
  ringattn_context_t raw = nullptr;
  EXPECT_EQ(ringattn_context_create_compute_only(0, 1, RINGATTN_BACKEND_CPU, &opts, &raw),
            RINGATTN_SUCCESS)
      << ringattn_get_last_error();
  Context adopted(raw);
  opts.struct_size = 4;
  EXPECT_EQ(ringattn_context_create_compute_only(0, 1, RINGATTN_BACKEND_CPU, &opts, &raw),
            RINGATTN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(raw, nullptr);
}

// The single-process backward with a caller's workspace for Delta: the bytes of the allocating
// call, and no allocation once the kernels' per-thread scratch is warm.
TEST(RingLocal, SingleProcessBackwardWithWorkspaceAllocatesNothing) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  Problem pr(kBF16, 70, 4, 1, 64, seed);
  ringattn_attn_params_t p = RINGATTN_ATTN_PARAMS_INIT;
  p.causal = 1;
  attention_forward(pr.cq, pr.ck, pr.cv, pr.co, &pr.clse, p);
  attention_backward(pr.cq, pr.ck, pr.cv, pr.co, pr.clse, pr.cdo, pr.cdq, pr.cdk, pr.cdv, p);
  const std::vector<unsigned char> want = pr.bytes();
  size_t bytes = 0;
  ASSERT_EQ(ringattn_attention_backward_workspace_size(&pr.cq, &bytes), RINGATTN_SUCCESS);
  EXPECT_EQ(bytes, (sizeof(float) * 4 * 70 + 63) / 64 * 64);
  std::vector<double> storage(bytes / sizeof(double) + 8);
  void* ws = reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(storage.data()) + 63) / 64 * 64);
  for (int run = 0; run < 2; ++run) {
    for (HostTensor* t : {&pr.tdq, &pr.tdk, &pr.tdv}) t->poison();
    g_allocations = 0;
    g_counting = run > 0;
    const ringattn_status_t st = ringattn_attention_backward_with_workspace(
        &pr.cq, &pr.ck, &pr.cv, &pr.co, &pr.clse, &pr.cdo, &pr.cdq, &pr.cdk, &pr.cdv, &p, ws, bytes,
        RINGATTN_BACKEND_CPU, nullptr);
    g_counting = false;
    ASSERT_EQ(st, RINGATTN_SUCCESS) << ringattn_get_last_error();
    EXPECT_EQ(pr.bytes(), want) << "run " << run;
    if (RINGATTN_COUNT_ALLOCATIONS && run > 0) {
      EXPECT_EQ(g_allocations.load(), 0);
    }
  }
  EXPECT_EQ(ringattn_attention_backward_with_workspace(&pr.cq, &pr.ck, &pr.cv, &pr.co, &pr.clse,
                                                       &pr.cdo, &pr.cdq, &pr.cdk, &pr.cdv, &p, ws,
                                                       bytes - 1, RINGATTN_BACKEND_CPU, nullptr),
            RINGATTN_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(ringattn_get_last_error()).find("workspace_size"), std::string::npos);
  EXPECT_EQ(ringattn_attention_backward_workspace_size(nullptr, &bytes),
            RINGATTN_ERROR_NULL_POINTER);
}

TEST(RingLocal, CxxWrappersThrowWithTheStatusAndMessage) {
  try {
    Context::compute_only(3, 2, RINGATTN_BACKEND_CPU);
    ADD_FAILURE() << "no exception";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), RINGATTN_ERROR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(e.what()).find("rank"), std::string::npos) << e.what();
  }
  Context a = Context::compute_only(0, 2, RINGATTN_BACKEND_CPU);
  Context b = std::move(a);
  EXPECT_FALSE(a);
  EXPECT_TRUE(b);
  EXPECT_EQ(b.rank(), 0);
  EXPECT_EQ(b.world(), 2);
}

}  // namespace
}  // namespace test
}  // namespace ringattn
