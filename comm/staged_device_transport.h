// A decorator that lets a host transport (MPI) move DEVICE buffers: every exchange is staged
// through pinned host memory, with the copies ordered on the caller's stream (set_stream).
//
//   start_exchange: D2H copy of the send buffer on the stream, then the host waits for that
//                   copy's event (the one host synchronization: MPI may only read the staging
//                   buffer once the data is there), then the inner exchange on the staging buffers.
//   wait:           the inner wait, then an H2D copy into the device receive buffer enqueued on
//                   the stream (no host wait: compute enqueued later on the stream sees the data).
//
// Staging buffers belong to the exchange's tag (concurrent exchanges have distinct tags), grow
// once and are reused; before a tag's receive staging is handed to the inner transport again,
// the host waits for the event of the H2D copy that still reads it. Every host wait is bounded
// by the timeout. Works wherever the inner transport works, so several processes may share one
// GPU. Built only with CUDA (RINGATTN_HAVE_CUDA).
#pragma once

#include <cuda_runtime_api.h>

#include <memory>
#include <vector>

#include "transport.h"

namespace ringattn {
namespace comm {

class StagedDeviceTransport final : public Transport {
 public:
  // Takes ownership of `inner` (a host transport). Its timeout becomes this transport's.
  explicit StagedDeviceTransport(std::unique_ptr<Transport> inner);
  ~StagedDeviceTransport() override;
  StagedDeviceTransport(const StagedDeviceTransport&) = delete;
  StagedDeviceTransport& operator=(const StagedDeviceTransport&) = delete;

  const char* name() const override { return "mpi-device-staged"; }
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }

  // `send` and `recv` are device pointers (or any pointers cudaMemcpyAsync accepts).
  ringattn_status_t start_exchange(const void* send, size_t send_bytes, int dst, void* recv,
                                   size_t recv_bytes, int src, int tag, Exchange* ex) override;
  ringattn_status_t wait(Exchange* ex) override;
  void progress(Exchange* ex) override { inner_->progress(ex); }
  ringattn_status_t allgather_i64(const int64_t* mine, int n, int64_t* all) override;
  bool broken() const override { return broken_ || inner_->broken(); }
  void set_stream(void* stream) override { stream_ = static_cast<cudaStream_t>(stream); }

  Transport* inner() { return inner_.get(); }

 private:
  struct Slot {
    int tag = 0;
    void* send_host = nullptr;
    void* recv_host = nullptr;
    size_t send_cap = 0, recv_cap = 0;
    cudaEvent_t d2h = nullptr, h2d = nullptr;
    bool h2d_pending = false;  // an H2D copy enqueued on some stream still reads recv_host
  };
  struct Active {
    const Exchange* ex;
    size_t slot;
    void* recv_dev;
    size_t recv_bytes;
  };

  ringattn_status_t slot_for(int tag, size_t send_bytes, size_t recv_bytes, size_t* index);
  // Poll `ev` until it has completed, a CUDA error, or the timeout.
  ringattn_status_t wait_event(cudaEvent_t ev, const char* what);
  ringattn_status_t cuda_fail(cudaError_t err, const char* what);
  ringattn_status_t fail(ringattn_status_t code, const std::string& msg);
  ringattn_status_t inner_fail(ringattn_status_t code);

  std::unique_ptr<Transport> inner_;
  cudaStream_t stream_ = nullptr;
  std::vector<Slot> slots_;
  std::vector<Active> active_;
  bool broken_ = false;
};

}  // namespace comm
}  // namespace ringattn
