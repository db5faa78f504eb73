// Validation of the C API's tensor descriptors and options, done once before anything runs.
// Every failure returns its own status code with a message that names the argument.
#pragma once

#include <vector>

#include "local_params.h"
#include "ringattn/ringattn.h"
#include "status.h"

namespace ringattn {

// What the descriptors of one call describe, once validated.
struct AttnShape {
  bool packed = false;  // [T, H, D] tensors with cu_seqlens
  int64_t batch = 0;    // B (1 for packed)
  int64_t seq = 0;      // S, or T for packed (local length)
  int64_t hq = 0, hkv = 0, d = 0;
  DType dtype = kF32;
};

// Options resolved from ringattn_attn_params_t.
struct AttnOptions {
  float scale = 0.0f;
  MaskSpec mask{-1, -1};
  bool causal = false;
  int32_t scheme = kContiguous;
  std::vector<int64_t> cu_seqlens;  // global packed offsets; empty for fixed length
};

// Checks q, k, v, o (and lse when non-null) for a forward call. `name_prefix` is prepended to
// argument names in messages (e.g. "rank 3: ").
Status validate_forward_tensors(const ringattn_tensor_t* q, const ringattn_tensor_t* k,
                                const ringattn_tensor_t* v, const ringattn_tensor_t* o,
                                const ringattn_tensor_t* lse, AttnShape* shape);

// Checks the backward's tensors: q, k, v, o, lse, dout, dq, dk, dv (all required).
Status validate_backward_tensors(const ringattn_tensor_t* q, const ringattn_tensor_t* k,
                                 const ringattn_tensor_t* v, const ringattn_tensor_t* o,
                                 const ringattn_tensor_t* lse, const ringattn_tensor_t* dout,
                                 const ringattn_tensor_t* dq, const ringattn_tensor_t* dk,
                                 const ringattn_tensor_t* dv, AttnShape* shape);

// Checks the options struct against the shape (head dim for the default scale, packed vs
// cu_seqlens) and resolves the scale and mask.
Status validate_params(const ringattn_attn_params_t* params, const AttnShape& shape,
                       AttnOptions* opts);

// Views of a validated descriptor in the kernels' terms. For packed tensors B = 1, S = T.
TensorRef tensor_ref(const ringattn_tensor_t& t, bool packed);
RowStatRef rowstat_ref(const ringattn_tensor_t& t, bool packed);
DType to_dtype(ringattn_dtype_t d);
size_t dtype_size(DType d);

// The runs of a whole (unsharded) problem: one run per sequence, positions 0..len-1.
std::vector<PosRun> whole_sequence_runs(const AttnShape& shape, const AttnOptions& opts);

}  // namespace ringattn
