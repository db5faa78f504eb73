// The NCCL transport: device buffers moved by grouped ncclSend/ncclRecv on a dedicated
// communication stream, ordered against the caller's stream (set_stream) with CUDA events:
//
//   start_exchange: event on the caller's stream -> the comm stream waits for it (the send
//                   buffer is ready, the receive buffer is no longer read) -> grouped send/recv
//                   -> a per-tag "done" event on the comm stream. No host synchronization.
//   wait:           the caller's stream waits for the "done" event. With the watchdog on (the
//                   default) the host first polls that event and ncclCommGetAsyncError, bounded by
//                   the timeout, so that a dead peer becomes RINGATTN_ERROR_TIMEOUT on every live
//                   rank instead of a hang; with it off, wait() never blocks the host (CUDA-graph
//                   capturable) and asynchronous errors surface on the next call.
//
// On a timeout or asynchronous error a communicator the transport created is aborted
// (ncclCommAbort); a caller's communicator is never destroyed, and the error tells the caller to
// abort it. Agreement (allgather_i64) goes over the side channel when the communicator was
// bootstrapped over another transport (MPI), else over NCCL itself through a small device
// buffer on a stream of its own (host-synchronous, bounded, and safe while the caller's stream
// is being captured). No MPI here: the transport builds without it.
#pragma once

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <memory>
#include <vector>

#include "transport.h"

namespace ringattn {
namespace comm {

class NcclTransport final : public Transport {
 public:
  // Over a caller's communicator; `rank` and `world` must be its rank and size (checked).
  // The communicator is never destroyed by the transport.
  static std::unique_ptr<NcclTransport> wrap(ncclComm_t comm, int rank, int world,
                                             int64_t timeout_ms, ringattn_status_t* status,
                                             std::string* err);
  // A communicator of its own over the ranks of `side` (another transport, e.g. MPI: rank 0's
  // unique id travels over its agreement, and so does every later agreement of this transport),
  // initialized nonblocking and bounded by the timeout, destroyed with the transport.
  static std::unique_ptr<NcclTransport> bootstrap(std::unique_ptr<Transport> side,
                                                  int64_t timeout_ms, ringattn_status_t* status,
                                                  std::string* err);
  ~NcclTransport() override;
  NcclTransport(const NcclTransport&) = delete;
  NcclTransport& operator=(const NcclTransport&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  ringattn_status_t start_exchange(const void* send, size_t send_bytes, int dst, void* recv,
                                   size_t recv_bytes, int src, int tag, Exchange* ex) override;
  ringattn_status_t wait(Exchange* ex) override;
  void progress(Exchange* ex) override { (void)ex; }  // NCCL progresses on its own
  ringattn_status_t allgather_i64(const int64_t* mine, int n, int64_t* all) override;
  bool broken() const override { return broken_; }
  void set_stream(void* stream) override { stream_ = static_cast<cudaStream_t>(stream); }

  // Watchdog on: waits poll with the timeout (errors, never hangs). Off (the context option
  // `capturable`): no host blocking on transfers, so a call can be captured in a CUDA graph.
  void set_watchdog(bool on) { watchdog_ = on; }
  ncclComm_t comm() const { return comm_; }

 private:
  NcclTransport() = default;
  ringattn_status_t init_stream(std::string* err);
  // Finish an NCCL call: on a nonblocking communicator, poll until it leaves ncclInProgress.
  ringattn_status_t settle(ncclResult_t r, const char* what);
  // Poll `ev` and the communicator's asynchronous error until the event completes; `what()`
  // names the operation in an error message (called only on failure).
  template <typename Describe>
  ringattn_status_t wait_event(cudaEvent_t ev, const Describe& what);
  // RINGATTN_ERROR_COMM (and the communicator aborted) if NCCL reports an asynchronous error.
  ringattn_status_t async_error();
  ringattn_status_t event_for(int tag, size_t* index);
  ringattn_status_t fail(ringattn_status_t code, const std::string& msg);
  // A CUDA failure: the transport is broken and an owned communicator aborted.
  ringattn_status_t cuda_fail(cudaError_t err, const char* what);
  ringattn_status_t nccl_fail(ncclResult_t r, const char* what);
  // After a timeout, a CUDA failure or an asynchronous error: mark broken and abort an owned
  // communicator (idempotent).
  void abort_comm();

  ncclComm_t comm_ = nullptr;
  bool owned_ = false;
  int rank_ = 0, size_ = 1;
  std::unique_ptr<Transport> side_;     // agreement channel of a bootstrapped communicator
  cudaStream_t stream_ = nullptr;       // the caller's
  cudaStream_t comm_stream_ = nullptr;  // ours, for the transfers
  cudaEvent_t ready_ = nullptr;
  cudaStream_t agree_stream_ = nullptr;  // agreement over NCCL: never part of a capture
  cudaEvent_t agreed_ = nullptr;
  std::vector<int> tags_;
  std::vector<cudaEvent_t> done_;  // per tag
  void* dev_scratch_ = nullptr;    // agreement over NCCL
  int64_t* host_scratch_ = nullptr;
  size_t scratch_values_ = 0;
  bool watchdog_ = true;
  bool broken_ = false;
};

}  // namespace comm
}  // namespace ringattn
