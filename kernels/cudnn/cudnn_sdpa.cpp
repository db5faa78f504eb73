#include "cudnn_sdpa.h"

#include <cudnn.h>
#include <cudnn_frontend.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

namespace ringattn {
namespace cudnn {
namespace {

namespace fe = cudnn_frontend;

enum Uid : int64_t { kQ = 1, kK, kV, kO, kLse, kDout, kDq, kDk, kDv };

// A built graph and what running it needs; `supported` false remembers cuDNN's refusal.
struct Entry {
  std::shared_ptr<fe::graph::Graph> graph;
  // Its tensors' device pointers by uid, made at build time and refilled by each run (under the
  // state's mutex), so that a run allocates nothing.
  std::unordered_map<int64_t, void*> pack;
  int64_t workspace = 0;
  bool supported = false;
  std::string why;
};

// Memory kept per stream: the graphs' workspace and the caller's temporaries.
struct StreamMemory {
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  void* temp = nullptr;
  size_t temp_bytes = 0;
};

// Graphs, handles and per-stream memory of the process. Graph building and execution hold the
// mutex (a cuDNN handle is not safe to share between threads at once).
struct State {
  std::mutex mu;
  std::map<int, cudnnHandle_t> handles;  // per device
  std::map<std::vector<int64_t>, Entry> graphs;
  std::unordered_map<cudaStream_t, StreamMemory> memory;
};

State& state() {
  static State* s = new State();  // never destroyed: handles outlive static destructors' order
  return *s;
}

// The most graphs kept; a process that exceeds it (shapes changing every call) starts over.
constexpr size_t kMaxGraphs = 512;

fe::DataType_t io_type(DType d) {
  return d == kF16 ? fe::DataType_t::HALF : fe::DataType_t::BFLOAT16;
}

// Strides of [B, H, S, D] for the frontend. A batch of one may carry stride 0 (packed tensors):
// any positive stride addresses the same elements.
// Arrays, not vectors: the graph key of every run is made from them without allocating.
using Strides = std::array<int64_t, 4>;
Strides bhsd_strides(const TensorRef& t, int64_t batch, int64_t s) {
  const int64_t sb = batch == 1 ? std::max<int64_t>(1, s * t.stride_s) : t.stride_b;
  return {sb, t.stride_h, t.stride_s, 1};
}
Strides lse_strides(const RowStatRef& r, int64_t batch, int64_t s) {
  const int64_t sb = batch == 1 ? std::max<int64_t>(1, s) : r.stride_b;
  return {sb, r.stride_h, 1, 1};
}
std::vector<int64_t> as_vector(const Strides& s) {
  return std::vector<int64_t>(s.begin(), s.end());
}

bool is_capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &st) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return st != cudaStreamCaptureStatusNone;
}

// Grows `*ptr` to at least `bytes` on `stream` (the old buffer freed after its last use there).
bool grow(void** ptr, size_t* have, size_t bytes, cudaStream_t stream, const char* what,
          std::string* message) {
  if (bytes <= *have && *ptr != nullptr) return true;
  if (is_capturing(stream)) {
    *message = std::string("cudnn: the ") + what +
               " must grow while the stream is being captured; run the call once before "
               "capturing it";
    return false;
  }
  if (*ptr != nullptr) cudaFreeAsync(*ptr, stream);
  *ptr = nullptr;
  *have = 0;
  const size_t want = std::max<size_t>(bytes, 256);
  const cudaError_t err = cudaMallocAsync(ptr, want, stream);
  if (err != cudaSuccess) {
    cudaGetLastError();
    *ptr = nullptr;
    *message = std::string("cudnn: cudaMallocAsync of the ") + what + " (" + std::to_string(want) +
               " bytes) failed: " + cudaGetErrorString(err);
    return false;
  }
  *have = want;
  return true;
}

cudnnHandle_t handle_locked(State& s, std::string* message) {
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) {
    cudaGetLastError();
    *message = "cudnn: no current CUDA device";
    return nullptr;
  }
  auto it = s.handles.find(dev);
  if (it != s.handles.end()) return it->second;
  cudnnHandle_t h = nullptr;
  const cudnnStatus_t st = cudnnCreate(&h);
  if (st != CUDNN_STATUS_SUCCESS) {
    *message = std::string("cudnn: cudnnCreate failed: ") + cudnnGetErrorString(st);
    return nullptr;
  }
  s.handles[dev] = h;
  return h;
}

void push_tensor(std::vector<int64_t>* key, const TensorRef& t, int64_t batch, int64_t s) {
  for (int64_t v : bhsd_strides(t, batch, s)) key->push_back(v);
}

