// Runs of the host kernels on test tensors (kernels/cpu/attention_cpu.h): inputs are made from a
// seed, outputs are poisoned before the call and come back as dense doubles for the reference
// checks. Shared by the cpu kernel tests.
#pragma once

#include <gtest/gtest.h>
#include <stdint.h>

#include <string>
#include <vector>

#include "local_params.h"
#include "pos_blocks.h"
#include "reference.h"

namespace ringattn {
namespace test {

// One local attention problem: a query block against a key block.
struct KernelSpec {
  DType dtype = kF32;
  int64_t batch = 1, hq = 2, hkv = 1, d = 64;
  PosBlock qb, kb;
  MaskSpec mask{-1, -1};
  int64_t head_pad = 0;  // non-dense strides when > 0
  std::string describe() const;
  AttnCase attn_case() const;
};

// A whole sequence of `s` tokens (positions 0..s-1, one sequence) against itself.
KernelSpec whole_sequence_spec(DType t, int64_t s, int64_t d, MaskSpec m, int64_t hq = 2,
                               int64_t hkv = 1);

// Rows that see no key (reference LSE = -inf) must have O exactly 0. o: [B, Sq, Hq, D],
// ref_lse: [B, Hq, Sq].
::testing::AssertionResult unseen_rows_are_zero(const AttnShape& sh, const std::vector<double>& o,
                                                const std::vector<double>& ref_lse);

// Inputs of one spec, exactly representable in its dtype.
struct KernelInputs {
  std::vector<double> q, k, v, dout;
};
KernelInputs make_inputs(const KernelSpec& s, uint64_t seed);

struct ForwardOut {
  std::vector<double> o;    // [B, Sq, Hq, D] in the dtype of the mode's output
  std::vector<double> lse;  // [B, Hq, Sq]
};

// attention_forward with kOutFinal (O in s.dtype) or kOutPartialF32 (O float32).
ForwardOut run_forward(const KernelSpec& s, const KernelInputs& in, OutMode mode);

// attention_forward with kOutMergeF32 into an existing partial result (o_in float32, lse_in).
ForwardOut run_forward_merge(const KernelSpec& s, const KernelInputs& in, const ForwardOut& prior);

// What a backward call reads, made as a single step makes it: the inputs in s.dtype, then the
// forward (O in s.dtype, LSE) and compute_delta from that O.
struct BackwardInputs {
  BackwardInputs(const KernelSpec& s, const KernelInputs& in);
  HostTensor q, k, v, o, dout;
  HostRowStat lse, delta;
  // The backward's params over these tensors (the whole key block, scale 1/sqrt(D)); the
  // outputs (dq, dk, dv) and the mode are the caller's to set.
  BwdParams params(const KernelSpec& s);
};

// The backward as a single step runs it: BackwardInputs, then attention_backward writing
// dQ/dK/dV in s.dtype.
struct BackwardOut {
  std::vector<double> dq, dk, dv;
};
BackwardOut run_backward(const KernelSpec& s, const KernelInputs& in);

}  // namespace test
}  // namespace ringattn
