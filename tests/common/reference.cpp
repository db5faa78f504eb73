#include "reference.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <cfloat>
#include <limits>
#include <random>
#include <sstream>

namespace ringattn {
namespace test {

// ---- positions ---------------------------------------------------------------------------------

RowPositions whole_sequence(int64_t len, int64_t seq) {
  RowPositions r;
  for (int64_t i = 0; i < len; ++i) {
    r.seq.push_back(seq);
    r.pos.push_back(i);
  }
  return r;
}

RowPositions row_positions(const PosMap& map, int64_t rows) {
  RowPositions r;
  for (int64_t i = 0; i < rows; ++i) {
    int64_t s, p;
    posmap_lookup(map, i, &s, &p);
    r.seq.push_back(s);
    r.pos.push_back(p);
  }
  return r;
}

RowPositions concat(const RowPositions& a, const RowPositions& b) {
  RowPositions r = a;
  r.seq.insert(r.seq.end(), b.seq.begin(), b.seq.end());
  r.pos.insert(r.pos.end(), b.pos.begin(), b.pos.end());
  return r;
}

namespace {

inline int64_t qidx(const AttnShape& s, int64_t b, int64_t i, int64_t h) {
  return ((b * s.sq + i) * s.hq + h) * s.d;
}
inline int64_t kidx(const AttnShape& s, int64_t b, int64_t j, int64_t h) {
  return ((b * s.sk + j) * s.hkv + h) * s.d;
}
inline int64_t lidx(const AttnShape& s, int64_t b, int64_t h, int64_t i) {
  return (b * s.hq + h) * s.sq + i;
}

bool visible(const AttnCase& c, int64_t i, int64_t j) {
  return mask_visible(c.mask, c.qpos.seq[i], c.qpos.pos[i], c.kpos.seq[j], c.kpos.pos[j]);
}

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

}  // namespace

// ---- float64 reference -------------------------------------------------------------------------

FwdResult reference_forward(const AttnCase& c, const std::vector<double>& q,
                            const std::vector<double>& k, const std::vector<double>& v) {
  const AttnShape& s = c.shape;
  FwdResult r;
  r.o.assign(static_cast<size_t>(s.q_elems()), 0.0);
  r.lse.assign(static_cast<size_t>(s.lse_elems()), kNegInf);
  const int64_t group = s.hq / s.hkv;
#pragma omp parallel for schedule(dynamic) collapse(2)
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int64_t h = 0; h < s.hq; ++h) {
      std::vector<double> sc(static_cast<size_t>(s.sk));
      const int64_t hk = h / group;
      for (int64_t i = 0; i < s.sq; ++i) {
        double mx = kNegInf;
        const double* qi = &q[qidx(s, b, i, h)];
        for (int64_t j = 0; j < s.sk; ++j) {
          if (!visible(c, i, j)) {
            sc[j] = kNegInf;
            continue;
          }
          const double* kj = &k[kidx(s, b, j, hk)];
          double dot = 0;
          for (int64_t x = 0; x < s.d; ++x) dot += qi[x] * kj[x];
          sc[j] = dot * c.scale;
          mx = std::max(mx, sc[j]);
        }
        if (mx == kNegInf) continue;  // sees no key: O = 0, LSE = -inf
        double sum = 0;
        double* oi = &r.o[qidx(s, b, i, h)];
        for (int64_t j = 0; j < s.sk; ++j) {
          if (sc[j] == kNegInf) continue;
          const double p = exp(sc[j] - mx);
          sum += p;
          const double* vj = &v[kidx(s, b, j, hk)];
          for (int64_t x = 0; x < s.d; ++x) oi[x] += p * vj[x];
        }
        for (int64_t x = 0; x < s.d; ++x) oi[x] /= sum;
        r.lse[lidx(s, b, h, i)] = mx + log(sum);
      }
    }
  }
  return r;
}

