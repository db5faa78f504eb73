// Global positions of local rows, and the sharding schemes that produce them.
//
// Shared by the CPU and CUDA kernels and by the runtime: everything here is plain arithmetic on
// integers, usable from host code and (under nvcc) from device code, so CPU unit tests cover it.
#pragma once

#include <stdint.h>

#if defined(__CUDACC__)
#define RINGATTN_HD __host__ __device__ __forceinline__
#else
#define RINGATTN_HD inline
#endif

namespace ringattn {

// A run of local rows: `count` consecutive local rows whose positions within sequence `seq`
// are start, start + stride, start + 2*stride, ...
// A local block (a rank's Q shard, or a K/V block visiting it) is an ordered list of runs whose
// counts add up to its number of rows.
struct PosRun {
  int64_t seq;
  int64_t start;
  int64_t count;
  int64_t stride;
};

// Ordered runs covering the rows of a block, in host memory. `device_runs`, when set, holds the
// same runs in device memory (a ring plan's upload, made once): CUDA kernels read those instead
// of uploading the runs themselves.
struct PosMap {
  const PosRun* runs;
  int32_t num_runs;
  const PosRun* device_runs = nullptr;
};

enum Scheme : int32_t { kContiguous = 0, kZigzag = 1, kStriped = 2 };

// Split n items into `parts` nearly equal parts: part i has n/parts items, plus one for the
// first n % parts parts. Sizes differ by at most one; parts may be empty.
RINGATTN_HD int64_t split_size(int64_t n, int64_t parts, int64_t i) {
  return n / parts + (i < n % parts ? 1 : 0);
}
RINGATTN_HD int64_t split_offset(int64_t n, int64_t parts, int64_t i) {
  const int64_t q = n / parts, r = n % parts;
  return i * q + (i < r ? i : r);
}

// Number of runs a scheme produces per sequence on one rank (at most).
RINGATTN_HD int32_t scheme_runs_per_seq(int32_t scheme) { return scheme == kZigzag ? 2 : 1; }

// Runs of positions that rank `rank` of `world` holds of one sequence of length `len` (sequence
// id `seq`). Writes up to 2 runs into out (empty runs are omitted) and returns how many.
RINGATTN_HD int32_t scheme_runs(int32_t scheme, int64_t seq, int64_t len, int32_t world,
                                int32_t rank, PosRun* out) {
  int32_t n = 0;
  if (scheme == kContiguous) {
    const int64_t c = split_size(len, world, rank);
    if (c > 0) out[n++] = PosRun{seq, split_offset(len, world, rank), c, 1};
  } else if (scheme == kZigzag) {
    const int64_t chunks = 2 * static_cast<int64_t>(world);
    const int64_t a = rank, b = chunks - 1 - rank;
    const int64_t ca = split_size(len, chunks, a), cb = split_size(len, chunks, b);
    if (ca > 0) out[n++] = PosRun{seq, split_offset(len, chunks, a), ca, 1};
    if (cb > 0) out[n++] = PosRun{seq, split_offset(len, chunks, b), cb, 1};
  } else {  // striped
    const int64_t c = len > rank ? (len - rank + world - 1) / world : 0;
    if (c > 0) out[n++] = PosRun{seq, rank, c, world};
  }
  return n;
}

// Number of tokens rank `rank` holds of a sequence of length `len`.
RINGATTN_HD int64_t scheme_local_len(int32_t scheme, int64_t len, int32_t world, int32_t rank) {
  PosRun r[2];
  const int32_t n = scheme_runs(scheme, 0, len, world, rank, r);
  int64_t c = 0;
  for (int32_t i = 0; i < n; ++i) c += r[i].count;
  return c;
}

// The rank that holds position `pos` of a sequence of length `len`, and its local index there.
RINGATTN_HD void scheme_owner(int32_t scheme, int64_t len, int32_t world, int64_t pos,
                              int32_t* rank, int64_t* local) {
  if (scheme == kStriped) {
    *rank = static_cast<int32_t>(pos % world);
    *local = pos / world;
    return;
  }
  const int64_t parts = scheme == kZigzag ? 2 * static_cast<int64_t>(world) : world;
  // Find the chunk: the first r chunks (r = len % parts) have one more item.
  const int64_t q = len / parts, r = len % parts;
  int64_t chunk;
  if (pos < r * (q + 1)) {
    chunk = pos / (q + 1);
  } else {
    chunk = r + (pos - r * (q + 1)) / q;
  }
  const int64_t within = pos - split_offset(len, parts, chunk);
  if (scheme == kContiguous) {
    *rank = static_cast<int32_t>(chunk);
    *local = within;
  } else if (chunk < world) {
    *rank = static_cast<int32_t>(chunk);
    *local = within;
  } else {
    const int64_t rk = parts - 1 - chunk;
    *rank = static_cast<int32_t>(rk);
    *local = split_size(len, parts, rk) + within;
  }
}

// Position and sequence of local row `row` of a block described by `map` (linear in num_runs;
// kernels expand tiles once rather than calling this per element).
RINGATTN_HD void posmap_lookup(const PosMap& map, int64_t row, int64_t* seq, int64_t* pos) {
  for (int32_t i = 0; i < map.num_runs; ++i) {
    const PosRun& r = map.runs[i];
    if (row < r.count) {
      *seq = r.seq;
      *pos = r.start + row * r.stride;
      return;
    }
    row -= r.count;
  }
  *seq = -1;
  *pos = 0;
}

RINGATTN_HD int64_t posmap_rows(const PosMap& map) {
  int64_t c = 0;
  for (int32_t i = 0; i < map.num_runs; ++i) c += map.runs[i].count;
  return c;
}

}  // namespace ringattn
