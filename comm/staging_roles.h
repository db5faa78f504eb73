// The host-side bookkeeping of a tag's two pinned staging buffers in the staged device transport
// (staged_device_transport.h), kept apart from the CUDA calls so that it is tested on CPU: which
// buffer an exchange sends from and which it receives into, and whether a relay may send the
// staged copy of the last receive instead of copying the device buffer out again.
#pragma once

#include <stddef.h>

namespace ringattn {
namespace comm {

class StagingRoles {
 public:
  struct Exchange {
    int send;      // staging buffer the bytes go out of
    int recv;      // staging buffer MPI receives into (always the other one)
    bool relayed;  // `send` already holds the bytes: no device-to-host copy
  };

  // A new exchange of the tag sending `send_bytes` from device buffer `send_dev`. A relay
  // request is honoured only when that buffer and size are the last completed receive's; the
  // roles then swap, so that the buffer holding the received bytes sends them on.
  Exchange begin(const void* send_dev, size_t send_bytes, bool relay_requested) {
    const bool relayed = relay_requested && send_bytes > 0 && send_dev != nullptr &&
                         send_dev == last_recv_dev_ && send_bytes == last_recv_bytes_;
    if (relayed) send_ = 1 - send_;
    last_recv_dev_ = nullptr;
    last_recv_bytes_ = 0;
    return Exchange{send_, 1 - send_, relayed};
  }
  // The exchange's receive has landed and is being copied to `recv_dev` (`bytes` > 0).
  void received(const void* recv_dev, size_t bytes) {
    last_recv_dev_ = recv_dev;
    last_recv_bytes_ = bytes;
  }
  int recv_index() const { return 1 - send_; }

 private:
  int send_ = 0;
  const void* last_recv_dev_ = nullptr;
  size_t last_recv_bytes_ = 0;
};

}  // namespace comm
}  // namespace ringattn
