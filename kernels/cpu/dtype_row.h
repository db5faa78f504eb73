// Rows of f32/f16/bf16 elements to and from float32 scratch (the kernels compute in float32).
// f16 uses F16C through Highway; bf16 -> f32 is exact, f32 -> bf16 rounds to nearest even (Highway
// 1.0's DemoteTo truncates, so it is done here on the integer bits, a vector at a time).
#pragma once

#include <hwy/highway.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "local_params.h"

namespace ringattn {
namespace cpu {

namespace hn = hwy::HWY_NAMESPACE;

// Upper bound on float32 lanes of any target (sizes the tail bounce buffers).
constexpr int64_t kMaxLanes = HWY_MAX_BYTES / 4;

inline size_t dtype_size(DType t) { return t == kF32 ? 4 : 2; }

// Address of row (b, s, h) of a [B, S, H, D] tensor.
inline void* tensor_row(const TensorRef& t, int64_t b, int64_t s, int64_t h) {
  return static_cast<char*>(t.data) + (b * t.stride_b + s * t.stride_s + h * t.stride_h) *
                                          static_cast<int64_t>(dtype_size(t.dtype));
}

// Address of element s of row statistics (b, h).
inline float* rowstat_ptr(const RowStatRef& r, int64_t b, int64_t h, int64_t s) {
  return r.data + b * r.stride_b + h * r.stride_h + s;
}

inline uint16_t f32_to_bf16_bits(float f) {
  uint32_t b;
  memcpy(&b, &f, 4);
  if ((b & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((b >> 16) | 0x40u);  // NaN
  b += 0x7fffu + ((b >> 16) & 1u);
  return static_cast<uint16_t>(b >> 16);
}

// Round to nearest even, for targets without F16C (Highway's emulated DemoteTo truncates).
inline uint16_t f32_to_f16_bits(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return sign | 0x7e00u;   // NaN
  if (ax >= 0x477ff000u) return sign | 0x7c00u;  // >= 65520 rounds to infinity
  if (ax < 0x38800000u) {                        // below 2^-14: subnormal half
    float a;
    memcpy(&a, &ax, 4);
    return sign | static_cast<uint16_t>(lrintf(a * 16777216.0f));  // exact scaling, then RNE
  }
  uint32_t h = (ax >> 13) - (112u << 10);  // rebias 127 -> 15, keep 10 mantissa bits
  const uint32_t rest = ax & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // a carry correctly bumps the exponent
  return sign | static_cast<uint16_t>(h);
}

// Exact, with infinities and NaN (Highway's emulated PromoteTo turns them into finite values).
inline float f16_bits_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 31u, m = h & 1023u;
  uint32_t x;
  if (e == 0) {  // zero or subnormal: m * 2^-24, exact in float
    const float v = static_cast<float>(m) * (1.0f / 16777216.0f);
    memcpy(&x, &v, 4);
    x |= sign;
  } else if (e == 31) {
    x = sign | 0x7f800000u | (m << 13);
  } else {
    x = sign | ((e + 112u) << 23) | (m << 13);
  }
  float f;
  memcpy(&f, &x, 4);
  return f;
}

// Highway's f16 conversions use F16C on x86 AVX2 and above (round to nearest even, infinities
// kept); elsewhere the scalar functions above are used.
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2 && !defined(HWY_DISABLE_F16C)
#define RINGATTN_HWY_F16_RNE 1
#else
#define RINGATTN_HWY_F16_RNE 0
#endif

// dst[i] = mul * src[i] for i < n.
inline void load_row(DType t, const void* src, int64_t n, float mul, float* dst) {
  const hn::ScalableTag<float> df;
  const hn::Rebind<hwy::float16_t, decltype(df)> dh;
  const hn::Rebind<hwy::bfloat16_t, decltype(df)> db;
  const int64_t L = static_cast<int64_t>(hn::Lanes(df));
  const auto vm = hn::Set(df, mul);
  int64_t i = 0;
  if (t == kF32) {
    const float* s = static_cast<const float*>(src);
    for (; i + L <= n; i += L) hn::StoreU(hn::Mul(hn::LoadU(df, s + i), vm), df, dst + i);
    for (; i < n; ++i) dst[i] = s[i] * mul;
    return;
  }
  const uint16_t* s = static_cast<const uint16_t*>(src);
  if (t == kF16 && !RINGATTN_HWY_F16_RNE) {
    for (; i < n; ++i) dst[i] = f16_bits_to_f32(s[i]) * mul;
    return;
  }
  for (; i < n; i += L) {
    const int64_t c = n - i < L ? n - i : L;
    HWY_ALIGN uint16_t tmp[kMaxLanes] = {};
    const uint16_t* p = s + i;
    if (c < L) {  // tail: go through a zero-padded copy
      memcpy(tmp, p, static_cast<size_t>(c) * 2);
      p = tmp;
    }
    hn::Vec<decltype(df)> v;
    if (t == kF16) {
      v = hn::PromoteTo(df, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(p)));
    } else {
      v = hn::PromoteTo(df, hn::LoadU(db, reinterpret_cast<const hwy::bfloat16_t*>(p)));
    }
    v = hn::Mul(v, vm);
    if (c == L) {
      hn::StoreU(v, df, dst + i);
    } else {
      HWY_ALIGN float out[kMaxLanes];
      hn::Store(v, df, out);
      memcpy(dst + i, out, static_cast<size_t>(c) * 4);
    }
  }
}

// dst[i] = dtype(mul * src[i]) for i < n; with accumulate (f32 only) dst[i] += mul * src[i].
inline void store_row(DType t, const float* src, int64_t n, float mul, void* dst,
                      bool accumulate = false) {
  const hn::ScalableTag<float> df;
  const hn::Rebind<hwy::float16_t, decltype(df)> dh;
  const int64_t L = static_cast<int64_t>(hn::Lanes(df));
  const auto vm = hn::Set(df, mul);
  int64_t i = 0;
  if (t == kF32) {
    float* d = static_cast<float*>(dst);
    if (accumulate) {
      for (; i + L <= n; i += L)
        hn::StoreU(hn::MulAdd(hn::LoadU(df, src + i), vm, hn::LoadU(df, d + i)), df, d + i);
      for (; i < n; ++i) d[i] += src[i] * mul;
    } else {
      for (; i + L <= n; i += L) hn::StoreU(hn::Mul(hn::LoadU(df, src + i), vm), df, d + i);
      for (; i < n; ++i) d[i] = src[i] * mul;
    }
    return;
  }
  uint16_t* d = static_cast<uint16_t*>(dst);
  if (t == kBF16) {
    // f32_to_bf16_bits on whole vectors: add 0x7fff plus the kept bit's parity, keep the top
    // half (NaN: the top half with a quiet bit); the tail goes through the scalar function.
    const hn::RebindToUnsigned<decltype(df)> du;
    const hn::RebindToSigned<decltype(df)> di;
    const hn::Rebind<uint16_t, decltype(df)> d16;
    const auto bias = hn::Set(du, 0x7fffu), one = hn::Set(du, 1u), quiet = hn::Set(du, 0x40u);
    for (; i + L <= n; i += L) {
      const auto v = hn::Mul(hn::LoadU(df, src + i), vm);
      const auto bits = hn::BitCast(du, v);
      const auto hi = hn::ShiftRight<16>(bits);
      const auto rounded = hn::ShiftRight<16>(hn::Add(bits, hn::Add(bias, hn::And(hi, one))));
      const auto out = hn::IfThenElse(hn::RebindMask(du, hn::IsNaN(v)), hn::Or(hi, quiet), rounded);
      // Every lane is below 2^16, so the saturating signed demotion keeps it.
      hn::StoreU(hn::DemoteTo(d16, hn::BitCast(di, out)), d16, d + i);
    }
    for (; i < n; ++i) d[i] = f32_to_bf16_bits(src[i] * mul);
    return;
  }
  if (!RINGATTN_HWY_F16_RNE) {
    for (; i < n; ++i) d[i] = f32_to_f16_bits(src[i] * mul);
    return;
  }
  for (; i < n; i += L) {
    const int64_t c = n - i < L ? n - i : L;
    HWY_ALIGN float in[kMaxLanes] = {};
    memcpy(in, src + i, static_cast<size_t>(c) * 4);
    const auto h = hn::DemoteTo(dh, hn::Mul(hn::Load(df, in), vm));
    HWY_ALIGN hwy::float16_t out[kMaxLanes];
    hn::Store(h, dh, out);
    memcpy(d + i, out, static_cast<size_t>(c) * 2);
  }
}

}  // namespace cpu
}  // namespace ringattn