// The graph's key, into *key (a buffer reused from run to run).
void graph_key(bool backward, const SdpaBlock& b, int dev, std::vector<int64_t>* key) {
  int32_t scale_bits = 0;
  std::memcpy(&scale_bits, &b.scale, sizeof(scale_bits));
  key->clear();
  for (int64_t v : {int64_t{backward ? 1 : 0}, int64_t{dev}, b.batch, b.sq, b.sk, b.hq, b.hkv, b.d,
                    int64_t{b.dtype}, int64_t{scale_bits}, int64_t{b.causal ? 1 : 0}, b.window}) {
    key->push_back(v);
  }
  push_tensor(key, b.q, b.batch, b.sq);
  push_tensor(key, b.k, b.batch, b.sk);
  push_tensor(key, b.v, b.batch, b.sk);
  push_tensor(key, b.o, b.batch, b.sq);
  for (int64_t v : lse_strides(b.lse, b.batch, b.sq)) key->push_back(v);
  if (backward) {
    push_tensor(key, b.dout, b.batch, b.sq);
    push_tensor(key, b.dq, b.batch, b.sq);
    push_tensor(key, b.dk, b.batch, b.sk);
    push_tensor(key, b.dv, b.batch, b.sk);
  }
}

std::shared_ptr<fe::graph::Tensor_attributes> input(fe::graph::Graph& g, const char* name,
                                                    int64_t uid, const SdpaBlock& b, int64_t h,
                                                    int64_t s, const TensorRef& t) {
  return g.tensor(fe::graph::Tensor_attributes()
                      .set_name(name)
                      .set_uid(uid)
                      .set_dim({b.batch, h, s, b.d})
                      .set_stride(as_vector(bhsd_strides(t, b.batch, s))));
}

void output(const std::shared_ptr<fe::graph::Tensor_attributes>& t, int64_t uid, const SdpaBlock& b,
            int64_t h, int64_t s, const TensorRef& ref) {
  t->set_output(true)
      .set_uid(uid)
      .set_dim({b.batch, h, s, b.d})
      .set_stride(as_vector(bhsd_strides(ref, b.batch, s)));
}

template <typename Attrs>
void set_mask(const SdpaBlock& b, Attrs* a) {
  if (!b.causal) return;
  a->set_diagonal_alignment(fe::DiagonalAlignment_t::TOP_LEFT);
  a->set_diagonal_band_right_bound(0);
  // cuDNN keeps key j of query i when j > i - left_bound: a window of w keys back is w + 1.
  if (b.window >= 0) a->set_diagonal_band_left_bound(static_cast<int>(b.window + 1));
}

Entry build(bool backward, const SdpaBlock& b, cudnnHandle_t handle) {
  Entry e;
  auto g = std::make_shared<fe::graph::Graph>();
  g->set_io_data_type(io_type(b.dtype))
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  auto q = input(*g, "Q", kQ, b, b.hq, b.sq, b.q);
  auto k = input(*g, "K", kK, b, b.hkv, b.sk, b.k);
  auto v = input(*g, "V", kV, b, b.hkv, b.sk, b.v);
  const std::vector<int64_t> lse_dim{b.batch, b.hq, b.sq, 1};
  if (!backward) {
    auto a = fe::graph::SDPA_attributes().set_name("ringattn_fwd").set_generate_stats(true);
    a.set_attn_scale(b.scale);
    set_mask(b, &a);
    auto outs = g->sdpa(q, k, v, a);
    output(outs[0], kO, b, b.hq, b.sq, b.o);
    outs[1]
        ->set_output(true)
        .set_uid(kLse)
        .set_data_type(fe::DataType_t::FLOAT)
        .set_dim(lse_dim)
        .set_stride(as_vector(lse_strides(b.lse, b.batch, b.sq)));
  } else {
    auto o = input(*g, "O", kO, b, b.hq, b.sq, b.o);
    auto dout = input(*g, "dO", kDout, b, b.hq, b.sq, b.dout);
    auto lse = g->tensor(fe::graph::Tensor_attributes()
                             .set_name("Stats")
                             .set_uid(kLse)
                             .set_dim(lse_dim)
                             .set_stride(as_vector(lse_strides(b.lse, b.batch, b.sq)))
                             .set_data_type(fe::DataType_t::FLOAT));
    auto a = fe::graph::SDPA_backward_attributes().set_name("ringattn_bwd");
    a.set_attn_scale(b.scale);
    set_mask(b, &a);
    auto outs = g->sdpa_backward(q, k, v, o, dout, lse, a);
    output(outs[0], kDq, b, b.hq, b.sq, b.dq);
    output(outs[1], kDk, b, b.hkv, b.sk, b.dk);
    output(outs[2], kDv, b, b.hkv, b.sk, b.dv);
  }
  fe::error_t st = g->validate();
  if (st.is_good()) st = g->build_operation_graph(handle);
  if (st.is_good()) st = g->create_execution_plans({fe::HeurMode_t::A});
  if (st.is_good()) st = g->check_support(handle);
  if (st.is_good()) st = g->build_plans(handle);
  if (st.is_good()) st = g->get_workspace_size(e.workspace);
  if (!st.is_good()) {
    e.why = st.get_message();
    return e;
  }
  for (int64_t uid : {kQ, kK, kV, kO, kLse}) e.pack[uid] = nullptr;
  if (backward) {
    for (int64_t uid : {kDout, kDq, kDk, kDv}) e.pack[uid] = nullptr;
  }
  e.graph = std::move(g);
  e.supported = true;
  return e;
}

