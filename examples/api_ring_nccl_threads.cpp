// Ring attention with no MPI anywhere: one process drives every GPU of the machine, one thread
// per GPU, over NCCL communicators made with ncclCommInitAll (what a framework that holds its
// own communicators does). Each thread builds a plan once (agreement over NCCL), runs forward
// and backward eagerly, then captures a plan run (forward + backward, no allocation, no
// agreement) into a CUDA graph without any eager call before it, and replays it: the replay must
// equal the eager run bitwise, and every rank's output must match the single-process CUDA
// attention on the whole sequence.
//
//   api_ring_nccl_threads [gpus]    (default: every visible GPU; exit code 77: no GPU)
#include <cuda_runtime_api.h>
#include <nccl.h>
#include <ringattn/ringattn_nccl.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <random>
#include <ringattn/ringattn.hpp>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "host_dtype.h"

namespace {

void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

ringattn_tensor_t tensor(void* data, int64_t s, int64_t h, int64_t d) {
  return ringattn::tensor_bshd(data, RINGATTN_BFLOAT16, 1, s, h, d);
}

// A device buffer of bf16 elements (freed with the object).
struct DeviceBuf {
  void* ptr = nullptr;
  size_t elems = 0;
  explicit DeviceBuf(size_t n) : elems(n) {
    check_cuda(cudaMalloc(&ptr, n * sizeof(uint16_t)), "cudaMalloc");
    check_cuda(cudaMemset(ptr, 0, n * sizeof(uint16_t)), "cudaMemset");
  }
  explicit DeviceBuf(const std::vector<uint16_t>& host) : DeviceBuf(host.size()) {
    check_cuda(cudaMemcpy(ptr, host.data(), host.size() * sizeof(uint16_t), cudaMemcpyHostToDevice),
               "cudaMemcpy");
  }
  ~DeviceBuf() { cudaFree(ptr); }
  DeviceBuf(const DeviceBuf&) = delete;
  DeviceBuf& operator=(const DeviceBuf&) = delete;
  std::vector<uint16_t> download() const {
    std::vector<uint16_t> host(elems);
    check_cuda(cudaMemcpy(host.data(), ptr, elems * sizeof(uint16_t), cudaMemcpyDeviceToHost),
               "cudaMemcpy");
    return host;
  }
};

constexpr int64_t S = 4096, Hq = 8, Hkv = 2, D = 128;
constexpr ringattn_scheme_t kScheme = RINGATTN_SCHEME_ZIGZAG;

std::vector<uint16_t> random_bf16(int64_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<uint16_t> t(static_cast<size_t>(n));
  for (uint16_t& x : t) x = ringattn::host::float_to_bf16(u(gen));
  return t;
}

// The global problem, the same for every thread.
struct Global {
  std::vector<uint16_t> q = random_bf16(S * Hq * D, 1), k = random_bf16(S * Hkv * D, 2),
                        v = random_bf16(S * Hkv * D, 3), dout = random_bf16(S * Hq * D, 4);
};

std::vector<uint16_t> shard(const std::vector<uint16_t>& global, int64_t h, int world, int rank) {
  int64_t n = 0;
  ringattn::check(ringattn_shard_length(kScheme, S, world, rank, &n));
  std::vector<uint16_t> local(static_cast<size_t>(n * h * D));
  std::vector<uint16_t> g = global;
  ringattn_tensor_t tg = tensor(g.data(), S, h, D), tl = tensor(local.data(), n, h, D);
  ringattn::check(ringattn_shard_tensor(&tg, &tl, kScheme, nullptr, 0, world, rank));
  return local;
}

struct RankResult {
  bool replay_same = false;
  double max_err = 0.0;  // this rank's O rows against single-process attention
  float replay_ms = 0.0f;
  std::string error;
};

// One GPU's rank: the context, the plan, eager runs, a captured run and its replay.
void run_rank(int rank, int world, ncclComm_t comm, const Global& g,
              const std::vector<uint16_t>& reference_o, RankResult* out) {
  try {
    check_cuda(cudaSetDevice(rank), "cudaSetDevice");
    cudaStream_t stream = nullptr;
    check_cuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
    int64_t n = 0;
    ringattn::check(ringattn_shard_length(kScheme, S, world, rank, &n));
    DeviceBuf q(shard(g.q, Hq, world, rank)), k(shard(g.k, Hkv, world, rank)),
        v(shard(g.v, Hkv, world, rank)), dout(shard(g.dout, Hq, world, rank));
    DeviceBuf o(static_cast<size_t>(n * Hq * D)), dq(o.elems), dk(k.elems), dv(k.elems);
    float* lse_ptr = nullptr;
    check_cuda(cudaMalloc(&lse_ptr, sizeof(float) * Hq * n), "cudaMalloc");
    ringattn_tensor_t tq = tensor(q.ptr, n, Hq, D), tk = tensor(k.ptr, n, Hkv, D),
                      tv = tensor(v.ptr, n, Hkv, D), to = tensor(o.ptr, n, Hq, D),
                      tdo = tensor(dout.ptr, n, Hq, D), tdq = tensor(dq.ptr, n, Hq, D),
                      tdk = tensor(dk.ptr, n, Hkv, D), tdv = tensor(dv.ptr, n, Hkv, D),
                      tlse = ringattn::lse_bhs(lse_ptr, 1, Hq, n);

    // A capturable context over the caller's communicator, and a plan with its own workspace.
    ringattn_context_options_t opts = RINGATTN_CONTEXT_OPTIONS_INIT;
    opts.capturable = 1;
    ringattn_context_t raw = nullptr;
    ringattn::check(
        ringattn_context_create_nccl(comm, rank, world, RINGATTN_BACKEND_CUDA, &opts, &raw));
    ringattn::Context ctx(raw);
    ringattn_attn_params_t params = RINGATTN_ATTN_PARAMS_INIT;
    params.causal = 1;
    params.scheme = kScheme;
    ringattn::RingPlan plan(ctx, tq, tk, tv, params);

    // The first graph capture happens before any eager run: a plan run allocates nothing.
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    check_cuda(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "capture");
    plan.forward(tq, tk, tv, to, &tlse, stream);
    plan.backward(tq, tk, tv, to, tlse, tdo, tdq, tdk, tdv, stream);
    check_cuda(cudaStreamEndCapture(stream, &graph), "cudaStreamEndCapture");
    check_cuda(cudaGraphInstantiate(&exec, graph, 0), "cudaGraphInstantiate");

    plan.forward(tq, tk, tv, to, &tlse, stream);
    plan.backward(tq, tk, tv, to, tlse, tdo, tdq, tdk, tdv, stream);
    check_cuda(cudaStreamSynchronize(stream), "eager run");
    const std::vector<uint16_t> eager_o = o.download(), eager_dq = dq.download(),
                                eager_dk = dk.download(), eager_dv = dv.download();
    for (const DeviceBuf* b : {&o, &dq, &dk, &dv}) {
      check_cuda(cudaMemset(b->ptr, 0xff, b->elems * sizeof(uint16_t)), "cudaMemset");
    }
    check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    cudaEvent_t t0, t1;
    check_cuda(cudaEventCreate(&t0), "cudaEventCreate");
    check_cuda(cudaEventCreate(&t1), "cudaEventCreate");
    const int replays = 5;
    check_cuda(cudaEventRecord(t0, stream), "cudaEventRecord");
    for (int i = 0; i < replays; ++i) check_cuda(cudaGraphLaunch(exec, stream), "cudaGraphLaunch");
    check_cuda(cudaEventRecord(t1, stream), "cudaEventRecord");
    check_cuda(cudaStreamSynchronize(stream), "replay");
    check_cuda(cudaEventElapsedTime(&out->replay_ms, t0, t1), "cudaEventElapsedTime");
    out->replay_ms /= replays;
    out->replay_same = o.download() == eager_o && dq.download() == eager_dq &&
                       dk.download() == eager_dk && dv.download() == eager_dv;

    std::vector<int64_t> pos(static_cast<size_t>(n));
    ringattn::check(ringattn_shard_positions(kScheme, S, world, rank, pos.data(), n));
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t x = 0; x < Hq * D; ++x) {
        const double a = ringattn::host::bf16_to_float(eager_o[i * Hq * D + x]);
        const double b = ringattn::host::bf16_to_float(reference_o[pos[i] * Hq * D + x]);
        out->max_err = std::fmax(out->max_err, std::fabs(a - b));
      }
    }
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    cudaEventDestroy(t0);
    cudaEventDestroy(t1);
    plan.reset();
    ctx.reset();
    cudaFree(lse_ptr);
    cudaStreamDestroy(stream);
  } catch (const std::exception& e) {
    out->error = e.what();
  }
}

}  // namespace

