#include "ring_tool.h"

#include <CLI/CLI.hpp>
#include <cstring>

#include "host_dtype.h"
#include "tool_collectives.h"
#if defined(RINGATTN_HAVE_CUDA)
#include <cuda_runtime_api.h>
#endif
#if defined(RINGATTN_HAVE_NCCL)
#include "ringattn/ringattn_nccl.h"
#endif

namespace ringattn {
namespace tool {

int64_t Problem::local_rows(int world, int rank) const {
  int64_t n = 0, c = 0;
  if (!packed) {
    ringattn_shard_length(scheme, rows, world, rank, &n);
    return n;
  }
  for (size_t b = 0; b + 1 < cu.size(); ++b) {
    ringattn_shard_length(scheme, cu[b + 1] - cu[b], world, rank, &c);
    n += c;
  }
  return n;
}

size_t dtype_bytes(ringattn_dtype_t d) { return d == RINGATTN_FLOAT32 ? 4 : 2; }

bool parse_dtype(const std::string& s, ringattn_dtype_t* d) {
  if (s == "f32" || s == "float32") {
    *d = RINGATTN_FLOAT32;
  } else if (s == "f16" || s == "float16") {
    *d = RINGATTN_FLOAT16;
  } else if (s == "bf16" || s == "bfloat16") {
    *d = RINGATTN_BFLOAT16;
  } else {
    return false;
  }
  return true;
}

const char* dtype_name(ringattn_dtype_t d) {
  return d == RINGATTN_FLOAT32 ? "f32" : d == RINGATTN_FLOAT16 ? "f16" : "bf16";
}

bool parse_scheme(const std::string& s, ringattn_scheme_t* out) {
  if (s == "contiguous") {
    *out = RINGATTN_SCHEME_CONTIGUOUS;
  } else if (s == "zigzag") {
    *out = RINGATTN_SCHEME_ZIGZAG;
  } else if (s == "striped") {
    *out = RINGATTN_SCHEME_STRIPED;
  } else {
    return false;
  }
  return true;
}

const char* scheme_name(ringattn_scheme_t s) {
  return s == RINGATTN_SCHEME_CONTIGUOUS ? "contiguous"
         : s == RINGATTN_SCHEME_ZIGZAG   ? "zigzag"
                                         : "striped";
}

void Tensor::init(const Problem& p, int64_t rows, int64_t heads, ringattn_dtype_t dtype) {
  const int64_t b = p.packed ? 1 : p.batch;
  bytes.assign(static_cast<size_t>(b * rows * heads * p.d) * dtype_bytes(dtype) + 1, 0);
  t = ringattn_tensor_t{};
  t.data = bytes.data();
  t.dtype = dtype;
  if (p.packed) {
    t.ndim = 3;
    t.shape[0] = rows, t.shape[1] = heads, t.shape[2] = p.d;
    t.strides[0] = heads * p.d, t.strides[1] = p.d, t.strides[2] = 1;
  } else {
    t.ndim = 4;
    t.shape[0] = b, t.shape[1] = rows, t.shape[2] = heads, t.shape[3] = p.d;
    t.strides[0] = rows * heads * p.d, t.strides[1] = heads * p.d, t.strides[2] = p.d;
    t.strides[3] = 1;
  }
}

void init_lse(Tensor* x, const Problem& p, int64_t rows) {
  const int64_t b = p.packed ? 1 : p.batch;
  x->bytes.assign(static_cast<size_t>(b * p.hq * rows) * 4 + 1, 0);
  x->t = ringattn_tensor_t{};
  x->t.data = x->bytes.data();
  x->t.dtype = RINGATTN_FLOAT32;
  if (p.packed) {
    x->t.ndim = 2;
    x->t.shape[0] = p.hq, x->t.shape[1] = rows;
    x->t.strides[0] = rows, x->t.strides[1] = 1;
  } else {
    x->t.ndim = 3;
    x->t.shape[0] = b, x->t.shape[1] = p.hq, x->t.shape[2] = rows;
    x->t.strides[0] = p.hq * rows, x->t.strides[1] = rows, x->t.strides[2] = 1;
  }
}

Placed::~Placed() {
#if defined(RINGATTN_HAVE_CUDA)
  cudaFree(dev_);
#endif
}

bool Placed::place(Tensor* host, bool device, std::string* err) {
  host_ = host;
  t_ = host->t;
  if (!device) return true;
#if defined(RINGATTN_HAVE_CUDA)
  cudaError_t e = cudaMalloc(&dev_, host->bytes.size());
  if (e == cudaSuccess) {
    e = cudaMemcpy(dev_, host->bytes.data(), host->bytes.size(), cudaMemcpyHostToDevice);
  }
  if (e != cudaSuccess) {
    *err = std::string("device copy of a tensor: ") + cudaGetErrorString(e);
    return false;
  }
  t_.data = dev_;
  return true;
#else
  *err = "backend cuda: this build has no CUDA";
  return false;
#endif
}

bool Placed::download(std::string* err) {
  if (dev_ == nullptr) return true;
#if defined(RINGATTN_HAVE_CUDA)
  const cudaError_t e =
      cudaMemcpy(host_->bytes.data(), dev_, host_->bytes.size(), cudaMemcpyDeviceToHost);
  if (e != cudaSuccess) {
    *err = std::string("copying a result from the device: ") + cudaGetErrorString(e);
    return false;
  }
#else
  (void)err;
#endif
  return true;
}

void device_sync() {
#if defined(RINGATTN_HAVE_CUDA)
  cudaDeviceSynchronize();
#endif
}

namespace {

// One GPU per rank of a node: the rank's index among the ranks of its node (shared-memory
// split) picks the device, modulo the node's devices, so ranks may also share a GPU.
void select_device_by_local_rank() {
#if defined(RINGATTN_HAVE_CUDA)
  MPI_Comm node = MPI_COMM_NULL;
  int local = 0, count = 0;
  if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node) ==
      MPI_SUCCESS) {
    MPI_Comm_rank(node, &local);
    MPI_Comm_free(&node);
  }
  if (cudaGetDeviceCount(&count) == cudaSuccess && count > 0) cudaSetDevice(local % count);
  cudaGetLastError();  // no device: the context reports it as the library's error
#endif
}

}  // namespace

