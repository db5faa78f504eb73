// The MPI transport: a duplicate of the caller's communicator (errors return, never abort),
// nonblocking point-to-point for the ring, a nonblocking allgather for agreement, and a deadline
// on every wait. Host buffers only; device buffers are staged by the caller.
#pragma once

#include <mpi.h>

#include <memory>

#include "transport.h"

namespace ringattn {
namespace comm {

class MpiTransport final : public Transport {
 public:
  // Duplicates `user_comm` (never modified, never freed by the transport) within `timeout_ms`.
  // Returns nullptr on failure with the reason in *err.
  static std::unique_ptr<MpiTransport> create(MPI_Comm user_comm, int64_t timeout_ms,
                                              ringattn_status_t* status, std::string* err);
  ~MpiTransport() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  ringattn_status_t start_exchange(const void* send, size_t send_bytes, int dst, void* recv,
                                   size_t recv_bytes, int src, int tag, Exchange* ex) override;
  ringattn_status_t wait(Exchange* ex) override;
  void progress(Exchange* ex) override;
  ringattn_status_t allgather_i64(const int64_t* mine, int n, int64_t* all) override;
  bool broken() const override { return broken_; }

  MPI_Comm comm() const { return comm_; }

 private:
  MpiTransport() = default;
  // Poll `reqs` until all complete or the deadline passes. `what` names the operation.
  ringattn_status_t wait_requests(MPI_Request* reqs, int n, const char* what, int peer_a,
                                  int peer_b);
  ringattn_status_t fail(ringattn_status_t code, const std::string& msg);

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  bool broken_ = false;
};

}  // namespace comm
}  // namespace ringattn
