#include "mpi_transport.h"

#include <cstdlib>
#include <cstring>
#include <string>

#include "poll.h"

namespace ringattn {
namespace comm {
namespace {

static_assert(sizeof(MPI_Request) <= sizeof(uint64_t), "MPI_Request must fit an Exchange handle");

// Large messages are split so that every count fits MPI's int.
constexpr size_t kMaxMessage = size_t{1} << 30;

std::string mpi_error_string(int code) {
  char buf[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, buf, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(buf, static_cast<size_t>(len));
}

MPI_Request load(const Exchange& ex, int i) {
  MPI_Request r;
  std::memcpy(&r, &ex.handles[i], sizeof(r));
  return r;
}

void store(Exchange* ex, int i, MPI_Request r) {
  ex->handles[i] = 0;
  std::memcpy(&ex->handles[i], &r, sizeof(r));
}

}  // namespace

std::unique_ptr<MpiTransport> MpiTransport::create(MPI_Comm user_comm, int64_t timeout_ms,
                                                   ringattn_status_t* status, std::string* err) {
  int flag = 0;
  MPI_Initialized(&flag);
  if (!flag) {
    *status = RINGATTN_ERROR_COMM;
    *err = "MPI is not initialized (call MPI_Init before creating a context)";
    return nullptr;
  }
  MPI_Finalized(&flag);
  if (flag) {
    *status = RINGATTN_ERROR_COMM;
    *err = "MPI is already finalized";
    return nullptr;
  }
  if (user_comm == MPI_COMM_NULL) {
    *status = RINGATTN_ERROR_INVALID_ARGUMENT;
    *err = "argument 'comm' is MPI_COMM_NULL";
    return nullptr;
  }
  std::unique_ptr<MpiTransport> t(new MpiTransport());
  t->timeout_ms_ = timeout_ms;
  // A nonblocking duplicate, so that a rank that never creates its context makes the others
  // time out instead of hanging in MPI_Comm_dup.
  MPI_Request req = MPI_REQUEST_NULL;
  int rc = MPI_Comm_idup(user_comm, &t->comm_, &req);
  if (rc != MPI_SUCCESS) {
    *status = RINGATTN_ERROR_COMM;
    *err = "MPI_Comm_idup failed: " + mpi_error_string(rc);
    return nullptr;
  }
  MPI_Comm_rank(user_comm, &t->rank_);
  MPI_Comm_size(user_comm, &t->size_);
  *status = t->wait_requests(&req, 1, "duplicating the communicator", -1, -1);
  if (*status != RINGATTN_SUCCESS) {
    *err = t->error_;
    // The duplicate may complete later; it is never used nor freed (a peer is missing).
    t->comm_ = MPI_COMM_NULL;
    t->broken_ = true;
    return nullptr;
  }
  MPI_Comm_set_errhandler(t->comm_, MPI_ERRORS_RETURN);
  return t;
}

MpiTransport::~MpiTransport() {
  // After a failure a peer may still send on the duplicate; leave it alone rather than free a
  // communicator with traffic in flight. The caller's communicator is never touched.
  if (comm_ != MPI_COMM_NULL && !broken_) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&comm_);
  }
}

ringattn_status_t MpiTransport::fail(ringattn_status_t code, const std::string& msg) {
  error_ = "rank " + std::to_string(rank_) + ": " + msg;
  return code;
}

ringattn_status_t MpiTransport::start_exchange(const void* send, size_t send_bytes, int dst,
                                               void* recv, size_t recv_bytes, int src, int tag,
                                               Exchange* ex) {
  if (broken_) {
    return fail(RINGATTN_ERROR_COMM,
                "the transport failed earlier (timeout or MPI error); "
                "destroy the context");
  }
  if (ex->active) return fail(RINGATTN_ERROR_INTERNAL, "exchange started twice");
  if (dst < 0 || dst >= size_ || src < 0 || src >= size_) {
    return fail(RINGATTN_ERROR_INTERNAL, "exchange peer out of range");
  }
  const size_t pieces =
      (send_bytes + kMaxMessage - 1) / kMaxMessage + (recv_bytes + kMaxMessage - 1) / kMaxMessage;
  if (pieces > static_cast<size_t>(Exchange::kMaxRequests)) {
    return fail(RINGATTN_ERROR_UNSUPPORTED, "exchange larger than 8 GiB per direction");
  }
  ex->num_requests = 0;
  ex->send_peer = dst;
  ex->recv_peer = src;
  // Receives first, so that the matching send from the peer finds a posted buffer.
  for (size_t off = 0; off < recv_bytes; off += kMaxMessage) {
    const int n = static_cast<int>(recv_bytes - off < kMaxMessage ? recv_bytes - off : kMaxMessage);
    MPI_Request r = MPI_REQUEST_NULL;
    const int rc = MPI_Irecv(static_cast<char*>(recv) + off, n, MPI_BYTE, src, tag, comm_, &r);
    if (rc != MPI_SUCCESS) {
      broken_ = true;
      return fail(RINGATTN_ERROR_COMM, "MPI_Irecv from rank " + std::to_string(src) +
                                           " failed: " + mpi_error_string(rc));
    }
    store(ex, ex->num_requests++, r);
  }
  for (size_t off = 0; off < send_bytes; off += kMaxMessage) {
    const int n = static_cast<int>(send_bytes - off < kMaxMessage ? send_bytes - off : kMaxMessage);
    MPI_Request r = MPI_REQUEST_NULL;
    const int rc =
        MPI_Isend(static_cast<const char*>(send) + off, n, MPI_BYTE, dst, tag, comm_, &r);
    if (rc != MPI_SUCCESS) {
      broken_ = true;
      return fail(RINGATTN_ERROR_COMM,
                  "MPI_Isend to rank " + std::to_string(dst) + " failed: " + mpi_error_string(rc));
    }
    store(ex, ex->num_requests++, r);
  }
  ex->active = true;
  return RINGATTN_SUCCESS;
}

void MpiTransport::progress(Exchange* ex) {
  if (!ex->active || broken_) return;
  MPI_Request reqs[Exchange::kMaxRequests];
  for (int i = 0; i < ex->num_requests; ++i) reqs[i] = load(*ex, i);
  int done = 0;
  MPI_Testall(ex->num_requests, reqs, &done, MPI_STATUSES_IGNORE);
  for (int i = 0; i < ex->num_requests; ++i) store(ex, i, reqs[i]);
}

ringattn_status_t MpiTransport::wait(Exchange* ex) {
  if (!ex->active) return RINGATTN_SUCCESS;
  if (broken_) {
    ex->active = false;
    return fail(RINGATTN_ERROR_COMM,
                "the transport failed earlier (timeout or MPI error); "
                "destroy the context");
  }
  MPI_Request reqs[Exchange::kMaxRequests];
  for (int i = 0; i < ex->num_requests; ++i) reqs[i] = load(*ex, i);
  const ringattn_status_t st =
      wait_requests(reqs, ex->num_requests, "ring exchange", ex->recv_peer, ex->send_peer);
  for (int i = 0; i < ex->num_requests; ++i) store(ex, i, reqs[i]);
  ex->active = false;
  return st;
}

ringattn_status_t MpiTransport::wait_requests(MPI_Request* reqs, int n, const char* what,
                                              int peer_a, int peer_b) {
  int rc = MPI_SUCCESS;
  const bool finished = poll_until(timeout_ms_, [&] {
    int done = 0;
    rc = MPI_Testall(n, reqs, &done, MPI_STATUSES_IGNORE);
    return rc != MPI_SUCCESS || done != 0;
  });
  if (finished && rc != MPI_SUCCESS) {
    broken_ = true;
    return fail(RINGATTN_ERROR_COMM,
                std::string("MPI failed during ") + what + ": " + mpi_error_string(rc));
  }
  if (finished) return RINGATTN_SUCCESS;
  // Cancel point-to-point requests (MPI forbids cancelling collectives); what remains stays
  // pending and the transport is unusable.
  if (peer_a >= 0) {
    for (int i = 0; i < n; ++i) {
      if (reqs[i] != MPI_REQUEST_NULL) MPI_Cancel(&reqs[i]);
    }
  }
  broken_ = true;
  std::string peers;
  if (peer_a >= 0 && peer_b >= 0) {
    peers = " (receive from rank " + std::to_string(peer_a) + ", send to rank " +
            std::to_string(peer_b) + ")";
  } else {
    peers = " (some rank of the " + std::to_string(size_) + " did not take part)";
  }
  return fail(RINGATTN_ERROR_TIMEOUT, std::string(what) + peers + " did not finish within " +
                                          std::to_string(timeout_ms_) +
                                          " ms (timeout: context option or RINGATTN_TIMEOUT_MS)");
}

ringattn_status_t MpiTransport::allgather_i64(const int64_t* mine, int n, int64_t* all) {
  if (broken_) {
    return fail(RINGATTN_ERROR_COMM,
                "the transport failed earlier (timeout or MPI error); "
                "destroy the context");
  }
  MPI_Request req = MPI_REQUEST_NULL;
  const int rc = MPI_Iallgather(mine, n, MPI_INT64_T, all, n, MPI_INT64_T, comm_, &req);
  if (rc != MPI_SUCCESS) {
    broken_ = true;
    return fail(RINGATTN_ERROR_COMM, "MPI_Iallgather failed: " + mpi_error_string(rc));
  }
  return wait_requests(&req, 1, "agreement (allgather)", -1, -1);
}

}  // namespace comm
}  // namespace ringattn
