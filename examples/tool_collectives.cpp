#include "tool_collectives.h"

#include <time.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>

namespace ringattn {
namespace tool {
namespace {

std::string g_tool = "ringattn";

int rank_of(MPI_Comm comm) {
  int r = 0;
  MPI_Comm_rank(comm, &r);
  return r;
}

// Polls `req` until it completes or the timeout passes (then exits).
void wait_bounded(MPI_Request* req, const char* what) {
  using Clock = std::chrono::steady_clock;
  const int64_t timeout = collective_timeout_ms();
  const Clock::time_point start = Clock::now();
  const Clock::time_point deadline = start + std::chrono::milliseconds(timeout);
  for (;;) {
    int done = 0;
    MPI_Test(req, &done, MPI_STATUS_IGNORE);
    if (done) return;
    const Clock::time_point now = Clock::now();
    if (now >= deadline) {
      exit_now(1, std::string("the peers did not join ") + what + " within " +
                      std::to_string(timeout) +
                      " ms (RINGATTN_TIMEOUT_MS): a peer stopped or died");
    }
    if (now - start > std::chrono::milliseconds(1)) {
      struct timespec ts = {0, 100 * 1000};
      nanosleep(&ts, nullptr);
    }
  }
}

}  // namespace

void set_tool_name(const char* name) { g_tool = name; }

int64_t collective_timeout_ms() {
  const char* env = std::getenv("RINGATTN_TIMEOUT_MS");
  if (env != nullptr) {
    char* end = nullptr;
    const long long v = std::strtoll(env, &end, 10);
    if (end != env && *end == '\0' && v > 0) return v;
  }
  return 300000;
}

void exit_now(int code, const std::string& msg) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  const int me = initialized && !finalized ? rank_of(MPI_COMM_WORLD) : 0;
  std::fflush(stdout);
  std::fprintf(stderr, "%s: rank %d: %s\n", g_tool.c_str(), me, msg.c_str());
  std::fflush(stderr);
  std::_Exit(code);
}

void report_ring_failure(ringattn_status_t st, const std::string& msg) {
  const std::string line = std::string(ringattn_status_string(st)) + ": " + msg;
  if (st == RINGATTN_ERROR_TIMEOUT || st == RINGATTN_ERROR_COMM) exit_now(1, line);
  std::fprintf(stderr, "%s: rank %d: %s\n", g_tool.c_str(), rank_of(MPI_COMM_WORLD), line.c_str());
  std::fflush(stderr);
}

void bounded_allreduce(const void* in, void* out, int count, MPI_Datatype type, MPI_Op op,
                       MPI_Comm comm, const char* what) {
  MPI_Request req;
  MPI_Iallreduce(in, out, count, type, op, comm, &req);
  wait_bounded(&req, what);
}

void bounded_barrier(MPI_Comm comm, const char* what) {
  MPI_Request req;
  MPI_Ibarrier(comm, &req);
  wait_bounded(&req, what);
}

void bounded_bcast(void* buf, int count, MPI_Datatype type, int root, MPI_Comm comm,
                   const char* what) {
  MPI_Request req;
  MPI_Ibcast(buf, count, type, root, comm, &req);
  wait_bounded(&req, what);
}

void bounded_gather(const void* in, int count, MPI_Datatype type, void* out, int root,
                    MPI_Comm comm, const char* what) {
  MPI_Request req;
  MPI_Igather(in, count, type, out, count, type, root, comm, &req);
  wait_bounded(&req, what);
}

void bounded_gatherv(const void* in, int count, MPI_Datatype type, void* out, const int* counts,
                     const int* displs, int root, MPI_Comm comm, const char* what) {
  MPI_Request req;
  MPI_Igatherv(in, count, type, out, counts, displs, type, root, comm, &req);
  wait_bounded(&req, what);
}

}  // namespace tool
}  // namespace ringattn
