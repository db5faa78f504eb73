// Entry points of the CUDA attention kernels: fills the by-value kernel parameters, brings the
// host PosMaps to the device without synchronizing, and picks the kernel family.
#include <math.h>

#include <atomic>

#include "attention_cuda.h"

namespace ringattn {
namespace cuda {
namespace {

// Long PosMaps (packed batches of many sequences) reach device memory through the parameters of
// small copy kernels: stream-ordered, no pinned staging, no host synchronization.
constexpr int kRunsPerCopy = 64;
struct RunChunk {
  PosRun runs[kRunsPerCopy];
  int32_t count;
};

__global__ void write_runs_kernel(PosRun* dst, const __grid_constant__ RunChunk chunk) {
  const int i = threadIdx.x;
  if (i < chunk.count) dst[i] = chunk.runs[i];
}

// Owns the device copies of the maps that did not fit inline; freed stream-ordered after the
// launches that read them.
class PosMapUploads {
 public:
  explicit PosMapUploads(cudaStream_t stream) : stream_(stream) {}
  ~PosMapUploads() {
    for (int i = 0; i < n_; ++i) cudaFreeAsync(ptrs_[i], stream_);
  }
  PosMapUploads(const PosMapUploads&) = delete;
  PosMapUploads& operator=(const PosMapUploads&) = delete;

  cudaError_t prepare(const PosMap& host, InlinePosMap* out) {
    if (fill_inline_posmap(host, out)) return cudaSuccess;
    if (host.device_runs != nullptr) {  // uploaded once by the plan
      out->external = host.device_runs;
      return cudaSuccess;
    }
    void* buf = nullptr;
    cudaError_t err = cudaMallocAsync(&buf, sizeof(PosRun) * host.num_runs, stream_);
    if (err != cudaSuccess) return err;
    ptrs_[n_++] = buf;
    PosRun* dst = static_cast<PosRun*>(buf);
    for (int32_t base = 0; base < host.num_runs; base += kRunsPerCopy) {
      RunChunk chunk;
      chunk.count = host.num_runs - base < kRunsPerCopy ? host.num_runs - base : kRunsPerCopy;
      for (int i = 0; i < kRunsPerCopy; ++i) {
        chunk.runs[i] = i < chunk.count ? host.runs[base + i] : PosRun{0, 0, 0, 1};
      }
      write_runs_kernel<<<1, kRunsPerCopy, 0, stream_>>>(dst + base, chunk);
      err = cudaGetLastError();
      if (err != cudaSuccess) return err;
    }
    out->external = dst;
    return cudaSuccess;
  }

