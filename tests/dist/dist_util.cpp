#include "dist_util.h"

namespace ringattn {
namespace test {

int world_rank(MPI_Comm comm) {
  int r = 0;
  MPI_Comm_rank(comm, &r);
  return r;
}

int world_size(MPI_Comm comm) {
  int s = 1;
  MPI_Comm_size(comm, &s);
  return s;
}

uint64_t shared_seed(MPI_Comm comm) {
  unsigned long long s = world_rank(comm) == 0 ? fresh_seed() : 0;
  MPI_Bcast(&s, 1, MPI_UNSIGNED_LONG_LONG, 0, comm);
  return s;
}

std::vector<int64_t> local_rows(const GlobalLayout& g, int32_t scheme, int world, int rank) {
  std::vector<int64_t> idx;
  const int64_t nseq = g.packed ? g.num_seqs() : 1;
  for (int64_t b = 0; b < nseq; ++b) {
    const int64_t base = g.packed ? g.cu[b] : 0;
    const int64_t len = g.packed ? g.cu[b + 1] - g.cu[b] : g.seq;
    PosRun runs[2];
    const int32_t n = scheme_runs(scheme, b, len, world, rank, runs);
    for (int32_t r = 0; r < n; ++r) {
      for (int64_t i = 0; i < runs[r].count; ++i)
        idx.push_back(base + runs[r].start + i * runs[r].stride);
    }
  }
  return idx;
}

RowPositions global_positions(const GlobalLayout& g) {
  if (!g.packed) return whole_sequence(g.seq);
  RowPositions p;
  for (int64_t b = 0; b < g.num_seqs(); ++b) {
    for (int64_t i = 0; i < g.cu[b + 1] - g.cu[b]; ++i) {
      p.seq.push_back(b);
      p.pos.push_back(i);
    }
  }
  return p;
}

std::vector<double> take_rows(const std::vector<double>& t, int64_t batch, int64_t rows,
                              int64_t width, const std::vector<int64_t>& idx) {
  const int64_t n = static_cast<int64_t>(idx.size());
  std::vector<double> out(static_cast<size_t>(batch * n * width));
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t i = 0; i < n; ++i) {
      const double* src = &t[static_cast<size_t>((b * rows + idx[i]) * width)];
      std::copy(src, src + width, &out[static_cast<size_t>((b * n + i) * width)]);
    }
  }
  return out;
}

void put_rows(std::vector<double>* t, int64_t batch, int64_t rows, int64_t width,
              const std::vector<int64_t>& idx, const std::vector<double>& local) {
  const int64_t n = static_cast<int64_t>(idx.size());
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t i = 0; i < n; ++i) {
      const double* src = &local[static_cast<size_t>((b * n + i) * width)];
      std::copy(src, src + width, &(*t)[static_cast<size_t>((b * rows + idx[i]) * width)]);
    }
  }
}

std::vector<double> take_cols(const std::vector<double>& t, int64_t bh, int64_t rows,
                              const std::vector<int64_t>& idx) {
  return take_rows(t, bh, rows, 1, idx);
}

void put_cols(std::vector<double>* t, int64_t bh, int64_t rows, const std::vector<int64_t>& idx,
              const std::vector<double>& local) {
  put_rows(t, bh, rows, 1, idx, local);
}

std::vector<std::vector<double>> gather_to_root(const std::vector<double>& mine, MPI_Comm comm) {
  const int P = world_size(comm), me = world_rank(comm);
  int n = static_cast<int>(mine.size());
  std::vector<int> counts(P), displs(P);
  MPI_Gather(&n, 1, MPI_INT, counts.data(), 1, MPI_INT, 0, comm);
  std::vector<double> all;
  if (me == 0) {
    int total = 0;
    for (int r = 0; r < P; ++r) {
      displs[r] = total;
      total += counts[r];
    }
    all.resize(static_cast<size_t>(total));
  }
  MPI_Gatherv(mine.data(), n, MPI_DOUBLE, all.data(), counts.data(), displs.data(), MPI_DOUBLE, 0,
              comm);
  std::vector<std::vector<double>> out;
  if (me == 0) {
    for (int r = 0; r < P; ++r) {
      out.emplace_back(all.begin() + displs[r], all.begin() + displs[r] + counts[r]);
    }
  }
  return out;
}

::testing::AssertionResult share_verdict(const ::testing::AssertionResult& root_result,
                                         MPI_Comm comm) {
  int ok = root_result ? 1 : 0;
  std::string msg = root_result.message();
  MPI_Bcast(&ok, 1, MPI_INT, 0, comm);
  int len = static_cast<int>(msg.size());
  MPI_Bcast(&len, 1, MPI_INT, 0, comm);
  msg.resize(static_cast<size_t>(len));
  MPI_Bcast(&msg[0], len, MPI_CHAR, 0, comm);
  if (ok) return ::testing::AssertionSuccess() << msg;
  return ::testing::AssertionFailure() << msg;
}

bool all_ranks(bool ok, MPI_Comm comm) {
  int v = ok ? 1 : 0, all = 0;
  MPI_Allreduce(&v, &all, 1, MPI_INT, MPI_MIN, comm);
  return all == 1;
}

}  // namespace test
}  // namespace ringattn
