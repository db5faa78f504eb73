// The plain parameter structs of one local attention call (one Q shard against one K/V block).
// Filled once by the host (src/ or tests) and passed to the CPU or CUDA kernels by value.
//
// Layout of every tensor: [B, S, H, D] addressed as
//   base + b * stride_b + s * stride_s + h * stride_h + d     (element strides, d contiguous)
// Packed variable-length tensors are B = 1 with S = T; their sequences come from the PosMaps.
// LSE / Delta (float32) are addressed as base + b * stride_b + h * stride_h + s.
#pragma once

#include <stdint.h>

#include "mask.h"
#include "positions.h"

namespace ringattn {

enum DType : int32_t { kF32 = 0, kF16 = 1, kBF16 = 2 };

struct TensorRef {
  void* data;
  DType dtype;
  int64_t stride_b, stride_s, stride_h;
};

struct RowStatRef {  // float32 [B, H, S] (LSE, Delta)
  float* data;
  int64_t stride_b, stride_h;
};

// How the forward writes its result.
enum OutMode : int32_t {
  kOutFinal = 0,       // O in o.dtype (normalized), LSE float32
  kOutPartialF32 = 1,  // O float32 (normalized), LSE float32: one step's partial result
  kOutMergeF32 = 2     // O float32 and LSE already hold a partial result: merge into them
};

// Which kernel computes a call (ringattn_local_kernel_t): ours, or cuDNN's fused attention where
// it can compute a sub-block (the CUDA backend's cuDNN path; ours for the rest).
enum LocalKernel : int32_t { kLocalOwn = 0, kLocalCudnn = 1 };

// How many sub-blocks each kernel computed, counted by the backend when the caller points a
// call at a counter (the ring's statistics); host memory.
struct LocalKernelCounts {
  int64_t library_blocks;  // sub-blocks computed by the fused library (cuDNN)
  int64_t own_calls;       // calls or sub-blocks computed by our kernels
};

// What the forward and the backward of one Q shard against one K/V block share: sizes, inputs,
// scale, mask and positions. Filled from a validated problem by one function
// (src/validate.h: set_call_problem); FwdParams and BwdParams add their own tensors.
struct AttnCall {
  int64_t batch, sq, sk, hq, hkv, d;
  TensorRef q, k, v;  // inputs, all of the same dtype
  float scale;
  MaskSpec mask;
  PosMap q_pos, k_pos;  // positions of the sq query rows and the sk key rows
  LocalKernel local_kernel = kLocalOwn;
  LocalKernelCounts* counts = nullptr;  // optional
};

struct FwdParams : AttnCall {
  TensorRef o;     // dtype of q for kOutFinal; kF32 for the other modes
  RowStatRef lse;  // may have data == nullptr for kOutFinal (LSE not wanted)
  OutMode out_mode;
  // Optional: the key side (k, v) already prepared by the backend for several calls over the
  // same key rows (Backend::pack_forward_keys); nullptr: the call prepares it.
  const void* key_pack = nullptr;
};

struct BwdParams : AttnCall {
  // The forward's output of the whole attention (dtype of q), for kernels that derive Delta
  // themselves (cuDNN); data == nullptr where the caller has none (then only ours run).
  TensorRef o{nullptr, kF32, 0, 0, 0};
  TensorRef dout;        // input, dtype of q
  RowStatRef lse;        // forward LSE of the FULL attention (all key blocks), float32
  RowStatRef delta;      // rowsum(dO * O), float32
  TensorRef dq, dk, dv;  // outputs
  // false: write dq/dk/dv in their dtype (overwrite).
  // true: dq/dk/dv are float32 accumulators and this call adds its contribution.
  bool accumulate;
  // With accumulate, on backends that say so (Backend::backward_overwrites_kv): dk/dv are
  // written, every row of the call's sk key rows, not added to (dq is still added to). The
  // ring's first visit of a gradient accumulator, which then needs no zero fill.
  bool overwrite_kv = false;
  // Optional: the query side (q, dout, lse, delta) already prepared by the backend for several
  // calls over the same query rows (Backend::pack_backward_queries); nullptr: the call prepares it.
  const void* query_pack = nullptr;
};

}  // namespace ringattn
