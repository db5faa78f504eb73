// ringattn_bench: ring attention over MPI, timed, in the manner of nccl-tests.
//
//   mpirun -np P ringattn_bench -b 4096 -e 16384 -f 2 -H 8 -K 8 -d 128 --dtype bf16 --causal
//       --scheme zigzag --mode both -n 5 -w 1 -c 1 [--json FILE]
//
// One row per global sequence length: seq total, seq local, B, Hq, Hkv, D, dtype, mask, scheme,
// time, TFLOP/s, comm GB/s, overlap %, #wrong (and peak resident memory per rank), a footer with
// averages, and the same rows as JSON. FLOPs: forward 4*B*Hq*S^2*D, half for causal; backward
// 2.5x forward. Time: the slowest rank, averaged over iterations. Overlap % = compute-only time /
// total time per rank (averaged over ranks; backend cuda: device compute time / the rank's wall
// time of the iteration, device work included). comm GB/s: bytes a rank sends per second of the
// run.
// --single runs the single-process API on the whole problem instead (the baseline, with -np 1).
// --plan runs the ring through a plan (ringattn_ring_plan_*: agreed once per row, no agreement
// per call).
// --emulate R/P (with -np 1) runs rank R's share of a P-rank ring alone, with a compute-only
// context (ringattn_context_create_compute_only): that rank's kernels and timing, no transfers,
// no check. Summing the device compute of R = 0..P-1 gives the ring's compute over ranks on one
// device.
// Backend cuda: the JSON rows add the device time of the ring's compute (CUDA events around
// every kernel call, per iteration), summed over ranks and of the slowest rank; reading it waits
// for the call's device work, once after the forward and once after the backward.
// A failed call prints the library's message at once; a timeout or communication failure (a
// peer may be gone) ends the rank with exit code 1 before any other collective, and the
// bench's own collectives are bounded by RINGATTN_TIMEOUT_MS (tool_collectives.h).
#include <mpi.h>
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "host_dtype.h"
#include "ring_tool.h"
#include "tool_collectives.h"

namespace {

using ringattn::tool::Problem;
using ringattn::tool::Tensor;

struct Args {
  int64_t begin = 4096, end = 4096, factor = 2, batch = 1, hq = 8, hkv = 0, d = 128;
  std::string dtype = "bf16", scheme = "zigzag", mode = "both", window, json;
  std::string backend = "cpu", transport = "mpi", local_kernel = "own";
  std::string emulate;  // "R/P"
  ringattn::tool::HybridArgs hybrid;
  bool causal = false, single = false, verbose = false, plan = false;
  int iters = 5, warmup = 1, check = 1, chunks = 0;
};

// Inputs are a pure function of (tensor, batch, global row, head, dim), so any rank can build
// any row, and the check on rank 0 needs no copy of the global tensors.
float input_value(int tensor, int64_t b, int64_t row, int64_t h, int64_t d) {
  uint64_t x = (static_cast<uint64_t>(tensor) << 56) ^ (static_cast<uint64_t>(b) << 44) ^
               (static_cast<uint64_t>(row) << 20) ^ (static_cast<uint64_t>(h) << 10) ^
               static_cast<uint64_t>(d);
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return static_cast<float>(static_cast<double>(x >> 11) * 0x1.0p-53 * 2.0 - 1.0);
}

float rounded(float x, ringattn_dtype_t t) {
  if (t == RINGATTN_FLOAT16) return ringattn::host::f16_to_float(ringattn::host::float_to_f16(x));
  if (t == RINGATTN_BFLOAT16)
    return ringattn::host::bf16_to_float(ringattn::host::float_to_bf16(x));
  return x;
}

// Local shard of input `tensor` at this rank's rows (`rows`: global row of each local row).
void fill_local(Tensor* t, int tensor, const Problem& p, int64_t heads,
                const std::vector<int64_t>& rows) {
  const int64_t n = static_cast<int64_t>(rows.size());
  std::vector<float> v(static_cast<size_t>(p.batch * n * heads * p.d));
  size_t i = 0;
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t h = 0; h < heads; ++h) {
        for (int64_t x = 0; x < p.d; ++x) v[i++] = input_value(tensor, b, rows[r], h, x);
      }
    }
  }
  ringattn::tool::from_float(v.data(), static_cast<int64_t>(v.size()), t);
}

// Seconds of the last call's all-to-alls (hybrid layouts; 0 otherwise).
double alltoall_seconds(ringattn_context_t ctx) {
  double seconds = 0;
  if (ctx != nullptr) ringattn_context_alltoall_stats(ctx, &seconds, nullptr);
  return seconds;
}