BwdResult reference_backward(const AttnCase& c, const std::vector<double>& q,
                             const std::vector<double>& k, const std::vector<double>& v,
                             const std::vector<double>& dout) {
  const AttnShape& s = c.shape;
  const FwdResult f = reference_forward(c, q, k, v);
  BwdResult r;
  r.dq.assign(static_cast<size_t>(s.q_elems()), 0.0);
  r.dk.assign(static_cast<size_t>(s.kv_elems()), 0.0);
  r.dv.assign(static_cast<size_t>(s.kv_elems()), 0.0);
  const int64_t group = s.hq / s.hkv;
  // One (batch, kv head) per thread: its dK/dV rows are written by nobody else.
#pragma omp parallel for schedule(dynamic) collapse(2)
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int64_t hk = 0; hk < s.hkv; ++hk) {
      for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
        for (int64_t i = 0; i < s.sq; ++i) {
          const double lse = f.lse[lidx(s, b, h, i)];
          if (lse == kNegInf) continue;
          const double* qi = &q[qidx(s, b, i, h)];
          const double* doi = &dout[qidx(s, b, i, h)];
          const double* oi = &f.o[qidx(s, b, i, h)];
          double delta = 0;
          for (int64_t x = 0; x < s.d; ++x) delta += doi[x] * oi[x];
          double* dqi = &r.dq[qidx(s, b, i, h)];
          for (int64_t j = 0; j < s.sk; ++j) {
            if (!visible(c, i, j)) continue;
            const double* kj = &k[kidx(s, b, j, hk)];
            const double* vj = &v[kidx(s, b, j, hk)];
            double dot = 0, dp = 0;
            for (int64_t x = 0; x < s.d; ++x) {
              dot += qi[x] * kj[x];
              dp += doi[x] * vj[x];
            }
            const double p = exp(dot * c.scale - lse);
            const double ds = p * (dp - delta);
            double* dkj = &r.dk[kidx(s, b, j, hk)];
            double* dvj = &r.dv[kidx(s, b, j, hk)];
            for (int64_t x = 0; x < s.d; ++x) {
              dqi[x] += c.scale * ds * kj[x];
              dkj[x] += c.scale * ds * qi[x];
              dvj[x] += p * doi[x];
            }
          }
        }
      }
    }
  }
  return r;
}

// ---- naive, same dtype -------------------------------------------------------------------------

namespace {

struct NaiveProbs {
  // Per (b, h): the rounded probabilities [Sq, Sk]; per row whether it sees any key.
  std::vector<std::vector<float>> p;
};

float rnd(float x, DType t) { return static_cast<float>(round_to(x, t)); }

// Forward for one (b, h); fills o rows, lse, and the rounded P.
void naive_head(const AttnCase& c, const std::vector<double>& q, const std::vector<double>& k,
                const std::vector<double>& v, DType t, int64_t b, int64_t h, FwdResult* r,
                std::vector<float>* pmat) {
  const AttnShape& s = c.shape;
  const int64_t hk = h / (s.hq / s.hkv);
  pmat->assign(static_cast<size_t>(s.sq * s.sk), 0.0f);
  std::vector<float> sc(static_cast<size_t>(s.sk));
  const float scale = rnd(static_cast<float>(c.scale), t);
  for (int64_t i = 0; i < s.sq; ++i) {
    float mx = -INFINITY;
    for (int64_t j = 0; j < s.sk; ++j) {
      if (!visible(c, i, j)) {
        sc[j] = -INFINITY;
        continue;
      }
      float dot = 0.0f;
      for (int64_t x = 0; x < s.d; ++x)
        dot += static_cast<float>(q[qidx(s, b, i, h) + x]) *
               static_cast<float>(k[kidx(s, b, j, hk) + x]);
      sc[j] = rnd(rnd(dot, t) * scale, t);
      mx = std::max(mx, sc[j]);
    }
    if (mx == -INFINITY) continue;
    float sum = 0.0f;
    for (int64_t j = 0; j < s.sk; ++j) {
      if (sc[j] == -INFINITY) continue;
      sc[j] = rnd(expf(sc[j] - mx), t);
      sum += sc[j];
    }
    sum = rnd(sum, t);
    float* pi = &(*pmat)[i * s.sk];
    for (int64_t j = 0; j < s.sk; ++j) pi[j] = sc[j] == -INFINITY ? 0.0f : rnd(sc[j] / sum, t);
    for (int64_t x = 0; x < s.d; ++x) {
      float acc = 0.0f;
      for (int64_t j = 0; j < s.sk; ++j) {
        if (pi[j] != 0.0f) acc += pi[j] * static_cast<float>(v[kidx(s, b, j, hk) + x]);
      }
      r->o[qidx(s, b, i, h) + x] = rnd(acc, t);
    }
    r->lse[lidx(s, b, h, i)] = static_cast<double>(mx + logf(sum));
  }
}

}  // namespace

