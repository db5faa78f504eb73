// A transport for one rank of a ring that runs alone: every exchange is accepted and finishes at
// once without moving a byte, and the agreement hands every rank this rank's values. A ring
// context over it runs exactly the compute of rank `rank` of a `world`-rank ring (the plan, the
// chunks, the masks of every step's block from that block's positions), with the rank's own
// K/V standing in for the blocks it would receive: the outputs are meaningless, the compute and
// its timing are that rank's. For measuring the ring's compute on one device and for
// performance models. The agreement's copies hold only when every rank's problem is this one
// (fixed-length shares of equal size; the context refuses packed problems).
#pragma once

#include <cstring>
#include <string>

#include "transport.h"

namespace ringattn {
namespace comm {

class ComputeOnlyTransport final : public Transport {
 public:
  ComputeOnlyTransport(int rank, int world) : rank_(rank), size_(world) {}

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  bool moves_data() const override { return false; }

  ringattn_status_t start_exchange(const void* /*send*/, size_t /*send_bytes*/, int dst,
                                   void* /*recv*/, size_t /*recv_bytes*/, int src, int /*tag*/,
                                   Exchange* ex) override {
    if (ex->active) {
      error_ = "rank " + std::to_string(rank_) + ": compute-only transport: exchange started twice";
      return RINGATTN_ERROR_INTERNAL;
    }
    ex->num_requests = 0;
    ex->send_peer = dst;
    ex->recv_peer = src;
    ex->active = true;
    return RINGATTN_SUCCESS;
  }
  ringattn_status_t wait(Exchange* ex) override {
    ex->active = false;
    return RINGATTN_SUCCESS;
  }
  void progress(Exchange* /*ex*/) override {}
  ringattn_status_t allgather_i64(const int64_t* mine, int n, int64_t* all) override {
    for (int r = 0; r < size_; ++r) {
      std::memcpy(all + static_cast<size_t>(r) * n, mine, sizeof(int64_t) * n);
    }
    return RINGATTN_SUCCESS;
  }
  bool broken() const override { return false; }

 private:
  int rank_, size_;
};

}  // namespace comm
}  // namespace ringattn
