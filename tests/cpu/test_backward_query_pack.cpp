// The backward's prepared query side (BwdParams::query_pack, cpu::pack_backward_queries): the ring
// runs one backward call per key chunk over the same query rows, packing Q, dO, LSE and Delta
// once. Those calls must give bitwise the gradients of the same calls packing per call, for every
// dtype, GQA ratio, stride, mask, sharding and thread count, and they must really read the pack.
#include <gtest/gtest.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "attention_cpu.h"
#include "kernel_runs.h"
#include "pos_blocks.h"
#include "reference.h"

namespace ringattn {
namespace test {
namespace {

const MaskSpec kFull = make_mask_spec(false, -1, -1);
const MaskSpec kCausal = make_mask_spec(true, -1, -1);

// A query block against key rows split into chunks (one backward call each).
struct Problem {
  KernelSpec s;  // s.kb: the chunks one after the other
  std::vector<PosBlock> chunks;
};

Problem make_problem(KernelSpec s, const std::vector<PosBlock>& chunks) {
  PosBlock all = chunks[0];
  for (size_t i = 1; i < chunks.size(); ++i) all = join(all, chunks[i]);
  s.kb = all;
  return Problem{s, chunks};
}

// How the calls get their query side.
enum class Pack {
  kPerCall,        // query_pack = nullptr: every call packs for itself
  kOnce,           // packed once before the calls, with the calls' thread count
  kOnceOneThread,  // packed once by one thread, used by the calls' thread count
  kOnceThenNaN     // packed once, then overwritten with NaN: the calls must show it
};

struct Grads {
  std::vector<double> dq, dk, dv;
};

TensorRef rows_from(TensorRef t, int64_t row0) {
  t.data = static_cast<char*>(t.data) + row0 * t.stride_s * (t.dtype == kF32 ? 4 : 2);
  return t;
}

// Forward over all key rows (the full-attention LSE) and Delta, then the backward calls. In
// accumulate mode (the ring's), dQ/dK/dV are float32 accumulators starting from nonzero values;
// otherwise there is a single chunk and they are written in the input dtype over a poison.
Grads run(const Problem& pr, const KernelInputs& in, bool accumulate, Pack pack, int threads) {
  const KernelSpec& s = pr.s;
  const int64_t sq = s.qb.rows(), sk = s.kb.rows();
  BackwardInputs b(s, in);

  const DType gt = accumulate ? kF32 : s.dtype;
  HostTensor dq(gt, s.batch, sq, s.hq, s.d, s.head_pad);
  HostTensor dk(gt, s.batch, sk, s.hkv, s.d, s.head_pad);
  HostTensor dv(gt, s.batch, sk, s.hkv, s.d, s.head_pad);
  if (accumulate) {
    auto ramp = [](int64_t n) {
      std::vector<double> x(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) x[static_cast<size_t>(i)] = 0.25 * (i % 7) - 0.5;
      return x;
    };
    dq.fill(ramp(s.batch * sq * s.hq * s.d));
    dk.fill(ramp(s.batch * sk * s.hkv * s.d));
    dv.fill(ramp(s.batch * sk * s.hkv * s.d));
  } else {
    dq.poison();
    dk.poison();
    dv.poison();
  }

  BwdParams p = b.params(s);  // k, v, dk, dv and sk: per chunk below
  p.dq = dq.ref();
  p.accumulate = accumulate;

  std::unique_ptr<void, decltype(&free)> mem(nullptr, &free);
  if (pack != Pack::kPerCall) {
    const size_t bytes = cpu::backward_query_pack_bytes(p);
    EXPECT_GT(bytes, 0u);
    mem.reset(aligned_alloc(64, (bytes + 63) / 64 * 64));
    float* f32 = static_cast<float*>(mem.get());
    // Whatever the pack does not write must not be read: start from NaN.
    for (size_t i = 0; i < bytes / sizeof(float); ++i) f32[i] = NAN;
    omp_set_num_threads(pack == Pack::kOnceOneThread ? 1 : threads);
    cpu::pack_backward_queries(p, mem.get());
    if (pack == Pack::kOnceThenNaN) {
      for (size_t i = 0; i < bytes / sizeof(float); ++i) f32[i] = NAN;
    }
    p.query_pack = mem.get();
  }

  omp_set_num_threads(threads);
  int64_t row0 = 0;
  for (const PosBlock& c : pr.chunks) {
    BwdParams call = p;
    call.sk = c.rows();
    call.k = rows_from(b.k.ref(), row0);
    call.v = rows_from(b.v.ref(), row0);
    call.dk = rows_from(dk.ref(), row0);
    call.dv = rows_from(dv.ref(), row0);
    call.k_pos = c.map();
    cpu::attention_backward(call);
    row0 += c.rows();
  }
  return Grads{dq.values(), dk.values(), dv.values()};
}

bool bitwise_equal(const std::vector<double>& a, const std::vector<double>& b) {
  return a.size() == b.size() && memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0;
}

bool any_nan(const std::vector<double>& a) {
  for (double x : a) {
    if (isnan(x)) return true;
  }
  return false;
}

void expect_pack_changes_nothing(const Problem& pr, bool accumulate = true) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed) + ": " + pr.s.describe() + ", " +
               std::to_string(pr.chunks.size()) + " key chunks");
  const KernelInputs in = make_inputs(pr.s, seed);
  const int saved = omp_get_max_threads();
  for (int threads : {1, 2, 3}) {
    SCOPED_TRACE("threads " + std::to_string(threads));
    const Grads base = run(pr, in, accumulate, Pack::kPerCall, threads);
    ASSERT_FALSE(any_nan(base.dq) || any_nan(base.dk) || any_nan(base.dv));
    for (Pack pack : {Pack::kOnce, Pack::kOnceOneThread}) {
      const Grads got = run(pr, in, accumulate, pack, threads);
      EXPECT_TRUE(bitwise_equal(got.dq, base.dq)) << "dQ, pack mode " << static_cast<int>(pack);
      EXPECT_TRUE(bitwise_equal(got.dk, base.dk)) << "dK, pack mode " << static_cast<int>(pack);
      EXPECT_TRUE(bitwise_equal(got.dv, base.dv)) << "dV, pack mode " << static_cast<int>(pack);
    }
  }
  omp_set_num_threads(saved);
}

