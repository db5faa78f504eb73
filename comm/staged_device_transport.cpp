#include "staged_device_transport.h"

#include <cstddef>
#include <string>

#include "poll.h"
#include "return_if_error.h"

namespace ringattn {
namespace comm {

StagedDeviceTransport::StagedDeviceTransport(std::unique_ptr<Transport> inner)
    : inner_(std::move(inner)) {
  timeout_ms_ = inner_->timeout_ms();
}

StagedDeviceTransport::~StagedDeviceTransport() {
  // After a failure the inner transport may still write into the receive staging (a request
  // that could not be cancelled): leak the pinned buffers rather than free memory MPI may touch.
  const bool keep_buffers = broken();
  for (Slot& s : slots_) {
    for (Staging& b : s.buf) {
      if (!keep_buffers) {
        if (b.h2d_pending) cudaEventSynchronize(b.h2d);
        cudaFreeHost(b.host);
      }
      if (b.h2d != nullptr) cudaEventDestroy(b.h2d);
    }
    if (s.d2h != nullptr) cudaEventDestroy(s.d2h);
    if (s.ready != nullptr) cudaEventDestroy(s.ready);
  }
  if (copy_stream_ != nullptr && !keep_buffers) cudaStreamDestroy(copy_stream_);
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
  cudaError_t err = cudaSuccess;
  if (poll_until(timeout_ms_, [&] {
        err = cudaEventQuery(ev);
        return err != cudaErrorNotReady;
      })) {
    return err == cudaSuccess ? RINGATTN_SUCCESS : cuda_fail(err, what);
  }
  broken_ = true;
  return fail(RINGATTN_ERROR_TIMEOUT, std::string("device staging: ") + what +
                                          " did not finish within " + std::to_string(timeout_ms_) +
                                          " ms");
}

ringattn_status_t StagedDeviceTransport::slot_for(int tag, size_t* index) {
  size_t i = 0;
  while (i < slots_.size() && slots_[i].tag != tag) ++i;
  if (copy_stream_ == nullptr) {
    const cudaError_t err = cudaStreamCreateWithFlags(&copy_stream_, cudaStreamNonBlocking);
    if (err != cudaSuccess) return cuda_fail(err, "creating the copy stream");
  }
  if (i == slots_.size()) {
    Slot s;
    s.tag = tag;
    cudaEvent_t* events[4] = {&s.d2h, &s.ready, &s.buf[0].h2d, &s.buf[1].h2d};
    for (cudaEvent_t* e : events) {
      const cudaError_t err = cudaEventCreateWithFlags(e, cudaEventDisableTiming);
      if (err != cudaSuccess) {
        for (cudaEvent_t* made : events) {
          if (*made != nullptr) cudaEventDestroy(*made);
        }
        return cuda_fail(err, "cudaEventCreate");
      }
    }
    slots_.push_back(s);
  }
  *index = i;
  return RINGATTN_SUCCESS;
}

ringattn_status_t StagedDeviceTransport::prepare_write(Staging* b, size_t bytes, const char* what) {
  if (b->h2d_pending) {
    RINGATTN_RETURN_IF_ERROR(wait_event(b->h2d, "a staging buffer's host-to-device copy"));
    b->h2d_pending = false;
  }
  // Growth only: a problem sizes its staging on its first call.
  if (bytes > b->cap) {
    cudaFreeHost(b->host);
    b->host = nullptr;
    b->cap = 0;
    const cudaError_t err = cudaHostAlloc(&b->host, bytes, cudaHostAllocDefault);
    if (err != cudaSuccess) return cuda_fail(err, what);
    b->cap = bytes;
  }
  return RINGATTN_SUCCESS;
}

ringattn_status_t StagedDeviceTransport::start_exchange(const void* send, size_t send_bytes,
                                                        int dst, void* recv, size_t recv_bytes,
                                                        int src, int tag, Exchange* ex) {
  return start(send, send_bytes, dst, recv, recv_bytes, src, tag, ex, false);
}

ringattn_status_t StagedDeviceTransport::start_relay(const void* send, size_t send_bytes, int dst,
                                                     void* recv, size_t recv_bytes, int src,
                                                     int tag, Exchange* ex) {
  return start(send, send_bytes, dst, recv, recv_bytes, src, tag, ex, true);
}

ringattn_status_t StagedDeviceTransport::start(const void* send, size_t send_bytes, int dst,
                                               void* recv, size_t recv_bytes, int src, int tag,
                                               Exchange* ex, bool relay) {
  if (broken()) {
    return fail(RINGATTN_ERROR_COMM,
                "the transport failed earlier (timeout, CUDA or MPI error); destroy the context");
  }
  size_t i = 0;
  RINGATTN_RETURN_IF_ERROR(slot_for(tag, &i));
  Slot& s = slots_[i];
  // A relay sends the staging buffer that received the block: it already holds these bytes
  // (an H2D copy may still read it; MPI only reads it too). Anything else is copied out.
  const StagingRoles::Exchange roles = s.roles.begin(send, send_bytes, relay);
  const bool staged = roles.relayed;
  Staging& out = s.buf[roles.send];
  Staging& in = s.buf[roles.recv];
  if (!staged) {
    RINGATTN_RETURN_IF_ERROR(prepare_write(&out, send_bytes, "cudaHostAlloc (send staging)"));
  }
  RINGATTN_RETURN_IF_ERROR(prepare_write(&in, recv_bytes, "cudaHostAlloc (receive staging)"));
  // Everything enqueued so far on the caller's stream, the last readers of the receive buffer
  // included, precedes the copy into it (made on the copy stream by wait()).
  const cudaError_t rec = cudaEventRecord(s.ready, stream_);
  if (rec != cudaSuccess) return cuda_fail(rec, "cudaEventRecord");
  if (staged) {
    ++relayed_;
  } else if (send_bytes > 0) {
    // The send buffer was produced by work already enqueued on the caller's stream: copy after
    // it, and hand the staging buffer to MPI only once the copy has landed (host wait; MPI has
    // no way to wait for a CUDA event itself).
    cudaError_t err = cudaMemcpyAsync(out.host, send, send_bytes, cudaMemcpyDeviceToHost, stream_);
    if (err != cudaSuccess) return cuda_fail(err, "device-to-host copy of the send buffer");
    err = cudaEventRecord(s.d2h, stream_);
    if (err != cudaSuccess) return cuda_fail(err, "cudaEventRecord");
    RINGATTN_RETURN_IF_ERROR(wait_event(s.d2h, "the send buffer's device-to-host copy"));
  }
  const ringattn_status_t st =
      inner_->start_exchange(out.host, send_bytes, dst, in.host, recv_bytes, src, tag, ex);
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
  Staging& in = s.buf[s.roles.recv_index()];
  // On the copy stream, so that the copy overlaps the compute still running on the caller's
  // stream; the caller's stream waits for it before anything enqueued after this call (no host
  // wait). The buffer's event also guards its reuse (prepare_write).
  cudaError_t err = cudaStreamWaitEvent(copy_stream_, s.ready, 0);
  if (err != cudaSuccess) return cuda_fail(err, "cudaStreamWaitEvent");
  err =
      cudaMemcpyAsync(act.recv_dev, in.host, act.recv_bytes, cudaMemcpyHostToDevice, copy_stream_);
  if (err != cudaSuccess) return cuda_fail(err, "host-to-device copy of the received buffer");
  err = cudaEventRecord(in.h2d, copy_stream_);
  if (err == cudaSuccess) err = cudaStreamWaitEvent(stream_, in.h2d, 0);
  if (err != cudaSuccess) return cuda_fail(err, "ordering the received buffer's copy");
  in.h2d_pending = true;
  s.roles.received(act.recv_dev, act.recv_bytes);
  return RINGATTN_SUCCESS;
}

ringattn_status_t StagedDeviceTransport::allgather_i64(const int64_t* mine, int n, int64_t* all) {
  const ringattn_status_t st = inner_->allgather_i64(mine, n, all);
  return st == RINGATTN_SUCCESS ? st : inner_fail(st);
}

}  // namespace comm
}  // namespace ringattn
