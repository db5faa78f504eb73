// A view of a transport restricted to some of its ranks: rank i of the view is rank
// members[i] of the parent. Exchanges go through the parent (its timeouts, abort and staging
// behaviour unchanged), with peers translated; the agreement runs over the parent's whole world
// (every parent rank calls it at the same point) and keeps the members' values. The hybrid
// layout (ulysses_degree > 1) runs its ring over one view and its all-to-all over another.
// The parent must outlive the view.
#pragma once

#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "transport.h"

namespace ringattn {
namespace comm {

class SubgroupTransport final : public Transport {
 public:
  // `members`: parent ranks, this rank among them.
  SubgroupTransport(Transport* parent, std::vector<int> members)
      : parent_(parent), members_(std::move(members)) {
    for (size_t i = 0; i < members_.size(); ++i) {
      if (members_[i] == parent_->rank()) rank_ = static_cast<int>(i);
    }
    timeout_ms_ = parent_->timeout_ms();
  }

  int rank() const override { return rank_; }
  int size() const override { return static_cast<int>(members_.size()); }
  // The parent rank of rank `i` of the view.
  int parent_rank(int i) const { return members_[static_cast<size_t>(i)]; }

  ringattn_status_t start_exchange(const void* send, size_t send_bytes, int dst, void* recv,
                                   size_t recv_bytes, int src, int tag, Exchange* ex) override {
    return pass(parent_->start_exchange(send, send_bytes, parent_rank(dst), recv, recv_bytes,
                                        parent_rank(src), tag, ex));
  }
  ringattn_status_t start_relay(const void* send, size_t send_bytes, int dst, void* recv,
                                size_t recv_bytes, int src, int tag, Exchange* ex) override {
    return pass(parent_->start_relay(send, send_bytes, parent_rank(dst), recv, recv_bytes,
                                     parent_rank(src), tag, ex));
  }
  ringattn_status_t wait(Exchange* ex) override { return pass(parent_->wait(ex)); }
  void progress(Exchange* ex) override { parent_->progress(ex); }
  ringattn_status_t allgather_i64(const int64_t* mine, int n, int64_t* all) override {
    world_.resize(static_cast<size_t>(parent_->size()) * static_cast<size_t>(n));
    const ringattn_status_t st = pass(parent_->allgather_i64(mine, n, world_.data()));
    if (st != RINGATTN_SUCCESS) return st;
    for (size_t i = 0; i < members_.size(); ++i) {
      std::memcpy(all + i * static_cast<size_t>(n),
                  world_.data() + static_cast<size_t>(members_[i]) * static_cast<size_t>(n),
                  sizeof(int64_t) * static_cast<size_t>(n));
    }
    return RINGATTN_SUCCESS;
  }
  bool broken() const override { return parent_->broken(); }
  bool moves_data() const override { return parent_->moves_data(); }
  void set_stream(void* stream) override { parent_->set_stream(stream); }

 private:
  ringattn_status_t pass(ringattn_status_t st) {
    if (st != RINGATTN_SUCCESS) error_ = parent_->error();
    return st;
  }

  Transport* parent_;
  std::vector<int> members_;
  int rank_ = -1;
  std::vector<int64_t> world_;  // the parent's agreement values
};

}  // namespace comm
}  // namespace ringattn
