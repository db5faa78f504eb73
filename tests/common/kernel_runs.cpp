#include "kernel_runs.h"

#include <math.h>

#include <sstream>

#include "attention_cpu.h"

namespace ringattn {
namespace test {

std::string KernelSpec::describe() const {
  std::ostringstream os;
  os << dtype_name(dtype) << " B=" << batch << " Sq=" << qb.rows() << " Sk=" << kb.rows()
     << " Hq=" << hq << " Hkv=" << hkv << " D=" << d << " window=(" << mask.left << ","
     << mask.right << ") q_runs=" << qb.runs.size() << " k_runs=" << kb.runs.size()
     << " head_pad=" << head_pad;
  return os.str();
}

AttnCase KernelSpec::attn_case() const {
  AttnCase c;
  c.shape = AttnShape{batch, qb.rows(), kb.rows(), hq, hkv, d};
  c.scale = static_cast<float>(1.0 / sqrt(static_cast<double>(d)));
  c.mask = mask;
  c.qpos = qb.positions();
  c.kpos = kb.positions();
  return c;
}

KernelInputs make_inputs(const KernelSpec& s, uint64_t seed) {
  const AttnShape sh = s.attn_case().shape;
  KernelInputs in;
  in.q = random_values(static_cast<size_t>(sh.q_elems()), seed, s.dtype);
  in.k = random_values(static_cast<size_t>(sh.kv_elems()), seed + 1, s.dtype);
  in.v = random_values(static_cast<size_t>(sh.kv_elems()), seed + 2, s.dtype);
  in.dout = random_values(static_cast<size_t>(sh.q_elems()), seed + 3, s.dtype);
  return in;
}

namespace {

FwdParams fwd_params(const KernelSpec& s, HostTensor& q, HostTensor& k, HostTensor& v,
                     HostTensor& o, HostRowStat& lse, OutMode mode) {
  FwdParams p;
  p.batch = s.batch;
  p.sq = s.qb.rows();
  p.sk = s.kb.rows();
  p.hq = s.hq;
  p.hkv = s.hkv;
  p.d = s.d;
  p.q = q.ref();
  p.k = k.ref();
  p.v = v.ref();
  p.o = o.ref();
  p.lse = lse.ref();
  p.scale = static_cast<float>(1.0 / sqrt(static_cast<double>(s.d)));
  p.mask = s.mask;
  p.q_pos = s.qb.map();
  p.k_pos = s.kb.map();
  p.out_mode = mode;
  return p;
}

}  // namespace

ForwardOut run_forward(const KernelSpec& s, const KernelInputs& in, OutMode mode) {
  const int64_t sq = s.qb.rows(), sk = s.kb.rows();
  HostTensor q(s.dtype, s.batch, sq, s.hq, s.d, s.head_pad);
  HostTensor k(s.dtype, s.batch, sk, s.hkv, s.d, s.head_pad);
  HostTensor v(s.dtype, s.batch, sk, s.hkv, s.d, s.head_pad);
  HostTensor o(mode == kOutFinal ? s.dtype : kF32, s.batch, sq, s.hq, s.d, s.head_pad);
  HostRowStat lse(s.batch, s.hq, sq);
  q.fill(in.q);
  k.fill(in.k);
  v.fill(in.v);
  o.poison();
  lse.poison();
  cpu::attention_forward(fwd_params(s, q, k, v, o, lse, mode));
  return ForwardOut{o.values(), lse.values()};
}

ForwardOut run_forward_merge(const KernelSpec& s, const KernelInputs& in, const ForwardOut& prior) {
  const int64_t sq = s.qb.rows(), sk = s.kb.rows();
  HostTensor q(s.dtype, s.batch, sq, s.hq, s.d, s.head_pad);
  HostTensor k(s.dtype, s.batch, sk, s.hkv, s.d, s.head_pad);
  HostTensor v(s.dtype, s.batch, sk, s.hkv, s.d, s.head_pad);
  HostTensor o(kF32, s.batch, sq, s.hq, s.d, s.head_pad);
  HostRowStat lse(s.batch, s.hq, sq);
  q.fill(in.q);
  k.fill(in.k);
  v.fill(in.v);
  o.poison();  // padding stays NaN; the rows get the prior result
  o.fill(prior.o);
  lse.fill(prior.lse);
  cpu::attention_forward(fwd_params(s, q, k, v, o, lse, kOutMergeF32));
  return ForwardOut{o.values(), lse.values()};
}

BackwardInputs::BackwardInputs(const KernelSpec& s, const KernelInputs& in)
    : q(s.dtype, s.batch, s.qb.rows(), s.hq, s.d, s.head_pad),
      k(s.dtype, s.batch, s.kb.rows(), s.hkv, s.d, s.head_pad),
      v(s.dtype, s.batch, s.kb.rows(), s.hkv, s.d, s.head_pad),
      o(s.dtype, s.batch, s.qb.rows(), s.hq, s.d, s.head_pad),
      dout(s.dtype, s.batch, s.qb.rows(), s.hq, s.d, s.head_pad),
      lse(s.batch, s.hq, s.qb.rows()),
      delta(s.batch, s.hq, s.qb.rows()) {
  q.fill(in.q);
  k.fill(in.k);
  v.fill(in.v);
  dout.fill(in.dout);
  o.poison();
  lse.poison();
  delta.poison();
  cpu::attention_forward(fwd_params(s, q, k, v, o, lse, kOutFinal));
  cpu::compute_delta(s.batch, s.qb.rows(), s.hq, s.d, dout.ref(), o.ref(), delta.ref());
}

BwdParams BackwardInputs::params(const KernelSpec& s) {
  BwdParams p{};
  p.batch = s.batch;
  p.sq = s.qb.rows();
  p.sk = s.kb.rows();
  p.hq = s.hq;
  p.hkv = s.hkv;
  p.d = s.d;
  p.q = q.ref();
  p.k = k.ref();
  p.v = v.ref();
  p.dout = dout.ref();
  p.lse = lse.ref();
  p.delta = delta.ref();
  p.scale = static_cast<float>(1.0 / sqrt(static_cast<double>(s.d)));
  p.mask = s.mask;
  p.q_pos = s.qb.map();
  p.k_pos = s.kb.map();
  return p;
}

BackwardOut run_backward(const KernelSpec& s, const KernelInputs& in) {
  const int64_t sq = s.qb.rows(), sk = s.kb.rows();
  BackwardInputs b(s, in);
  HostTensor dq(s.dtype, s.batch, sq, s.hq, s.d, s.head_pad);
  HostTensor dk(s.dtype, s.batch, sk, s.hkv, s.d, s.head_pad);
  HostTensor dv(s.dtype, s.batch, sk, s.hkv, s.d, s.head_pad);
  dq.poison();
  dk.poison();
  dv.poison();
  BwdParams p = b.params(s);
  p.dq = dq.ref();
  p.dk = dk.ref();
  p.dv = dv.ref();
  p.accumulate = false;
  cpu::attention_backward(p);
  return BackwardOut{dq.values(), dk.values(), dv.values()};
}

KernelSpec whole_sequence_spec(DType t, int64_t s, int64_t d, MaskSpec m, int64_t hq, int64_t hkv) {
  KernelSpec k;
  k.dtype = t;
  k.d = d;
  k.hq = hq;
  k.hkv = hkv;
  k.qb = run_block(s);
  k.kb = run_block(s);
  k.mask = m;
  return k;
}

::testing::AssertionResult unseen_rows_are_zero(const AttnShape& sh, const std::vector<double>& o,
                                                const std::vector<double>& ref_lse) {
  for (int64_t b = 0; b < sh.batch; ++b) {
    for (int64_t h = 0; h < sh.hq; ++h) {
      for (int64_t i = 0; i < sh.sq; ++i) {
        if (ref_lse[(b * sh.hq + h) * sh.sq + i] != -INFINITY) continue;
        for (int64_t x = 0; x < sh.d; ++x) {
          if (o[((b * sh.sq + i) * sh.hq + h) * sh.d + x] != 0.0) {
            return ::testing::AssertionFailure() << "row " << i << " sees no key but O != 0";
          }
        }
      }
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace test
}  // namespace ringattn