 private:
  cudaStream_t stream_;
  void* ptrs_[2] = {nullptr, nullptr};
  int n_ = 0;
};

bool aligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// 16-byte cp.async rows: base aligned and every row start a multiple of 8 elements.
bool loadable(const TensorRef& t) {
  return aligned(t.data, 16) && t.stride_b % 8 == 0 && t.stride_s % 8 == 0 && t.stride_h % 8 == 0;
}

// Pairs of elements stored at once (4-byte 16-bit pairs, 8-byte float pairs).
bool pair_storable(const TensorRef& t, DType dt) {
  const size_t bytes = dt == kF32 ? 8 : 4;
  return aligned(t.data, bytes) && t.stride_b % 2 == 0 && t.stride_s % 2 == 0 &&
         t.stride_h % 2 == 0;
}

bool tensor_cores_available() { return device_arch() >= 80; }

}  // namespace

int device_arch() {
  // One slot per device ordinal: 0 = not queried yet. Racing first queries store the same value.
  constexpr int kMaxDevices = 64;
  static std::atomic<int> cached[kMaxDevices];
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  if (dev >= 0 && dev < kMaxDevices) {
    const int known = cached[dev].load(std::memory_order_relaxed);
    if (known != 0) return known;
  }
  int major = 0, minor = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  const int arch = major * 10 + minor;
  if (dev >= 0 && dev < kMaxDevices) cached[dev].store(arch, std::memory_order_relaxed);
  return arch;
}

Path forward_path(const FwdParams& p) {
  const DType odt = p.out_mode == kOutFinal ? p.q.dtype : kF32;
  if ((p.q.dtype == kF16 || p.q.dtype == kBF16) && has_tensor_core_head_dim(p.d) && loadable(p.q) &&
      loadable(p.k) && loadable(p.v) && pair_storable(p.o, odt) && p.o.dtype == odt &&
      tensor_cores_available()) {
    return Path::kTensorCore;
  }
  return Path::kGeneric;
}

Path backward_path(const BwdParams& p) {
  const DType gdt = p.accumulate ? kF32 : p.q.dtype;
  if ((p.q.dtype == kF16 || p.q.dtype == kBF16) && has_tensor_core_head_dim(p.d) && loadable(p.q) &&
      loadable(p.k) && loadable(p.v) && loadable(p.dout) && pair_storable(p.dq, gdt) &&
      pair_storable(p.dk, gdt) && pair_storable(p.dv, gdt) &&
      (p.accumulate || (p.dq.dtype == gdt && p.dk.dtype == gdt && p.dv.dtype == gdt)) &&
      tensor_cores_available()) {
    return Path::kTensorCore;
  }
  return Path::kGeneric;
}

namespace {

// The fields that FwdKernelParams and BwdKernelParams share, from the AttnCall of either.
template <typename Kernel>
void fill_common(const AttnCall& p, Kernel* k) {
  k->batch = p.batch;
  k->sq = p.sq;
  k->sk = p.sk;
  k->hq = static_cast<int32_t>(p.hq);
  k->hkv = static_cast<int32_t>(p.hkv);
  k->group = static_cast<int32_t>(p.hq / p.hkv);
  k->d = static_cast<int32_t>(p.d);
  k->in_dtype = p.q.dtype;
  k->scale = p.scale;
  k->scale_log2 = p.scale * 1.4426950408889634f;
  k->mask = p.mask;
}

// Makes both PosMaps device-visible (inline or uploaded by `uploads`, which must outlive the
// launch that reads them).
template <typename Kernel>
cudaError_t upload_posmaps(const AttnCall& p, PosMapUploads* uploads, Kernel* k) {
  cudaError_t err = uploads->prepare(p.q_pos, &k->qmap);
  if (err == cudaSuccess) err = uploads->prepare(p.k_pos, &k->kmap);
  return err;
}

}  // namespace

cudaError_t forward(const FwdParams& p, cudaStream_t stream) {
  if (p.batch == 0 || p.hq == 0 || p.sq == 0) return cudaSuccess;
  FwdKernelParams k{};
  k.q = tensor_arg(p.q);
  k.k = tensor_arg(p.k);
  k.v = tensor_arg(p.v);
  k.o = tensor_arg(p.o);
  k.lse = rowstat_arg(p.lse);
  fill_common(p, &k);
  k.o_dtype = p.o.dtype;
  k.out_mode = p.out_mode;
  PosMapUploads uploads(stream);
  const cudaError_t err = upload_posmaps(p, &uploads, &k);
  if (err != cudaSuccess) return err;
  return forward_path(p) == Path::kTensorCore ? tensor_core_forward(k, stream)
                                              : generic_forward(k, stream);
}

cudaError_t backward(const BwdParams& p, cudaStream_t stream) {
  if (p.batch == 0 || p.hq == 0 || (p.sq == 0 && p.sk == 0)) return cudaSuccess;
  BwdKernelParams k{};
  k.q = tensor_arg(p.q);
  k.k = tensor_arg(p.k);
  k.v = tensor_arg(p.v);
  k.dout = tensor_arg(p.dout);
  k.dq = tensor_arg(p.dq);
  k.dk = tensor_arg(p.dk);
  k.dv = tensor_arg(p.dv);
  k.lse = rowstat_arg(p.lse);
  k.delta = rowstat_arg(p.delta);
  fill_common(p, &k);
  k.dq_dtype = p.dq.dtype;
  k.dk_dtype = p.dk.dtype;
  k.dv_dtype = p.dv.dtype;
  k.accumulate = p.accumulate;
  PosMapUploads uploads(stream);
  const cudaError_t err = upload_posmaps(p, &uploads, &k);
  if (err != cudaSuccess) return err;
  if (backward_path(p) == Path::kTensorCore && p.sq > 0 && p.sk > 0) {
    return tensor_core_backward(k, stream);
  }
  return generic_backward(k, stream);
}

}  // namespace cuda
}  // namespace ringattn
