// ringattn_kernel_bench: the host attention kernels against the machine's float32 FMA peak and
// against an unfused baseline (OpenBLAS GEMM -> softmax -> GEMM with the S x S scores
// materialized, as a numpy user would write it), all in one run, on all cores.
//
//   ringattn_kernel_bench -S 4096 -D 128 -H 4 -B 1 --dtype f32 [--causal] [-n 5] [-w 1]
//
// FLOPs (DESIGN.md): forward 4 * B * Hq * S^2 * D, half for causal; backward 2.5x forward.
#include <cblas.h>
#include <hwy/contrib/math/math-inl.h>
#include <hwy/highway.h>
#include <math.h>
#include <omp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "attention_cpu.h"
#include "dtype_row.h"

namespace hn = hwy::HWY_NAMESPACE;
using ringattn::DType;

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Register-resident FMA chains on every thread at once: 12 independent accumulators cover the
// FMA latency x throughput of current x86 cores (4 cycles x 2 ports).
double measure_peak_gflops(double seconds) {
  double total_flops = 0, elapsed = 0;
#pragma omp parallel reduction(+ : total_flops) reduction(max : elapsed)
  {
    const hn::ScalableTag<float> df;
    auto a0 = hn::Set(df, 0.1f), a1 = hn::Set(df, 0.2f), a2 = hn::Set(df, 0.3f);
    auto a3 = hn::Set(df, 0.4f), a4 = hn::Set(df, 0.5f), a5 = hn::Set(df, 0.6f);
    auto a6 = hn::Set(df, 0.7f), a7 = hn::Set(df, 0.8f), a8 = hn::Set(df, 0.9f);
    auto a9 = hn::Set(df, 1.0f), a10 = hn::Set(df, 1.1f), a11 = hn::Set(df, 1.2f);
    const auto m = hn::Set(df, 0.999999f), c = hn::Set(df, 1e-7f);
    const int64_t inner = 1 << 16;
    int64_t reps = 0;
#pragma omp barrier
    const double t0 = now_s();
    double t = t0;
    while (t - t0 < seconds) {
      for (int64_t i = 0; i < inner; ++i) {
        a0 = hn::MulAdd(a0, m, c), a1 = hn::MulAdd(a1, m, c), a2 = hn::MulAdd(a2, m, c);
        a3 = hn::MulAdd(a3, m, c), a4 = hn::MulAdd(a4, m, c), a5 = hn::MulAdd(a5, m, c);
        a6 = hn::MulAdd(a6, m, c), a7 = hn::MulAdd(a7, m, c), a8 = hn::MulAdd(a8, m, c);
        a9 = hn::MulAdd(a9, m, c), a10 = hn::MulAdd(a10, m, c), a11 = hn::MulAdd(a11, m, c);
#if defined(__x86_64__) && defined(__GNUC__)
        // Pin every lane of every chain in a register: without this the compiler may notice
        // that only lane 0 of the result is read and pack the chains' live lanes together.
        __asm__ volatile(""
                         : "+x"(a0.raw), "+x"(a1.raw), "+x"(a2.raw), "+x"(a3.raw), "+x"(a4.raw),
                           "+x"(a5.raw), "+x"(a6.raw), "+x"(a7.raw), "+x"(a8.raw), "+x"(a9.raw),
                           "+x"(a10.raw), "+x"(a11.raw));
#endif
      }
      ++reps;
      t = now_s();
    }
    auto sum = hn::Add(hn::Add(hn::Add(a0, a1), hn::Add(a2, a3)),
                       hn::Add(hn::Add(a4, a5), hn::Add(a6, a7)));
    sum = hn::Add(sum, hn::Add(hn::Add(a8, a9), hn::Add(a10, a11)));
    volatile float sink = hn::GetLane(sum);  // keeps the chains alive
    (void)sink;
    total_flops += 2.0 * 12 * static_cast<double>(hn::Lanes(df)) * inner * reps;
    elapsed = t - t0;
  }
  return total_flops / elapsed / 1e9;
}

struct Problem {
  int64_t s, d, h, hkv, b;
  DType dtype;
  bool causal;
};

struct Buffers {
  std::vector<uint16_t> q, k, v, o, dout, dq, dk, dv;  // raw storage, 2 or 4 bytes per element
  std::vector<float> lse, delta;
};

ringattn::TensorRef tref(std::vector<uint16_t>& buf, DType t, const Problem& p, int64_t heads) {
  return ringattn::TensorRef{buf.data(), t, p.s * heads * p.d, heads * p.d, p.d};
}