void HybridArgs::add_to(CLI::App& app) {
  app.add_option("--ulysses-degree", ulysses,
                 "hybrid layout: U ranks exchange heads by all-to-all, rings of P / U ranks")
      ->check(CLI::PositiveNumber);
  app.add_option("--placement", placement,
                 "which ranks form the Ulysses groups: ulysses (consecutive) | ring | auto")
      ->check(CLI::IsMember({"ulysses", "ring", "auto"}));
}

void HybridArgs::apply(ringattn_context_options_t* opts) const {
  opts->ulysses_degree = ulysses;
  opts->placement = placement == "ring"   ? RINGATTN_PLACEMENT_RING_CONSECUTIVE
                    : placement == "auto" ? RINGATTN_PLACEMENT_AUTO
                                          : RINGATTN_PLACEMENT_ULYSSES_CONSECUTIVE;
}

ringattn_status_t create_context(const std::string& transport, ringattn_backend_t backend,
                                 const ringattn_context_options_t* options,
                                 ringattn_context_t* ctx) {
  if (backend == RINGATTN_BACKEND_CUDA) select_device_by_local_rank();
  if (transport == "nccl") {
#if defined(RINGATTN_HAVE_NCCL)
    return ringattn_context_create_nccl_mpi(MPI_COMM_WORLD, backend, options, ctx);
#else
    *ctx = nullptr;
    return RINGATTN_ERROR_UNSUPPORTED;
#endif
  }
  return ringattn_context_create(MPI_COMM_WORLD, backend, options, ctx);
}

int64_t Tensor::elems() const {
  int64_t n = 1;
  for (int i = 0; i < t.ndim; ++i) n *= t.shape[i];
  return n;
}

