// A C++ program that includes ringattn_mpi.h and links MPI::MPI_C only, as the README says: it
// must link without the MPI C++ bindings (libmpi_cxx). Built by the install test, not run (it
// would need mpirun).
#include <ringattn/ringattn_mpi.h>

#include <cstdio>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  ringattn_context_t ctx = nullptr;
  const ringattn_status_t st =
      ringattn_context_create(MPI_COMM_WORLD, RINGATTN_BACKEND_CPU, nullptr, &ctx);
  if (st != RINGATTN_SUCCESS) std::fprintf(stderr, "%s\n", ringattn_get_last_error());
  ringattn_context_destroy(ctx);
  MPI_Finalize();
  return st == RINGATTN_SUCCESS ? 0 : 1;
}