FwdResult naive_forward(const AttnCase& c, const std::vector<double>& q,
                        const std::vector<double>& k, const std::vector<double>& v, DType dtype) {
  const AttnShape& s = c.shape;
  FwdResult r;
  r.o.assign(static_cast<size_t>(s.q_elems()), 0.0);
  r.lse.assign(static_cast<size_t>(s.lse_elems()), kNegInf);
#pragma omp parallel for schedule(dynamic) collapse(2)
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int64_t h = 0; h < s.hq; ++h) {
      std::vector<float> pmat;
      naive_head(c, q, k, v, dtype, b, h, &r, &pmat);
    }
  }
  return r;
}

BwdResult naive_backward(const AttnCase& c, const std::vector<double>& q,
                         const std::vector<double>& k, const std::vector<double>& v,
                         const std::vector<double>& dout, DType t) {
  const AttnShape& s = c.shape;
  FwdResult f;
  f.o.assign(static_cast<size_t>(s.q_elems()), 0.0);
  f.lse.assign(static_cast<size_t>(s.lse_elems()), kNegInf);
  BwdResult r;
  r.dq.assign(static_cast<size_t>(s.q_elems()), 0.0);
  r.dk.assign(static_cast<size_t>(s.kv_elems()), 0.0);
  r.dv.assign(static_cast<size_t>(s.kv_elems()), 0.0);
  const int64_t group = s.hq / s.hkv;
  const float scale = rnd(static_cast<float>(c.scale), t);
#pragma omp parallel for schedule(dynamic) collapse(2)
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int64_t hk = 0; hk < s.hkv; ++hk) {
      std::vector<float> dk(static_cast<size_t>(s.sk * s.d), 0.0f);
      std::vector<float> dv(static_cast<size_t>(s.sk * s.d), 0.0f);
      std::vector<float> pmat, ds(static_cast<size_t>(s.sq * s.sk));
      for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
        naive_head(c, q, k, v, t, b, h, &f, &pmat);
        for (int64_t i = 0; i < s.sq; ++i) {
          float delta = 0.0f;
          for (int64_t x = 0; x < s.d; ++x)
            delta += static_cast<float>(dout[qidx(s, b, i, h) + x]) *
                     static_cast<float>(f.o[qidx(s, b, i, h) + x]);
          delta = rnd(delta, t);
          for (int64_t j = 0; j < s.sk; ++j) {
            const float p = pmat[i * s.sk + j];
            if (p == 0.0f) {
              ds[i * s.sk + j] = 0.0f;
              continue;
            }
            float dp = 0.0f;
            for (int64_t x = 0; x < s.d; ++x)
              dp += static_cast<float>(dout[qidx(s, b, i, h) + x]) *
                    static_cast<float>(v[kidx(s, b, j, hk) + x]);
            dp = rnd(dp, t);
            ds[i * s.sk + j] = rnd(p * rnd(dp - delta, t), t);
          }
        }
        for (int64_t i = 0; i < s.sq; ++i) {
          for (int64_t x = 0; x < s.d; ++x) {
            float acc = 0.0f;
            for (int64_t j = 0; j < s.sk; ++j)
              acc += ds[i * s.sk + j] * static_cast<float>(k[kidx(s, b, j, hk) + x]);
            r.dq[qidx(s, b, i, h) + x] = rnd(rnd(acc, t) * scale, t);
          }
        }
        for (int64_t j = 0; j < s.sk; ++j) {
          for (int64_t i = 0; i < s.sq; ++i) {
            const float dsij = ds[i * s.sk + j], p = pmat[i * s.sk + j];
            if (p == 0.0f && dsij == 0.0f) continue;
            for (int64_t x = 0; x < s.d; ++x) {
              dk[j * s.d + x] += dsij * static_cast<float>(q[qidx(s, b, i, h) + x]);
              dv[j * s.d + x] += p * static_cast<float>(dout[qidx(s, b, i, h) + x]);
            }
          }
        }
      }
      for (int64_t j = 0; j < s.sk; ++j) {
        for (int64_t x = 0; x < s.d; ++x) {
          r.dk[kidx(s, b, j, hk) + x] = rnd(rnd(dk[j * s.d + x], t) * scale, t);
          r.dv[kidx(s, b, j, hk) + x] = rnd(dv[j * s.d + x], t);
        }
      }
    }
  }
  return r;
}

// ---- dtypes ------------------------------------------------------------------------------------

const char* dtype_name(DType t) { return t == kF32 ? "f32" : t == kF16 ? "f16" : "bf16"; }
size_t dtype_bytes(DType t) { return t == kF32 ? 4 : 2; }