TEST(BackwardQueryPack, ChunkedAccumulateCallsAreBitwiseThoseWithoutPack) {
  // Tile edges: 200 query rows (not a multiple of the 64-row query tile), uneven key chunks.
  KernelSpec s = whole_sequence_spec(kBF16, 0, 64, kCausal, 4, 2);
  s.qb = run_block(200);
  expect_pack_changes_nothing(
      make_problem(s, {run_block(70), run_block(0, 70), run_block(130, 70), run_block(1, 200)}));
  KernelSpec f = whole_sequence_spec(kF32, 0, 128, kFull, 2, 2);
  f.qb = run_block(65);
  expect_pack_changes_nothing(make_problem(f, {run_block(64), run_block(129, 64)}));
}

TEST(BackwardQueryPack, HoldsForDtypesGqaStridesBatchesAndWindows) {
  KernelSpec h = whole_sequence_spec(kF16, 0, 40, make_mask_spec(true, 50, -1), 8, 1);
  h.qb = run_block(129);
  h.batch = 2;
  h.head_pad = 8;
  expect_pack_changes_nothing(make_problem(h, {run_block(60), run_block(69, 60)}));
  KernelSpec w = whole_sequence_spec(kBF16, 0, 256, make_mask_spec(false, 20, 10), 2, 1);
  w.qb = run_block(100);
  expect_pack_changes_nothing(make_problem(w, {run_block(50), run_block(50, 50)}));
}

