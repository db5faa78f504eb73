// The C API rejects each kind of bad input with its own status code and a message naming the
// argument, and never crashes.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "ringattn/ringattn.h"
#include "ringattn/ringattn.hpp"

namespace {

struct Problem {
  int64_t b = 2, s = 5, hq = 4, hkv = 2, d = 64;
  std::vector<float> q, k, v, o, lse, dout, dq, dk, dv;
  ringattn_tensor_t tq, tk, tv, to, tlse, tdout, tdq, tdk, tdv;
  ringattn_attn_params_t params = RINGATTN_ATTN_PARAMS_INIT;

  Problem() {
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
    return ringattn_attention_backward(&tq, &tk, &tv, &to, &tlse, &tdout, &tdq, &tdk, &tdv,
                                       &params, RINGATTN_BACKEND_CPU, nullptr);
  }
};

std::string last() { return ringattn_get_last_error(); }

#define EXPECT_ERROR(call, code, word)                                    \
  do {                                                                    \
    EXPECT_EQ((call), (code)) << last();                                  \
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
  EXPECT_ERROR(ringattn_attention_backward(&b.tq, &b.tk, &b.tv, &b.to, nullptr, &b.tdout, &b.tdq,
                                           &b.tdk, &b.tdv, &b.params, RINGATTN_BACKEND_CPU,
                                           nullptr),
               RINGATTN_ERROR_NULL_POINTER, "'lse'");
  EXPECT_ERROR(ringattn_attention_backward(&b.tq, &b.tk, &b.tv, &b.to, &b.tlse, &b.tdout, &b.tdq,
                                           nullptr, &b.tdv, &b.params, RINGATTN_BACKEND_CPU,
                                           nullptr),
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
    Problem p;
    for (ringattn_tensor_t* t : {&p.tq, &p.tk, &p.tv, &p.to}) {
      t->shape[3] = d;
      t->strides[2] = d;
      t->strides[1] = t->shape[2] * d;
      t->strides[0] = t->shape[1] * t->strides[1];
    }
    EXPECT_ERROR(p.forward(), RINGATTN_ERROR_UNSUPPORTED, "head dim");
  }
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
  EXPECT_ERROR(ringattn_attention_forward(&tq, &tq, &tq, &to, &tl, &params, RINGATTN_BACKEND_CPU,
                                          nullptr),
               RINGATTN_ERROR_NULL_POINTER, "cu_seqlens");
  const int64_t bad_total[3] = {0, 4, 9};
  params.cu_seqlens = bad_total;
  params.num_seqs = 2;
  EXPECT_ERROR(ringattn_attention_forward(&tq, &tq, &tq, &to, &tl, &params, RINGATTN_BACKEND_CPU,
                                          nullptr),
               RINGATTN_ERROR_SHAPE_MISMATCH, "cu_seqlens");
  const int64_t decreasing[3] = {0, 6, 5};
  params.cu_seqlens = decreasing;
  EXPECT_ERROR(ringattn_attention_forward(&tq, &tq, &tq, &to, &tl, &params, RINGATTN_BACKEND_CPU,
                                          nullptr),
               RINGATTN_ERROR_INVALID_ARGUMENT, "decreasing");
  const int64_t good[3] = {0, 6, 10};
  params.cu_seqlens = good;
  EXPECT_EQ(ringattn_attention_forward(&tq, &tq, &tq, &to, &tl, &params, RINGATTN_BACKEND_CPU,
                                       nullptr),
            RINGATTN_SUCCESS)
      << last();
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
