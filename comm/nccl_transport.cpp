#include "nccl_transport.h"

#include <cstring>
#include <string>

#include "poll.h"
#include "return_if_error.h"

namespace ringattn {
namespace comm {
namespace {

constexpr int kIdValues = static_cast<int>((sizeof(ncclUniqueId) + 7) / 8);

// This thread's stream-capture mode set to relaxed for a scope.
class RelaxedCapture {
 public:
  RelaxedCapture() { cudaThreadExchangeStreamCaptureMode(&mode_); }
  ~RelaxedCapture() { cudaThreadExchangeStreamCaptureMode(&mode_); }
  RelaxedCapture(const RelaxedCapture&) = delete;
  RelaxedCapture& operator=(const RelaxedCapture&) = delete;

 private:
  cudaStreamCaptureMode mode_ = cudaStreamCaptureModeRelaxed;
};

}  // namespace

ringattn_status_t NcclTransport::fail(ringattn_status_t code, const std::string& msg) {
  error_ = "rank " + std::to_string(rank_) + ": nccl transport: " + msg;
  return code;
}

ringattn_status_t NcclTransport::cuda_fail(cudaError_t err, const char* what) {
  cudaGetLastError();
  abort_comm();
  return fail(RINGATTN_ERROR_CUDA, std::string(what) + " failed: " + cudaGetErrorName(err) + " (" +
                                       cudaGetErrorString(err) + ")");
}

ringattn_status_t NcclTransport::nccl_fail(ncclResult_t r, const char* what) {
  abort_comm();
  std::string msg = std::string(what) + " failed: " + ncclGetErrorString(r);
  if (!owned_) msg += " (the caller's communicator is unusable: abort it with ncclCommAbort)";
  return fail(RINGATTN_ERROR_COMM, msg);
}

void NcclTransport::abort_comm() {
  // Whatever broke the transport (a timeout, an NCCL error, a CUDA failure), an owned
  // communicator is aborted, so that its peers' operations fail instead of spinning until their
  // own timeouts.
  broken_ = true;
  if (owned_ && comm_ != nullptr) {
    ncclCommAbort(comm_);
    comm_ = nullptr;
  }
}

ringattn_status_t NcclTransport::init_stream(std::string* err) {
  cudaError_t e = cudaStreamCreateWithFlags(&comm_stream_, cudaStreamNonBlocking);
  if (e == cudaSuccess) e = cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming);
  if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&agree_stream_, cudaStreamNonBlocking);
  if (e == cudaSuccess) e = cudaEventCreateWithFlags(&agreed_, cudaEventDisableTiming);
  if (e != cudaSuccess) {
    const ringattn_status_t st = cuda_fail(e, "creating the communication stream");
    *err = error_;
    return st;
  }
  return RINGATTN_SUCCESS;
}

std::unique_ptr<NcclTransport> NcclTransport::wrap(ncclComm_t comm, int rank, int world,
                                                   int64_t timeout_ms, ringattn_status_t* status,
                                                   std::string* err) {
  if (comm == nullptr) {
    *status = RINGATTN_ERROR_NULL_POINTER;
    *err = "argument 'comm' is NULL";
    return nullptr;
  }
  int r = -1, n = -1;
  if (ncclCommUserRank(comm, &r) != ncclSuccess || ncclCommCount(comm, &n) != ncclSuccess) {
    *status = RINGATTN_ERROR_COMM;
    *err = "argument 'comm': cannot query the NCCL communicator's rank and size";
    return nullptr;
  }
  if (r != rank || n != world) {
    *status = RINGATTN_ERROR_INVALID_ARGUMENT;
    *err = "arguments 'rank' and 'world' (" + std::to_string(rank) + ", " + std::to_string(world) +
           ") differ from the communicator's (" + std::to_string(r) + ", " + std::to_string(n) +
           ")";
    return nullptr;
  }
  std::unique_ptr<NcclTransport> t(new NcclTransport());
  t->comm_ = comm;
  t->owned_ = false;
  t->rank_ = r;
  t->size_ = n;
  t->timeout_ms_ = timeout_ms;
  *status = t->init_stream(err);
  if (*status != RINGATTN_SUCCESS) return nullptr;
  return t;
}

