// The C API rejects each kind of bad input with its own status code and a message naming the
// argument, and never crashes.
#include <gtest/gtest.h>

#include <climits>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "ringattn/ringattn.h"
#include "ringattn/ringattn.hpp"

namespace {

struct Problem {
  int64_t b = 2, s = 5, hq = 4, hkv = 2, d;
  std::vector<float> q, k, v, o, lse, dout, dq, dk, dv;
  ringattn_tensor_t tq, tk, tv, to, tlse, tdout, tdq, tdk, tdv;
  ringattn_attn_params_t params = RINGATTN_ATTN_PARAMS_INIT;

  explicit Problem(int64_t head_dim = 64) : d(head_dim) {
    q.assign(b * s * hq * d, 0.25f);
    k.assign(b * s * hkv * d, 0.5f);
    v.assign(b * s * hkv * d, 1.0f);
    o.assign(q.size(), NAN);
    dout.assign(q.size(), 0.1f);
    dq.assign(q.size(), NAN);
    dk.assign(k.size(), NAN);
    dv.assign(k.size(), NAN);
    lse.assign(b * hq * s, NAN);
    tq = ringattn::tensor_bshd(q.data(), RINGATTN_FLOAT32, b, s, hq, d);
    tk = ringattn::tensor_bshd(k.data(), RINGATTN_FLOAT32, b, s, hkv, d);
    tv = ringattn::tensor_bshd(v.data(), RINGATTN_FLOAT32, b, s, hkv, d);
    to = ringattn::tensor_bshd(o.data(), RINGATTN_FLOAT32, b, s, hq, d);
    tdout = ringattn::tensor_bshd(dout.data(), RINGATTN_FLOAT32, b, s, hq, d);
    tdq = ringattn::tensor_bshd(dq.data(), RINGATTN_FLOAT32, b, s, hq, d);
    tdk = ringattn::tensor_bshd(dk.data(), RINGATTN_FLOAT32, b, s, hkv, d);
    tdv = ringattn::tensor_bshd(dv.data(), RINGATTN_FLOAT32, b, s, hkv, d);
    tlse = ringattn::lse_bhs(lse.data(), b, hq, s);
  }
  ringattn_status_t forward() {
    return ringattn_attention_forward(&tq, &tk, &tv, &to, &tlse, &params, RINGATTN_BACKEND_CPU,
                                      nullptr);
  }
  ringattn_status_t backward() {
    return ringattn_attention_backward(&tq, &tk, &tv, &to, &tlse, &tdout, &tdq, &tdk, &tdv, &params,
                                       RINGATTN_BACKEND_CPU, nullptr);
  }
};

std::string last() { return ringattn_get_last_error(); }

#define EXPECT_ERROR(call, code, word)                                        \
  do {                                                                        \
    EXPECT_EQ((call), (code)) << last();                                      \
    EXPECT_NE(last().find(word), std::string::npos) << "message: " << last(); \
  } while (0)

TEST(ApiValidation, ValidCallSucceedsAndClearsTheLastError) {
  Problem p;
  ASSERT_EQ(p.forward(), RINGATTN_SUCCESS) << last();
  EXPECT_EQ(last(), "");
  for (float x : p.o) ASSERT_FALSE(std::isnan(x));
  // Uniform keys: every row's LSE is log(S) + scale * q.k.
  const double expect = std::log(5.0) + 0.25 * 0.5 * 64 / std::sqrt(64.0);
  for (float x : p.lse) EXPECT_NEAR(x, expect, 1e-4);
  ASSERT_EQ(p.backward(), RINGATTN_SUCCESS) << last();
  for (float x : p.dq) ASSERT_FALSE(std::isnan(x));
}

TEST(ApiValidation, NullPointerNamesTheArgument) {
  Problem p;
  EXPECT_ERROR(ringattn_attention_forward(nullptr, &p.tk, &p.tv, &p.to, &p.tlse, &p.params,
                                          RINGATTN_BACKEND_CPU, nullptr),
               RINGATTN_ERROR_NULL_POINTER, "'q'");
  EXPECT_ERROR(ringattn_attention_forward(&p.tq, &p.tk, &p.tv, nullptr, &p.tlse, &p.params,
                                          RINGATTN_BACKEND_CPU, nullptr),
               RINGATTN_ERROR_NULL_POINTER, "'o'");
  EXPECT_ERROR(ringattn_attention_forward(&p.tq, &p.tk, &p.tv, &p.to, &p.tlse, nullptr,
                                          RINGATTN_BACKEND_CPU, nullptr),
               RINGATTN_ERROR_NULL_POINTER, "'params'");
  p.tv.data = nullptr;
  EXPECT_ERROR(p.forward(), RINGATTN_ERROR_NULL_POINTER, "'v'.data");
  Problem b;
  EXPECT_ERROR(
      ringattn_attention_backward(&b.tq, &b.tk, &b.tv, &b.to, nullptr, &b.tdout, &b.tdq, &b.tdk,
                                  &b.tdv, &b.params, RINGATTN_BACKEND_CPU, nullptr),
      RINGATTN_ERROR_NULL_POINTER, "'lse'");
  EXPECT_ERROR(
      ringattn_attention_backward(&b.tq, &b.tk, &b.tv, &b.to, &b.tlse, &b.tdout, &b.tdq, nullptr,
                                  &b.tdv, &b.params, RINGATTN_BACKEND_CPU, nullptr),
      RINGATTN_ERROR_NULL_POINTER, "'dk'");
}

TEST(ApiValidation, ShapeMismatchNamesTheTensor) {
  Problem p;
  p.tk.shape[1] = 4;
  EXPECT_ERROR(p.forward(), RINGATTN_ERROR_SHAPE_MISMATCH, "'k'");
  Problem p2;
  p2.to.shape[3] = 32;
  EXPECT_ERROR(p2.forward(), RINGATTN_ERROR_SHAPE_MISMATCH, "'o'");
  Problem p3;
  p3.tlse.shape[1] = 2;
  EXPECT_ERROR(p3.forward(), RINGATTN_ERROR_SHAPE_MISMATCH, "'lse'");
  Problem p4;
  p4.tdv.shape[2] = 4;
  EXPECT_ERROR(p4.backward(), RINGATTN_ERROR_SHAPE_MISMATCH, "'dv'");
}

TEST(ApiValidation, HeadsNotAMultipleIsAShapeMismatchNamingHqAndHkv) {
  Problem p;
  p.tk.shape[2] = p.tv.shape[2] = 3;
  p.tk.strides[1] = p.tv.strides[1] = 3 * p.d;
  EXPECT_ERROR(p.forward(), RINGATTN_ERROR_SHAPE_MISMATCH, "Hkv=3");
}

TEST(ApiValidation, UnsupportedHeadDimIsUnsupportedNotInvalid) {
  for (int64_t d : {16, 36, 264}) {
    Problem p(d);
    EXPECT_ERROR(p.forward(), RINGATTN_ERROR_UNSUPPORTED, "head dim " + std::to_string(d));
    // The message says what the table offers for this backend and dtype.
    EXPECT_NE(last().find("32..256 in steps of 8"), std::string::npos) << last();
    EXPECT_ERROR(p.backward(), RINGATTN_ERROR_UNSUPPORTED, "support table");
  }
}

// The support table is the one definition of what runs: every CPU entry's head dims (ends and
// a middle one) run, with each mask kind it lists; the dims next to it do not.
TEST(ApiValidation, SupportTableIsWhatTheCpuBackendRuns) {
  const ringattn_support_entry_t* table = nullptr;
  size_t n = 0;
  ASSERT_EQ(ringattn_support_table(&table, &n), RINGATTN_SUCCESS);
  ASSERT_GT(n, 0u);
  int cpu_entries = 0;
  for (size_t i = 0; i < n; ++i) {
    const ringattn_support_entry_t& e = table[i];
    if (e.backend != RINGATTN_BACKEND_CPU || e.dtype != RINGATTN_FLOAT32) continue;
    ++cpu_entries;
    const int64_t mid =
        e.head_dim_min + (e.head_dim_max - e.head_dim_min) / e.head_dim_step / 2 * e.head_dim_step;
    for (int64_t d :
         {static_cast<int64_t>(e.head_dim_min), mid, static_cast<int64_t>(e.head_dim_max)}) {
      for (int kind : {RINGATTN_MASK_FULL, RINGATTN_MASK_CAUSAL, RINGATTN_MASK_WINDOW}) {
        if ((e.mask_kinds & static_cast<uint32_t>(kind)) == 0) continue;
        Problem p(d);
        p.params.causal = kind == RINGATTN_MASK_CAUSAL;
        p.params.window_left = kind == RINGATTN_MASK_WINDOW ? 2 : -1;
        EXPECT_EQ(ringattn_check_support(e.backend, e.dtype, d,
                                         static_cast<ringattn_mask_kind_t>(kind), 0),
                  RINGATTN_SUCCESS)
            << last();
        EXPECT_EQ(p.forward(), RINGATTN_SUCCESS) << "D=" << d << " mask " << kind << ": " << last();
        EXPECT_EQ(p.backward(), RINGATTN_SUCCESS)
            << "D=" << d << " mask " << kind << ": " << last();
      }
    }
    for (int64_t d : {static_cast<int64_t>(e.head_dim_min - e.head_dim_step),
                      static_cast<int64_t>(e.head_dim_min + e.head_dim_step / 2),
                      static_cast<int64_t>(e.head_dim_max + e.head_dim_step)}) {
      EXPECT_EQ(ringattn_check_support(e.backend, e.dtype, d, RINGATTN_MASK_FULL, 0),
                RINGATTN_ERROR_UNSUPPORTED);
      Problem p(d);
      EXPECT_EQ(p.forward(), RINGATTN_ERROR_UNSUPPORTED) << "D=" << d;
    }
  }
  EXPECT_EQ(cpu_entries, 1);
}

TEST(ApiValidation, CheckSupportNamesTheMissingEntry) {
  // An explicit architecture is answered from the table alone, with or without a device.
  EXPECT_EQ(ringattn_check_support(RINGATTN_BACKEND_CUDA, RINGATTN_BFLOAT16, 128,
                                   RINGATTN_MASK_CAUSAL, 90),
            RINGATTN_SUCCESS)
      << last();
  EXPECT_ERROR(ringattn_check_support(RINGATTN_BACKEND_CUDA, RINGATTN_BFLOAT16, 128,
                                      RINGATTN_MASK_CAUSAL, 75),
               RINGATTN_ERROR_UNSUPPORTED, "(cuda, bfloat16, head dim 128, mask causal, sm_75)");
  EXPECT_NE(last().find("on sm_80 or newer"), std::string::npos) << last();
  EXPECT_ERROR(
      ringattn_check_support(RINGATTN_BACKEND_CPU, RINGATTN_FLOAT16, 264, RINGATTN_MASK_WINDOW, 0),
      RINGATTN_ERROR_UNSUPPORTED, "(cpu, float16, head dim 264, mask window, the host)");
  EXPECT_ERROR(ringattn_check_support(static_cast<ringattn_backend_t>(7), RINGATTN_FLOAT16, 64,
                                      RINGATTN_MASK_FULL, 0),
               RINGATTN_ERROR_INVALID_ARGUMENT, "'backend'");
  EXPECT_ERROR(ringattn_check_support(RINGATTN_BACKEND_CPU, static_cast<ringattn_dtype_t>(-1), 64,
                                      RINGATTN_MASK_FULL, 0),
               RINGATTN_ERROR_INVALID_ARGUMENT, "'dtype'");
  EXPECT_ERROR(ringattn_check_support(RINGATTN_BACKEND_CPU, RINGATTN_FLOAT32, 64,
                                      static_cast<ringattn_mask_kind_t>(3), 0),
               RINGATTN_ERROR_INVALID_ARGUMENT, "'mask'");
  const ringattn_support_entry_t* table = nullptr;
  size_t n = 0;
  EXPECT_ERROR(ringattn_support_table(nullptr, &n), RINGATTN_ERROR_NULL_POINTER, "'entries'");
  EXPECT_ERROR(ringattn_support_table(&table, nullptr), RINGATTN_ERROR_NULL_POINTER, "'count'");
}

TEST(ApiValidation, NonContiguousLastDimAndNegativeStrideAreBadStrides) {
  Problem p;
  p.tq.strides[3] = 2;
  EXPECT_ERROR(p.forward(), RINGATTN_ERROR_BAD_STRIDE, "'q' last dimension");
  Problem p2;
  p2.tv.strides[1] = -1;
  EXPECT_ERROR(p2.forward(), RINGATTN_ERROR_BAD_STRIDE, "'v' has a negative stride");
}

TEST(ApiValidation, NegativeSizeAndBadValuesAreInvalidArguments) {
  Problem p;
  p.tq.shape[0] = -1;
  EXPECT_ERROR(p.forward(), RINGATTN_ERROR_INVALID_ARGUMENT, "'q' has a negative size");
  Problem p2;
  p2.params.window_left = -5;
  EXPECT_ERROR(p2.forward(), RINGATTN_ERROR_INVALID_ARGUMENT, "window");
  Problem p3;
  p3.params.struct_size = 8;
  EXPECT_ERROR(p3.forward(), RINGATTN_ERROR_INVALID_ARGUMENT, "struct_size");
  Problem p4;
  p4.tlse.dtype = RINGATTN_FLOAT16;
  EXPECT_ERROR(p4.forward(), RINGATTN_ERROR_INVALID_ARGUMENT, "'lse' has dtype float16");
  Problem p5;
  p5.tk.dtype = RINGATTN_BFLOAT16;
  EXPECT_ERROR(p5.forward(), RINGATTN_ERROR_INVALID_ARGUMENT, "'k' has dtype bfloat16");
  Problem p6;
  p6.params.softmax_scale = INFINITY;
  EXPECT_ERROR(p6.forward(), RINGATTN_ERROR_INVALID_ARGUMENT, "softmax_scale");
  Problem p7;
  EXPECT_ERROR(ringattn_attention_forward(&p7.tq, &p7.tk, &p7.tv, &p7.to, &p7.tlse, &p7.params,
                                          static_cast<ringattn_backend_t>(9), nullptr),
               RINGATTN_ERROR_INVALID_ARGUMENT, "'backend'");
}

TEST(ApiValidation, PackedTensorsNeedConsistentCuSeqlens) {
  std::vector<float> q(10 * 2 * 32, 0.1f), o(q.size());
  std::vector<float> lse(2 * 10);
  ringattn_tensor_t tq = ringattn::tensor_thd(q.data(), RINGATTN_FLOAT32, 10, 2, 32);
  ringattn_tensor_t to = ringattn::tensor_thd(o.data(), RINGATTN_FLOAT32, 10, 2, 32);
  ringattn_tensor_t tl = ringattn::lse_ht(lse.data(), 2, 10);
  ringattn_attn_params_t params = RINGATTN_ATTN_PARAMS_INIT;
  EXPECT_ERROR(
      ringattn_attention_forward(&tq, &tq, &tq, &to, &tl, &params, RINGATTN_BACKEND_CPU, nullptr),
      RINGATTN_ERROR_NULL_POINTER, "cu_seqlens");
  const int64_t bad_total[3] = {0, 4, 9};
  params.cu_seqlens = bad_total;
  params.num_seqs = 2;
  EXPECT_ERROR(
      ringattn_attention_forward(&tq, &tq, &tq, &to, &tl, &params, RINGATTN_BACKEND_CPU, nullptr),
      RINGATTN_ERROR_SHAPE_MISMATCH, "cu_seqlens");
  const int64_t decreasing[3] = {0, 6, 5};
  params.cu_seqlens = decreasing;
  EXPECT_ERROR(
      ringattn_attention_forward(&tq, &tq, &tq, &to, &tl, &params, RINGATTN_BACKEND_CPU, nullptr),
      RINGATTN_ERROR_INVALID_ARGUMENT, "decreasing");
  const int64_t good[3] = {0, 6, 10};
  params.cu_seqlens = good;
  EXPECT_EQ(
      ringattn_attention_forward(&tq, &tq, &tq, &to, &tl, &params, RINGATTN_BACKEND_CPU, nullptr),
      RINGATTN_SUCCESS)
      << last();
}

// Sizes and strides whose products overflow 64 bits, or reach beyond 2^48 elements, are errors
// naming the tensor (they crashed or returned SUCCESS before), also where a stride of 0 keeps
// the memory small.
TEST(ApiValidation, ExtentsThatOverflowAreErrorsNamingTheTensor) {
  Problem p;
  const int64_t big = int64_t{1} << 40;
  ringattn_tensor_t q = p.tq;
  q.shape[0] = big, q.shape[1] = big;  // 2^80 elements
  EXPECT_ERROR(ringattn_attention_forward(&q, &p.tk, &p.tv, &p.to, &p.tlse, &p.params,
                                          RINGATTN_BACKEND_CPU, nullptr),
               RINGATTN_ERROR_INVALID_ARGUMENT, "'q' has shape");
  ringattn_tensor_t k = p.tk;
  k.strides[0] = int64_t{1} << 62;  // (B-1) * stride alone is 2^62, with the rest past 2^63
  k.strides[1] = int64_t{1} << 62;
  EXPECT_ERROR(ringattn_attention_forward(&p.tq, &k, &p.tv, &p.to, &p.tlse, &p.params,
                                          RINGATTN_BACKEND_CPU, nullptr),
               RINGATTN_ERROR_BAD_STRIDE, "'k' with shape");
  // B = 2^62 with batch stride 0 on every tensor: tiny memory, 2^62 * S * H * D elements.
  Problem h;
  const int64_t B = int64_t{1} << 62;
  for (ringattn_tensor_t* t : {&h.tq, &h.tk, &h.tv, &h.to, &h.tdout, &h.tdq, &h.tdk, &h.tdv}) {
    t->shape[0] = B;
    t->strides[0] = 0;
  }
  h.tlse.shape[0] = B;
  h.tlse.strides[0] = 0;
  EXPECT_ERROR(h.forward(), RINGATTN_ERROR_INVALID_ARGUMENT, "more than 2^48 elements");
  EXPECT_ERROR(h.backward(), RINGATTN_ERROR_INVALID_ARGUMENT, "more than 2^48 elements");
}

TEST(ApiValidation, HugeNumSeqsIsAnErrorNotACrash) {
  Problem p;
  const int64_t T = 6, H = 2, D = 32;
  std::vector<float> q(T * H * D, 0.5f), o(q.size()), lse(H * T);
  ringattn_tensor_t tq = ringattn::tensor_thd(q.data(), RINGATTN_FLOAT32, T, H, D);
  ringattn_tensor_t to = ringattn::tensor_thd(o.data(), RINGATTN_FLOAT32, T, H, D);
  ringattn_tensor_t tl = ringattn::lse_ht(lse.data(), H, T);
  const int64_t cu[2] = {0, T};
  ringattn_attn_params_t prm = RINGATTN_ATTN_PARAMS_INIT;
  prm.cu_seqlens = cu;
  prm.num_seqs = INT64_MAX;
  EXPECT_ERROR(
      ringattn_attention_forward(&tq, &tq, &tq, &to, &tl, &prm, RINGATTN_BACKEND_CPU, nullptr),
      RINGATTN_ERROR_INVALID_ARGUMENT, "num_seqs");
}

// Enum fields are checked as integers (an out-of-range value loaded as the enum type would be
// undefined behaviour, which UBSan reports in the sanitizer build).
TEST(ApiValidation, OutOfRangeEnumValuesAreInvalidArguments) {
  Problem p;
  ringattn_tensor_t q = p.tq;
  const int32_t bad = 77;
  std::memcpy(&q.dtype, &bad, sizeof(bad));
  EXPECT_ERROR(ringattn_attention_forward(&q, &p.tk, &p.tv, &p.to, &p.tlse, &p.params,
                                          RINGATTN_BACKEND_CPU, nullptr),
               RINGATTN_ERROR_INVALID_ARGUMENT, "unknown dtype value 77");
  std::memcpy(&p.params.scheme, &bad, sizeof(bad));
  EXPECT_ERROR(p.forward(), RINGATTN_ERROR_INVALID_ARGUMENT, "scheme has an unknown value 77");
  p.params.scheme = RINGATTN_SCHEME_CONTIGUOUS;
  std::memcpy(&p.params.local_kernel, &bad, sizeof(bad));
  EXPECT_ERROR(p.backward(), RINGATTN_ERROR_INVALID_ARGUMENT,
               "local_kernel has an unknown value 77");
}

// cuDNN computes on the CUDA backend only: asked for on the CPU backend, both calls refuse it
// before anything runs, naming the field.
TEST(ApiValidation, CudnnLocalKernelNeedsTheCudaBackend) {
  Problem p(64);
  p.params.local_kernel = RINGATTN_LOCAL_KERNEL_CUDNN;
  EXPECT_ERROR(p.forward(), RINGATTN_ERROR_UNSUPPORTED, "local_kernel");
  EXPECT_ERROR(p.backward(), RINGATTN_ERROR_UNSUPPORTED, "RINGATTN_BACKEND_CUDA");
  for (float x : p.o) EXPECT_TRUE(std::isnan(x));  // nothing ran
}

// Found by fuzzing (tests/fuzz): a float32 tensor at an address 2 bytes past its buffer's start
// was accepted and the kernels read it through misaligned float pointers.
TEST(ApiValidation, MisalignedDataIsAnInvalidArgumentNamingTheTensor) {
  Problem p;
  std::vector<float> buf(p.lse.size() + 1);
  p.tlse.data = reinterpret_cast<char*>(buf.data()) + 2;
  EXPECT_ERROR(p.forward(), RINGATTN_ERROR_INVALID_ARGUMENT, "'lse'.data");
  EXPECT_NE(last().find("not aligned to its 4-byte elements"), std::string::npos) << last();
  EXPECT_ERROR(p.backward(), RINGATTN_ERROR_INVALID_ARGUMENT, "'lse'.data");
  Problem h;
  std::vector<uint16_t> k16(h.k.size() + 1), q16(h.q.size()), v16(h.k.size()), o16(h.q.size());
  h.tq = ringattn::tensor_bshd(q16.data(), RINGATTN_FLOAT16, h.b, h.s, h.hq, h.d);
  h.tk = ringattn::tensor_bshd(reinterpret_cast<char*>(k16.data()) + 1, RINGATTN_FLOAT16, h.b, h.s,
                               h.hkv, h.d);
  h.tv = ringattn::tensor_bshd(v16.data(), RINGATTN_FLOAT16, h.b, h.s, h.hkv, h.d);
  h.to = ringattn::tensor_bshd(o16.data(), RINGATTN_FLOAT16, h.b, h.s, h.hq, h.d);
  EXPECT_ERROR(h.forward(), RINGATTN_ERROR_INVALID_ARGUMENT, "'k'.data");
  // An empty tensor is never read: its pointer may be anything.
  Problem e;
  e.tq.shape[1] = e.tk.shape[1] = e.tv.shape[1] = e.to.shape[1] = e.tlse.shape[2] = 0;
  e.tlse.data = reinterpret_cast<char*>(e.lse.data()) + 1;
  EXPECT_EQ(e.forward(), RINGATTN_SUCCESS) << last();
}

// Outputs may overlap neither an input nor each other (in-place is not supported); interleaved
// views of one buffer whose elements are disjoint are accepted.
TEST(ApiValidation, OverlappingOutputsAreRejected) {
  Problem p;
  ringattn_tensor_t o_on_q = p.to;
  o_on_q.data = p.q.data();
  EXPECT_ERROR(ringattn_attention_forward(&p.tq, &p.tk, &p.tv, &o_on_q, &p.tlse, &p.params,
                                          RINGATTN_BACKEND_CPU, nullptr),
               RINGATTN_ERROR_INVALID_ARGUMENT, "output 'o' overlaps input 'q'");
  ringattn_tensor_t lse_in_o = p.tlse;
  lse_in_o.data = p.o.data() + 8;
  EXPECT_ERROR(ringattn_attention_forward(&p.tq, &p.tk, &p.tv, &p.to, &lse_in_o, &p.params,
                                          RINGATTN_BACKEND_CPU, nullptr),
               RINGATTN_ERROR_INVALID_ARGUMENT, "outputs 'o' and 'lse' overlap");
  ASSERT_EQ(p.forward(), RINGATTN_SUCCESS) << last();
  ringattn_tensor_t dq_on_q = p.tdq;
  dq_on_q.data = p.q.data();
  EXPECT_ERROR(
      ringattn_attention_backward(&p.tq, &p.tk, &p.tv, &p.to, &p.tlse, &p.tdout, &dq_on_q, &p.tdk,
                                  &p.tdv, &p.params, RINGATTN_BACKEND_CPU, nullptr),
      RINGATTN_ERROR_INVALID_ARGUMENT, "output 'dq' overlaps input 'q'");
  ringattn_tensor_t dv_on_dk = p.tdv;
  dv_on_dk.data = p.dk.data() + 3;
  EXPECT_ERROR(
      ringattn_attention_backward(&p.tq, &p.tk, &p.tv, &p.to, &p.tlse, &p.tdout, &p.tdq, &p.tdk,
                                  &dv_on_dk, &p.params, RINGATTN_BACKEND_CPU, nullptr),
      RINGATTN_ERROR_INVALID_ARGUMENT, "outputs 'dk' and 'dv' overlap");
  ringattn_tensor_t self = p.to;
  self.strides[1] = 0;  // every row of a batch entry on the same memory
  EXPECT_ERROR(ringattn_attention_forward(&p.tq, &p.tk, &p.tv, &self, &p.tlse, &p.params,
                                          RINGATTN_BACKEND_CPU, nullptr),
               RINGATTN_ERROR_BAD_STRIDE, "output 'o'");

  // dK and dV interleaved in one [B, S, 2, Hkv, D] buffer: disjoint elements, accepted, and the
  // same gradients as separate buffers.
  ASSERT_EQ(p.backward(), RINGATTN_SUCCESS) << last();
  std::vector<float> kv(2 * p.dk.size(), NAN);
  ringattn_tensor_t dk = p.tdk, dv = p.tdv;
  dk.data = kv.data();
  dv.data = kv.data() + p.hkv * p.d;
  for (ringattn_tensor_t* t : {&dk, &dv}) {
    t->strides[0] = p.s * 2 * p.hkv * p.d;
    t->strides[1] = 2 * p.hkv * p.d;
  }
  std::vector<float> dq2(p.dq.size(), NAN);
  ringattn_tensor_t dq = p.tdq;
  dq.data = dq2.data();
  ASSERT_EQ(ringattn_attention_backward(&p.tq, &p.tk, &p.tv, &p.to, &p.tlse, &p.tdout, &dq, &dk,
                                        &dv, &p.params, RINGATTN_BACKEND_CPU, nullptr),
            RINGATTN_SUCCESS)
      << last();
  for (int64_t row = 0; row < p.b * p.s; ++row) {
    for (int64_t x = 0; x < p.hkv * p.d; ++x) {
      ASSERT_EQ(kv[row * 2 * p.hkv * p.d + x], p.dk[row * p.hkv * p.d + x]);
      ASSERT_EQ(kv[row * 2 * p.hkv * p.d + p.hkv * p.d + x], p.dv[row * p.hkv * p.d + x]);
    }
  }
}

// A window side of INT64_MAX is unbounded (it overflowed to "hide everything" before).
TEST(ApiValidation, HugeWindowSidesSaturateToUnbounded) {
  Problem full, wide;
  for (size_t i = 0; i < full.q.size(); ++i) {
    full.q[i] = wide.q[i] = static_cast<float>((i * 37) % 11) / 11.0f - 0.5f;
  }
  for (size_t i = 0; i < full.k.size(); ++i) {
    full.k[i] = wide.k[i] = static_cast<float>((i * 53) % 13) / 13.0f - 0.5f;
  }
  wide.params.window_left = -1;
  wide.params.window_right = INT64_MAX;
  ASSERT_EQ(full.forward(), RINGATTN_SUCCESS) << last();
  ASSERT_EQ(wide.forward(), RINGATTN_SUCCESS) << last();
  EXPECT_EQ(wide.o, full.o);
  EXPECT_EQ(wide.lse, full.lse);
  wide.params.window_left = INT64_MAX;
  wide.params.window_right = INT64_MAX - 1;
  ASSERT_EQ(wide.forward(), RINGATTN_SUCCESS) << last();
  EXPECT_EQ(wide.o, full.o);
}

TEST(ApiValidation, CudaBackendWithoutCudaIsUnsupported) {
  if (ringattn_backend_available(RINGATTN_BACKEND_CUDA)) GTEST_SKIP() << "CUDA backend built";
  Problem p;
  EXPECT_ERROR(ringattn_attention_forward(&p.tq, &p.tk, &p.tv, &p.to, &p.tlse, &p.params,
                                          RINGATTN_BACKEND_CUDA, nullptr),
               RINGATTN_ERROR_UNSUPPORTED, "cuda");
}

TEST(ApiValidation, StatusStringsAndVersion) {
  for (int c = 0; c <= RINGATTN_ERROR_INTERNAL; ++c) {
    const std::string s = ringattn_status_string(static_cast<ringattn_status_t>(c));
    EXPECT_EQ(s.rfind("RINGATTN_", 0), 0u) << s;
  }
  EXPECT_NE(std::string(ringattn_status_string(static_cast<ringattn_status_t>(99))), "");
  EXPECT_EQ(ringattn_get_version(), RINGATTN_VERSION_CODE);
}

TEST(ApiValidation, CppWrapperThrowsWithStatusAndMessage) {
  Problem p;
  p.tq.strides[3] = 3;
  try {
    ringattn::attention_forward(p.tq, p.tk, p.tv, p.to, &p.tlse, p.params);
    FAIL() << "expected ringattn::Error";
  } catch (const ringattn::Error& e) {
    EXPECT_EQ(e.status(), RINGATTN_ERROR_BAD_STRIDE);
    EXPECT_NE(std::string(e.what()).find("'q'"), std::string::npos);
  }
}

}  // namespace
