// Case lists shared by the forward and backward suites: every scheme, masks (full, causal,
// windows), uneven and packed lengths, GQA, head dims, dtypes.
#pragma once

#include <vector>

#include "ring_harness.h"

namespace ringattn {
namespace test {

inline GlobalLayout fixed(int64_t batch, int64_t seq) {
  GlobalLayout g;
  g.batch = batch;
  g.seq = seq;
  return g;
}

inline GlobalLayout packed_lengths(const std::vector<int64_t>& lens) {
  GlobalLayout g;
  g.packed = true;
  g.cu.push_back(0);
  for (int64_t l : lens) g.cu.push_back(g.cu.back() + l);
  return g;
}

// For every scheme: full, causal, causal sliding window (24, 0) and window (9, 5) masks on
// [2, 157] (uneven over 2, 3, 4 and 8 ranks), and packed uneven lengths (some shorter than 2P,
// one empty) with causal, full and window (6, 2) masks, at Hq : Hkv heads.
inline std::vector<RingCase> scheme_mask_cases(int64_t hq, int64_t hkv, bool backward) {
  std::vector<RingCase> cases;
  auto add = [&](RingCase c) {
    c.backward = backward;
    cases.push_back(c);
  };
  const ringattn_scheme_t schemes[3] = {RINGATTN_SCHEME_CONTIGUOUS, RINGATTN_SCHEME_ZIGZAG,
                                        RINGATTN_SCHEME_STRIPED};
  for (ringattn_scheme_t s : schemes) {
    RingCase c;
    c.scheme = s;
    c.layout = fixed(2, 157);  // uneven over 2, 3, 4 and 8 ranks
    c.hq = hq;
    c.hkv = hkv;
    c.name = "full";
    add(c);
    c.name = "causal";
    c.causal = true;
    add(c);
    c.name = "causal sliding window (24, 0)";
    c.window_left = 24;
    add(c);
    c.name = "window (9, 5)";
    c.causal = false;
    c.window_left = 9;
    c.window_right = 5;
    add(c);
    c.name = "packed uneven lengths, some shorter than 2P, causal";
    c.layout = packed_lengths({1, 37, 3, 0, 64, 2, 11, 29});
    c.window_left = c.window_right = -1;
    c.causal = true;
    add(c);
    c.name = "packed uneven lengths, full";
    c.causal = false;
    add(c);
    c.name = "packed, window (6, 2)";
    c.window_left = 6;
    c.window_right = 2;
    add(c);
  }
  return cases;
}

inline std::vector<RingCase> ring_cases(bool backward) {
  std::vector<RingCase> cases;
  auto add = [&](RingCase c) {
    c.backward = backward;
    cases.push_back(c);
  };
  const ringattn_scheme_t schemes[3] = {RINGATTN_SCHEME_CONTIGUOUS, RINGATTN_SCHEME_ZIGZAG,
                                        RINGATTN_SCHEME_STRIPED};
  cases = scheme_mask_cases(4, 2, backward);
  {
    RingCase c;
    c.name = "shorter than the ring: ranks hold nothing";
    c.layout = fixed(1, 5);
    c.causal = true;
    add(c);
    c.name = "GQA 8:1 (MQA)";
    c.layout = fixed(1, 96);
    c.hq = 8;
    c.hkv = 1;
    add(c);
    c.name = "MHA 3:3, non-dense strides";
    c.hq = c.hkv = 3;
    c.head_pad = 8;
    add(c);
  }
  // At least as many key/value heads as chunks (4): the CPU backend chunks steps by heads, not
  // rows (RingPlan), including an uneven split (5 heads: 2, 1, 1, 1) and GQA groups.
  {
    RingCase c;
    c.name = "head chunks: GQA 10:5, causal";
    c.scheme = RINGATTN_SCHEME_ZIGZAG;
    c.layout = fixed(2, 157);
    c.hq = 10;
    c.hkv = 5;
    c.causal = true;
    add(c);
    c.name = "head chunks: MHA 4:4, window (9, 5), non-dense strides";
    c.scheme = RINGATTN_SCHEME_STRIPED;
    c.hq = c.hkv = 4;
    c.head_pad = 8;
    c.causal = false;
    c.window_left = 9;
    c.window_right = 5;
    add(c);
    c.name = "head chunks: GQA 8:4 packed uneven lengths, full";
    c.scheme = RINGATTN_SCHEME_CONTIGUOUS;
    c.layout = packed_lengths({1, 37, 3, 0, 64, 2, 11, 29});
    c.hq = 8;
    c.hkv = 4;
    c.head_pad = 0;
    c.window_left = c.window_right = -1;
    add(c);
    c.name = "head chunks: bfloat16 packed, causal window (6, 0)";
    c.scheme = RINGATTN_SCHEME_ZIGZAG;
    c.dtype = kBF16;
    c.causal = true;
    c.window_left = 6;
    c.window_right = 0;
    add(c);
  }
  for (int64_t d : {40, 64, 128, 256}) {
    RingCase c;
    c.name = "head dim";
    c.layout = fixed(1, d >= 128 ? 48 : 80);
    c.hq = 2;
    c.hkv = 1;
    c.d = d;
    c.causal = true;
    add(c);
  }
  for (DType t : {kF16, kBF16}) {
    for (ringattn_scheme_t s : schemes) {
      RingCase c;
      c.name = "half precision causal";
      c.scheme = s;
      c.layout = fixed(2, 131);
      c.hq = 4;
      c.hkv = 2;
      c.d = 64;
      c.dtype = t;
      c.causal = true;
      add(c);
    }
    RingCase c;
    c.name = "half precision packed window";
    c.layout = packed_lengths({17, 1, 50, 4});
    c.dtype = t;
    c.window_left = 7;
    c.window_right = 0;
    add(c);
  }
  // The lengths well-known ring implementations test with (uneven over 8 ranks).
  for (int64_t s : {3816, 3824}) {
    RingCase c;
    c.name = "long uneven sequence";
    c.layout = fixed(1, s);
    c.hq = 2;
    c.hkv = 1;
    c.d = 32;
    c.dtype = kBF16;
    c.causal = true;
    add(c);
  }
  return cases;
}

}  // namespace test
}  // namespace ringattn
