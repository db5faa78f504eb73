// ringattn_run: ring attention end to end from .npy files.
//
//   mpirun -np P ringattn_run --q Q.npy --k K.npy --v V.npy [--do DO.npy] [--cu-seqlens CU.npy]
//       [--causal] [--window L,R] [--scale F] [--scheme contiguous|zigzag|striped]
//       [--dtype f32|f16|bf16] [--backend cpu|cuda] [--transport mpi|nccl] --out DIR
//
// Every rank reads the GLOBAL tensors (Q [B,S,Hq,D], K/V [B,S,Hkv,D], or packed [T,H,D] with
// CU = B+1 int32/int64 offsets), casts them to --dtype and takes its shard by the scheme; the
// ring runs; rank 0 writes global-order float32 o.npy and lse.npy ([B,Hq,S] or [Hq,T]) and, with
// --do, dq.npy, dk.npy, dv.npy. Any bad input makes every rank exit non-zero with a message.
// --backend cuda runs on device copies of the shards (current device; ranks may share one GPU)
// over --transport mpi (staged through pinned host memory) or nccl (one GPU per rank).
// A failed ring call prints the library's message on the rank that got it; a timeout or a
// communication failure (a peer may be gone) ends the rank at once with exit code 1, and every
// collective of the tool itself is bounded by RINGATTN_TIMEOUT_MS (tool_collectives.h).
#include <mpi.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "npy.h"
#include "ring_tool.h"
#include "tool_collectives.h"

