// Runs of the CUDA kernels (kernels/cuda/attention_cuda.h) on test tensors: the host tensors of
// reference.h are mirrored byte for byte on the device (so their strides and padding carry over),
// outputs are poisoned on the device before each call, and the last CUDA error is checked after
// every launch. Shared by the gpu tests.
#pragma once

#include <cuda_runtime_api.h>
#include <stdint.h>

#include <vector>

#include "attention_cuda.h"
#include "kernel_runs.h"
#include "reference.h"

namespace ringattn {
namespace test {

// True when a CUDA device of compute capability 8.0+ is present.
bool gpu_available();

#define RINGATTN_REQUIRE_GPU()                                                         \
  do {                                                                                 \
    if (!::ringattn::test::gpu_available()) GTEST_SKIP() << "no CUDA device (sm_80+)"; \
  } while (0)

// Fails the current test (ADD_FAILURE) when err or the last launch error is not cudaSuccess.
bool cuda_ok(cudaError_t err, const char* what);

// A device copy of a host byte image (HostTensor / HostRowStat), same layout.
class DeviceMirror {
 public:
  DeviceMirror(const void* host, size_t bytes);
  ~DeviceMirror();
  DeviceMirror(const DeviceMirror&) = delete;
  DeviceMirror& operator=(const DeviceMirror&) = delete;
  void* get() const { return ptr_; }
  void download(void* host) const;

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

size_t host_tensor_bytes(DType t, int64_t b, int64_t s, int64_t h, int64_t d, int64_t pad);

struct GpuForward {
  ForwardOut out;
  cuda::Path path;
};
// cuda::forward with kOutFinal or kOutPartialF32.
GpuForward gpu_forward(const KernelSpec& s, const KernelInputs& in, OutMode mode);
// cuda::forward with kOutMergeF32 into the prior partial result.
GpuForward gpu_forward_merge(const KernelSpec& s, const KernelInputs& in, const ForwardOut& prior);

struct GpuBackward {
  BackwardOut out;
  cuda::Path path;
};
// Forward (kOutFinal, LSE), compute_delta, backward writing dQ/dK/dV in s.dtype; all on the GPU.
GpuBackward gpu_backward(const KernelSpec& s, const KernelInputs& in);
// The same, but the backward adds into float32 accumulators that start at `init` (dense
// [B,S,H,D] values for dq, dk, dv), as a ring step does.
GpuBackward gpu_backward_accumulate(const KernelSpec& s, const KernelInputs& in,
                                    const BackwardOut& init);
// Raw bytes of the dQ/dK/dV outputs of gpu_backward, for bitwise determinism checks.
std::vector<unsigned char> gpu_backward_bytes(const KernelSpec& s, const KernelInputs& in);

}  // namespace test
}  // namespace ringattn
