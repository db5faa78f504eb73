/*
 * ringattn over MPI: ring contexts (ringattn_ring.h) created from a caller's MPI communicator.
 * The context duplicates the communicator (the caller's is never modified nor freed). Callers
 * link MPI themselves (they own the communicator; MPI::MPI_C is enough, from C or C++); available
 * when the library was built with MPI (RINGATTN_HAVE_MPI).
 *
 * This header uses MPI's C API only. Included before mpi.h it keeps out the deprecated MPI C++
 * bindings (OMPI_SKIP_MPICXX, MPICH_SKIP_MPICXX), which would otherwise need libmpi_cxx at link
 * time in a C++ program; include mpi.h first to decide that yourself.
 */
#ifndef RINGATTN_RINGATTN_MPI_H_
#define RINGATTN_RINGATTN_MPI_H_

#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include "ringattn/ringattn_ring.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Collective over `comm`. backend: RINGATTN_BACKEND_CPU (host buffers) or RINGATTN_BACKEND_CUDA
 * (device buffers on the current device, moved by MPI through pinned host staging buffers; the
 * ranks may share a GPU). MPI carries the agreement. options may be NULL; options.capturable is
 * RINGATTN_ERROR_UNSUPPORTED here (MPI waits on the host for device data). */
RINGATTN_API ringattn_status_t ringattn_context_create(MPI_Comm comm, ringattn_backend_t backend,
                                                       const ringattn_context_options_t* options,
                                                       ringattn_context_t* ctx);

/* A context that moves device buffers with an NCCL communicator of its own over the ranks of
 * `comm` (the unique id is shared over MPI, the initialization bounded by the timeout; the NCCL
 * transport of ringattn_nccl.h otherwise). MPI carries the agreement. The NCCL communicator is
 * destroyed with the context. Collective over `comm`. Backend CUDA only. A library built without
 * NCCL returns RINGATTN_ERROR_UNSUPPORTED. */
RINGATTN_API ringattn_status_t ringattn_context_create_nccl_mpi(
    MPI_Comm comm, ringattn_backend_t backend, const ringattn_context_options_t* options,
    ringattn_context_t* ctx);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* RINGATTN_RINGATTN_MPI_H_ */