// Fill with uniform [-1, 1) values of dtype t.
void fill_random(std::vector<uint16_t>& buf, DType t, int64_t n, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const size_t words = static_cast<size_t>(n) * (t == ringattn::kF32 ? 2 : 1);
  buf.assign(words, 0);
  std::vector<float> row(1024);
  for (int64_t i = 0; i < n; i += 1024) {
    const int64_t c = std::min<int64_t>(1024, n - i);
    for (int64_t j = 0; j < c; ++j) row[static_cast<size_t>(j)] = u(gen);
    ringattn::cpu::store_row(t, row.data(), c, 1.0f,
                             reinterpret_cast<char*>(buf.data()) +
                                 i * static_cast<int64_t>(ringattn::cpu::dtype_size(t)));
  }
}

struct Timing {
  double median, best;  // seconds
};

// Median and best of `iters` runs: the median is the figure reported; the best shows how much a
// shared machine's other load moved it.
template <typename F>
Timing time_runs(F&& f, int iters, int warmup) {
  for (int i = 0; i < warmup; ++i) f();
  std::vector<double> ts;
  for (int i = 0; i < iters; ++i) {
    const double t0 = now_s();
    f();
    ts.push_back(now_s() - t0);
  }
  std::sort(ts.begin(), ts.end());
  return Timing{ts[ts.size() / 2], ts[0]};
}