std::unique_ptr<NcclTransport> NcclTransport::bootstrap(std::unique_ptr<Transport> side,
                                                        int64_t timeout_ms,
                                                        ringattn_status_t* status,
                                                        std::string* err) {
  if (!side) {
    *status = RINGATTN_ERROR_NULL_POINTER;
    *err = "nccl transport: no transport to bootstrap over";
    return nullptr;
  }
  std::unique_ptr<NcclTransport> t(new NcclTransport());
  t->rank_ = side->rank();
  t->size_ = side->size();
  t->timeout_ms_ = timeout_ms;
  t->owned_ = true;
  // Rank 0's unique id reaches every rank through the side channel's bounded agreement,
  // followed by rank 0's status: if ncclGetUniqueId failed there, every rank fails now with its
  // message, rather than the others initializing with a zero id and waiting out the timeout.
  constexpr int kValues = kIdValues + 1;
  int64_t mine[kValues] = {};
  if (t->rank_ == 0) {
    ncclUniqueId id;
    const ncclResult_t got = ncclGetUniqueId(&id);
    std::memcpy(mine, &id, sizeof(id));
    mine[kIdValues] = static_cast<int64_t>(got);
  }
  std::vector<int64_t> all(static_cast<size_t>(kValues * t->size_));
  *status = side->allgather_i64(mine, kValues, all.data());
  if (*status != RINGATTN_SUCCESS) {
    *err = side->error();
    return nullptr;
  }
  ncclResult_t r = static_cast<ncclResult_t>(all[kIdValues]);
  if (r != ncclSuccess) {
    *status = RINGATTN_ERROR_COMM;
    *err = "rank " + std::to_string(t->rank_) +
           ": nccl transport: ncclGetUniqueId failed on rank 0: " + ncclGetErrorString(r);
    return nullptr;
  }
  ncclUniqueId id;
  std::memcpy(&id, all.data(), sizeof(id));
  *status = t->init_stream(err);
  if (*status != RINGATTN_SUCCESS) return nullptr;
  // Nonblocking init, so that a missing rank is a timeout rather than a hang.
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  r = ncclCommInitRankConfig(&t->comm_, t->size_, id, t->rank_, &config);
  *status = t->settle(r, "ncclCommInitRankConfig");
  if (*status != RINGATTN_SUCCESS) {
    *err = t->error_;
    return nullptr;
  }
  t->side_ = std::move(side);
  return t;
}

NcclTransport::~NcclTransport() {
  // Wait for our streams with the timeout, never unbounded: with the watchdog off a transfer to a
  // dead peer never completes. If they do not finish, abort an owned communicator (its kernels
  // then end) and leak what the streams may still use.
  const auto idle = [this] {
    cudaError_t e = cudaSuccess;
    const bool done = poll_until(timeout_ms_, [&] {
      e = comm_stream_ != nullptr ? cudaStreamQuery(comm_stream_) : cudaSuccess;
      if (e == cudaSuccess && agree_stream_ != nullptr) e = cudaStreamQuery(agree_stream_);
      return e != cudaErrorNotReady;
    });
    return done && e == cudaSuccess;
  };
  const bool clean = !broken_ && idle();
  if (!clean) abort_comm();
  if (clean) {
    if (owned_ && comm_ != nullptr) ncclCommDestroy(comm_);
    cudaFree(dev_scratch_);
    cudaFreeHost(host_scratch_);
    for (cudaEvent_t e : done_) cudaEventDestroy(e);
    if (ready_ != nullptr) cudaEventDestroy(ready_);
    if (agreed_ != nullptr) cudaEventDestroy(agreed_);
    if (comm_stream_ != nullptr) cudaStreamDestroy(comm_stream_);
    if (agree_stream_ != nullptr) cudaStreamDestroy(agree_stream_);
  }
  cudaGetLastError();
}

ringattn_status_t NcclTransport::settle(ncclResult_t r, const char* what) {
  const bool settled = poll_until(timeout_ms_, [&] {
    if (r != ncclInProgress) return true;
    if (ncclCommGetAsyncError(comm_, &r) != ncclSuccess) r = ncclInternalError;
    return r != ncclInProgress;
  });
  if (!settled) {
    abort_comm();
    return fail(RINGATTN_ERROR_TIMEOUT, std::string(what) + " did not finish within " +
                                            std::to_string(timeout_ms_) + " ms");
  }
  return r == ncclSuccess ? RINGATTN_SUCCESS : nccl_fail(r, what);
}

ringattn_status_t NcclTransport::async_error() {
  ncclResult_t async = ncclSuccess;
  if (ncclCommGetAsyncError(comm_, &async) != ncclSuccess) async = ncclInternalError;
  return async == ncclSuccess || async == ncclInProgress ? RINGATTN_SUCCESS
                                                         : nccl_fail(async, "ring exchange");
}