TEST(BackwardQueryPack, HoldsForRingShardsAndPackedSequences) {
  // A zigzag query shard against the chunks of another rank's shard, as in a ring step.
  KernelSpec z = whole_sequence_spec(kBF16, 0, 64, kCausal, 2, 1);
  z.qb = shard_block(kZigzag, 1000, 4, 1);
  const PosBlock other = shard_block(kZigzag, 1000, 4, 3);
  ASSERT_EQ(other.runs.size(), 2u);
  const PosRun& r0 = other.runs[0];
  const PosRun& r1 = other.runs[1];
  expect_pack_changes_nothing(make_problem(z, {run_block(r0.count, r0.start, r0.stride, r0.seq),
                                               run_block(r1.count, r1.start, r1.stride, r1.seq)}));
  KernelSpec st = whole_sequence_spec(kF32, 0, 32, make_mask_spec(true, 60, -1), 2, 2);
  st.qb = shard_block(kStriped, 1000, 3, 2);
  expect_pack_changes_nothing(make_problem(st, {shard_block(kStriped, 1000, 3, 0)}));
  KernelSpec pk = whole_sequence_spec(kF16, 0, 64, kCausal, 4, 2);
  pk.qb = packed_block({7, 129, 60});
  expect_pack_changes_nothing(
      make_problem(pk, {packed_block({7, 100}), run_block(29, 100, 1, 1), run_block(60, 0, 1, 2)}));
}

TEST(BackwardQueryPack, SingleOverwritingCallIsBitwiseThatWithoutPack) {
  KernelSpec s = whole_sequence_spec(kBF16, 0, 96, kCausal, 4, 4);
  s.qb = run_block(150);
  expect_pack_changes_nothing(make_problem(s, {run_block(150)}), /*accumulate=*/false);
}

// Guards the tests above against a kernel that ignores the pack: a pack turned to NaN after
// packing must reach the gradients.
TEST(BackwardQueryPack, CallsReadThePack) {
  KernelSpec s = whole_sequence_spec(kF32, 0, 64, kFull, 2, 1);
  s.qb = run_block(80);
  const Problem pr = make_problem(s, {run_block(40), run_block(40, 40)});
  const KernelInputs in = make_inputs(pr.s, fresh_seed());
  const int saved = omp_get_max_threads();
  const Grads g = run(pr, in, true, Pack::kOnceThenNaN, 2);
  omp_set_num_threads(saved);
  EXPECT_TRUE(any_nan(g.dq));
  EXPECT_TRUE(any_nan(g.dk));
  EXPECT_TRUE(any_nan(g.dv));
}

TensorRef heads_from(TensorRef t, int64_t h0) {
  t.data = static_cast<char*>(t.data) + h0 * t.stride_h * (t.dtype == kF32 ? 4 : 2);
  return t;
}

RowStatRef heads_from(RowStatRef r, int64_t h0) {
  r.data += h0 * r.stride_h;
  return r;
}

