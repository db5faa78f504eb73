// The CUDA row-wise kernels (merge, Delta, convert, fill) against host arithmetic in double, and
// the cuBLAS unfused baseline against the float64 reference.
#include <cublas_v2.h>
#include <gtest/gtest.h>
#include <math.h>

#include <limits>

#include "cublas_attention.h"
#include "gpu_runs.h"
#include "pos_blocks.h"
#include "reference.h"

namespace ringattn {
namespace test {
namespace {

// Device float buffer from host values.
struct DevFloats {
  DeviceMirror mirror;
  explicit DevFloats(const std::vector<float>& v) : mirror(v.data(), v.size() * sizeof(float)) {}
  std::vector<float> get(size_t n) const {
    std::vector<float> out(n);
    mirror.download(out.data());
    return out;
  }
};

std::vector<float> random_floats(size_t n, uint64_t seed) {
  const std::vector<double> v = random_values(n, seed, kF32);
  return std::vector<float>(v.begin(), v.end());
}

// The merge of a partial (o2 in float32, or 16-bit as cuDNN returns it) into float32 (o1).
void check_merge(DType o2_type) {
  const int64_t b = 2, s = 37, h = 3, d = 72;
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed) + ", partial in " + dtype_name(o2_type));
  std::vector<float> o1 = random_floats(b * s * h * d, seed), o2;
  for (double x : random_values(b * s * h * d, seed + 1, o2_type)) {
    o2.push_back(static_cast<float>(x));  // representable in o2_type
  }
  std::vector<float> l1 = random_floats(b * h * s, seed + 2),
                     l2 = random_floats(b * h * s, seed + 3);
  const float ninf = -std::numeric_limits<float>::infinity();
  // Rows 0, 1, 2 of every (b, h): left empty, right empty, both empty (with NaN garbage in O).
  for (int64_t bh = 0; bh < b * h; ++bh) {
    l1[bh * s + 0] = ninf;
    l2[bh * s + 1] = ninf;
    l1[bh * s + 2] = l2[bh * s + 2] = ninf;
  }
  for (int64_t bb = 0; bb < b; ++bb)
    for (int64_t hh = 0; hh < h; ++hh)
      for (int64_t x = 0; x < d; ++x) {
        o1[((bb * s + 0) * h + hh) * d + x] = std::numeric_limits<float>::quiet_NaN();
        o2[((bb * s + 1) * h + hh) * d + x] = std::numeric_limits<float>::quiet_NaN();
      }
  DevFloats do1(o1), do2(o2), dl1(l1), dl2(l2);
  HostTensor o2_host(o2_type, b, s, h, d);
  o2_host.fill(std::vector<double>(o2.begin(), o2.end()));
  DeviceMirror o2_dev(o2_host.data(), host_tensor_bytes(o2_type, b, s, h, d, 0));
  const TensorRef r1{do1.mirror.get(), kF32, s * h * d, h * d, d};
  const TensorRef r2{o2_type == kF32 ? do2.mirror.get() : o2_dev.get(), o2_type, s * h * d, h * d,
                     d};
  const RowStatRef s1{static_cast<float*>(dl1.mirror.get()), h * s, s};
  const RowStatRef s2{static_cast<float*>(dl2.mirror.get()), h * s, s};
  ASSERT_TRUE(cuda_ok(cuda::merge_partial(b, s, h, d, r1, s1, r2, s2, nullptr), "merge_partial"));
  const std::vector<float> mo = do1.get(o1.size()), ml = dl1.get(l1.size());
  double max_err = 0.0;
  for (int64_t bb = 0; bb < b; ++bb)
    for (int64_t hh = 0; hh < h; ++hh)
      for (int64_t i = 0; i < s; ++i) {
        const double a = l1[(bb * h + hh) * s + i], c = l2[(bb * h + hh) * s + i];
        const double m = std::max(a, c);
        const double L = m == -INFINITY ? -INFINITY : m + log(exp(a - m) + exp(c - m));
        const double got_l = ml[(bb * h + hh) * s + i];
        if (L == -INFINITY) {
          EXPECT_EQ(got_l, -INFINITY) << "row " << i;
        } else {
          max_err = std::max(max_err, fabs(got_l - L));
        }
        for (int64_t x = 0; x < d; ++x) {
          const size_t e = static_cast<size_t>(((bb * s + i) * h + hh) * d + x);
          const double w1 = L == -INFINITY ? 0.0 : exp(a - L),
                       w2 = L == -INFINITY ? 0.0 : exp(c - L);
          const double want = (w1 == 0.0 ? 0.0 : w1 * o1[e]) + (w2 == 0.0 ? 0.0 : w2 * o2[e]);
          ASSERT_FALSE(std::isnan(mo[e])) << "row " << i;
          max_err = std::max(max_err, fabs(mo[e] - want));
        }
      }
  EXPECT_LT(max_err, 1e-5);
}

TEST(CudaRowwise, MergeMatchesLogAddExpRuleAndIsMinusInfSafe) {
  RINGATTN_REQUIRE_GPU();
  check_merge(kF32);
  check_merge(kBF16);
  check_merge(kF16);
}

TEST(CudaRowwise, DeltaConvertAndFillMatchHostArithmetic) {
  RINGATTN_REQUIRE_GPU();
  const int64_t b = 2, s = 129, h = 3, d = 40;
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const std::vector<double> dov = random_values(b * s * h * d, seed, kBF16);
  const std::vector<double> ov = random_values(b * s * h * d, seed + 1, kBF16);
  HostTensor hdo(kBF16, b, s, h, d, 8), ho(kBF16, b, s, h, d, 8);
  hdo.fill(dov);
  ho.fill(ov);
  DeviceMirror mdo(hdo.data(), host_tensor_bytes(kBF16, b, s, h, d, 8));
  DeviceMirror mo(ho.data(), host_tensor_bytes(kBF16, b, s, h, d, 8));
  TensorRef rdo = hdo.ref(), ro = ho.ref();
  rdo.data = mdo.get();
  ro.data = mo.get();
  std::vector<float> delta(b * h * s, NAN);
  DevFloats ddelta(delta);
  const RowStatRef rdelta{static_cast<float*>(ddelta.mirror.get()), h * s, s};
  ASSERT_TRUE(cuda_ok(cuda::compute_delta(b, s, h, d, rdo, ro, rdelta, nullptr), "compute_delta"));
  const std::vector<float> got = ddelta.get(delta.size());
  for (int64_t bb = 0; bb < b; ++bb)
    for (int64_t hh = 0; hh < h; ++hh)
      for (int64_t i = 0; i < s; ++i) {
        double want = 0.0;
        for (int64_t x = 0; x < d; ++x) {
          const size_t e = static_cast<size_t>(((bb * s + i) * h + hh) * d + x);
          want += dov[e] * ov[e];
        }
        ASSERT_NEAR(got[(bb * h + hh) * s + i], want, 1e-4) << "row " << i;
      }

  // bf16 (padded strides) -> f32 dense -> f16, and a zero fill.
  HostTensor h32(kF32, b, s, h, d), h16(kF16, b, s, h, d, 8);
  h32.poison();
  h16.poison();
  DeviceMirror m32(h32.data(), host_tensor_bytes(kF32, b, s, h, d, 0));
  DeviceMirror m16(h16.data(), host_tensor_bytes(kF16, b, s, h, d, 8));
  TensorRef r32 = h32.ref(), r16 = h16.ref();
  r32.data = m32.get();
  r16.data = m16.get();
  ASSERT_TRUE(cuda_ok(cuda::convert(b, s, h, d, ro, r32, nullptr), "convert bf16->f32"));
  ASSERT_TRUE(cuda_ok(cuda::convert(b, s, h, d, r32, r16, nullptr), "convert f32->f16"));
  m32.download(h32.data());
  m16.download(h16.data());
  EXPECT_EQ(h32.values(), ov);
  const std::vector<double> v16 = h16.values();
  for (size_t i = 0; i < ov.size(); ++i) ASSERT_EQ(v16[i], round_to(ov[i], kF16));
  TensorRef none = r32;
  none.data = nullptr;
  ASSERT_TRUE(cuda_ok(cuda::convert(b, s, h, d, none, r16, nullptr), "convert zero-fill"));
  m16.download(h16.data());
  for (double x : h16.values()) ASSERT_EQ(x, 0.0);

  ASSERT_TRUE(cuda_ok(cuda::fill_rowstat(b, h, s, rdelta, -INFINITY, nullptr), "fill_rowstat"));
  for (float x : ddelta.get(delta.size())) ASSERT_EQ(x, -INFINITY);
}

TEST(CudaBaseline, CublasUnfusedAttentionMatchesFp64) {
  RINGATTN_REQUIRE_GPU();
  cublasHandle_t handle;
  ASSERT_EQ(cublasCreate(&handle), CUBLAS_STATUS_SUCCESS);
  for (DType t : {kBF16, kF16, kF32}) {
    KernelSpec s;
    s.dtype = t;
    s.d = 64;
    s.hq = 4;
    s.hkv = 2;
    s.batch = 2;
    s.qb = run_block(300);
    s.kb = run_block(300);
    s.mask = make_mask_spec(true, 50, -1);
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed) + ": " + s.describe());
    const KernelInputs in = make_inputs(s, seed);
    const AttnCase c = s.attn_case();
    HostTensor q(t, s.batch, 300, s.hq, s.d), k(t, s.batch, 300, s.hkv, s.d),
        v(t, s.batch, 300, s.hkv, s.d), o(t, s.batch, 300, s.hq, s.d);
    q.fill(in.q);
    k.fill(in.k);
    v.fill(in.v);
    o.poison();
    HostRowStat lse(s.batch, s.hq, 300);
    lse.poison();
    DeviceMirror mq(q.data(), host_tensor_bytes(t, s.batch, 300, s.hq, s.d, 0));
    DeviceMirror mk(k.data(), host_tensor_bytes(t, s.batch, 300, s.hkv, s.d, 0));
    DeviceMirror mv(v.data(), host_tensor_bytes(t, s.batch, 300, s.hkv, s.d, 0));
    DeviceMirror mo(o.data(), host_tensor_bytes(t, s.batch, 300, s.hq, s.d, 0));
    DeviceMirror ml(lse.ref().data, (s.batch * s.hq * 300 + 1) * sizeof(float));
    DeviceMirror runs(s.qb.runs.data(), s.qb.runs.size() * sizeof(PosRun));
    FwdParams p;
    p.batch = s.batch;
    p.sq = p.sk = 300;
    p.hq = s.hq;
    p.hkv = s.hkv;
    p.d = s.d;
    p.q = q.ref();
    p.q.data = mq.get();
    p.k = k.ref();
    p.k.data = mk.get();
    p.v = v.ref();
    p.v.data = mv.get();
    p.o = o.ref();
    p.o.data = mo.get();
    p.lse = lse.ref();
    p.lse.data = static_cast<float*>(ml.get());
    p.scale = static_cast<float>(c.scale);
    p.mask = s.mask;
    p.q_pos = PosMap{static_cast<const PosRun*>(runs.get()), 1};
    p.k_pos = p.q_pos;
    p.out_mode = kOutFinal;
    void* ws = nullptr;
    ASSERT_TRUE(cuda_ok(cudaMalloc(&ws, cuda::cublas_attention_workspace(p)), "cudaMalloc"));
    const char* failed = cuda::cublas_attention_forward(p, ws, handle, nullptr);
    EXPECT_EQ(failed, nullptr) << failed;
    mo.download(o.data());
    ml.download(lse.ref().data);
    cudaFree(ws);
    const FwdResult ref = reference_forward(c, in.q, in.k, in.v);
    const FwdResult naive = naive_forward(c, in.q, in.k, in.v, t);
    EXPECT_TRUE(within_2x_naive("O (cuBLAS)", o.values(), ref.o, naive.o, t));
    EXPECT_TRUE(within_2x_naive("LSE (cuBLAS)", lse.values(), ref.lse, naive.lse, t));
  }
  cublasDestroy(handle);
}

}  // namespace
}  // namespace test
}  // namespace ringattn