void from_float(const float* src, int64_t n, Tensor* dst) {
  unsigned char* out = dst->bytes.data();
  for (int64_t i = 0; i < n; ++i) {
    if (dst->t.dtype == RINGATTN_FLOAT32) {
      std::memcpy(out + i * 4, &src[i], 4);
    } else {
      const uint16_t h = dst->t.dtype == RINGATTN_FLOAT16 ? host::float_to_f16(src[i])
                                                          : host::float_to_bf16(src[i]);
      std::memcpy(out + i * 2, &h, 2);
    }
  }
}

std::vector<float> to_float(const Tensor& src) {
  const int64_t n = src.elems();
  std::vector<float> out(static_cast<size_t>(n));
  const unsigned char* in = src.bytes.data();
  for (int64_t i = 0; i < n; ++i) {
    if (src.t.dtype == RINGATTN_FLOAT32) {
      std::memcpy(&out[i], in + i * 4, 4);
    } else {
      uint16_t h;
      std::memcpy(&h, in + i * 2, 2);
      out[i] = src.t.dtype == RINGATTN_FLOAT16 ? host::f16_to_float(h) : host::bf16_to_float(h);
    }
  }
  return out;
}

ringattn_status_t shard_from_global(const Problem& p, const std::vector<float>& global,
                                    int64_t heads, ringattn_dtype_t dtype, int world, int rank,
                                    Tensor* local) {
  Tensor g;
  g.init(p, p.rows, heads, dtype);
  from_float(global.data(), static_cast<int64_t>(global.size()), &g);
  local->init(p, p.local_rows(world, rank), heads, dtype);
  return ringattn_shard_tensor(&g.t, &local->t, p.scheme, p.packed ? p.cu.data() : nullptr,
                               p.num_seqs(), world, rank);
}

std::vector<float> gather_global(const Problem& p, const Tensor& local, int64_t heads, bool lse,
                                 MPI_Comm comm) {
  int world = 1, me = 0;
  MPI_Comm_size(comm, &world);
  MPI_Comm_rank(comm, &me);
  const std::vector<float> mine = to_float(local);
  int n = static_cast<int>(mine.size());
  std::vector<int> counts(world), displs(world);
  bounded_gather(&n, 1, MPI_INT, counts.data(), 0, comm, "the gather of result sizes");
  std::vector<float> all;
  if (me == 0) {
    for (int r = 1; r < world; ++r) displs[r] = displs[r - 1] + counts[r - 1];
    all.resize(static_cast<size_t>(displs[world - 1] + counts[world - 1]));
  }
  bounded_gatherv(mine.data(), n, MPI_FLOAT, all.data(), counts.data(), displs.data(), 0, comm,
                  "the gather of results");
  if (me != 0) return {};
  const int64_t b = p.packed ? 1 : p.batch;
  const int64_t width = lse ? 1 : p.d;
  std::vector<float> out(static_cast<size_t>(b * p.rows * heads * width));
  // LSE [B, H, S] is viewed as [B, S, H, 1] (strides H*S, 1, S, 1) so that rows unshard alike.
  auto view = [&](float* data, int64_t rows) {
    ringattn_tensor_t t{};
    t.data = data;
    t.dtype = RINGATTN_FLOAT32;
    if (p.packed) {
      t.ndim = 3;
      t.shape[0] = rows, t.shape[1] = heads, t.shape[2] = width;
      t.strides[0] = lse ? 1 : heads * width, t.strides[1] = lse ? rows : width, t.strides[2] = 1;
    } else {
      t.ndim = 4;
      t.shape[0] = b, t.shape[1] = rows, t.shape[2] = heads, t.shape[3] = width;
      t.strides[0] = rows * heads * width;
      t.strides[1] = lse ? 1 : heads * width;
      t.strides[2] = lse ? rows : width;
      t.strides[3] = 1;
    }
    return t;
  };
  ringattn_tensor_t g = view(out.data(), p.rows);
  for (int r = 0; r < world; ++r) {
    ringattn_tensor_t l = view(all.data() + displs[r], p.local_rows(world, r));
    ringattn_unshard_tensor(&l, &g, p.scheme, p.packed ? p.cu.data() : nullptr, p.num_seqs(), world,
                            r);
  }
  return out;
}

}  // namespace tool
}  // namespace ringattn