std::vector<int64_t> rank_rows(const Problem& p, int world, int rank) {
  std::vector<int64_t> pos(static_cast<size_t>(p.local_rows(world, rank)));
  ringattn_shard_positions(p.scheme, p.rows, world, rank, pos.data(),
                           static_cast<int64_t>(pos.size()));
  return pos;
}

struct Mask {
  bool causal;
  int64_t left, right;
  bool visible(int64_t i, int64_t j) const {
    const int64_t r = causal ? (right < 0 ? 0 : std::min<int64_t>(right, 0)) : right;
    if (left >= 0 && j < i - left) return false;
    if (r >= 0 && j > i + r) return false;
    return true;
  }
};

// Float64 reference for the query rows `qrows` of one (batch, head): O, LSE, and with dout the
// row's dQ plus its contributions to dK and dV (exact over all keys; dK/dV are complete only when
// `qrows` is every row).
struct RefOut {
  std::vector<double> o, lse, dq, dk, dv;
};

double in_r(int tensor, int64_t b, int64_t row, int64_t h, int64_t x, ringattn_dtype_t t) {
  return rounded(input_value(tensor, b, row, h, x), t);
}

void reference(const Problem& p, const Mask& m, double scale, ringattn_dtype_t t, bool bwd,
               const std::vector<int64_t>& qrows, RefOut* out) {
  const int64_t S = p.rows, D = p.d, B = p.batch, Hq = p.hq, group = p.hq / p.hkv;
  const size_t nq = qrows.size();
  out->o.assign(B * nq * Hq * D, 0.0);
  out->lse.assign(B * Hq * nq, 0.0);
  if (bwd) {
    out->dq.assign(B * nq * Hq * D, 0.0);
    out->dk.assign(B * S * p.hkv * D, 0.0);
    out->dv.assign(B * S * p.hkv * D, 0.0);
  }
#pragma omp parallel for collapse(2) schedule(dynamic)
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t kh = h / group;
      std::vector<double> K(S * D), V(S * D), s(S), q(D), g(D), o(D);
      for (int64_t j = 0; j < S; ++j) {
        for (int64_t x = 0; x < D; ++x) {
          K[j * D + x] = in_r(1, b, j, kh, x, t);
          V[j * D + x] = in_r(2, b, j, kh, x, t);
        }
      }
      for (size_t qi = 0; qi < nq; ++qi) {
        const int64_t i = qrows[qi];
        for (int64_t x = 0; x < D; ++x) q[x] = in_r(0, b, i, h, x, t);
        double mx = -INFINITY;
        for (int64_t j = 0; j < S; ++j) {
          if (!m.visible(i, j)) {
            s[j] = -INFINITY;
            continue;
          }
          double acc = 0;
          for (int64_t x = 0; x < D; ++x) acc += q[x] * K[j * D + x];
          s[j] = acc * scale;
          mx = std::max(mx, s[j]);
        }
        std::fill(o.begin(), o.end(), 0.0);
        double sum = 0;
        if (mx > -INFINITY) {
          for (int64_t j = 0; j < S; ++j) {
            if (s[j] == -INFINITY) continue;
            const double e = std::exp(s[j] - mx);
            sum += e;
            for (int64_t x = 0; x < D; ++x) o[x] += e * V[j * D + x];
          }
          for (int64_t x = 0; x < D; ++x) o[x] /= sum;
        }
        const double lse = mx > -INFINITY ? mx + std::log(sum) : -INFINITY;
        for (int64_t x = 0; x < D; ++x) out->o[((b * nq + qi) * Hq + h) * D + x] = o[x];
        out->lse[(b * Hq + h) * nq + qi] = lse;
        if (!bwd || mx == -INFINITY) continue;
        for (int64_t x = 0; x < D; ++x) g[x] = in_r(3, b, i, h, x, t);
        double delta = 0;
        for (int64_t x = 0; x < D; ++x) delta += g[x] * o[x];
        for (int64_t j = 0; j < S; ++j) {
          if (s[j] == -INFINITY) continue;
          const double pij = std::exp(s[j] - lse);
          double dp = 0;
          for (int64_t x = 0; x < D; ++x) dp += g[x] * V[j * D + x];
          const double ds = pij * (dp - delta) * scale;
          for (int64_t x = 0; x < D; ++x) {
            out->dq[((b * nq + qi) * Hq + h) * D + x] += ds * K[j * D + x];
#pragma omp atomic
            out->dk[((b * S + j) * p.hkv + kh) * D + x] += ds * q[x];
#pragma omp atomic
            out->dv[((b * S + j) * p.hkv + kh) * D + x] += pij * g[x];
          }
        }
      }
    }
  }
}

