// GPU single-device benchmark: the fused CUDA forward (through the C API) against the unfused
// cuBLAS baseline (materialized scores), same inputs, CUDA events, warm-up, median. Prints one
// fixed-width row per problem and the same rows as JSON (--json FILE).
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>
#include <math.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "cublas_attention.h"
#include "ringattn/ringattn.h"

namespace {

#define CHECK_CUDA(x)                                                                          \
  do {                                                                                         \
    const cudaError_t e_ = (x);                                                                \
    if (e_ != cudaSuccess) {                                                                   \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      std::exit(1);                                                                            \
    }                                                                                          \
  } while (0)

ringattn_tensor_t bshd(void* data, int64_t b, int64_t s, int64_t h, int64_t d) {
  ringattn_tensor_t t{};
  t.data = data;
  t.dtype = RINGATTN_BFLOAT16;
  t.ndim = 4;
  const int64_t shape[4] = {b, s, h, d}, strides[4] = {s * h * d, h * d, d, 1};
  for (int i = 0; i < 4; ++i) {
    t.shape[i] = shape[i];
    t.strides[i] = strides[i];
  }
  return t;
}

template <typename F>
float median_ms(F&& fn, int reps) {
  cudaEvent_t a, b;
  CHECK_CUDA(cudaEventCreate(&a));
  CHECK_CUDA(cudaEventCreate(&b));
  fn();
  fn();
  std::vector<float> t;
  for (int i = 0; i < reps; ++i) {
    CHECK_CUDA(cudaEventRecord(a));
    fn();
    CHECK_CUDA(cudaEventRecord(b));
    CHECK_CUDA(cudaEventSynchronize(b));
    float ms = 0.0f;
    CHECK_CUDA(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ringattn GPU forward vs unfused cuBLAS baseline (bf16)"};
  std::vector<int64_t> seqs{1024, 2048, 4096, 8192};
  int64_t d = 128, heads = 16, rows_total = 256 * 1024;
  int reps = 20;
  bool causal = false;
  std::string json_path;
  app.add_option("-s,--seq", seqs, "sequence lengths");
  app.add_option("-d,--head-dim", d, "head dim");
  app.add_option("--heads", heads, "heads");
  app.add_option("--rows", rows_total, "B*H*S rows per tensor (B = rows / (H * S))");
  app.add_option("-n,--reps", reps, "timed repetitions");
  app.add_flag("-c,--causal", causal, "causal mask");
  app.add_option("--json", json_path, "write the rows as JSON");
  CLI11_PARSE(app, argc, argv);

  cublasHandle_t handle;
  if (cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS) {
    std::fprintf(stderr, "cublasCreate failed (no usable GPU?)\n");
    return 1;
  }
  nlohmann::json rows = nlohmann::json::array();
  std::printf("%8s %4s %4s %4s %6s | %10s %9s | %10s %9s | %7s %10s\n", "seq", "B", "H", "D",
              "mask", "fused ms", "TFLOP/s", "cuBLAS ms", "TFLOP/s", "speedup", "max|diff|");
  for (int64_t s : seqs) {
    const int64_t b = std::max<int64_t>(1, rows_total / (s * heads));
    const size_t n = static_cast<size_t>(b * s * heads * d);
    std::vector<__nv_bfloat16> host(n);
    std::mt19937 gen(static_cast<unsigned>(s));
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    void *q, *k, *v, *o1, *o2, *lse;
    for (void** p : {&q, &k, &v, &o1, &o2}) {
      CHECK_CUDA(cudaMalloc(p, n * 2));
      for (auto& x : host) x = __float2bfloat16(u(gen));
      CHECK_CUDA(cudaMemcpy(*p, host.data(), n * 2, cudaMemcpyHostToDevice));
    }
    CHECK_CUDA(cudaMalloc(&lse, static_cast<size_t>(b * heads * s) * 4));
    ringattn_tensor_t tq = bshd(q, b, s, heads, d), tk = bshd(k, b, s, heads, d),
                      tv = bshd(v, b, s, heads, d), to = bshd(o1, b, s, heads, d);
    ringattn_attn_params_t params = RINGATTN_ATTN_PARAMS_INIT;
    params.causal = causal ? 1 : 0;
    const double flops = 4.0 * b * heads * double(s) * s * d * (causal ? 0.5 : 1.0);
    const float fused = median_ms(
        [&] {
          if (ringattn_attention_forward(&tq, &tk, &tv, &to, nullptr, &params,
                                         RINGATTN_BACKEND_CUDA, nullptr) != RINGATTN_SUCCESS) {
            std::fprintf(stderr, "ringattn: %s\n", ringattn_get_last_error());
            std::exit(1);
          }
        },
        reps);

    // The baseline materializes one head's scores for the whole batch.
    ringattn::PosRun run{0, 0, s, 1};
    void* druns;
    CHECK_CUDA(cudaMalloc(&druns, sizeof(run)));
    CHECK_CUDA(cudaMemcpy(druns, &run, sizeof(run), cudaMemcpyHostToDevice));
    ringattn::FwdParams p{};
    p.batch = b;
    p.sq = p.sk = s;
    p.hq = p.hkv = heads;
    p.d = d;
    const ringattn::TensorRef in{nullptr, ringattn::kBF16, s * heads * d, heads * d, d};
    p.q = p.k = p.v = p.o = in;
    p.q.data = q;
    p.k.data = k;
    p.v.data = v;
    p.o.data = o2;
    p.lse = ringattn::RowStatRef{nullptr, 0, 0};
    p.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
    p.mask = ringattn::make_mask_spec(causal, -1, -1);
    p.q_pos = p.k_pos = ringattn::PosMap{static_cast<const ringattn::PosRun*>(druns), 1};
    p.out_mode = ringattn::kOutFinal;
    void* ws;
    CHECK_CUDA(cudaMalloc(&ws, ringattn::cuda::cublas_attention_workspace(p)));
    const float base = median_ms(
        [&] {
          if (const char* f = ringattn::cuda::cublas_attention_forward(p, ws, handle, nullptr)) {
            std::fprintf(stderr, "cuBLAS baseline: %s failed\n", f);
            std::exit(1);
          }
        },
        std::max(3, reps / 4));
    // Agreement of the two outputs.
    std::vector<__nv_bfloat16> a(n), c(n);
    CHECK_CUDA(cudaMemcpy(a.data(), o1, n * 2, cudaMemcpyDeviceToHost));
    CHECK_CUDA(cudaMemcpy(c.data(), o2, n * 2, cudaMemcpyDeviceToHost));
    double diff = 0.0;
    for (size_t i = 0; i < n; ++i) {
      diff = std::max(diff, std::fabs(double(__bfloat162float(a[i])) - __bfloat162float(c[i])));
    }
    std::printf("%8lld %4lld %4lld %4lld %6s | %10.3f %9.1f | %10.3f %9.1f | %7.2f %10.2e\n",
                static_cast<long long>(s), static_cast<long long>(b), static_cast<long long>(heads),
                static_cast<long long>(d), causal ? "causal" : "full", fused, flops / fused / 1e9,
                base, flops / base / 1e9, base / fused, diff);
    std::fflush(stdout);
    rows.push_back({{"seq", s},
                    {"batch", b},
                    {"heads", heads},
                    {"d", d},
                    {"causal", causal},
                    {"fused_ms", fused},
                    {"cublas_ms", base},
                    {"fused_tflops", flops / fused / 1e9},
                    {"cublas_tflops", flops / base / 1e9},
                    {"max_abs_diff", diff}});
    for (void* x : {q, k, v, o1, o2, lse, druns, ws}) cudaFree(x);
  }
  cublasDestroy(handle);
  if (!json_path.empty()) std::ofstream(json_path) << rows.dump(1) << "\n";
  return 0;
}
