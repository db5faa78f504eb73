// ComputeTimer over CUDA events: one pair of timing events per backend call, from a pool that
// grows to the largest call seen and is reused.
#include <cuda_runtime_api.h>

#include <utility>
#include <vector>

#include "compute_timer.h"

namespace ringattn {
namespace {

class CudaComputeTimer final : public ComputeTimer {
 public:
  ~CudaComputeTimer() override {
    for (auto& e : pool_) {
      cudaEventDestroy(e.first);
      cudaEventDestroy(e.second);
    }
    cudaGetLastError();
  }
  void reset() override {
    used_ = 0;
    open_ = false;
  }
  void begin(void* stream) override {
    open_ = false;
    if (used_ == pool_.size()) {
      cudaEvent_t a = nullptr, b = nullptr;
      if (cudaEventCreate(&a) != cudaSuccess || cudaEventCreate(&b) != cudaSuccess) {
        if (a != nullptr) cudaEventDestroy(a);
        cudaGetLastError();
        return;
      }
      pool_.emplace_back(a, b);
    }
    if (cudaEventRecord(pool_[used_].first, static_cast<cudaStream_t>(stream)) != cudaSuccess) {
      cudaGetLastError();
      return;
    }
    open_ = true;
  }
  void end(void* stream) override {
    if (!open_) return;
    open_ = false;
    if (cudaEventRecord(pool_[used_].second, static_cast<cudaStream_t>(stream)) != cudaSuccess) {
      cudaGetLastError();
      return;
    }
    ++used_;
  }
  double seconds() override {
    double total = 0;
    for (size_t i = 0; i < used_; ++i) {
      float ms = 0;
      if (cudaEventSynchronize(pool_[i].second) == cudaSuccess &&
          cudaEventElapsedTime(&ms, pool_[i].first, pool_[i].second) == cudaSuccess) {
        total += ms * 1e-3;
      } else {
        cudaGetLastError();
      }
    }
    return total;
  }

 private:
  std::vector<std::pair<cudaEvent_t, cudaEvent_t>> pool_;
  size_t used_ = 0;
  bool open_ = false;
};

}  // namespace

std::unique_ptr<ComputeTimer> make_cuda_compute_timer() {
  return std::unique_ptr<ComputeTimer>(new CudaComputeTimer());
}

}  // namespace ringattn
