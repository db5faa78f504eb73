/*
 * ringattn over NCCL: ring contexts (ringattn_ring.h) whose K/V blocks and gradient
 * accumulators move with grouped ncclSend/ncclRecv on a communication stream of the context,
 * ordered against the caller's stream with CUDA events. Backend CUDA only; every tensor is in
 * device memory. Includes no MPI header: a program that uses only NCCL compiles and links
 * without MPI. Available when the library was built with NCCL (RINGATTN_HAVE_NCCL).
 *
 * Timeouts: a wait for a peer polls the transfer's event and ncclCommGetAsyncError, bounded by
 * the context's timeout (not in a context made with options.capturable, whose calls never wait
 * on the host: there a wait only checks for an error NCCL already reports, and a dead peer stalls
 * the stream); on a timeout or an asynchronous NCCL error every live rank returns
 * RINGATTN_ERROR_TIMEOUT / RINGATTN_ERROR_COMM. A communicator created by the library
 * (ringattn_context_create_nccl_mpi in ringattn_mpi.h) is then aborted (ncclCommAbort); a
 * caller's communicator is never destroyed by the library, and after such an error the caller
 * must abort it.
 */
#ifndef RINGATTN_RINGATTN_NCCL_H_
#define RINGATTN_RINGATTN_NCCL_H_

#include <nccl.h>

#include "ringattn/ringattn_ring.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A context over the caller's NCCL communicator `comm`, whose rank and size are `rank` and
 * `world` (checked against the communicator). The communicator stays the caller's: it must
 * outlive the context and is never destroyed by it. Agreement between ranks runs over NCCL
 * itself (a small allgather on a stream of the context's own, bounded by the timeout). The
 * timeout covers what the library polls: with a communicator created nonblocking
 * (ncclConfig_t.blocking = 0) that is every NCCL call of the context; a blocking communicator
 * may block inside NCCL itself (e.g. while it connects two ranks at their first exchange), where
 * no timeout of the library reaches. Creation itself communicates with no peer. */
RINGATTN_API ringattn_status_t ringattn_context_create_nccl(
    ncclComm_t comm, int32_t rank, int32_t world, ringattn_backend_t backend,
    const ringattn_context_options_t* options, ringattn_context_t* ctx);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* RINGATTN_RINGATTN_NCCL_H_ */