Result run(bool backward, const SdpaBlock& b, cudaStream_t stream, std::string* message) {
  if (b.dtype != kF16 && b.dtype != kBF16) {
    *message = "cudnn: float16 and bfloat16 only";
    return Result::kUnsupported;
  }
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  cudnnHandle_t handle = handle_locked(s, message);
  if (handle == nullptr) return Result::kError;
  int dev = 0;
  cudaGetDevice(&dev);
  thread_local std::vector<int64_t> key;
  graph_key(backward, b, dev, &key);
  auto it = s.graphs.find(key);
  if (it == s.graphs.end()) {
    if (s.graphs.size() >= kMaxGraphs) s.graphs.clear();
    Entry e;
    try {
      e = build(backward, b, handle);
    } catch (const std::exception& ex) {
      e = Entry();
      e.why = ex.what();
    }
    it = s.graphs.emplace(key, std::move(e)).first;
  }
  Entry& e = it->second;
  if (!e.supported) {
    *message = "cudnn: " + e.why;
    return Result::kUnsupported;
  }
  StreamMemory& mem = s.memory[stream];
  if (!grow(&mem.workspace, &mem.workspace_bytes, static_cast<size_t>(e.workspace), stream,
            "cuDNN workspace", message)) {
    return Result::kError;
  }
  std::unordered_map<int64_t, void*>& pack = e.pack;  // every uid present since the build
  pack[kQ] = b.q.data;
  pack[kK] = b.k.data;
  pack[kV] = b.v.data;
  pack[kO] = b.o.data;
  pack[kLse] = b.lse.data;
  if (backward) {
    pack[kDout] = b.dout.data;
    pack[kDq] = b.dq.data;
    pack[kDk] = b.dk.data;
    pack[kDv] = b.dv.data;
  }
  const cudnnStatus_t ss = cudnnSetStream(handle, stream);
  if (ss != CUDNN_STATUS_SUCCESS) {
    *message = std::string("cudnn: cudnnSetStream failed: ") + cudnnGetErrorString(ss);
    return Result::kError;
  }
  fe::error_t st = e.graph->execute(handle, pack, mem.workspace);
  if (!st.is_good()) {
    *message = std::string("cudnn: executing the ") + (backward ? "backward" : "forward") +
               " graph failed: " + st.get_message();
    return Result::kError;
  }
  return Result::kOk;
}

}  // namespace

bool available(std::string* why) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    cudaGetLastError();
    if (why != nullptr) *why = "no CUDA device";
    return false;
  }
  const size_t v = cudnnGetVersion();
  if (v < 90000) {
    if (why != nullptr) *why = "cuDNN " + std::to_string(v) + " is older than 9.0";
    return false;
  }
  return true;
}

std::string version() {
  const size_t v = cudnnGetVersion();
  return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." +
         std::to_string(v % 100) + " (frontend " + std::to_string(CUDNN_FRONTEND_MAJOR_VERSION) +
         "." + std::to_string(CUDNN_FRONTEND_MINOR_VERSION) + "." +
         std::to_string(CUDNN_FRONTEND_PATCH_VERSION) + ")";
}

Result forward(const SdpaBlock& b, cudaStream_t stream, std::string* message) {
  return run(false, b, stream, message);
}

Result backward(const SdpaBlock& b, cudaStream_t stream, std::string* message) {
  return run(true, b, stream, message);
}

void* scratch(size_t bytes, cudaStream_t stream, std::string* message) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  StreamMemory& mem = s.memory[stream];
  if (!grow(&mem.temp, &mem.temp_bytes, bytes, stream, "cuDNN path's temporaries", message)) {
    return nullptr;
  }
  return mem.temp;
}

}  // namespace cudnn
}  // namespace ringattn