int main(int argc, char** argv) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("skipped: no CUDA device\n");
    return 77;
  }
  const int world = argc > 1 ? std::atoi(argv[1]) : devices;
  if (world < 1 || world > devices) {
    std::fprintf(stderr, "usage: api_ring_nccl_threads [gpus], 1 <= gpus <= %d\n", devices);
    return 2;
  }
  try {
    const Global g;
    // Single-process CUDA attention on the whole sequence, on GPU 0.
    std::vector<uint16_t> reference_o;
    {
      check_cuda(cudaSetDevice(0), "cudaSetDevice");
      DeviceBuf q(g.q), k(g.k), v(g.v), o(g.q.size());
      ringattn_tensor_t tq = tensor(q.ptr, S, Hq, D), tk = tensor(k.ptr, S, Hkv, D),
                        tv = tensor(v.ptr, S, Hkv, D), to = tensor(o.ptr, S, Hq, D);
      ringattn_attn_params_t whole = RINGATTN_ATTN_PARAMS_INIT;
      whole.causal = 1;
      ringattn::attention_forward(tq, tk, tv, to, nullptr, whole, RINGATTN_BACKEND_CUDA);
      check_cuda(cudaDeviceSynchronize(), "single-process forward");
      reference_o = o.download();
    }
    std::vector<ncclComm_t> comms(static_cast<size_t>(world));
    std::vector<int> devs(static_cast<size_t>(world));
    for (int i = 0; i < world; ++i) devs[static_cast<size_t>(i)] = i;
    const ncclResult_t r = ncclCommInitAll(comms.data(), world, devs.data());
    if (r != ncclSuccess)
      throw std::runtime_error(std::string("ncclCommInitAll: ") + ncclGetErrorString(r));
    std::vector<RankResult> results(static_cast<size_t>(world));
    std::vector<std::thread> threads;
    for (int rank = 0; rank < world; ++rank) {
      threads.emplace_back(run_rank, rank, world, comms[static_cast<size_t>(rank)], std::cref(g),
                           std::cref(reference_o), &results[static_cast<size_t>(rank)]);
    }
    for (std::thread& t : threads) t.join();
    for (ncclComm_t c : comms) ncclCommDestroy(c);

    bool ok = true;
    double worst = 0.0;
    for (int rank = 0; rank < world; ++rank) {
      const RankResult& res = results[static_cast<size_t>(rank)];
      if (!res.error.empty()) {
        std::fprintf(stderr, "rank %d: %s\n", rank, res.error.c_str());
        ok = false;
      }
      ok = ok && res.replay_same;
      worst = std::fmax(worst, res.max_err);
    }
    // bf16 outputs: one rounding of values below 1 is at most 2^-8.
    ok = ok && worst <= 1.0 / 128;
    std::printf(
        "ring of %d GPUs in one process over NCCL (no MPI), plan captured in a CUDA graph: "
        "%.3f ms per forward+backward replay on rank 0; replay %s the eager run; "
        "max |ring O - single process O| = %.3g (bf16)\n",
        world, results[0].replay_ms, results[0].replay_same ? "bitwise equals" : "DIFFERS FROM",
        worst);
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "api_ring_nccl_threads failed: %s\n", e.what());
    return 1;
  }
}