template <typename Describe>
ringattn_status_t NcclTransport::wait_event(cudaEvent_t ev, const Describe& what) {
  cudaError_t e = cudaSuccess;
  ncclResult_t async = ncclSuccess;
  if (poll_until(timeout_ms_, [&] {
        e = cudaEventQuery(ev);
        if (e != cudaErrorNotReady) return true;
        if (ncclCommGetAsyncError(comm_, &async) != ncclSuccess) async = ncclInternalError;
        return async != ncclSuccess && async != ncclInProgress;
      })) {
    if (e == cudaSuccess) return RINGATTN_SUCCESS;
    return e != cudaErrorNotReady ? cuda_fail(e, what().c_str()) : nccl_fail(async, what().c_str());
  }
  abort_comm();
  std::string msg = what() + " did not finish within " + std::to_string(timeout_ms_) +
                    " ms (timeout: context option or RINGATTN_TIMEOUT_MS)";
  if (!owned_) msg += "; the caller's communicator is stuck: abort it with ncclCommAbort";
  return fail(RINGATTN_ERROR_TIMEOUT, msg);
}

ringattn_status_t NcclTransport::event_for(int tag, size_t* index) {
  size_t i = 0;
  while (i < tags_.size() && tags_[i] != tag) ++i;
  if (i == tags_.size()) {
    cudaEvent_t e = nullptr;
    const cudaError_t err = cudaEventCreateWithFlags(&e, cudaEventDisableTiming);
    if (err != cudaSuccess) return cuda_fail(err, "cudaEventCreate");
    tags_.push_back(tag);
    done_.push_back(e);
  }
  *index = i;
  return RINGATTN_SUCCESS;
}

ringattn_status_t NcclTransport::start_exchange(const void* send, size_t send_bytes, int dst,
                                                void* recv, size_t recv_bytes, int src, int tag,
                                                Exchange* ex) {
  if (broken_) {
    return fail(RINGATTN_ERROR_COMM, "the transport failed earlier; destroy the context");
  }
  if (ex->active) return fail(RINGATTN_ERROR_INTERNAL, "exchange started twice");
  if (dst < 0 || dst >= size_ || src < 0 || src >= size_) {
    return fail(RINGATTN_ERROR_INTERNAL, "exchange peer out of range");
  }
  size_t e = 0;
  RINGATTN_RETURN_IF_ERROR(event_for(tag, &e));
  // Everything enqueued so far on the caller's stream (the producer of `send`, the last reader
  // of `recv`) precedes the transfer.
  cudaError_t err = cudaEventRecord(ready_, stream_);
  if (err == cudaSuccess) err = cudaStreamWaitEvent(comm_stream_, ready_, 0);
  if (err != cudaSuccess) return cuda_fail(err, "ordering the transfer after the caller's stream");
  // From here the comm stream is forked from the caller's: during a capture it belongs to the
  // caller's graph, and every exit joins it back (the caller's stream waits for its "done"
  // event), or cudaStreamEndCapture would fail with an unjoined stream and hide our error.
  ncclResult_t r = ncclGroupStart();
  if (r == ncclSuccess && recv_bytes > 0) {
    r = ncclRecv(recv, recv_bytes, ncclInt8, src, comm_, comm_stream_);
  }
  if (r == ncclSuccess && send_bytes > 0) {
    r = ncclSend(send, send_bytes, ncclInt8, dst, comm_, comm_stream_);
  }
  const ncclResult_t end = ncclGroupEnd();
  if (r == ncclSuccess) r = end;
  const ringattn_status_t settled = settle(r, "grouped ncclSend/ncclRecv");
  err = cudaEventRecord(done_[e], comm_stream_);
  if (err == cudaSuccess && settled != RINGATTN_SUCCESS) {
    err = cudaStreamWaitEvent(stream_, done_[e], 0);
  }
  if (settled != RINGATTN_SUCCESS) return settled;
  if (err != cudaSuccess) return cuda_fail(err, "cudaEventRecord");
  ex->handles[0] = e;
  ex->num_requests = 1;
  ex->send_peer = dst;
  ex->recv_peer = src;
  ex->active = true;
  return RINGATTN_SUCCESS;
}

