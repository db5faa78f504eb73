/* A C program built against the installed package with NCCL and no MPI: ringattn_nccl.h must
 * compile without mpi.h. It runs without a GPU: a NULL communicator is refused with a message. */
#include <ringattn/ringattn_nccl.h>
#include <stdio.h>
#include <string.h>

#ifdef MPI_VERSION
#error "ringattn_nccl.h pulled in mpi.h"
#endif

int main(void) {
  ringattn_context_t ctx = (ringattn_context_t)1;
  ringattn_status_t st =
      ringattn_context_create_nccl(NULL, 0, 1, RINGATTN_BACKEND_CUDA, NULL, &ctx);
  if (st == RINGATTN_SUCCESS || ctx != NULL || strlen(ringattn_get_last_error()) == 0) {
    fprintf(stderr, "expected an error for a NULL communicator\n");
    return 1;
  }
  printf("ringattn NCCL-only consumer ok: %s\n", ringattn_status_string(st));
  return 0;
}
