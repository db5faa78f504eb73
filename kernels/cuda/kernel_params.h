// By-value launch parameters of the CUDA attention kernels, built once on the host from the
// FwdParams/BwdParams of local_params.h. Host-memory PosMaps travel inline (tiling.h).
#pragma once

#include <stdint.h>

#include "local_params.h"
#include "tiling.h"

namespace ringattn {
namespace cuda {

struct TensorArg {
  void* data;
  int64_t sb, ss, sh;  // element strides (batch, seq, head)
};

struct RowStatArg {
  float* data;
  int64_t sb, sh;
};

struct FwdKernelParams {
  TensorArg q, k, v, o;
  RowStatArg lse;
  int64_t batch, sq, sk;
  int32_t hq, hkv, group, d;
  DType in_dtype, o_dtype;
  OutMode out_mode;
  float scale;       // softmax scale (natural units)
  float scale_log2;  // scale * log2(e), for exp2
  MaskSpec mask;
  InlinePosMap qmap, kmap;
};

struct BwdKernelParams {
  TensorArg q, k, v, dout, dq, dk, dv;
  RowStatArg lse, delta;
  int64_t batch, sq, sk;
  int32_t hq, hkv, group, d;
  DType in_dtype, dq_dtype, dk_dtype, dv_dtype;
  bool accumulate;
  float scale, scale_log2;
  MaskSpec mask;
  InlinePosMap qmap, kmap;
};

RINGATTN_HD TensorArg tensor_arg(const TensorRef& t) {
  return TensorArg{t.data, t.stride_b, t.stride_s, t.stride_h};
}
RINGATTN_HD RowStatArg rowstat_arg(const RowStatRef& r) {
  return RowStatArg{r.data, r.stride_b, r.stride_h};
}

// Copies up to kInlineRuns runs inline; returns false when the map needs a device copy (the
// caller then sets `external`).
inline bool fill_inline_posmap(const PosMap& m, InlinePosMap* out) {
  out->num_runs = m.num_runs;
  out->external = nullptr;
  for (int i = 0; i < kInlineRuns; ++i) out->runs[i] = PosRun{0, 0, 0, 1};
  if (m.num_runs > kInlineRuns) return false;
  for (int32_t i = 0; i < m.num_runs; ++i) out->runs[i] = m.runs[i];
  return true;
}

}  // namespace cuda
}  // namespace ringattn
