// The tools' own MPI collectives, bounded like the library's waits. A peer that stopped or died
// between two library calls would otherwise hang a rank forever in the tool's MPI_Allreduce or
// MPI_Barrier: each collective here is started nonblocking and polled until RINGATTN_TIMEOUT_MS
// (default 300000 ms) passes; then the rank prints which collective its peers did not join and
// exits non-zero at once, without MPI_Finalize (which could block on the same peer).
#pragma once

#include <mpi.h>
#include <stdint.h>

#include <string>

#include "ringattn/ringattn.h"

namespace ringattn {
namespace tool {

// The program name that prefixes every message ("ringattn_bench"), set once by main().
void set_tool_name(const char* name);
// RINGATTN_TIMEOUT_MS when set to a positive integer, else 300000.
int64_t collective_timeout_ms();

// Prints "<tool>: rank R: <msg>" on stderr and ends the process with `code` at once (no
// MPI_Finalize, no collective).
[[noreturn]] void exit_now(int code, const std::string& msg);

// After a failed ring call: prints this rank's error (status and the library's message, which
// names the rank, the peer and what failed). A transport failure (RINGATTN_ERROR_TIMEOUT or
// RINGATTN_ERROR_COMM: a peer may be gone) ends the process at once with exit code 1; other
// failures return, since the library agrees on them on every rank and the peers still answer.
void report_ring_failure(ringattn_status_t st, const std::string& msg);

void bounded_allreduce(const void* in, void* out, int count, MPI_Datatype type, MPI_Op op,
                       MPI_Comm comm, const char* what);
void bounded_barrier(MPI_Comm comm, const char* what);
void bounded_bcast(void* buf, int count, MPI_Datatype type, int root, MPI_Comm comm,
                   const char* what);
void bounded_gather(const void* in, int count, MPI_Datatype type, void* out, int root,
                    MPI_Comm comm, const char* what);
void bounded_gatherv(const void* in, int count, MPI_Datatype type, void* out, const int* counts,
                     const int* displs, int root, MPI_Comm comm, const char* what);

}  // namespace tool
}  // namespace ringattn
