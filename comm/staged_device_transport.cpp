#include "staged_device_transport.h"

#include <time.h>

#include <chrono>
#include <cstddef>
#include <string>

namespace ringattn {
namespace comm {

namespace {

using Clock = std::chrono::steady_clock;

}  // namespace

#define RINGATTN_COMM_RETURN_IF_ERROR(expr)                    \
  do {                                                         \
    const ringattn_status_t ringattn_st_ = (expr);             \
    if (ringattn_st_ != RINGATTN_SUCCESS) return ringattn_st_; \
  } while (0)

StagedDeviceTransport::StagedDeviceTransport(std::unique_ptr<Transport> inner)
    : inner_(std::move(inner)) {
  timeout_ms_ = inner_->timeout_ms();
}

StagedDeviceTransport::~StagedDeviceTransport() {
  // After a failure the inner transport may still write into the receive staging (a request
  // that could not be cancelled): leak the pinned buffers rather than free memory MPI may touch.
  const bool keep_buffers = broken();
  for (Slot& s : slots_) {
    if (!keep_buffers) {
      if (s.h2d_pending) cudaEventSynchronize(s.h2d);
      cudaFreeHost(s.send_host);
      cudaFreeHost(s.recv_host);
    }
    if (s.d2h != nullptr) cudaEventDestroy(s.d2h);
    if (s.h2d != nullptr) cudaEventDestroy(s.h2d);
  }
  cudaGetLastError();
}

ringattn_status_t StagedDeviceTransport::fail(ringattn_status_t code, const std::string& msg) {
  error_ = "rank " + std::to_string(rank()) + ": " + msg;
  return code;
}

ringattn_status_t StagedDeviceTransport::inner_fail(ringattn_status_t code) {
  error_ = inner_->error();
  return code;
}

ringattn_status_t StagedDeviceTransport::cuda_fail(cudaError_t err, const char* what) {
  cudaGetLastError();
  broken_ = true;
  return fail(err == cudaErrorMemoryAllocation ? RINGATTN_ERROR_OUT_OF_MEMORY : RINGATTN_ERROR_CUDA,
              std::string("device staging: ") + what + " failed: " + cudaGetErrorName(err) + " (" +
                  cudaGetErrorString(err) + ")");
}

ringattn_status_t StagedDeviceTransport::wait_event(cudaEvent_t ev, const char* what) {
  const Clock::time_point start = Clock::now();
  const Clock::time_point deadline = start + std::chrono::milliseconds(timeout_ms_);
  for (;;) {
    const cudaError_t err = cudaEventQuery(ev);
    if (err == cudaSuccess) return RINGATTN_SUCCESS;
    if (err != cudaErrorNotReady) return cuda_fail(err, what);
    if (Clock::now() >= deadline) break;
    // Spin briefly for latency, then yield the core (ranks may share cores and a GPU).
    if (Clock::now() - start > std::chrono::microseconds(200)) {
      struct timespec ts = {0, 20 * 1000};
      nanosleep(&ts, nullptr);
    }
  }
  broken_ = true;
  return fail(RINGATTN_ERROR_TIMEOUT, std::string("device staging: ") + what +
                                          " did not finish within " + std::to_string(timeout_ms_) +
                                          " ms");
}

ringattn_status_t StagedDeviceTransport::slot_for(int tag, size_t send_bytes, size_t recv_bytes,
                                                  size_t* index) {
  size_t i = 0;
  while (i < slots_.size() && slots_[i].tag != tag) ++i;
  if (i == slots_.size()) {
    Slot s;
    s.tag = tag;
    cudaError_t err = cudaEventCreateWithFlags(&s.d2h, cudaEventDisableTiming);
    if (err != cudaSuccess) return cuda_fail(err, "cudaEventCreate");
    err = cudaEventCreateWithFlags(&s.h2d, cudaEventDisableTiming);
    if (err != cudaSuccess) {
      cudaEventDestroy(s.d2h);
      return cuda_fail(err, "cudaEventCreate");
    }
    slots_.push_back(s);
  }
  Slot& s = slots_[i];
  // The receive staging of the previous exchange of this tag may still feed an H2D copy.
  if (s.h2d_pending) {
    RINGATTN_COMM_RETURN_IF_ERROR(wait_event(s.h2d, "the previous receive's host-to-device copy"));
    s.h2d_pending = false;
  }
  // Growth only: a problem sizes its slots on its first call.
  if (send_bytes > s.send_cap) {
    cudaFreeHost(s.send_host);
    s.send_host = nullptr;
    s.send_cap = 0;
    const cudaError_t err = cudaHostAlloc(&s.send_host, send_bytes, cudaHostAllocDefault);
    if (err != cudaSuccess) return cuda_fail(err, "cudaHostAlloc (send staging)");
    s.send_cap = send_bytes;
  }
  if (recv_bytes > s.recv_cap) {
    cudaFreeHost(s.recv_host);
    s.recv_host = nullptr;
    s.recv_cap = 0;
    const cudaError_t err = cudaHostAlloc(&s.recv_host, recv_bytes, cudaHostAllocDefault);
    if (err != cudaSuccess) return cuda_fail(err, "cudaHostAlloc (receive staging)");
    s.recv_cap = recv_bytes;
  }
  *index = i;
  return RINGATTN_SUCCESS;
}

ringattn_status_t StagedDeviceTransport::start_exchange(const void* send, size_t send_bytes,
                                                        int dst, void* recv, size_t recv_bytes,
                                                        int src, int tag, Exchange* ex) {
  if (broken()) {
    return fail(RINGATTN_ERROR_COMM,
                "the transport failed earlier (timeout, CUDA or MPI error); destroy the context");
  }
  size_t i = 0;
  RINGATTN_COMM_RETURN_IF_ERROR(slot_for(tag, send_bytes, recv_bytes, &i));
  Slot& s = slots_[i];
  if (send_bytes > 0) {
    // The send buffer was produced by work already enqueued on the caller's stream: copy after
    // it, and hand the staging buffer to MPI only once the copy has landed (host wait; MPI has
    // no way to wait for a CUDA event itself).
    cudaError_t err =
        cudaMemcpyAsync(s.send_host, send, send_bytes, cudaMemcpyDeviceToHost, stream_);
    if (err != cudaSuccess) return cuda_fail(err, "device-to-host copy of the send buffer");
    err = cudaEventRecord(s.d2h, stream_);
    if (err != cudaSuccess) return cuda_fail(err, "cudaEventRecord");
    RINGATTN_COMM_RETURN_IF_ERROR(wait_event(s.d2h, "the send buffer's device-to-host copy"));
  }
  const ringattn_status_t st =
      inner_->start_exchange(s.send_host, send_bytes, dst, s.recv_host, recv_bytes, src, tag, ex);
  if (st != RINGATTN_SUCCESS) return inner_fail(st);
  active_.push_back(Active{ex, i, recv, recv_bytes});
  return RINGATTN_SUCCESS;
}

ringattn_status_t StagedDeviceTransport::wait(Exchange* ex) {
  size_t a = 0;
  while (a < active_.size() && active_[a].ex != ex) ++a;
  const ringattn_status_t st = inner_->wait(ex);
  if (a == active_.size()) {
    return st == RINGATTN_SUCCESS ? st : inner_fail(st);
  }
  const Active act = active_[a];
  active_.erase(active_.begin() + static_cast<std::ptrdiff_t>(a));
  if (st != RINGATTN_SUCCESS) return inner_fail(st);
  if (act.recv_bytes == 0) return RINGATTN_SUCCESS;
  Slot& s = slots_[act.slot];
  // Stream-ordered: compute enqueued after this call reads the received block; the host does
  // not wait here. The event guards the staging buffer's reuse (slot_for).
  cudaError_t err =
      cudaMemcpyAsync(act.recv_dev, s.recv_host, act.recv_bytes, cudaMemcpyHostToDevice, stream_);
  if (err != cudaSuccess) return cuda_fail(err, "host-to-device copy of the received buffer");
  err = cudaEventRecord(s.h2d, stream_);
  if (err != cudaSuccess) return cuda_fail(err, "cudaEventRecord");
  s.h2d_pending = true;
  return RINGATTN_SUCCESS;
}

ringattn_status_t StagedDeviceTransport::allgather_i64(const int64_t* mine, int n, int64_t* all) {
  const ringattn_status_t st = inner_->allgather_i64(mine, n, all);
  return st == RINGATTN_SUCCESS ? st : inner_fail(st);
}

}  // namespace comm
}  // namespace ringattn