double round_to(double x, DType t) {
  if (!std::isfinite(x) || x == 0.0) return x;
  // Significand bits, smallest normal exponent, largest finite value.
  const int p = t == kF32 ? 24 : t == kF16 ? 11 : 8;
  const int emin = t == kF16 ? -14 : -126;
  const double maxv = t == kF32 ? FLT_MAX : t == kF16 ? 65504.0 : 3.38953138925153547590e38;
  int e;
  frexp(x, &e);
  const int E = std::max(e - 1, emin);
  const double quantum = ldexp(1.0, E - (p - 1));
  const double r = nearbyint(x / quantum) * quantum;  // default rounding: ties to even
  if (fabs(r) > maxv) return x > 0 ? HUGE_VAL : -HUGE_VAL;
  return r;
}

uint16_t f16_bits(double x) {
  if (std::isnan(x)) return 0x7e00;
  const double r = round_to(x, kF16);
  const uint16_t sign = std::signbit(r) ? 0x8000 : 0;
  const double a = fabs(r);
  if (std::isinf(a)) return sign | 0x7c00;
  if (a == 0.0) return sign;
  int e;
  frexp(a, &e);
  const int E = e - 1;
  if (E < -14) return sign | static_cast<uint16_t>(a / ldexp(1.0, -24));
  const uint16_t m = static_cast<uint16_t>(a / ldexp(1.0, E - 10) - 1024.0);
  return sign | static_cast<uint16_t>((E + 15) << 10) | m;
}

double f16_value(uint16_t bits) {
  const double sign = (bits & 0x8000) ? -1.0 : 1.0;
  const int ex = (bits >> 10) & 31, m = bits & 1023;
  if (ex == 0) return sign * ldexp(m, -24);
  if (ex == 31) return m ? std::numeric_limits<double>::quiet_NaN() : sign * HUGE_VAL;
  return sign * ldexp(1024 + m, ex - 25);
}

uint16_t bf16_bits(double x) {
  if (std::isnan(x)) return 0x7fc0;
  const float f = static_cast<float>(round_to(x, kBF16));  // exact
  uint32_t u;
  memcpy(&u, &f, 4);
  return static_cast<uint16_t>(u >> 16);
}

double bf16_value(uint16_t bits) {
  const uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

// ---- host tensors ------------------------------------------------------------------------------

HostTensor::HostTensor(DType dtype, int64_t b, int64_t s, int64_t h, int64_t d, int64_t head_pad)
    : dtype_(dtype), b_(b), s_(s), h_(h), d_(d), pad_(head_pad) {
  bytes_.assign(static_cast<size_t>(b * s * h * (d + head_pad)) * dtype_bytes(dtype) + 1, 0);
}

TensorRef HostTensor::ref() {
  const int64_t sh = d_ + pad_;
  return TensorRef{bytes_.data(), dtype_, s_ * h_ * sh, h_ * sh, sh};
}

size_t HostTensor::offset(int64_t b, int64_t s, int64_t h) const {
  return static_cast<size_t>(((b * s_ + s) * h_ + h) * (d_ + pad_));
}

void HostTensor::fill(const std::vector<double>& values) {
  for (int64_t b = 0; b < b_; ++b)
    for (int64_t s = 0; s < s_; ++s)
      for (int64_t h = 0; h < h_; ++h)
        for (int64_t x = 0; x < d_; ++x) {
          const double val = values[static_cast<size_t>(((b * s_ + s) * h_ + h) * d_ + x)];
          const size_t e = offset(b, s, h) + static_cast<size_t>(x);
          if (dtype_ == kF32) {
            const float f = static_cast<float>(val);
            memcpy(&bytes_[e * 4], &f, 4);
          } else {
            const uint16_t u = dtype_ == kF16 ? f16_bits(val) : bf16_bits(val);
            memcpy(&bytes_[e * 2], &u, 2);
          }
        }
}

std::vector<double> HostTensor::values() const {
  std::vector<double> out(static_cast<size_t>(b_ * s_ * h_ * d_));
  for (int64_t b = 0; b < b_; ++b)
    for (int64_t s = 0; s < s_; ++s)
      for (int64_t h = 0; h < h_; ++h)
        for (int64_t x = 0; x < d_; ++x) {
          const size_t e = offset(b, s, h) + static_cast<size_t>(x);
          double val;
          if (dtype_ == kF32) {
            float f;
            memcpy(&f, &bytes_[e * 4], 4);
            val = f;
          } else {
            uint16_t u;
            memcpy(&u, &bytes_[e * 2], 2);
            val = dtype_ == kF16 ? f16_value(u) : bf16_value(u);
          }
          out[static_cast<size_t>(((b * s_ + s) * h_ + h) * d_ + x)] = val;
        }
  return out;
}

void HostTensor::poison() {
  const size_t n = (bytes_.size() - 1) / dtype_bytes(dtype_);
  for (size_t e = 0; e < n; ++e) {
    if (dtype_ == kF32) {
      const float f = std::numeric_limits<float>::quiet_NaN();
      memcpy(&bytes_[e * 4], &f, 4);
    } else {
      const uint16_t u = dtype_ == kF16 ? 0x7e00 : 0x7fc0;
      memcpy(&bytes_[e * 2], &u, 2);
    }
  }
}

HostRowStat::HostRowStat(int64_t b, int64_t h, int64_t s)
    : b_(b), h_(h), s_(s), data_(static_cast<size_t>(b * h * s) + 1, 0.0f) {}

RowStatRef HostRowStat::ref() { return RowStatRef{data_.data(), h_ * s_, s_}; }

void HostRowStat::fill(const std::vector<double>& values) {
  for (size_t i = 0; i < values.size() && i < data_.size(); ++i)
    data_[i] = static_cast<float>(values[i]);
}

std::vector<double> HostRowStat::values() const {
  return std::vector<double>(data_.begin(), data_.begin() + b_ * h_ * s_);
}

void HostRowStat::poison() {
  std::fill(data_.begin(), data_.end(), std::numeric_limits<float>::quiet_NaN());
}

// ---- inputs ------------------------------------------------------------------------------------

uint64_t fresh_seed() {
  const char* env = getenv("RINGATTN_TEST_SEED");
  if (env != nullptr && *env != '\0') return strtoull(env, nullptr, 10);
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

std::vector<double> random_values(size_t n, uint64_t seed, DType t, double lo, double hi) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<double> v(n);
  for (double& x : v) x = round_to(dist(gen), t);
  return v;
}

// ---- checks ------------------------------------------------------------------------------------

double max_abs_error(const std::vector<double>& a, const std::vector<double>& ref) {
  if (a.size() != ref.size()) return HUGE_VAL;
  double e = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i])) return HUGE_VAL;
    if (std::isinf(ref[i]) || std::isinf(a[i])) {
      if (a[i] != ref[i]) return HUGE_VAL;
      continue;
    }
    e = std::max(e, fabs(a[i] - ref[i]));
  }
  return e;
}

