// A decorator that lets a host transport (MPI) move DEVICE buffers: every exchange is staged
// through pinned host memory, with the copies ordered on the caller's stream (set_stream).
//
//   start_exchange: an event on the caller's stream (its work so far, the last readers of the
//                   receive buffer included), the D2H copy of the send buffer on that stream, then
//                   the host waits for the copy (the one host synchronization: MPI may only read
//                   the staging buffer once the data is there), then the inner exchange on the
//                   staging buffers.
//   start_relay:    for a block passed on unchanged (the send buffer is what the previous
//                   exchange of the tag received into it): the staging buffer that received it
//                   is sent as it is, with no D2H copy and no host wait.
//   wait:           the inner wait, then an H2D copy into the device receive buffer on a copy
//                   stream of the transport, after the event of start_exchange, and the caller's
//                   stream waits for that copy (no host wait: compute enqueued later on the
//                   stream sees the data, and the copy overlaps the compute already enqueued).
//
// Each tag has two pinned staging buffers (concurrent exchanges have distinct tags) that swap
// the send and receive roles on a relay, grow once and are reused. Before MPI or a D2H copy
// writes into a staging buffer, the host waits for the event of an H2D copy that still reads it.
// Every host wait is bounded by the timeout. Works wherever the inner transport works, so
// several processes may share one GPU. Built only with CUDA (RINGATTN_HAVE_CUDA).
#pragma once

#include <cuda_runtime_api.h>

#include <memory>
#include <vector>

#include "staging_roles.h"
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

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }

  // `send` and `recv` are device pointers (or any pointers cudaMemcpyAsync accepts).
  ringattn_status_t start_exchange(const void* send, size_t send_bytes, int dst, void* recv,
                                   size_t recv_bytes, int src, int tag, Exchange* ex) override;
  ringattn_status_t start_relay(const void* send, size_t send_bytes, int dst, void* recv,
                                size_t recv_bytes, int src, int tag, Exchange* ex) override;
  ringattn_status_t wait(Exchange* ex) override;
  void progress(Exchange* ex) override { inner_->progress(ex); }
  ringattn_status_t allgather_i64(const int64_t* mine, int n, int64_t* all) override;
  bool broken() const override { return broken_ || inner_->broken(); }
  void set_stream(void* stream) override { stream_ = static_cast<cudaStream_t>(stream); }

  Transport* inner() { return inner_.get(); }
  // Exchanges whose send went out of a staging buffer without a device-to-host copy (tests).
  int64_t relayed() const { return relayed_; }

 private:
  struct Staging {
    void* host = nullptr;
    size_t cap = 0;
    cudaEvent_t h2d = nullptr;  // the last H2D copy out of this buffer
    bool h2d_pending = false;   // that copy may still be reading it
  };
  struct Slot {
    int tag = 0;
    Staging buf[2];
    StagingRoles roles;  // which buffer sends, which receives; relays
    cudaEvent_t d2h = nullptr;
    cudaEvent_t ready = nullptr;  // the caller's stream at start_exchange
  };
  struct Active {
    const Exchange* ex;
    size_t slot;
    void* recv_dev;
    size_t recv_bytes;
  };

  ringattn_status_t start(const void* send, size_t send_bytes, int dst, void* recv,
                          size_t recv_bytes, int src, int tag, Exchange* ex, bool relay);
  ringattn_status_t slot_for(int tag, size_t* index);
  // Make `b` writable (no H2D copy reads it) and at least `bytes` large.
  ringattn_status_t prepare_write(Staging* b, size_t bytes, const char* what);
  // Poll `ev` until it has completed, a CUDA error, or the timeout.
  ringattn_status_t wait_event(cudaEvent_t ev, const char* what);
  ringattn_status_t cuda_fail(cudaError_t err, const char* what);
  ringattn_status_t fail(ringattn_status_t code, const std::string& msg);
  ringattn_status_t inner_fail(ringattn_status_t code);

  std::unique_ptr<Transport> inner_;
  cudaStream_t stream_ = nullptr;       // the caller's
  cudaStream_t copy_stream_ = nullptr;  // ours, for the host-to-device copies of receives
  std::vector<Slot> slots_;
  std::vector<Active> active_;
  int64_t relayed_ = 0;
  bool broken_ = false;
};

}  // namespace comm
}  // namespace ringattn