namespace {

using ringattn::tool::Problem;
using ringattn::tool::Tensor;

struct Args {
  std::string q, k, v, dout, cu, out, window, scheme = "zigzag", dtype = "f32", backend = "cpu";
  std::string transport = "mpi";
  bool causal = false;
  float scale = 0.0f;
  ringattn::tool::HybridArgs hybrid;
};

// Every rank decides the same way: an error anywhere is an error everywhere.
bool all_ok(bool ok) {
  int v = ok ? 1 : 0, all = 0;
  ringattn::tool::bounded_allreduce(&v, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD,
                                    "the agreement on success");
  return all == 1;
}

bool load(const std::string& path, const char* what, ringattn::npy::Array* a,
          std::vector<float>* values, std::string* err) {
  if (!ringattn::npy::read(path, a, err)) return false;
  std::string e;
  if (!ringattn::npy::to_float(*a, values, &e)) {
    *err = std::string(what) + " (" + path + "): " + e;
    return false;
  }
  return true;
}

// Reads and checks the inputs; fills the problem and the global float32 tensors.
bool read_inputs(const Args& a, Problem* p, std::vector<float>* q, std::vector<float>* k,
                 std::vector<float>* v, std::vector<float>* dout, std::string* err) {
  ringattn::npy::Array aq, ak, av, ado, acu;
  if (!load(a.q, "--q", &aq, q, err) || !load(a.k, "--k", &ak, k, err) ||
      !load(a.v, "--v", &av, v, err)) {
    return false;
  }
  if (!a.dout.empty() && !load(a.dout, "--do", &ado, dout, err)) return false;
  const size_t nd = aq.shape.size();
  if (nd != 4 && nd != 3) {
    *err = "--q has shape " + aq.shape_string() + ": expected [B,S,Hq,D] or packed [T,Hq,D]";
    return false;
  }
  p->packed = nd == 3;
  if (p->packed && a.cu.empty()) {
    *err = "--q is packed [T,Hq,D]: --cu-seqlens is required";
    return false;
  }
  if (!p->packed && !a.cu.empty()) {
    *err = "--cu-seqlens is given but --q is [B,S,Hq,D], not packed [T,Hq,D]";
    return false;
  }
  p->batch = p->packed ? 1 : aq.shape[0];
  p->rows = aq.shape[nd - 3];
  p->hq = aq.shape[nd - 2];
  p->d = aq.shape[nd - 1];
  p->hkv = ak.shape.size() == nd ? ak.shape[nd - 2] : -1;
  std::vector<int64_t> want = aq.shape;
  want[nd - 2] = p->hkv;
  if (ak.shape != want || av.shape != want) {
    *err = "--k " + ak.shape_string() + " and --v " + av.shape_string() +
           " must both be [B,S,Hkv,D] (or [T,Hkv,D]) matching --q " + aq.shape_string();
    return false;
  }
  if (!a.dout.empty() && ado.shape != aq.shape) {
    *err =
        "--do has shape " + ado.shape_string() + ", expected the shape of --q " + aq.shape_string();
    return false;
  }
  if (p->hkv <= 0 || p->hq % p->hkv != 0) {
    *err = "heads: Hq=" + std::to_string(p->hq) +
           " is not a multiple of Hkv=" + std::to_string(p->hkv);
    return false;
  }
  if (p->packed) {
    if (!ringattn::npy::read(a.cu, &acu, err)) return false;
    std::string e;
    if (acu.shape.size() != 1 || !ringattn::npy::to_int64(acu, &p->cu, &e)) {
      *err = "--cu-seqlens (" + a.cu + "): expected a 1-d int32 or int64 array of B+1 offsets" +
             (e.empty() ? "" : ": " + e);
      return false;
    }
    if (p->cu.size() < 2 || p->cu.front() != 0 || p->cu.back() != p->rows) {
      *err = "--cu-seqlens must start at 0 and end at T=" + std::to_string(p->rows);
      return false;
    }
    for (size_t i = 1; i < p->cu.size(); ++i) {
      if (p->cu[i] < p->cu[i - 1]) {
        *err = "--cu-seqlens is decreasing at index " + std::to_string(i);
        return false;
      }
    }
  }
  return true;
}

bool parse_window(const std::string& s, int64_t* l, int64_t* r) {
  const size_t c = s.find(',');
  if (c == std::string::npos) return false;
  try {
    size_t u = 0, w = 0;
    *l = std::stoll(s.substr(0, c), &u);
    *r = std::stoll(s.substr(c + 1), &w);
    return u == c && w == s.size() - c - 1 && *l >= -1 && *r >= -1;
  } catch (const std::exception&) {
    return false;
  }
}

int run(const Args& a) {
  int world = 1, me = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  MPI_Comm_rank(MPI_COMM_WORLD, &me);
  std::string err;
  bool ok = true;
  ringattn_attn_params_t params = RINGATTN_ATTN_PARAMS_INIT;
  ringattn_dtype_t dtype = RINGATTN_FLOAT32;
  ringattn_backend_t backend = RINGATTN_BACKEND_CPU;
  Problem p;
  if (!ringattn::tool::parse_scheme(a.scheme, &p.scheme)) {
    ok = false, err = "--scheme: unknown value '" + a.scheme + "' (contiguous|zigzag|striped)";
  } else if (!ringattn::tool::parse_dtype(a.dtype, &dtype)) {
    ok = false, err = "--dtype: unknown value '" + a.dtype + "' (f32|f16|bf16)";
  } else if (a.backend != "cpu" && a.backend != "cuda") {
    ok = false, err = "--backend: unknown value '" + a.backend + "' (cpu|cuda)";
  } else if (a.transport != "mpi" && a.transport != "nccl") {
    ok = false, err = "--transport: unknown value '" + a.transport + "' (mpi|nccl)";
  } else if (a.transport == "nccl" && a.backend != "cuda") {
    ok = false, err = "--transport nccl moves device buffers: use it with --backend cuda";
#if !defined(RINGATTN_HAVE_NCCL)
  } else if (a.transport == "nccl") {
    ok = false, err = "--transport nccl: this build has no NCCL";
#endif
  } else if (!a.window.empty() &&
             !parse_window(a.window, &params.window_left, &params.window_right)) {
    ok = false,
    err = "--window: expected L,R with integers >= -1 (-1 = unbounded), got '" + a.window + "'";
  }
  backend = a.backend == "cuda" ? RINGATTN_BACKEND_CUDA : RINGATTN_BACKEND_CPU;
  std::vector<float> gq, gk, gv, gdo;
  if (ok) ok = read_inputs(a, &p, &gq, &gk, &gv, &gdo, &err);
  if (!all_ok(ok)) {
    if (!ok && me == 0) std::fprintf(stderr, "ringattn_run: %s\n", err.c_str());
    if (ok && me == 0) std::fprintf(stderr, "ringattn_run: another rank failed to read inputs\n");
    return 2;
  }
  params.causal = a.causal;
  params.softmax_scale = a.scale;
  params.scheme = p.scheme;
  if (p.packed) {
    params.cu_seqlens = p.cu.data();
    params.num_seqs = p.num_seqs();
  }
  const bool backward = !a.dout.empty();
  const int64_t n = p.local_rows(world, me);
  Tensor q, k, v, dout, o, lse, dq, dk, dv;
  ringattn_status_t st = ringattn::tool::shard_from_global(p, gq, p.hq, dtype, world, me, &q);
  if (st == RINGATTN_SUCCESS)
    st = ringattn::tool::shard_from_global(p, gk, p.hkv, dtype, world, me, &k);
  if (st == RINGATTN_SUCCESS)
    st = ringattn::tool::shard_from_global(p, gv, p.hkv, dtype, world, me, &v);
  if (st == RINGATTN_SUCCESS && backward) {
    st = ringattn::tool::shard_from_global(p, gdo, p.hq, dtype, world, me, &dout);
  }
  o.init(p, n, p.hq, dtype);
  ringattn::tool::init_lse(&lse, p, n);
  if (!all_ok(st == RINGATTN_SUCCESS)) {
    if (me == 0)
      std::fprintf(stderr, "ringattn_run: sharding failed: %s\n", ringattn_get_last_error());
    return 1;
  }
  if (backward) {
    dq.init(p, n, p.hq, dtype);
    dk.init(p, n, p.hkv, dtype);
    dv.init(p, n, p.hkv, dtype);
  }
  // The context first: it reports an unusable backend (no device) as the library's error.
  ringattn_context_t ctx = nullptr;
  ringattn_context_options_t opts = RINGATTN_CONTEXT_OPTIONS_INIT;
  a.hybrid.apply(&opts);
  st = ringattn::tool::create_context(a.transport, backend, &opts, &ctx);
  // Backend cuda: the ring sees device copies (default stream), copied back after the calls.
  const bool device = backend == RINGATTN_BACKEND_CUDA;
  ringattn::tool::Placed pq, pk, pv, po, plse, pdo, pdq, pdk, pdv;
  std::string place_err;
  if (st == RINGATTN_SUCCESS) {
    bool placed = pq.place(&q, device, &place_err) && pk.place(&k, device, &place_err) &&
                  pv.place(&v, device, &place_err) && po.place(&o, device, &place_err) &&
                  plse.place(&lse, device, &place_err);
    if (placed && backward) {
      placed = pdo.place(&dout, device, &place_err) && pdq.place(&dq, device, &place_err) &&
               pdk.place(&dk, device, &place_err) && pdv.place(&dv, device, &place_err);
    }
    if (!placed) st = RINGATTN_ERROR_CUDA;
  }
  // A rank that could not place its shards must not leave the others waiting in the ring.
  const bool go = all_ok(st == RINGATTN_SUCCESS);
  bool ring_failed = false;
  if (go) {
    st = ringattn_ring_forward(ctx, pq.t(), pk.t(), pv.t(), po.t(), plse.t(), &params, nullptr);
    ring_failed = st != RINGATTN_SUCCESS;
  }
  if (go && st == RINGATTN_SUCCESS && backward) {
    st = ringattn_ring_backward(ctx, pq.t(), pk.t(), pv.t(), po.t(), plse.t(), pdo.t(), pdq.t(),
                                pdk.t(), pdv.t(), &params, nullptr);
    ring_failed = st != RINGATTN_SUCCESS;
  }
  std::string msg = place_err.empty() ? ringattn_get_last_error() : place_err;
  // At once, before any collective: on a timeout the peer that stopped never joins one.
  if (ring_failed) ringattn::tool::report_ring_failure(st, msg);
  ringattn_context_destroy(ctx);
  if (go && st == RINGATTN_SUCCESS) {
    // Synchronous copies on the default stream: after the ring's work on it.
    const bool down =
        po.download(&msg) && plse.download(&msg) &&
        (!backward || (pdq.download(&msg) && pdk.download(&msg) && pdv.download(&msg)));
    if (!down) st = RINGATTN_ERROR_CUDA;
  }
  if (!all_ok(go && st == RINGATTN_SUCCESS)) {
    if (st != RINGATTN_SUCCESS && !ring_failed) {
      std::fprintf(stderr, "ringattn_run: rank %d: %s: %s\n", me, ringattn_status_string(st),
                   msg.c_str());
    }
    return 1;
  }
  const int64_t b = p.packed ? 1 : p.batch;
  struct Out {
    const char* name;
    const Tensor* t;
    int64_t heads;
    bool lse;
  };
  std::vector<Out> outs = {{"o", &o, p.hq, false}, {"lse", &lse, p.hq, true}};
  if (backward) {
    outs.push_back({"dq", &dq, p.hq, false});
    outs.push_back({"dk", &dk, p.hkv, false});
    outs.push_back({"dv", &dv, p.hkv, false});
  }
  bool wrote = true;
  if (me == 0) {
    std::error_code ec;
    std::filesystem::create_directories(a.out, ec);
    if (ec) {
      std::fprintf(stderr, "ringattn_run: --out %s: %s\n", a.out.c_str(), ec.message().c_str());
      wrote = false;
    }
  }
  for (const Out& x : outs) {
    const std::vector<float> g =
        ringattn::tool::gather_global(p, *x.t, x.heads, x.lse, MPI_COMM_WORLD);
    if (me != 0 || !wrote) continue;
    std::vector<int64_t> shape;
    if (x.lse) {
      shape = p.packed ? std::vector<int64_t>{p.hq, p.rows} : std::vector<int64_t>{b, p.hq, p.rows};
    } else {
      shape = p.packed ? std::vector<int64_t>{p.rows, x.heads, p.d}
                       : std::vector<int64_t>{b, p.rows, x.heads, p.d};
    }
    const std::string path =
        (std::filesystem::path(a.out) / (std::string(x.name) + ".npy")).string();
    std::string e;
    if (!ringattn::npy::write_f32(path, shape, g.data(), &e)) {
      std::fprintf(stderr, "ringattn_run: %s\n", e.c_str());
      wrote = false;
    }
  }
  if (!all_ok(wrote)) return 1;
  if (me == 0) {
    std::printf("ringattn_run: %d ranks, %s, %s, %s%s: wrote %s/{%s}\n", world,
                ringattn::tool::scheme_name(p.scheme), ringattn::tool::dtype_name(dtype),
                a.causal ? "causal" : "full",
                a.window.empty() ? "" : (" window " + a.window).c_str(), a.out.c_str(),
                backward ? "o,lse,dq,dk,dv" : "o,lse");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  ringattn::tool::set_tool_name("ringattn_run");
  int me = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &me);
  Args a;
  CLI::App app{
      "ringattn_run: ring attention over MPI from .npy files (global tensors in, "
      "global outputs out)"};
  app.add_option("--q", a.q, "Q .npy: [B,S,Hq,D] or packed [T,Hq,D]")->required();
  app.add_option("--k", a.k, "K .npy: [B,S,Hkv,D] or packed [T,Hkv,D]")->required();
  app.add_option("--v", a.v, "V .npy, like K")->required();
  app.add_option("--do", a.dout, "dO .npy, like Q: also run the backward");
  app.add_option("--cu-seqlens", a.cu, "int32/int64 .npy of B+1 offsets (packed inputs)");
  app.add_flag("--causal", a.causal, "causal mask");
  app.add_option("--window", a.window, "sliding window L,R (-1 = unbounded)");
  app.add_option("--scale", a.scale, "softmax scale (default 1/sqrt(D))");
  app.add_option("--scheme", a.scheme, "contiguous|zigzag|striped (default zigzag)");
  app.add_option("--dtype", a.dtype, "f32|f16|bf16: inputs are cast to it (default f32)");
  app.add_option("--backend", a.backend, "cpu|cuda (default cpu)");
  app.add_option("--transport", a.transport,
                 "mpi|nccl (default mpi; nccl needs --backend cuda and one GPU per rank)");
  a.hybrid.add_to(app);
  app.add_option("--out", a.out, "output directory (written by rank 0)")->required();
  int rc = 0;
  try {
    app.parse(argc, argv);
    rc = run(a);
  } catch (const CLI::ParseError& e) {
    // Every rank parses the same command line, so every rank ends here.
    if (me == 0) rc = app.exit(e);
    if (rc == 0 && e.get_exit_code() != 0) rc = e.get_exit_code();
    if (me != 0) rc = e.get_exit_code();
  }
  MPI_Finalize();
  return rc;
}