double max_abs(const std::vector<double>& a) {
  double m = 0.0;
  for (double x : a)
    if (std::isfinite(x)) m = std::max(m, fabs(x));
  return m;
}

double dtype_floor(DType t) { return t == kF32 ? 1e-6 : t == kF16 ? 1e-3 : 8e-3; }

::testing::AssertionResult within_2x_naive(const std::string& name, const std::vector<double>& ours,
                                           const std::vector<double>& ref,
                                           const std::vector<double>& naive, DType dtype) {
  const double e_ours = max_abs_error(ours, ref);
  const double e_naive = max_abs_error(naive, ref);
  const double bound = 2.0 * e_naive + dtype_floor(dtype) * std::max(1.0, max_abs(ref));
  if (getenv("RINGATTN_TEST_VERBOSE") != nullptr)
    printf("  %-6s %-4s ours %.3e  naive %.3e  bound %.3e\n", name.c_str(), dtype_name(dtype),
           e_ours, e_naive, bound);
  if (e_ours <= bound) return ::testing::AssertionSuccess();
  std::ostringstream os;
  os << name << " (" << dtype_name(dtype) << "): max|ours - ref64| = " << e_ours
     << " exceeds 2 * max|naive - ref64| + floor = 2 * " << e_naive << " + "
     << bound - 2.0 * e_naive;
  // Show the worst element to make a failure readable.
  size_t worst = 0;
  double we = -1.0;
  for (size_t i = 0; i < ours.size() && i < ref.size(); ++i) {
    double e = fabs(ours[i] - ref[i]);
    if (std::isnan(ours[i]) || (std::isinf(ref[i]) && ours[i] != ref[i])) e = HUGE_VAL;
    if (std::isinf(ref[i]) && ours[i] == ref[i]) e = 0.0;
    if (e > we) {
      we = e;
      worst = i;
    }
  }
  if (worst < ours.size() && worst < ref.size())
    os << "; worst at flat index " << worst << ": ours " << ours[worst] << ", ref " << ref[worst];
  return ::testing::AssertionFailure() << os.str();
}

}  // namespace test
}  // namespace ringattn