// Ours against the reference, on the scale max(1, max|ref|): the elements off by more than tol
// times it, and the largest error divided by it (finite reference values).
struct Comparison {
  int64_t wrong = 0;
  double max_error = 0.0;
};
Comparison compare(const std::vector<float>& ours, const std::vector<double>& ref, double tol) {
  double mx = 1.0;
  for (double r : ref) {
    if (std::isfinite(r)) mx = std::max(mx, std::fabs(r));
  }
  Comparison c;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double a = ours[i], r = ref[i];
    if (std::isinf(r)) {
      c.wrong += !(std::isinf(a) && (a < 0) == (r < 0));
    } else {
      c.wrong += !(std::fabs(a - r) <= tol * mx);
      if (std::isfinite(r)) c.max_error = std::max(c.max_error, std::fabs(a - r) / mx);
    }
  }
  return c;
}

double tolerance(ringattn_dtype_t t) {
  return t == RINGATTN_FLOAT32 ? 1e-4 : t == RINGATTN_FLOAT16 ? 1e-2 : 5e-2;
}

double peak_mib() {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;
}

struct Row {
  int64_t seq = 0, seq_local = 0;
  double time_s = 0, tflops = 0, gbps = 0, overlap = 0, overlap_min = 0, compute_s = 0;
  // Backend cuda: device time of the ring's compute per iteration (CUDA events), summed over
  // ranks and of the slowest rank; host wait time of the slowest rank.
  double device_sum_s = 0, device_max_s = 0, wait_max_s = 0, a2a_max_s = 0;
  int64_t wrong = -1;
  double max_error = -1;  // largest error / largest |reference| over the checked values
  double peak_mib_max = 0;
  // The last iteration's local kernels, summed over ranks (ringattn_context_kernel_stats).
  int64_t library_blocks = -1, own_calls = -1;
};

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  ringattn::tool::set_tool_name("ringattn_bench");
  int world = 1, me = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  MPI_Comm_rank(MPI_COMM_WORLD, &me);
  Args a;
  CLI::App app{"ringattn_bench: ring attention over MPI (nccl-tests style table)"};
  app.add_option("-b,--minseq", a.begin, "first global sequence length");
  app.add_option("-e,--maxseq", a.end, "last global sequence length");
  app.add_option("-f,--stepfactor", a.factor, "multiply the length by this between rows");
  app.add_option("-B,--batch", a.batch, "batch size");
  app.add_option("-H,--heads", a.hq, "query heads");
  app.add_option("-K,--kv-heads", a.hkv, "key/value heads (default: = heads)");
  app.add_option("-d,--head-dim", a.d, "head dim");
  app.add_option("--dtype", a.dtype, "f32|f16|bf16");
  app.add_flag("--causal", a.causal, "causal mask");
  app.add_option("--window", a.window, "sliding window L,R (-1 = unbounded)");
  app.add_option("--scheme", a.scheme, "contiguous|zigzag|striped");
  app.add_option("--mode", a.mode, "fwd|bwd|both (bwd times the backward alone)");
  app.add_option("-n,--iters", a.iters, "timed iterations");
  app.add_option("-w,--warmup", a.warmup, "warm-up iterations");
  app.add_option("-c,--check", a.check, "check against the float64 reference: 0/1");
  app.add_option("--chunks", a.chunks, "compute chunks per ring step (0 = library default)");
  app.add_flag("--single", a.single, "time the single-process API on the whole problem");
  app.add_flag("--plan", a.plan, "run through a ring plan (agreed once, no per-call agreement)");
  app.add_option("--emulate", a.emulate,
                 "R/P: run rank R's share of a P-rank ring alone (compute only, -np 1)");
  a.hybrid.add_to(app);
  app.add_flag("--verbose", a.verbose, "print every rank's timing split of the last iteration");
  app.add_option("--json", a.json, "also write the rows as JSON to this file");
  app.add_option("--backend", a.backend, "cpu|cuda (cuda: device copies of the shards)");
  app.add_option("--transport", a.transport, "mpi|nccl (nccl: --backend cuda, one GPU per rank)");
  app.add_option("--local-kernel", a.local_kernel,
                 "own|cudnn: which kernel computes local blocks (cudnn: --backend cuda, a build "
                 "with cuDNN; ours where cuDNN cannot)")
      ->check(CLI::IsMember({"own", "cudnn"}));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = me == 0 ? app.exit(e) : e.get_exit_code();
    MPI_Finalize();
    return rc;
  }
  auto die = [&](const std::string& msg) {
    if (me == 0) std::fprintf(stderr, "ringattn_bench: %s\n", msg.c_str());
    MPI_Finalize();
    std::exit(2);
  };
  Problem p;
  ringattn_dtype_t dtype = RINGATTN_BFLOAT16;
  if (!ringattn::tool::parse_dtype(a.dtype, &dtype)) die("--dtype: unknown value " + a.dtype);
  if (!ringattn::tool::parse_scheme(a.scheme, &p.scheme))
    die("--scheme: unknown value " + a.scheme);
  if (a.mode != "fwd" && a.mode != "bwd" && a.mode != "both") die("--mode: fwd|bwd|both");
  if (a.backend != "cpu" && a.backend != "cuda") die("--backend: cpu|cuda");
  if (a.transport != "mpi" && a.transport != "nccl") die("--transport: mpi|nccl");
  if (a.transport == "nccl" && a.backend != "cuda") die("--transport nccl needs --backend cuda");