// The unfused baseline, float32: per (batch, head) S = scale * Q K^T (S x S, materialized),
// row softmax (masked for causal), O = P V. GEMMs on all cores through OpenBLAS; the softmax
// rows spread over the cores with the same vectorized exp as the fused kernel, so that the
// comparison measures fusion and not the exp.
void unfused_forward(const Problem& p, const float* q, const float* k, const float* v, float* o,
                     std::vector<float>& scores) {
  const int64_t S = p.s, D = p.d, group = p.h / p.hkv;
  const float scale = 1.0f / sqrtf(static_cast<float>(D));
  scores.resize(static_cast<size_t>(S * S));
  for (int64_t b = 0; b < p.b; ++b) {
    for (int64_t h = 0; h < p.h; ++h) {
      const float* qb = q + (b * S * p.h + h) * D;
      const float* kb = k + (b * S * p.hkv + h / group) * D;
      const float* vb = v + (b * S * p.hkv + h / group) * D;
      float* ob = o + (b * S * p.h + h) * D;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(S), static_cast<int>(S),
                  static_cast<int>(D), scale, qb, static_cast<int>(p.h * D), kb,
                  static_cast<int>(p.hkv * D), 0.0f, scores.data(), static_cast<int>(S));
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < S; ++i) {
        float* row = scores.data() + i * S;
        const int64_t n = p.causal ? i + 1 : S;
        float mx = -INFINITY;
        for (int64_t j = 0; j < n; ++j) mx = std::max(mx, row[j]);
        const hn::ScalableTag<float> df;
        const int64_t L = static_cast<int64_t>(hn::Lanes(df));
        const auto vm = hn::Set(df, mx);
        auto vs = hn::Zero(df);
        int64_t j = 0;
        for (; j + L <= n; j += L) {
          const auto e = hn::Exp(df, hn::Sub(hn::LoadU(df, row + j), vm));
          hn::StoreU(e, df, row + j);
          vs = hn::Add(vs, e);
        }
        float sum = hn::GetLane(hn::SumOfLanes(df, vs));
        for (; j < n; ++j) {
          row[j] = expf(row[j] - mx);
          sum += row[j];
        }
        const float inv = 1.0f / sum;
        for (j = 0; j < n; ++j) row[j] *= inv;
        for (; j < S; ++j) row[j] = 0.0f;
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(S),
                  static_cast<int>(D), static_cast<int>(S), 1.0f, scores.data(),
                  static_cast<int>(S), vb, static_cast<int>(p.hkv * D), 0.0f, ob,
                  static_cast<int>(p.h * D));
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ringattn host kernel benchmark: fused forward/backward vs FMA peak and unfused"};
  Problem p{4096, 128, 4, 0, 1, ringattn::kF32, false};
  std::string dtype = "f32", json_path;
  int iters = 5, warmup = 1;
  double peak_seconds = 0.5;
  bool no_unfused = false;
  app.add_option("-S,--seq", p.s, "sequence length (queries = keys)");
  app.add_option("-D,--head-dim", p.d, "head dim (multiple of 8)");
  app.add_option("-H,--heads", p.h, "query heads");
  app.add_option("--kv-heads", p.hkv, "kv heads (default: = heads)");
  app.add_option("-B,--batch", p.b, "batch");
  app.add_option("--dtype", dtype, "f32, f16 or bf16")
      ->check(CLI::IsMember({"f32", "f16", "bf16"}));
  app.add_flag("--causal", p.causal, "causal mask");
  app.add_option("-n,--iters", iters, "timed iterations (median reported)");
  app.add_option("-w,--warmup", warmup, "warm-up iterations");
  app.add_option("--peak-seconds", peak_seconds, "duration of the FMA peak measurement");
  app.add_flag("--no-unfused", no_unfused, "skip the unfused baseline (it needs S*S floats)");
  app.add_option("--json", json_path, "also write the JSON to this file");
  CLI11_PARSE(app, argc, argv);
  if (p.hkv <= 0) p.hkv = p.h;
  if (p.h % p.hkv != 0 || p.d % 8 != 0 || p.s <= 0 || iters <= 0) {
    fprintf(stderr, "invalid problem: heads %% kv-heads, head-dim %% 8, seq > 0, iters > 0\n");
    return 2;
  }
  p.dtype = dtype == "f32" ? ringattn::kF32 : dtype == "f16" ? ringattn::kF16 : ringattn::kBF16;
  const int threads = omp_get_max_threads();

  // Best of five bursts: on a shared machine another process may hold a core during one burst,
  // and a low peak would flatter every ratio below.
  double peak = 0;
  for (int i = 0; i < 5; ++i) peak = std::max(peak, measure_peak_gflops(peak_seconds / 5));

  Buffers buf;
  const int64_t nq = p.b * p.s * p.h * p.d, nkv = p.b * p.s * p.hkv * p.d;
  fill_random(buf.q, p.dtype, nq, 1);
  fill_random(buf.k, p.dtype, nkv, 2);
  fill_random(buf.v, p.dtype, nkv, 3);
  fill_random(buf.dout, p.dtype, nq, 4);
  fill_random(buf.o, p.dtype, nq, 5);
  fill_random(buf.dq, p.dtype, nq, 6);
  fill_random(buf.dk, p.dtype, nkv, 7);
  fill_random(buf.dv, p.dtype, nkv, 8);
  buf.lse.assign(static_cast<size_t>(p.b * p.h * p.s), 0.0f);
  buf.delta.assign(static_cast<size_t>(p.b * p.h * p.s), 0.0f);
  const ringattn::PosRun run{0, 0, p.s, 1};
  const ringattn::PosMap map{&run, 1};
  const ringattn::RowStatRef lse{buf.lse.data(), p.h * p.s, p.s};
  const ringattn::RowStatRef delta{buf.delta.data(), p.h * p.s, p.s};
  const ringattn::MaskSpec mask = ringattn::make_mask_spec(p.causal, -1, -1);
  const float scale = 1.0f / sqrtf(static_cast<float>(p.d));

  ringattn::FwdParams fp{};
  fp.batch = p.b;
  fp.sq = fp.sk = p.s;
  fp.hq = p.h;
  fp.hkv = p.hkv;
  fp.d = p.d;
  fp.q = tref(buf.q, p.dtype, p, p.h);
  fp.k = tref(buf.k, p.dtype, p, p.hkv);
  fp.v = tref(buf.v, p.dtype, p, p.hkv);
  fp.scale = scale;
  fp.mask = mask;
  fp.q_pos = fp.k_pos = map;
  fp.o = tref(buf.o, p.dtype, p, p.h);
  fp.lse = lse;
  fp.out_mode = ringattn::kOutFinal;
  const Timing t_fwd = time_runs([&] { ringattn::cpu::attention_forward(fp); }, iters, warmup);
  ringattn::cpu::compute_delta(p.b, p.s, p.h, p.d, fp.o, fp.o, delta);
  ringattn::BwdParams bp{};
  static_cast<ringattn::AttnCall&>(bp) = fp;
  bp.dout = tref(buf.dout, p.dtype, p, p.h);
  bp.lse = lse;
  bp.delta = delta;
  bp.dq = tref(buf.dq, p.dtype, p, p.h);
  bp.dk = tref(buf.dk, p.dtype, p, p.hkv);
  bp.dv = tref(buf.dv, p.dtype, p, p.hkv);
  bp.accumulate = false;
  const Timing t_bwd = time_runs([&] { ringattn::cpu::attention_backward(bp); }, iters, warmup);

  const double fwd_flops =
      4.0 * p.b * p.h * static_cast<double>(p.s) * p.s * p.d * (p.causal ? 0.5 : 1.0);
  const double bwd_flops = 2.5 * fwd_flops;
  const double fwd_gf = fwd_flops / t_fwd.median / 1e9, bwd_gf = bwd_flops / t_bwd.median / 1e9;

  Timing t_unf{0, 0};
  double unf_gf = 0;
  if (!no_unfused) {
    // The baseline is float32 (what numpy offers on a CPU); inputs converted once, untimed.
    std::vector<float> qf(static_cast<size_t>(nq)), kf(static_cast<size_t>(nkv)),
        vf(static_cast<size_t>(nkv)), of(static_cast<size_t>(nq)), scores;
    ringattn::cpu::load_row(p.dtype, buf.q.data(), nq, 1.0f, qf.data());
    ringattn::cpu::load_row(p.dtype, buf.k.data(), nkv, 1.0f, kf.data());
    ringattn::cpu::load_row(p.dtype, buf.v.data(), nkv, 1.0f, vf.data());
    t_unf =
        time_runs([&] { unfused_forward(p, qf.data(), kf.data(), vf.data(), of.data(), scores); },
                  iters, warmup);
    unf_gf = fwd_flops / t_unf.median / 1e9;
  }

  const char* mask_name = p.causal ? "causal" : "full";
  printf(
      "# ringattn_kernel_bench  threads %d  fp32 FMA peak %.1f GFLOP/s (measured: all threads, "
      "best "
      "of 5 bursts)\n",
      threads, peak);
  printf("%-14s %7s %5s %3s %4s %4s %6s %7s %11s %11s %10s %7s %10s\n", "kernel", "S", "D", "B",
         "Hq", "Hkv", "dtype", "mask", "time_ms", "best_ms", "GFLOP/s", "%peak", "best_GF/s");
  auto row = [&](const char* name, Timing t, double flops) {
    const double gf = flops / t.median / 1e9;
    printf("%-14s %7lld %5lld %3lld %4lld %4lld %6s %7s %11.3f %11.3f %10.1f %6.1f%% %10.1f\n",
           name, static_cast<long long>(p.s), static_cast<long long>(p.d),
           static_cast<long long>(p.b), static_cast<long long>(p.h), static_cast<long long>(p.hkv),
           dtype.c_str(), mask_name, t.median * 1e3, t.best * 1e3, gf, 100.0 * gf / peak,
           flops / t.best / 1e9);
  };
  row("fused_fwd", t_fwd, fwd_flops);
  row("fused_bwd", t_bwd, bwd_flops);
  if (!no_unfused) row("unfused_fwd", t_unf, fwd_flops);
  printf("# fwd/peak %.3f  bwd/peak %.3f", fwd_gf / peak, bwd_gf / peak);
  if (!no_unfused) printf("  fwd/unfused %.2fx", fwd_gf / unf_gf);
  printf("\n");

  nlohmann::json j;
  j["threads"] = threads;
  j["peak_gflops"] = peak;
  j["problem"] = {{"S", p.s},           {"D", p.d},       {"B", p.b},
                  {"Hq", p.h},          {"Hkv", p.hkv},   {"dtype", dtype},
                  {"causal", p.causal}, {"iters", iters}, {"warmup", warmup}};
  j["fused_fwd"] = {
      {"time_ms", t_fwd.median * 1e3}, {"best_ms", t_fwd.best * 1e3}, {"gflops", fwd_gf}};
  j["fused_bwd"] = {
      {"time_ms", t_bwd.median * 1e3}, {"best_ms", t_bwd.best * 1e3}, {"gflops", bwd_gf}};
  j["ratios"] = {{"fwd_over_peak", fwd_gf / peak}, {"bwd_over_peak", bwd_gf / peak}};
  if (!no_unfused) {
    j["unfused_fwd"] = {
        {"time_ms", t_unf.median * 1e3}, {"best_ms", t_unf.best * 1e3}, {"gflops", unf_gf}};
    j["ratios"]["fwd_over_unfused"] = fwd_gf / unf_gf;
  }
  printf("%s\n", j.dump().c_str());
  if (!json_path.empty()) std::ofstream(json_path) << j.dump(2) << "\n";
  return 0;
}
