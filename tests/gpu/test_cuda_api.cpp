// The C API on the CUDA backend: device tensors, a user stream, forward and backward against the
// float64 reference; unsupported head dims refused with RINGATTN_ERROR_UNSUPPORTED.
#include <gtest/gtest.h>
#include <math.h>

#include "gpu_runs.h"
#include "pos_blocks.h"
#include "reference.h"
#include "ringattn/ringattn.h"

namespace ringattn {
namespace test {
namespace {

ringattn_dtype_t api_dtype(DType t) {
  return t == kF32 ? RINGATTN_FLOAT32 : t == kF16 ? RINGATTN_FLOAT16 : RINGATTN_BFLOAT16;
}

// A dense [B, S, H, D] device tensor and its descriptor.
struct ApiTensor {
  HostTensor host;
  DeviceMirror dev;
  ringattn_tensor_t desc;
  ApiTensor(DType t, int64_t b, int64_t s, int64_t h, int64_t d, const std::vector<double>* v)
      : host(make(t, b, s, h, d, v)), dev(host.data(), host_tensor_bytes(t, b, s, h, d, 0)) {
    desc.data = dev.get();
    desc.dtype = api_dtype(t);
    desc.ndim = 4;
    const int64_t shape[4] = {b, s, h, d}, strides[4] = {s * h * d, h * d, d, 1};
    for (int i = 0; i < 4; ++i) {
      desc.shape[i] = shape[i];
      desc.strides[i] = strides[i];
    }
  }
  static HostTensor make(DType t, int64_t b, int64_t s, int64_t h, int64_t d,
                         const std::vector<double>* v) {
    HostTensor x(t, b, s, h, d);
    x.poison();
    if (v != nullptr) x.fill(*v);
    return x;
  }
  std::vector<double> values() {
    dev.download(host.data());
    return host.values();
  }
};

struct ApiLse {
  HostRowStat host;
  DeviceMirror dev;
  ringattn_tensor_t desc;
  ApiLse(int64_t b, int64_t h, int64_t s)
      : host(make(b, h, s)), dev(host.ref().data, (b * h * s + 1) * sizeof(float)) {
    desc.data = dev.get();
    desc.dtype = RINGATTN_FLOAT32;
    desc.ndim = 3;
    desc.shape[0] = b;
    desc.shape[1] = h;
    desc.shape[2] = s;
    desc.strides[0] = h * s;
    desc.strides[1] = s;
    desc.strides[2] = 1;
  }
  static HostRowStat make(int64_t b, int64_t h, int64_t s) {
    HostRowStat x(b, h, s);
    x.poison();
    return x;
  }
  std::vector<double> values() {
    dev.download(host.ref().data);
    return host.values();
  }
};

// The outputs of a forward and backward call against the float64 reference (2x-naive rule).
void expect_within_2x_naive(const KernelSpec& spec, const KernelInputs& in, DType t, ApiTensor* o,
                            ApiLse* lse, ApiTensor* dq, ApiTensor* dk, ApiTensor* dv) {
  const AttnCase c = spec.attn_case();
  const FwdResult ref = reference_forward(c, in.q, in.k, in.v);
  const FwdResult naive = naive_forward(c, in.q, in.k, in.v, t);
  EXPECT_TRUE(within_2x_naive("O", o->values(), ref.o, naive.o, t));
  EXPECT_TRUE(within_2x_naive("LSE", lse->values(), ref.lse, naive.lse, t));
  const BwdResult bref = reference_backward(c, in.q, in.k, in.v, in.dout);
  const BwdResult bnaive = naive_backward(c, in.q, in.k, in.v, in.dout, t);
  EXPECT_TRUE(within_2x_naive("dQ", dq->values(), bref.dq, bnaive.dq, t));
  EXPECT_TRUE(within_2x_naive("dK", dk->values(), bref.dk, bnaive.dk, t));
  EXPECT_TRUE(within_2x_naive("dV", dv->values(), bref.dv, bnaive.dv, t));
}

TEST(CudaApi, ForwardAndBackwardOnAUserStreamMatchFp64) {
  RINGATTN_REQUIRE_GPU();
  ASSERT_EQ(ringattn_backend_available(RINGATTN_BACKEND_CUDA), 1);
  cudaStream_t stream;
  ASSERT_TRUE(cuda_ok(cudaStreamCreate(&stream), "cudaStreamCreate"));
  for (DType t : {kBF16, kF32}) {
    const int64_t b = 2, s = 257, hq = 4, hkv = 2, d = 64;
    KernelSpec spec = whole_sequence_spec(t, s, d, make_mask_spec(true, -1, -1), hq, hkv);
    spec.batch = b;
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed) + ": " + spec.describe());
    const KernelInputs in = make_inputs(spec, seed);
    ApiTensor q(t, b, s, hq, d, &in.q), k(t, b, s, hkv, d, &in.k), v(t, b, s, hkv, d, &in.v);
    ApiTensor o(t, b, s, hq, d, nullptr), dout(t, b, s, hq, d, &in.dout);
    ApiTensor dq(t, b, s, hq, d, nullptr), dk(t, b, s, hkv, d, nullptr),
        dv(t, b, s, hkv, d, nullptr);
    ApiLse lse(b, hq, s);
    ringattn_attn_params_t params = RINGATTN_ATTN_PARAMS_INIT;
    params.causal = 1;
    ASSERT_EQ(ringattn_attention_forward(&q.desc, &k.desc, &v.desc, &o.desc, &lse.desc, &params,
                                         RINGATTN_BACKEND_CUDA, stream),
              RINGATTN_SUCCESS)
        << ringattn_get_last_error();
    ASSERT_EQ(ringattn_attention_backward(&q.desc, &k.desc, &v.desc, &o.desc, &lse.desc, &dout.desc,
                                          &dq.desc, &dk.desc, &dv.desc, &params,
                                          RINGATTN_BACKEND_CUDA, stream),
              RINGATTN_SUCCESS)
        << ringattn_get_last_error();
    ASSERT_TRUE(cuda_ok(cudaStreamSynchronize(stream), "stream"));
    expect_within_2x_naive(spec, in, t, &o, &lse, &dq, &dk, &dv);
  }
  cudaStreamDestroy(stream);
}

// The cuDNN path (params.local_kernel CUDNN) on single-process calls: the whole sequence is one
// cuDNN block (full, causal, causal with a window), written in the output dtype directly; the
// same standard as our kernels.
TEST(CudaApi, CudnnPathMatchesFp64) {
  RINGATTN_REQUIRE_GPU();
#if !defined(RINGATTN_HAVE_CUDNN)
  GTEST_SKIP() << "built without cuDNN";
#endif
  struct MaskCase {
    bool causal;
    int64_t left;
  };
  for (DType t : {kBF16, kF16}) {
    for (const MaskCase m : {MaskCase{false, -1}, MaskCase{true, -1}, MaskCase{true, 33}}) {
      const int64_t b = 2, s = 193, hq = 4, hkv = 2, d = 128;
      KernelSpec spec = whole_sequence_spec(t, s, d, make_mask_spec(m.causal, m.left, -1), hq, hkv);
      spec.batch = b;
      const uint64_t seed = fresh_seed();
      SCOPED_TRACE("seed " + std::to_string(seed) + ": " + spec.describe());
      const KernelInputs in = make_inputs(spec, seed);
      ApiTensor q(t, b, s, hq, d, &in.q), k(t, b, s, hkv, d, &in.k), v(t, b, s, hkv, d, &in.v);
      ApiTensor o(t, b, s, hq, d, nullptr), dout(t, b, s, hq, d, &in.dout);
      ApiTensor dq(t, b, s, hq, d, nullptr), dk(t, b, s, hkv, d, nullptr),
          dv(t, b, s, hkv, d, nullptr);
      ApiLse lse(b, hq, s);
      ringattn_attn_params_t params = RINGATTN_ATTN_PARAMS_INIT;
      params.causal = m.causal ? 1 : 0;
      params.window_left = m.left;
      params.local_kernel = RINGATTN_LOCAL_KERNEL_CUDNN;
      ASSERT_EQ(ringattn_attention_forward(&q.desc, &k.desc, &v.desc, &o.desc, &lse.desc, &params,
                                           RINGATTN_BACKEND_CUDA, nullptr),
                RINGATTN_SUCCESS)
          << ringattn_get_last_error();
      ASSERT_EQ(ringattn_attention_backward(&q.desc, &k.desc, &v.desc, &o.desc, &lse.desc,
                                            &dout.desc, &dq.desc, &dk.desc, &dv.desc, &params,
                                            RINGATTN_BACKEND_CUDA, nullptr),
                RINGATTN_SUCCESS)
          << ringattn_get_last_error();
      ASSERT_TRUE(cuda_ok(cudaDeviceSynchronize(), "device"));
      expect_within_2x_naive(spec, in, t, &o, &lse, &dq, &dk, &dv);
    }
  }
}

TEST(CudaApi, HeadDimOutsideTheServedRangeIsUnsupported) {
  RINGATTN_REQUIRE_GPU();
  const int64_t b = 1, s = 16, h = 1, d = 36;  // not a multiple of 8
  ApiTensor q(kBF16, b, s, h, d, nullptr), k(kBF16, b, s, h, d, nullptr),
      v(kBF16, b, s, h, d, nullptr), o(kBF16, b, s, h, d, nullptr);
  ringattn_attn_params_t params = RINGATTN_ATTN_PARAMS_INIT;
  EXPECT_EQ(ringattn_attention_forward(&q.desc, &k.desc, &v.desc, &o.desc, nullptr, &params,
                                       RINGATTN_BACKEND_CUDA, nullptr),
            RINGATTN_ERROR_UNSUPPORTED);
}

}  // namespace
}  // namespace test
}  // namespace ringattn
