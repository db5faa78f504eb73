#include "pos_blocks.h"

namespace ringattn {
namespace test {

int64_t PosBlock::rows() const {
  int64_t n = 0;
  for (const PosRun& r : runs) n += r.count;
  return n;
}

PosBlock run_block(int64_t len, int64_t start, int64_t stride, int64_t seq) {
  PosBlock b;
  if (len > 0) b.runs.push_back(PosRun{seq, start, len, stride});
  return b;
}

PosBlock shard_block(Scheme scheme, int64_t len, int32_t world, int32_t rank, int64_t seq) {
  PosBlock b;
  PosRun r[2];
  const int32_t n = scheme_runs(scheme, seq, len, world, rank, r);
  b.runs.assign(r, r + n);
  return b;
}

PosBlock packed_block(std::initializer_list<int64_t> lengths) {
  PosBlock b;
  int64_t seq = 0;
  for (int64_t len : lengths) {
    if (len > 0) b.runs.push_back(PosRun{seq, 0, len, 1});
    ++seq;
  }
  return b;
}

PosBlock join(const PosBlock& a, const PosBlock& b) {
  PosBlock r = a;
  r.runs.insert(r.runs.end(), b.runs.begin(), b.runs.end());
  return r;
}

}  // namespace test
}  // namespace ringattn
