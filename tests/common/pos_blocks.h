// Building query/key blocks for tests: a block owns its PosRuns and gives both the PosMap that
// kernels take and the expanded RowPositions that the reference takes.
#pragma once

#include <stdint.h>

#include <initializer_list>
#include <vector>

#include "positions.h"
#include "reference.h"

namespace ringattn {
namespace test {

struct PosBlock {
  std::vector<PosRun> runs;
  PosMap map() const { return PosMap{runs.data(), static_cast<int32_t>(runs.size())}; }
  int64_t rows() const;
  RowPositions positions() const { return row_positions(map(), rows()); }
};

// Positions [start, start + len) of sequence `seq`, step `stride`.
PosBlock run_block(int64_t len, int64_t start = 0, int64_t stride = 1, int64_t seq = 0);
// What rank `rank` of `world` holds of a sequence of length `len` under `scheme`.
PosBlock shard_block(Scheme scheme, int64_t len, int32_t world, int32_t rank, int64_t seq = 0);
// Several whole sequences packed one after the other (sequence ids 0, 1, ...).
PosBlock packed_block(std::initializer_list<int64_t> lengths);
// Blocks one after the other.
PosBlock join(const PosBlock& a, const PosBlock& b);

}  // namespace test
}  // namespace ringattn
