// Test support shared by the cpu, gpu and dist suites: the float64 reference attention, the
// "naive same dtype" implementation of the 2x rule, dtype conversion, host tensors with poisoning,
// seeded random inputs, and the error checks of the correctness standard (DESIGN.md).
//
// Conventions
//   * Dense tensors are std::vector<double> in the layout [B, S, H, D] (contiguous, row-major);
//     row statistics (LSE, Delta) are [B, H, S]. Values stored in a lower dtype are held as the
//     exact double of that dtype's value.
//   * Every query row and every key row carries its own (sequence id, position): RowPositions.
//     A whole sequence is positions 0..S-1 of sequence 0 (whole_sequence); a sharded or packed
//     block comes from its PosMap (row_positions); any other list (zigzag or striped shards,
//     offsets) can be written directly. Query row i sees key row j iff
//     mask_visible(mask, qseq[i], qpos[i], kseq[j], kpos[j]) (kernels/common/mask.h). The same
//     positions apply to every batch entry.
//   * GQA: query head h reads kv head h / (hq / hkv).
//   * A query row that sees no key has O = 0 and LSE = -inf, in the reference as in the kernels.
//
// Typical kernel test:
//   AttnCase c = ...;                                  // shape, scale, mask, positions
//   auto q = random_values(n, seed, dtype), ...;       // inputs exactly representable in dtype
//   HostTensor tq(dtype, B, S, H, D); tq.fill(q); ...   // device/kernel buffers
//   HostTensor to(...); to.poison();                   // unwritten outputs become NaN
//   ... run the kernel ...
//   FwdResult ref = reference_forward(c, q, k, v);
//   FwdResult naive = naive_forward(c, q, k, v, dtype);
//   EXPECT_TRUE(within_2x_naive("O", to.values(), ref.o, naive.o, dtype));
#pragma once

#include <gtest/gtest.h>
#include <stdint.h>

#include <string>
#include <vector>

#include "local_params.h"
#include "mask.h"
#include "positions.h"

namespace ringattn {
namespace test {

// ---- problem description ----------------------------------------------------------------------

struct RowPositions {
  std::vector<int64_t> seq;
  std::vector<int64_t> pos;
  int64_t rows() const { return static_cast<int64_t>(seq.size()); }
};

// Positions 0..len-1 of sequence `seq`.
RowPositions whole_sequence(int64_t len, int64_t seq = 0);
// The first `rows` rows of a PosMap.
RowPositions row_positions(const PosMap& map, int64_t rows);
// Concatenation (a block made of several runs or sequences).
RowPositions concat(const RowPositions& a, const RowPositions& b);

struct AttnShape {
  int64_t batch, sq, sk, hq, hkv, d;
  int64_t q_elems() const { return batch * sq * hq * d; }
  int64_t kv_elems() const { return batch * sk * hkv * d; }
  int64_t lse_elems() const { return batch * hq * sq; }
};

struct AttnCase {
  AttnShape shape;
  double scale;
  MaskSpec mask;
  RowPositions qpos;  // sq rows
  RowPositions kpos;  // sk rows
};

// ---- reference (float64) and naive (same dtype) ------------------------------------------------

struct FwdResult {
  std::vector<double> o;    // [B, Sq, Hq, D]
  std::vector<double> lse;  // [B, Hq, Sq], -inf for rows that see no key
};

struct BwdResult {
  std::vector<double> dq;  // [B, Sq, Hq, D]
  std::vector<double> dk;  // [B, Sk, Hkv, D]
  std::vector<double> dv;  // [B, Sk, Hkv, D]
};

// Exact attention in float64 (softmax with max subtraction; OpenMP over batch and heads).
FwdResult reference_forward(const AttnCase& c, const std::vector<double>& q,
                            const std::vector<double>& k, const std::vector<double>& v);
// Gradients of sum(O * dout) in float64, from scratch (no LSE/Delta inputs).
BwdResult reference_backward(const AttnCase& c, const std::vector<double>& q,
                             const std::vector<double>& k, const std::vector<double>& v,
                             const std::vector<double>& dout);

// The plain unfused computation a user would write in `dtype`: S = QK^T, S *= scale, softmax,
// O = PV (and dP = dO V^T, Delta = rowsum(dO * O), dS = P (dP - Delta), dQ = dS K * scale,
// dK = dS^T Q * scale, dV = P^T dO), each GEMM accumulating in float32 and every intermediate
// rounded to `dtype` (for kF32 that is plain float arithmetic). Its LSE is max + log(sum) of the
// rounded scores, in float32.
FwdResult naive_forward(const AttnCase& c, const std::vector<double>& q,
                        const std::vector<double>& k, const std::vector<double>& v, DType dtype);
BwdResult naive_backward(const AttnCase& c, const std::vector<double>& q,
                         const std::vector<double>& k, const std::vector<double>& v,
                         const std::vector<double>& dout, DType dtype);

// ---- dtypes ------------------------------------------------------------------------------------

const char* dtype_name(DType t);
size_t dtype_bytes(DType t);
// Round to the nearest value of `t` (ties to even), returned as double.
double round_to(double x, DType t);
uint16_t f16_bits(double x);
double f16_value(uint16_t bits);
uint16_t bf16_bits(double x);
double bf16_value(uint16_t bits);

// ---- host tensors ------------------------------------------------------------------------------

// A [B, S, H, D] tensor in one dtype. `head_pad` extra elements after each head row make the
// strides non-dense (stride_h = D + head_pad), to check that kernels honour strides.
class HostTensor {
 public:
  HostTensor(DType dtype, int64_t b, int64_t s, int64_t h, int64_t d, int64_t head_pad = 0);
  TensorRef ref();
  DType dtype() const { return dtype_; }
  void fill(const std::vector<double>& values);  // rounds to dtype; size B*S*H*D
  std::vector<double> values() const;            // dense [B, S, H, D]
  void poison();                                 // every element (padding included) NaN
  void* data() { return bytes_.data(); }
  size_t size_bytes() const { return bytes_.size(); }  // padding included