#if !defined(RINGATTN_HAVE_NCCL)
  if (a.transport == "nccl") die("--transport nccl: this build has no NCCL");
#endif
  const ringattn_backend_t backend =
      a.backend == "cuda" ? RINGATTN_BACKEND_CUDA : RINGATTN_BACKEND_CPU;
  const bool device = backend == RINGATTN_BACKEND_CUDA;
  if (a.hkv <= 0) a.hkv = a.hq;
  if (a.begin <= 0 || a.end < a.begin || a.factor < 2 || a.iters < 1 || a.warmup < 0) {
    die("bad sweep: need 0 < -b <= -e, -f >= 2, -n >= 1, -w >= 0");
  }
  if (a.single && world != 1) die("--single times one process: run it with -np 1");
  int emu_rank = -1, emu_world = 0;
  if (!a.emulate.empty()) {
    char tail = 0;
    if (std::sscanf(a.emulate.c_str(), "%d/%d%c", &emu_rank, &emu_world, &tail) != 2 ||
        emu_world < 1 || emu_rank < 0 || emu_rank >= emu_world) {
      die("--emulate: expected R/P with 0 <= R < P");
    }
    if (world != 1 || a.single) die("--emulate runs one rank's share alone: -np 1, no --single");
    a.check = 0;  // the outputs of a compute-only ring are meaningless
  }
  const bool emulated = emu_world > 0;
  ringattn_attn_params_t params = RINGATTN_ATTN_PARAMS_INIT;
  params.causal = a.causal;
  params.scheme = p.scheme;
  params.local_kernel =
      a.local_kernel == "cudnn" ? RINGATTN_LOCAL_KERNEL_CUDNN : RINGATTN_LOCAL_KERNEL_OWN;
  if (!a.window.empty()) {
    if (std::sscanf(a.window.c_str(), "%ld,%ld", &params.window_left, &params.window_right) != 2) {
      die("--window: expected L,R");
    }
  }
  const Mask mask{a.causal, params.window_left, params.window_right};
  const bool fwd = a.mode != "bwd", bwd = a.mode != "fwd";
  const char* mask_name = !a.window.empty() ? "window" : a.causal ? "causal" : "full";
  ringattn_context_options_t opts = RINGATTN_CONTEXT_OPTIONS_INIT;
  opts.chunks = a.chunks;
  a.hybrid.apply(&opts);
  ringattn_context_t ctx = nullptr;
  if (emulated) {
    if (ringattn_context_create_compute_only(emu_rank, emu_world, backend, &opts, &ctx) !=
        RINGATTN_SUCCESS) {
      die(std::string("context: ") + ringattn_get_last_error());
    }
  } else if (!a.single) {
    if (ringattn::tool::create_context(a.transport, backend, &opts, &ctx) != RINGATTN_SUCCESS) {
      die(std::string("context: ") + ringattn_get_last_error());
    }
  }
  int32_t uly = 1;  // the context's ulysses degree
  if (ctx != nullptr) ringattn_context_hybrid_layout(ctx, &uly, nullptr, nullptr, nullptr);
  if (me == 0) {
    if (emulated) {
      std::printf(
          "# ringattn_bench: rank %d of %d alone (compute only), mode %s, %d iterations "
          "(+%d warm-up)\n",
          emu_rank, emu_world, a.mode.c_str(), a.iters, a.warmup);
    } else {
      std::printf("# ringattn_bench: %d ranks%s, mode %s, %d iterations (+%d warm-up)\n", world,
                  a.single ? " (single-process API)" : "", a.mode.c_str(), a.iters, a.warmup);
    }
    std::printf("#%10s %9s %3s %4s %4s %4s %5s %7s %10s %10s %8s %9s %8s %7s %9s %3s %3s %9s %9s\n",
                "seq", "seq_local", "B", "Hq", "Hkv", "D", "dtype", "mask", "scheme", "time(ms)",
                "TFLOP/s", "comm_GB/s", "overlap%", "#wrong", "peak_MiB", "U", "R", "a2a(ms)",
                "ring(ms)");
  }
  std::vector<Row> rows;
  nlohmann::json jrows = nlohmann::json::array();
  for (int64_t S = a.begin; S <= a.end; S *= a.factor) {
    p.batch = a.batch;
    p.rows = S;
    p.hq = a.hq;
    p.hkv = a.hkv;
    p.d = a.d;
    // A compute-only context takes the global length as P times its share.
    const int64_t parts = p.scheme == RINGATTN_SCHEME_ZIGZAG ? 2 * emu_world : emu_world;
    if (emulated && S % parts != 0) {
      die("--emulate: S = " + std::to_string(S) + " is not a multiple of " + std::to_string(parts) +
          " (equal shares)");
    }
    const int W = emulated ? emu_world : a.single ? 1 : world;
    const int R = emulated ? emu_rank : a.single ? 0 : me;
    const std::vector<int64_t> mine = rank_rows(p, W, R);
    const int64_t n = static_cast<int64_t>(mine.size());
    Tensor q, k, v, o, lse, dout, dq, dk, dv;
    q.init(p, n, p.hq, dtype);
    k.init(p, n, p.hkv, dtype);
    v.init(p, n, p.hkv, dtype);
    o.init(p, n, p.hq, dtype);
    ringattn::tool::init_lse(&lse, p, n);
    fill_local(&q, 0, p, p.hq, mine);
    fill_local(&k, 1, p, p.hkv, mine);
    fill_local(&v, 2, p, p.hkv, mine);
    if (bwd) {
      dout.init(p, n, p.hq, dtype);
      dq.init(p, n, p.hq, dtype);
      dk.init(p, n, p.hkv, dtype);
      dv.init(p, n, p.hkv, dtype);
      fill_local(&dout, 3, p, p.hq, mine);
    }
    ringattn::tool::Placed pq, pk, pv, po, plse, pdo, pdq, pdk, pdv;
    std::string perr;
    bool placed = pq.place(&q, device, &perr) && pk.place(&k, device, &perr) &&
                  pv.place(&v, device, &perr) && po.place(&o, device, &perr) &&
                  plse.place(&lse, device, &perr);
    if (placed && bwd) {
      placed = pdo.place(&dout, device, &perr) && pdq.place(&dq, device, &perr) &&
               pdk.place(&dk, device, &perr) && pdv.place(&dv, device, &perr);
    }
    if (!placed) {
      std::fprintf(stderr, "ringattn_bench: rank %d: %s\n", me, perr.c_str());
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    ringattn_attn_params_t prm = params;
    if (a.single) prm.scheme = RINGATTN_SCHEME_CONTIGUOUS;
    // --plan: the problem agreed once, runs without agreement in the plan's own workspace.
    ringattn_ring_plan_t plan = nullptr;
    if (a.plan && ctx != nullptr) {
      const ringattn_status_t st =
          ringattn_ring_plan_create(ctx, pq.t(), pk.t(), pv.t(), &prm, 1, &plan);
      if (st != RINGATTN_SUCCESS) {
        ringattn::tool::report_ring_failure(st, ringattn_get_last_error());
        ringattn::tool::exit_now(1, "stopping after the failure above");
      }
    }
    auto call_fwd = [&] {
      if (plan != nullptr) {
        return ringattn_ring_plan_forward(plan, pq.t(), pk.t(), pv.t(), po.t(), plse.t(), nullptr,
                                          0, nullptr);
      }
      return a.single ? ringattn_attention_forward(pq.t(), pk.t(), pv.t(), po.t(), plse.t(), &prm,
                                                   backend, nullptr)
                      : ringattn_ring_forward(ctx, pq.t(), pk.t(), pv.t(), po.t(), plse.t(), &prm,
                                              nullptr);
    };
    auto call_bwd = [&] {
      if (plan != nullptr) {
        return ringattn_ring_plan_backward(plan, pq.t(), pk.t(), pv.t(), po.t(), plse.t(), pdo.t(),
                                           pdq.t(), pdk.t(), pdv.t(), nullptr, 0, nullptr);
      }
      return a.single
                 ? ringattn_attention_backward(pq.t(), pk.t(), pv.t(), po.t(), plse.t(), pdo.t(),
                                               pdq.t(), pdk.t(), pdv.t(), &prm, backend, nullptr)
                 : ringattn_ring_backward(ctx, pq.t(), pk.t(), pv.t(), po.t(), plse.t(), pdo.t(),
                                          pdq.t(), pdk.t(), pdv.t(), &prm, nullptr);
    };
    // A failed call is reported at once, before any collective (a timed-out peer never joins
    // one) and before the statistics are read; then the rank stops.
    auto succeeded = [](ringattn_status_t st) {
      if (st == RINGATTN_SUCCESS) return true;
      ringattn::tool::report_ring_failure(st, ringattn_get_last_error());
      ringattn::tool::exit_now(1, "stopping after the failure above");
    };
    double sum_time = 0, sum_total = 0, sum_compute = 0, sum_device = 0, sum_wait = 0, sum_dt = 0;
    int64_t library_blocks = 0, own_calls = 0;  // the last iteration's, this rank
    double sum_a2a = 0;
    int64_t bytes = 0;
    bool ok = true;
    for (int it = 0; it < a.warmup + a.iters && ok; ++it) {
      // The backward needs the forward's O and LSE: in bwd mode the forward runs untimed.
      if (!fwd) {
        ok = succeeded(call_fwd());
        // Its kernels must not run inside the timed backward.
        if (device) ringattn::tool::device_sync();
      }
      ringattn::tool::bounded_barrier(MPI_COMM_WORLD, "the barrier before an iteration");
      const double t0 = MPI_Wtime();
      double total = 0, compute = 0, dev = 0, wait = 0, a2a = 0;
      ringattn_ring_stats_t st{};
      const bool last = it + 1 == a.warmup + a.iters;
      auto report = [&](const char* what) {
        if (a.verbose && last && ctx) {
          std::fprintf(stderr,
                       "rank %d %s: total %.1f ms compute %.1f ms (device %.1f ms) wait %.1f ms "
                       "sent %.1f MB skipped %d/%d\n",
                       me, what, st.total_seconds * 1e3, st.compute_seconds * 1e3,
                       st.device_compute_seconds * 1e3, st.comm_wait_seconds * 1e3,
                       st.bytes_sent / 1e6, st.steps_skipped, st.steps);
        }
      };
      if (fwd && ok) {
        ok = succeeded(call_fwd());
        if (ctx) ringattn_context_last_stats(ctx, &st);
        report("forward");
        a2a += alltoall_seconds(ctx);
        total += st.total_seconds, compute += st.compute_seconds;
        dev += st.device_compute_seconds, wait += st.comm_wait_seconds;
        if (it >= a.warmup) bytes += st.bytes_sent;
      }
      if (bwd && ok) {
        ok = succeeded(call_bwd());
        if (ctx) ringattn_context_last_stats(ctx, &st);
        report("backward");
        a2a += alltoall_seconds(ctx);
        total += st.total_seconds, compute += st.compute_seconds;
        dev += st.device_compute_seconds, wait += st.comm_wait_seconds;
        if (it >= a.warmup) bytes += st.bytes_sent;
      }
      if (device) ringattn::tool::device_sync();  // the calls only enqueue device work
      if (last && ctx) ringattn_context_kernel_stats(ctx, &library_blocks, &own_calls);
      double dt = MPI_Wtime() - t0, slowest = 0;
      ringattn::tool::bounded_allreduce(&dt, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD,
                                        "the reduction of iteration times");
      if (it >= a.warmup) {
        sum_time += slowest;
        sum_total += total;
        sum_compute += compute;
        sum_device += dev;
        sum_wait += wait;
        sum_a2a += a2a;
        sum_dt += dt;
      }
    }
    auto reduce = [](const double* in, double* out, MPI_Op op) {
      ringattn::tool::bounded_allreduce(in, out, 1, MPI_DOUBLE, op, MPI_COMM_WORLD,
                                        "the reduction of a row's statistics");
    };
    Row row;
    row.seq = S;
    row.seq_local = n;
    row.time_s = sum_time / a.iters;
    double flops = 4.0 * a.batch * a.hq * static_cast<double>(S) * S * a.d;
    if (a.causal) flops /= 2;
    flops = (fwd ? flops : 0) + (bwd ? 2.5 * flops : 0);
    row.tflops = flops / row.time_s / 1e12;
    row.gbps = static_cast<double>(bytes) / a.iters / row.time_s / 1e9;
    // Device: the calls return before their kernels finish, so the share of the iteration's
    // wall time (device work included) that the rank's kernels ran.
    const double ov = a.single ? 1.0
                      : device ? (sum_dt > 0 ? sum_device / sum_dt : 0.0)
                               : (sum_total > 0 ? sum_compute / sum_total : 0.0);
    double ov_sum = 0, ov_min = 0, gb_max = 0;
    reduce(&ov, &ov_sum, MPI_SUM);
    reduce(&ov, &ov_min, MPI_MIN);
    reduce(&row.gbps, &gb_max, MPI_MAX);
    row.overlap = 100.0 * ov_sum / world;
    row.overlap_min = 100.0 * ov_min;
    row.gbps = gb_max;
    const double dev_mine = sum_device / a.iters, wait_mine = sum_wait / a.iters;
    const double a2a_mine = sum_a2a / a.iters;
    reduce(&a2a_mine, &row.a2a_max_s, MPI_MAX);
    reduce(&dev_mine, &row.device_sum_s, MPI_SUM);
    reduce(&dev_mine, &row.device_max_s, MPI_MAX);
    reduce(&wait_mine, &row.wait_max_s, MPI_MAX);
    const double peak = peak_mib();
    reduce(&peak, &row.peak_mib_max, MPI_MAX);
    if (ctx) {
      int64_t counts[2] = {library_blocks, own_calls}, sums[2] = {0, 0};
      ringattn::tool::bounded_allreduce(counts, sums, 2, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD,
                                        "the reduction of kernel counts");
      row.library_blocks = sums[0];
      row.own_calls = sums[1];
    }
    if (a.check) {
      // Gather in global order on rank 0; compare sampled query rows (every row when small)
      // with the float64 reference; dK/dV only when every row is checked.
      const bool all_rows = static_cast<double>(S) * S * a.hq * a.d * a.batch <= 4e9;
      std::vector<int64_t> qrows;
      const int64_t samples = all_rows ? S : std::min<int64_t>(S, 48);
      for (int64_t i = 0; i < samples; ++i)
        qrows.push_back(all_rows ? i : (i * (S - 1)) / (samples - 1));
      Problem gp = p;
      if (a.single) gp.scheme = RINGATTN_SCHEME_CONTIGUOUS;
      std::string derr;
      const bool down =
          po.download(&derr) && plse.download(&derr) &&
          (!bwd || (pdq.download(&derr) && pdk.download(&derr) && pdv.download(&derr)));
      if (!down) {
        std::fprintf(stderr, "ringattn_bench: rank %d: %s\n", me, derr.c_str());
        MPI_Abort(MPI_COMM_WORLD, 1);
      }
      auto gather = [&](const Tensor& t, int64_t heads, bool is_lse) {
        return ringattn::tool::gather_global(gp, t, heads, is_lse, MPI_COMM_WORLD);
      };
      const std::vector<float> go = gather(o, p.hq, false), gl = gather(lse, p.hq, true);
      std::vector<float> gdq, gdk, gdv;
      if (bwd) {
        gdq = gather(dq, p.hq, false);
        gdk = gather(dk, p.hkv, false);
        gdv = gather(dv, p.hkv, false);
      }
      int64_t wrong = 0;
      if (me == 0) {
        RefOut ref;
        const double scale = 1.0 / std::sqrt(static_cast<double>(a.d));
        reference(p, mask, scale, dtype, bwd, qrows, &ref);
        auto pick = [&](const std::vector<float>& g, int64_t heads, int64_t width, bool is_lse) {
          std::vector<float> out;
          for (int64_t b = 0; b < p.batch; ++b) {
            if (is_lse) {
              for (int64_t h = 0; h < heads; ++h) {
                for (int64_t r : qrows) out.push_back(g[(b * heads + h) * S + r]);
              }
            } else {
              for (int64_t r : qrows) {
                for (int64_t x = 0; x < heads * width; ++x)
                  out.push_back(g[(b * S + r) * heads * width + x]);
              }
            }
          }
          return out;
        };
        const double tol = tolerance(dtype);
        auto check = [&](const std::vector<float>& ours, const std::vector<double>& want) {
          const Comparison c = compare(ours, want, tol);
          wrong += c.wrong;
          row.max_error = std::max(row.max_error, c.max_error);
        };
        check(pick(go, p.hq, p.d, false), ref.o);
        check(pick(gl, p.hq, 1, true), ref.lse);
        if (bwd) {
          check(pick(gdq, p.hq, p.d, false), ref.dq);
          if (all_rows) {
            check(gdk, ref.dk);
            check(gdv, ref.dv);
          }
        }
      }
      ringattn::tool::bounded_bcast(&row.max_error, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD,
                                    "the broadcast of the check's error");
      ringattn::tool::bounded_bcast(&wrong, 1, MPI_INT64_T, 0, MPI_COMM_WORLD,
                                    "the broadcast of the check's result");
      row.wrong = wrong;
    }
    if (me == 0) {
      char wrong_s[32];
      std::snprintf(wrong_s, sizeof(wrong_s), "%lld", static_cast<long long>(row.wrong));
      std::printf(
          " %10lld %9lld %3lld %4lld %4lld %4lld %5s %7s %10s %10.2f %8.4f %9.3f %8.1f %7s %9.1f "
          "%3d "
          "%3d %9.2f %9.2f\n",
          static_cast<long long>(S), static_cast<long long>(n), static_cast<long long>(a.batch),
          static_cast<long long>(a.hq), static_cast<long long>(a.hkv), static_cast<long long>(a.d),
          ringattn::tool::dtype_name(dtype), mask_name,
          a.single ? "single" : ringattn::tool::scheme_name(p.scheme), row.time_s * 1e3, row.tflops,
          row.gbps, row.overlap, a.check ? wrong_s : "N/A", row.peak_mib_max, uly, world / uly,
          row.a2a_max_s * 1e3, row.wait_max_s * 1e3);
      std::fflush(stdout);
    }
    ringattn_ring_plan_destroy(plan);
    rows.push_back(row);
    jrows.push_back({{"seq", S},
                     {"seq_local", n},
                     {"batch", a.batch},
                     {"hq", a.hq},
                     {"hkv", a.hkv},
                     {"head_dim", a.d},
                     {"dtype", ringattn::tool::dtype_name(dtype)},
                     {"mask", mask_name},
                     {"window", a.window},
                     {"scheme", a.single ? "single" : ringattn::tool::scheme_name(p.scheme)},
                     {"mode", a.mode},
                     {"plan", a.plan},
                     {"ranks", world},
                     {"time_ms", row.time_s * 1e3},
                     {"tflops", row.tflops},
                     {"comm_gbps", row.gbps},
                     {"overlap_pct", row.overlap},
                     {"overlap_pct_min_rank", row.overlap_min},
                     {"backend", a.backend},
                     {"transport", a.single   ? "none"
                                   : emulated ? "compute-only"
                                              : a.transport},
                     {"emulated_rank", emulated ? emu_rank : -1},
                     {"emulated_world", emulated ? emu_world : 0},
                     {"device_compute_ms_sum_ranks", row.device_sum_s * 1e3},
                     {"device_compute_ms_max_rank", row.device_max_s * 1e3},
                     {"comm_wait_ms_max_rank", row.wait_max_s * 1e3},
                     {"alltoall_ms_max_rank", row.a2a_max_s * 1e3},
                     {"ulysses_degree", uly},
                     {"ring_size", world / uly},
                     {"wrong", row.wrong},
                     {"max_error", row.max_error},
                     {"local_kernel", a.local_kernel},
                     {"library_blocks_sum_ranks", row.library_blocks},
                     {"own_calls_sum_ranks", row.own_calls},
                     {"peak_rss_mib_max_rank", row.peak_mib_max}});
    if (S > a.end / a.factor) break;
  }
  if (me == 0 && !rows.empty()) {
    double t = 0, tf = 0, gb = 0, ov = 0;
    int64_t wrong = 0;
    for (const Row& r : rows) {
      t += r.time_s, tf += r.tflops, gb += r.gbps, ov += r.overlap;
      wrong += r.wrong > 0 ? r.wrong : 0;
    }
    const double nr = static_cast<double>(rows.size());
    std::printf("# Out of bounds values : %lld %s\n", static_cast<long long>(wrong),
                a.check ? (wrong == 0 ? "OK" : "FAILED") : "(not checked)");
    std::printf("# Avg time %.2f ms, avg TFLOP/s %.4f, avg comm GB/s %.3f, avg overlap %.1f %%\n",
                t / nr * 1e3, tf / nr, gb / nr, ov / nr);
    std::printf("%s\n", nlohmann::json(jrows).dump().c_str());
    if (!a.json.empty()) {
      std::ofstream(a.json) << nlohmann::json(jrows).dump(2) << "\n";
    }
  }
  int64_t wrong_all = 0;
  for (const Row& r : rows) wrong_all += r.wrong > 0 ? r.wrong : 0;
  if (ctx) ringattn_context_destroy(ctx);
  MPI_Finalize();
  return wrong_all > 0 ? 1 : 0;
}