// The ring's head chunks: calls over a range of key/value heads (and their query heads) read
// their part of one pack (head-major) and give bitwise the whole call's gradients for those
// heads; a call with overwrite_kv writes dK/dV over whatever they held, as adding into zeros.
TEST(BackwardQueryPack, HeadRangeCallsReadTheirPartAndOverwriteKvWritesDkDv) {
  KernelSpec s = whole_sequence_spec(kBF16, 130, 64, kCausal, 6, 3);
  s.batch = 2;
  s.head_pad = 8;
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed) + ": " + s.describe());
  const KernelInputs in = make_inputs(s, seed);
  BackwardInputs b(s, in);
  const int64_t sq = s.qb.rows(), sk = s.kb.rows(), group = s.hq / s.hkv;
  const int saved = omp_get_max_threads();
  for (int threads : {1, 2}) {
    SCOPED_TRACE("threads " + std::to_string(threads));
    omp_set_num_threads(threads);
    // kv heads per call: all 3 at once, then (2, 1); dK/dV start as zeros (add) or NaN
    // (overwrite_kv).
    std::vector<double> dq_whole, dk_whole, dv_whole;
    for (int split = 0; split < 2; ++split) {
      for (bool overwrite : {false, true}) {
        HostTensor dq(kF32, s.batch, sq, s.hq, s.d, s.head_pad);
        HostTensor dk(kF32, s.batch, sk, s.hkv, s.d, s.head_pad);
        HostTensor dv(kF32, s.batch, sk, s.hkv, s.d, s.head_pad);
        dq.fill(std::vector<double>(static_cast<size_t>(s.batch * sq * s.hq * s.d), 0.5));
        const double start = overwrite ? NAN : 0.0;
        dk.fill(std::vector<double>(static_cast<size_t>(s.batch * sk * s.hkv * s.d), start));
        dv.fill(std::vector<double>(static_cast<size_t>(s.batch * sk * s.hkv * s.d), start));
        BwdParams p = b.params(s);
        p.dq = dq.ref();
        p.dk = dk.ref();
        p.dv = dv.ref();
        p.accumulate = true;
        p.overwrite_kv = overwrite;
        const size_t bytes = cpu::backward_query_pack_bytes(p);
        std::unique_ptr<void, decltype(&free)> mem(aligned_alloc(64, (bytes + 63) / 64 * 64),
                                                   &free);
        cpu::pack_backward_queries(p, mem.get());
        p.query_pack = mem.get();
        const std::vector<std::pair<int64_t, int64_t>> calls =
            split == 0 ? std::vector<std::pair<int64_t, int64_t>>{{0, 3}}
                       : std::vector<std::pair<int64_t, int64_t>>{{0, 2}, {2, 3}};
        for (const auto& [h0, h1] : calls) {
          BwdParams call = p;
          call.hkv = h1 - h0;
          call.hq = call.hkv * group;
          call.q = heads_from(p.q, h0 * group);
          call.dout = heads_from(p.dout, h0 * group);
          call.o = heads_from(p.o, h0 * group);
          call.dq = heads_from(p.dq, h0 * group);
          call.lse = heads_from(p.lse, h0 * group);
          call.delta = heads_from(p.delta, h0 * group);
          call.k = heads_from(p.k, h0);
          call.v = heads_from(p.v, h0);
          call.dk = heads_from(p.dk, h0);
          call.dv = heads_from(p.dv, h0);
          call.query_pack =
              static_cast<const char*>(p.query_pack) + bytes / static_cast<size_t>(s.hkv) * h0;
          cpu::attention_backward(call);
        }
        ASSERT_FALSE(any_nan(dk.values()) || any_nan(dv.values()));
        if (split == 0 && !overwrite) {
          dq_whole = dq.values();
          dk_whole = dk.values();
          dv_whole = dv.values();
          ASSERT_NE(dk_whole, std::vector<double>(dk_whole.size(), 0.0));
          continue;
        }
        EXPECT_TRUE(bitwise_equal(dq.values(), dq_whole)) << split << overwrite;
        // Written or added to zeros: equal values (a zero's sign may differ).
        EXPECT_TRUE(dk.values() == dk_whole) << split << overwrite;
        EXPECT_TRUE(dv.values() == dv_whole) << split << overwrite;
      }
    }
  }
  omp_set_num_threads(saved);
}

TEST(BackwardQueryPack, NothingToPackForAnEmptyBatchOrQueryBlock) {
  BwdParams p{};
  p.batch = 0;
  p.sq = 100;
  p.hq = 2;
  p.hkv = 1;
  p.d = 64;
  EXPECT_EQ(cpu::backward_query_pack_bytes(p), 0u);
  p.batch = 1;
  p.sq = 0;
  EXPECT_EQ(cpu::backward_query_pack_bytes(p), 0u);
  p.sq = 100;
  EXPECT_GT(cpu::backward_query_pack_bytes(p), 0u);
}

}  // namespace
}  // namespace test
}  // namespace ringattn
