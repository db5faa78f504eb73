// The CUDA backend: the Backend interface over kernels/cuda. Device pointers; every call is
// enqueued on the caller's stream with no host synchronization.
#include <cuda_runtime_api.h>

#include <memory>

#include "attention_cuda.h"
#include "backend.h"
#include "compute_timer.h"
#if RINGATTN_HAVE_CUDNN
#include "cudnn_path.h"
#endif

namespace ringattn {
namespace {

Status cuda_status(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return RINGATTN_SUCCESS;
  cudaGetLastError();  // clear a sticky launch error so that later calls start clean
  const Status code =
      err == cudaErrorMemoryAllocation ? RINGATTN_ERROR_OUT_OF_MEMORY : RINGATTN_ERROR_CUDA;
  return set_errorf(code, "cuda backend: %s failed: %s (%s)", what, cudaGetErrorName(err),
                    cudaGetErrorString(err));
}

cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }

// The last use of memory by calls on other streams, as an event (see Backend::UseFence).
class CudaUseFence final : public Backend::UseFence {
 public:
  CudaUseFence() {
    if (cudaEventCreateWithFlags(&used_, cudaEventDisableTiming) != cudaSuccess) {
      cudaGetLastError();
      used_ = nullptr;
    }
  }
  ~CudaUseFence() override {
    if (used_ != nullptr) cudaEventDestroy(used_);
  }
  CudaUseFence(const CudaUseFence&) = delete;
  CudaUseFence& operator=(const CudaUseFence&) = delete;

  void record(void* stream) override {
    if (used_ == nullptr) return;
    if (cudaEventRecord(used_, as_stream(stream)) == cudaSuccess) {
      recorded_ = true;
    } else {
      cudaGetLastError();
    }
  }
  void wait() override {
    if (recorded_ && cudaEventSynchronize(used_) != cudaSuccess) cudaGetLastError();
  }
  void release(void* ptr, void* stream) override {
    if (ptr == nullptr) return;
    cudaStream_t s = as_stream(stream);
    if (recorded_ && cudaStreamWaitEvent(s, used_, 0) != cudaSuccess) {
      // Without the ordering the free could overtake a reader: wait on the host instead.
      cudaGetLastError();
      cudaEventSynchronize(used_);
    }
    if (cudaFreeAsync(ptr, s) != cudaSuccess) cudaGetLastError();
  }

 private:
  cudaEvent_t used_ = nullptr;
  bool recorded_ = false;
};

class CudaBackend final : public Backend {
 public:
  ringattn_backend_t kind() const override { return RINGATTN_BACKEND_CUDA; }

  int32_t arch() const override { return cuda::device_arch(); }

  Status forward(const FwdParams& p, void* stream) override {
    if (p.out_mode == kOutMergeF32 && p.lse.data == nullptr) {
      return set_error(RINGATTN_ERROR_NULL_POINTER,
                       "cuda backend: merge output mode needs the partial LSE");
    }
#if RINGATTN_HAVE_CUDNN
    bool handled = false;
    RINGATTN_RETURN_IF_ERROR(cudnn_path_forward(p, as_stream(stream), &handled));
    if (handled) return RINGATTN_SUCCESS;
#endif
    if (p.counts != nullptr) ++p.counts->own_calls;
    return cuda_status(cuda::forward(p, as_stream(stream)), "attention forward");
  }
  Status backward(const BwdParams& p, void* stream) override {
#if RINGATTN_HAVE_CUDNN
    bool handled = false;
    RINGATTN_RETURN_IF_ERROR(cudnn_path_backward(p, as_stream(stream), &handled));
    if (handled) return RINGATTN_SUCCESS;
#endif
    if (p.counts != nullptr) ++p.counts->own_calls;
    return cuda_status(cuda::backward(p, as_stream(stream)), "attention backward");
  }
  Status supports_cudnn() const override {
#if RINGATTN_HAVE_CUDNN
    return cudnn_path_available();
#else
    return set_error(RINGATTN_ERROR_UNSUPPORTED,
                     "'params'.local_kernel RINGATTN_LOCAL_KERNEL_CUDNN: this library was built "
                     "without cuDNN (RINGATTN_ENABLE_CUDNN; docs/cuda.md, \"The cuDNN path\")");
#endif
  }
  Status compute_delta(int64_t batch, int64_t s, int64_t h, int64_t d, const TensorRef& dout,
                       const TensorRef& o, const RowStatRef& delta, void* stream) override {
    return cuda_status(cuda::compute_delta(batch, s, h, d, dout, o, delta, as_stream(stream)),
                       "compute_delta");
  }
  Status convert(int64_t batch, int64_t s, int64_t h, int64_t d, const TensorRef& src,
                 const TensorRef& dst, void* stream) override {
    return cuda_status(cuda::convert(batch, s, h, d, src, dst, as_stream(stream)), "convert");
  }
  Status accumulate(int64_t batch, int64_t s, int64_t h, int64_t d, const TensorRef& src,
                    const TensorRef& dst, void* stream) override {
    return cuda_status(cuda::accumulate(batch, s, h, d, src, dst, as_stream(stream)), "accumulate");
  }
  Status fill_rowstat(int64_t batch, int64_t h, int64_t s, const RowStatRef& dst, float value,
                      void* stream) override {
    return cuda_status(cuda::fill_rowstat(batch, h, s, dst, value, as_stream(stream)),
                       "fill_rowstat");
  }

  int32_t max_inline_runs() const override { return cuda::kInlineRuns; }
  Status upload(void* dst, const void* host, size_t bytes, void* stream) override {
    return cuda_status(cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, as_stream(stream)),
                       "cudaMemcpyAsync of position maps");
  }

  void* alloc(size_t bytes, void* stream) override {
    void* p = nullptr;
    const cudaError_t err = cudaMallocAsync(&p, bytes == 0 ? 256 : bytes, as_stream(stream));
    if (err != cudaSuccess) {
      cuda_status(err, "cudaMallocAsync");
      return nullptr;
    }
    return p;
  }
  void free(void* ptr, void* stream) override {
    if (ptr != nullptr) cudaFreeAsync(ptr, as_stream(stream));
  }

  std::unique_ptr<UseFence> make_use_fence() override {
    return std::unique_ptr<UseFence>(new CudaUseFence());
  }
  std::unique_ptr<ComputeTimer> make_timer() override { return make_cuda_compute_timer(); }
  bool stream_capturing(void* stream) const override {
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(as_stream(stream), &status) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    return status != cudaStreamCaptureStatusNone;
  }
};

}  // namespace

Backend* cuda_backend() {
  // Present only where a device is: a library built with CUDA still runs on GPU-less hosts.
  static const bool have_device = [] {
    int n = 0;
    const bool ok = cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
    cudaGetLastError();
    return ok;
  }();
  if (!have_device) {
    set_error(RINGATTN_ERROR_UNSUPPORTED,
              "backend 'cuda' is not available: no CUDA device was found at run time");
    return nullptr;
  }
  static CudaBackend backend;
  return &backend;
}

}  // namespace ringattn