ringattn_status_t NcclTransport::wait(Exchange* ex) {
  if (!ex->active) return RINGATTN_SUCCESS;
  ex->active = false;
  cudaEvent_t done = done_[static_cast<size_t>(ex->handles[0])];
  ringattn_status_t st = RINGATTN_SUCCESS;
  if (broken_) {
    st = fail(RINGATTN_ERROR_COMM, "the transport failed earlier; destroy the context");
  } else if (watchdog_) {
    // The message is built only when the wait fails (no allocation on the ring's path).
    const int from = ex->recv_peer, to = ex->send_peer;
    st = wait_event(done, [from, to] {
      return "ring exchange (receive from rank " + std::to_string(from) + ", send to rank " +
             std::to_string(to) + ")";
    });
  } else {
    // No waiting, but an error NCCL already knows of surfaces now rather than never.
    st = async_error();
  }
  // The caller's stream joins the comm stream whatever happened: a capture must end joined to
  // report our error rather than "unjoined", and after an abort the transfer's kernels end.
  const cudaError_t err = cudaStreamWaitEvent(stream_, done, 0);
  if (st != RINGATTN_SUCCESS) {
    cudaGetLastError();
    return st;
  }
  return err == cudaSuccess ? RINGATTN_SUCCESS : cuda_fail(err, "cudaStreamWaitEvent");
}

ringattn_status_t NcclTransport::allgather_i64(const int64_t* mine, int n, int64_t* all) {
  if (broken_) {
    return fail(RINGATTN_ERROR_COMM, "the transport failed earlier; destroy the context");
  }
  if (side_) {
    const ringattn_status_t st = side_->allgather_i64(mine, n, all);
    if (st != RINGATTN_SUCCESS) {
      abort_comm();
      error_ = side_->error();
    }
    return st;
  }
  // The agreement has its own stream and buffers, never part of a capture of the caller's
  // stream; its host waits are on its own event. Relaxing this thread's capture mode makes them
  // legal while the caller captures.
  RelaxedCapture relaxed;
  const size_t values = static_cast<size_t>(n) * static_cast<size_t>(size_ + 1);
  if (values > scratch_values_) {
    cudaFree(dev_scratch_);
    cudaFreeHost(host_scratch_);
    dev_scratch_ = nullptr;
    host_scratch_ = nullptr;
    scratch_values_ = 0;
    cudaError_t err = cudaMalloc(&dev_scratch_, values * sizeof(int64_t));
    if (err == cudaSuccess) {
      err = cudaHostAlloc(reinterpret_cast<void**>(&host_scratch_), values * sizeof(int64_t),
                          cudaHostAllocDefault);
    }
    if (err != cudaSuccess) return cuda_fail(err, "allocating the agreement buffers");
    scratch_values_ = values;
  }
  // Layout (device and pinned host alike): [all: size * n][mine: n].
  int64_t* dev = static_cast<int64_t*>(dev_scratch_);
  int64_t* host_mine = host_scratch_ + static_cast<size_t>(n) * size_;
  std::memcpy(host_mine, mine, sizeof(int64_t) * static_cast<size_t>(n));
  ringattn_status_t st = RINGATTN_SUCCESS;
  cudaError_t err = cudaMemcpyAsync(dev + static_cast<size_t>(n) * size_, host_mine,
                                    sizeof(int64_t) * n, cudaMemcpyHostToDevice, agree_stream_);
  if (err != cudaSuccess) st = cuda_fail(err, "agreement upload");
  if (st == RINGATTN_SUCCESS) {
    st = settle(ncclAllGather(dev + static_cast<size_t>(n) * size_, dev, n, ncclInt64, comm_,
                              agree_stream_),
                "ncclAllGather (agreement)");
  }
  if (st == RINGATTN_SUCCESS) {
    err = cudaMemcpyAsync(host_scratch_, dev, sizeof(int64_t) * static_cast<size_t>(n) * size_,
                          cudaMemcpyDeviceToHost, agree_stream_);
    if (err == cudaSuccess) err = cudaEventRecord(agreed_, agree_stream_);
    if (err != cudaSuccess) st = cuda_fail(err, "agreement download");
  }
  if (st == RINGATTN_SUCCESS) {
    st = wait_event(agreed_, [] { return std::string("agreement (allgather)"); });
  }
  RINGATTN_RETURN_IF_ERROR(st);
  std::memcpy(all, host_scratch_, sizeof(int64_t) * static_cast<size_t>(n) * size_);
  return RINGATTN_SUCCESS;
}

}  // namespace comm
}  // namespace ringattn
