// The transport interface the ring executor runs over (DESIGN.md, "Transports"): rank, size, a
// paired exchange of raw bytes (send to one peer, receive from another, started now, finished
// later), and a small agreement collective on host values. Every wait is bounded by a timeout
// that turns a dead or missing peer into RINGATTN_ERROR_TIMEOUT.
//
// Transports never include kernels/ or src/: they return ringattn_status_t and keep the message
// of their last failure, which the runtime turns into the API's last error.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <string>

#include "ringattn/ringattn.h"

namespace ringattn {
namespace comm {

// An exchange in flight. Owned by the caller (no allocation per exchange); a transport keeps
// its own request handles inside.
struct Exchange {
  static constexpr int kMaxRequests = 16;  // each direction split into <= 1 GiB messages
  uint64_t handles[kMaxRequests];          // transport-specific request handles (e.g. MPI_Request)
  int num_requests = 0;
  int send_peer = -1, recv_peer = -1;
  bool active = false;
};

class Transport {
 public:
  virtual ~Transport() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // Start sending `send_bytes` bytes of `send` to rank `dst` while receiving exactly
  // `recv_bytes` bytes into `recv` from rank `src`; either size may be 0. Buffers stay untouched
  // by the caller until wait() returns. `tag` separates concurrent exchanges (e.g. K/V and
  // gradient accumulators) between the same peers.
  virtual ringattn_status_t start_exchange(const void* send, size_t send_bytes, int dst, void* recv,
                                           size_t recv_bytes, int src, int tag, Exchange* ex) = 0;
  // start_exchange for a block passed on unchanged: `send` holds exactly the `send_bytes` bytes
  // that the previous exchange of `tag` received into it, and nothing wrote to it since (the
  // ring's K/V blocks). A transport that stages device buffers through host memory sends its
  // staged copy instead of copying the block out of the device again. Where the precondition
  // does not hold (another buffer or size) it is a plain start_exchange.
  virtual ringattn_status_t start_relay(const void* send, size_t send_bytes, int dst, void* recv,
                                        size_t recv_bytes, int src, int tag, Exchange* ex) {
    return start_exchange(send, send_bytes, dst, recv, recv_bytes, src, tag, ex);
  }
  // Block until the exchange has finished, or the timeout has passed since the call.
  virtual ringattn_status_t wait(Exchange* ex) = 0;
  // Let outstanding transfers advance without blocking. Called between chunks of compute by
  // transports whose transfers only move inside library calls (MPI without a progress thread).
  virtual void progress(Exchange* ex) = 0;

  // Agreement: every rank contributes `n` int64 values; on success `all` holds size() * n values
  // (rank r's at all[r * n]). Bounded by the timeout: a rank that never calls makes every other
  // rank fail with RINGATTN_ERROR_TIMEOUT, never hang.
  virtual ringattn_status_t allgather_i64(const int64_t* mine, int n, int64_t* all) = 0;

  // After a timeout or failure the transport's state is unknown (messages may still be in
  // flight); every later call fails fast and buffers given to it must not be freed.
  virtual bool broken() const = 0;

  // False for a transport that moves nothing (ComputeOnlyTransport): each step computes on the
  // rank's own block.
  virtual bool moves_data() const { return true; }

  // The stream that the caller's compute runs on (cudaStream_t; NULL for the default stream).
  // Transports that move device buffers order their copies against it; host transports ignore
  // it. Set by the executor at the start of every call, before the first exchange.
  virtual void set_stream(void* stream) { (void)stream; }

  int64_t timeout_ms() const { return timeout_ms_; }
  // Message of the last failure of this transport.
  const std::string& error() const { return error_; }

 protected:
  int64_t timeout_ms_ = 300000;
  std::string error_;
};

// Default timeout: the environment variable RINGATTN_TIMEOUT_MS when set to a positive integer,
// else 300000 ms (5 minutes: long enough for an unbalanced step of a very long sequence).
int64_t default_timeout_ms();

}  // namespace comm
}  // namespace ringattn
