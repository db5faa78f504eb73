// What ringattn_run and ringattn_bench share: the global problem, local shards in the run dtype
// as C API descriptors, and gathering local float32 results on rank 0 in global order.
#pragma once

#include <mpi.h>
#include <stdint.h>

#include <string>
#include <vector>

#include "ringattn/ringattn_mpi.h"

namespace CLI {
class App;
}  // namespace CLI

namespace ringattn {
namespace tool {

struct Problem {
  bool packed = false;
  int64_t batch = 1, rows = 0;  // rows: S (fixed) or T (packed), global
  int64_t hq = 0, hkv = 0, d = 0;
  std::vector<int64_t> cu;  // packed offsets
  ringattn_scheme_t scheme = RINGATTN_SCHEME_ZIGZAG;
  int64_t local_rows(int world, int rank) const;
  int64_t num_seqs() const { return packed ? static_cast<int64_t>(cu.size()) - 1 : 0; }
};

// A host tensor [B, S, H, D] (or [T, H, D]) in one dtype, dense, with its descriptor.
struct Tensor {
  std::vector<unsigned char> bytes;
  ringattn_tensor_t t{};
  void init(const Problem& p, int64_t rows, int64_t heads, ringattn_dtype_t dtype);
  int64_t elems() const;
};
// The LSE [B, Hq, S] (or [Hq, T]) float32 of `rows` rows.
void init_lse(Tensor* t, const Problem& p, int64_t rows);

// The tensor a ring call sees: the host tensor itself (backend cpu) or a device copy of it
// (backend cuda: uploaded by place(), copied back by download()). Needs a CUDA build for device.
class Placed {
 public:
  Placed() = default;
  ~Placed();
  Placed(const Placed&) = delete;
  Placed& operator=(const Placed&) = delete;
  bool place(Tensor* host, bool device, std::string* err);
  ringattn_tensor_t* t() { return &t_; }
  bool download(std::string* err);  // device -> host (no-op for host tensors)

 private:
  Tensor* host_ = nullptr;
  void* dev_ = nullptr;
  ringattn_tensor_t t_{};
};

// Wait for the current device's work (no-op without CUDA): timing of backend cuda calls.
void device_sync();

// The hybrid layout's options of the tools: --ulysses-degree U and --placement
// ulysses|ring|auto (docs/ring.md, "Ulysses and hybrid").
struct HybridArgs {
  int ulysses = 1;
  std::string placement = "ulysses";
  // Registers both options on `app` (CLI11).
  void add_to(CLI::App& app);
  // Sets opts->ulysses_degree and opts->placement.
  void apply(ringattn_context_options_t* opts) const;
};

// A ring context over MPI_COMM_WORLD: transport "mpi" (device buffers staged through pinned
// host memory) or "nccl" (bootstrapped over MPI; backend cuda; needs an NCCL build). Backend
// cuda first makes device (local rank on the node) % (devices of the node) current; call it
// before placing tensors.
ringattn_status_t create_context(const std::string& transport, ringattn_backend_t backend,
                                 const ringattn_context_options_t* options,
                                 ringattn_context_t* ctx);

size_t dtype_bytes(ringattn_dtype_t d);
bool parse_dtype(const std::string& s, ringattn_dtype_t* d);
const char* dtype_name(ringattn_dtype_t d);
bool parse_scheme(const std::string& s, ringattn_scheme_t* out);
const char* scheme_name(ringattn_scheme_t s);

// Round float32 values into a tensor's dtype, and back.
void from_float(const float* src, int64_t n, Tensor* dst);
std::vector<float> to_float(const Tensor& src);

// This rank's shard of a global tensor given as float32 (same layout as the tensor).
ringattn_status_t shard_from_global(const Problem& p, const std::vector<float>& global,
                                    int64_t heads, ringattn_dtype_t dtype, int world, int rank,
                                    Tensor* local);
// Gather every rank's local tensor (any dtype, as float32) into the global float32 tensor on
// rank 0 ([B, S, H, D] or [T, H, D]); `lse` selects the [B, H, S] / [H, T] layout.
std::vector<float> gather_global(const Problem& p, const Tensor& local, int64_t heads, bool lse,
                                 MPI_Comm comm);

}  // namespace tool
}  // namespace ringattn