 private:
  size_t offset(int64_t b, int64_t s, int64_t h) const;
  DType dtype_;
  int64_t b_, s_, h_, d_, pad_;
  std::vector<unsigned char> bytes_;
};

// float32 row statistics [B, H, S] (LSE, Delta).
class HostRowStat {
 public:
  HostRowStat(int64_t b, int64_t h, int64_t s);
  RowStatRef ref();
  void fill(const std::vector<double>& values);
  std::vector<double> values() const;
  void poison();
  size_t size_bytes() const { return data_.size() * sizeof(float); }

 private:
  int64_t b_, h_, s_;
  std::vector<float> data_;
};

// ---- inputs ------------------------------------------------------------------------------------

// A seed from std::random_device: every case runs on fresh data; print it (SCOPED_TRACE) so that
// a failure can be replayed with RINGATTN_TEST_SEED=<seed>, which fixes every fresh_seed().
uint64_t fresh_seed();
// n values uniform in [lo, hi), rounded to `t`.
std::vector<double> random_values(size_t n, uint64_t seed, DType t, double lo = -1.0,
                                  double hi = 1.0);

// ---- checks ------------------------------------------------------------------------------------

// max |a - ref|. Where ref is -inf, a must be -inf exactly (else the error is +inf); NaN in a
// gives +inf.
double max_abs_error(const std::vector<double>& a, const std::vector<double>& ref);
double max_abs(const std::vector<double>& a);  // over the finite entries

// Absolute error floor of the 2x rule, per unit of output magnitude. The rule compares against
// twice the naive error; the floor only matters where the naive computation happens to be
// (nearly) exact, e.g. one visible key (O = V exactly) or tiny tensors, while ours still rounds
// a few times (the folded softmax scale, exp, the output). About one unit in the last place at
// 1.0 of each dtype covers that without hiding real errors: f16 2^-10 -> 1e-3, bf16 2^-7 -> 8e-3;
// f32 2^-23 -> 1e-6 (8 ulp: float32 sums over long rows in a different order than naive's).
double dtype_floor(DType t);

// The correctness standard: max|ours - ref| <= 2 * max|naive - ref| + floor(dtype) * max(1,
// max|ref|) (the floor scales with the output's magnitude so that large gradients are judged
// relatively). Reports name, both errors and the bound on failure; prints them for every check
// when the environment has RINGATTN_TEST_VERBOSE set.
::testing::AssertionResult within_2x_naive(const std::string& name, const std::vector<double>& ours,
                                           const std::vector<double>& ref,
                                           const std::vector<double>& naive, DType dtype);

}  // namespace test
}  // namespace ringattn
