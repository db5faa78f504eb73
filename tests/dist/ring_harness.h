// One distributed attention case end to end: global random inputs shared by every rank, each
// rank's shard by the scheme, the ring forward (and backward) through the C API on poisoned
// outputs, the local results gathered on rank 0 in global order, and the checks of the
// correctness standard against the float64 reference of the whole problem.
#pragma once

#include <mpi.h>

#include <ostream>
#include <string>
#include <vector>

#include "dist_util.h"
#include "ringattn/ringattn_mpi.h"

namespace ringattn {
namespace test {

struct RingCase {
  std::string name;
  ringattn_scheme_t scheme = RINGATTN_SCHEME_ZIGZAG;
  GlobalLayout layout;
  int64_t hq = 2, hkv = 1, d = 32;
  DType dtype = kF32;
  bool causal = false;
  int64_t window_left = -1, window_right = -1;
  bool backward = false;
  int64_t head_pad = 0;  // non-dense strides in the local tensors
  bool with_lse = true;  // false: the forward gets lse = NULL (O only; the backward needs it)
  ringattn_local_kernel_t local_kernel = RINGATTN_LOCAL_KERNEL_OWN;
};
std::string describe(const RingCase& c);
inline void PrintTo(const RingCase& c, std::ostream* os) { *os << describe(c); }

// Global results in [B, rows, H, D] / [B, H, rows] order (valid on rank 0 only).
struct RingResult {
  bool ok = true;     // every API call succeeded on every rank
  std::string error;  // the first failure, with its rank
  std::vector<double> o, lse, dq, dk, dv;
  std::vector<std::vector<double>> local;  // this rank's raw outputs, for bitwise comparisons
};

// Gathers every rank's local outputs (rows in the scheme's order; gradients only for backward
// cases that succeeded) into r's global-order outputs on rank 0 (collective over `comm`).
void assemble_global(const RingCase& c, const std::vector<double>& o,
                     const std::vector<double>& lse, const std::vector<double>& dq,
                     const std::vector<double>& dk, const std::vector<double>& dv, MPI_Comm comm,
                     RingResult* r);

// The global inputs of a case, from a seed.
struct RingInputs {
  std::vector<double> q, k, v, dout;
};
RingInputs make_inputs(const RingCase& c, uint64_t seed);

// Where the local tensors of a ring call live. The base keeps them on the host; a device
// placement (test_ring_cuda.cpp) hands the call device copies on its stream and brings the
// results back.
class Placement {
 public:
  virtual ~Placement() = default;
  // The address the call sees for the host bytes [host, host + bytes), copied there now;
  // nullptr on failure.
  virtual void* place(void* host, size_t bytes) {
    (void)bytes;
    return host;
  }
  // After a call: every placed host buffer holds what the call wrote; false on failure.
  virtual bool fetch() { return true; }
  virtual void* stream() { return nullptr; }
};

// Run the case on `ctx` (collective over its communicator `comm`), with the tensors where
// `placement` puts them (nullptr: on the host).
RingResult run_ring(const RingCase& c, const RingInputs& in, ringattn_context_t ctx, MPI_Comm comm,
                    Placement* placement = nullptr);

// Errors of a result against the float64 reference (rank 0), per output: O, LSE, dQ, dK, dV.
struct RingErrors {
  double e[5] = {0, 0, 0, 0, 0};
  double naive[5] = {0, 0, 0, 0, 0};
  double ref_max[5] = {0, 0, 0, 0, 0};  // max |ref| over the finite entries
};
// Checks every output against the 2x-naive rule; fills `errors` (rank 0). Returns rank 0's
// verdict on every rank of `comm`.
::testing::AssertionResult check_against_reference(const RingCase& c, const RingInputs& in,
                                                   const RingResult& r, MPI_Comm comm,
                                                   RingErrors* errors = nullptr);

// A context on `comm` with default options but those given (EXPECTs success).
ringattn_context_t make_context(MPI_Comm comm, int64_t timeout_ms = 0, int32_t chunks = 0,
                                int32_t ulysses_degree = 1,
                                int32_t placement = RINGATTN_PLACEMENT_ULYSSES_CONSECUTIVE);

}  // namespace test
}  // namespace ringattn
