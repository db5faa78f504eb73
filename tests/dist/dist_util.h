// Helpers of the distributed tests: the MPI world, seeds every rank shares, sharding of global
// test tensors, gathering local results on rank 0, and turning rank 0's verdict into an
// assertion on every rank.
#pragma once

#include <mpi.h>
#include <stdint.h>

#include <string>
#include <vector>

#include "positions.h"
#include "reference.h"

namespace ringattn {
namespace test {

int world_rank(MPI_Comm comm = MPI_COMM_WORLD);
int world_size(MPI_Comm comm = MPI_COMM_WORLD);

// A fresh seed chosen on rank 0 and shared by every rank of `comm`.
uint64_t shared_seed(MPI_Comm comm = MPI_COMM_WORLD);

// A global problem: fixed length (B sequences of S tokens) or packed (cu_seqlens).
struct GlobalLayout {
  bool packed = false;
  int64_t batch = 1, seq = 0;                                // fixed length
  std::vector<int64_t> cu;                                   // packed offsets
  int64_t rows() const { return packed ? cu.back() : seq; }  // global rows per batch entry
  int64_t num_seqs() const { return packed ? static_cast<int64_t>(cu.size()) - 1 : batch; }
};

// Global row index (within a batch entry) of each local row of `rank`, in local order.
std::vector<int64_t> local_rows(const GlobalLayout& g, int32_t scheme, int world, int rank);
// Positions of every global row (for the float64 reference over the whole problem).
RowPositions global_positions(const GlobalLayout& g);

// Rows of a dense [B, rows, H, D] double tensor: take `idx` rows (shard) / put them back.
std::vector<double> take_rows(const std::vector<double>& t, int64_t batch, int64_t rows,
                              int64_t width, const std::vector<int64_t>& idx);
void put_rows(std::vector<double>* t, int64_t batch, int64_t rows, int64_t width,
              const std::vector<int64_t>& idx, const std::vector<double>& local);
// Row statistics [B, H, rows]: the same along the last dimension.
std::vector<double> take_cols(const std::vector<double>& t, int64_t bh, int64_t rows,
                              const std::vector<int64_t>& idx);
void put_cols(std::vector<double>* t, int64_t bh, int64_t rows, const std::vector<int64_t>& idx,
              const std::vector<double>& local);

// Concatenate every rank's vector on rank 0 (rank order); empty elsewhere.
std::vector<std::vector<double>> gather_to_root(const std::vector<double>& mine,
                                                MPI_Comm comm = MPI_COMM_WORLD);
// Rank 0's verdict (and message) on every rank.
::testing::AssertionResult share_verdict(const ::testing::AssertionResult& root_result,
                                         MPI_Comm comm = MPI_COMM_WORLD);
// True on every rank iff `ok` is true on every rank.
bool all_ranks(bool ok, MPI_Comm comm = MPI_COMM_WORLD);

}  // namespace test
}  // namespace ringattn
