// Validation of the C API's tensor descriptors and options, done once before anything runs.
// Every failure returns its own status code with a message that names the argument.
#pragma once

#include <cstring>
#include <initializer_list>
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
  int32_t local_kernel = RINGATTN_LOCAL_KERNEL_OWN;
  std::vector<int64_t> cu_seqlens;  // global packed offsets; empty for fixed length
};

// The largest element count and the largest extent (offset of the last element + 1, in
// elements) of any tensor: 2^48. Far beyond any memory, and small enough that every size derived
// from validated shapes (bytes, workspace regions, their sums) fits in 64 bits.
constexpr int64_t kMaxTensorElements = int64_t{1} << 48;
// The most packed sequences of one call.
constexpr int64_t kMaxSequences = (int64_t{1} << 31) - 1;

// The raw value of a C enum field, read as its underlying integer (loading a value outside the
// enumerators as the enum type is undefined behaviour).
template <typename E>
int64_t enum_value(const E& e) {
  static_assert(sizeof(E) == sizeof(int32_t), "C enums of the API are 32-bit");
  int32_t v = 0;
  std::memcpy(&v, &e, sizeof(v));
  return v;
}

// Sizes and strides of one descriptor (ndim already checked): its element count and extent,
// computed with overflow checks, at most kMaxTensorElements; `name` names it in the message.
Status check_tensor_extent(const ringattn_tensor_t* t, const char* name);

// Checks q, k, v alone (a plan's problem): descriptors, shapes, dtypes, extents, GQA.
Status validate_qkv_tensors(const ringattn_tensor_t* q, const ringattn_tensor_t* k,
                            const ringattn_tensor_t* v, AttnShape* shape);

// Checks q, k, v, o (and lse when non-null) for a forward call: descriptors, shapes, dtypes,
// extents, and outputs that overlap an input or each other (rejected, see ringattn.h).
Status validate_forward_tensors(const ringattn_tensor_t* q, const ringattn_tensor_t* k,
                                const ringattn_tensor_t* v, const ringattn_tensor_t* o,
                                const ringattn_tensor_t* lse, AttnShape* shape);

// Checks the backward's tensors: q, k, v, o, lse, dout, dq, dk, dv (all required).
Status validate_backward_tensors(const ringattn_tensor_t* q, const ringattn_tensor_t* k,
                                 const ringattn_tensor_t* v, const ringattn_tensor_t* o,
                                 const ringattn_tensor_t* lse, const ringattn_tensor_t* dout,
                                 const ringattn_tensor_t* dq, const ringattn_tensor_t* dk,
                                 const ringattn_tensor_t* dv, AttnShape* shape);

// A caller's versioned struct (ringattn_attn_params_t, ringattn_context_options_t) read
// through its struct_size. Only the sizes of real versions are read: an older version's (one of
// `old_versions`, in bytes; the fields it lacks keep *out's defaults) or at least sizeof(T) (a
// newer header: read up to the fields this library knows). Any other size would cut a field:
// false, *out untouched.
template <typename T>
bool read_versioned(const T& in, std::initializer_list<size_t> old_versions, T* out) {
  bool known = in.struct_size >= sizeof(T);
  for (size_t v : old_versions) known = known || in.struct_size == v;
  if (!known) return false;
  std::memcpy(out, &in, in.struct_size < sizeof(T) ? in.struct_size : sizeof(T));
  out->struct_size = sizeof(T);
  return true;
}

// The caller's params read with read_versioned (first version: struct_size through
// window_right, 32 bytes): `in` itself when it is current, else *copy with the defaults of what
// it lacks. NULL, or a size that is no version, is returned unchanged for validate_params to
// report.
const ringattn_attn_params_t* versioned_params(const ringattn_attn_params_t* in,
                                               ringattn_attn_params_t* copy);

// Checks the options struct against the shape (head dim for the default scale, packed vs
// cu_seqlens) and resolves the scale and mask.
Status validate_params(const ringattn_attn_params_t* params, const AttnShape& shape,
                       AttnOptions* opts);

// The fields that every local call of a validated problem shares, set in one place for the
// single-process calls and the ring's: sizes (sq = sk = the local length), scale and mask.
// Callers then set their tensors, positions and, for a part of the problem, sq and sk.
void set_call_problem(const AttnShape& shape, const AttnOptions& opts, AttnCall* call);

// Views of a validated descriptor in the kernels' terms. For packed tensors B = 1, S = T.
TensorRef tensor_ref(const ringattn_tensor_t& t, bool packed);
RowStatRef rowstat_ref(const ringattn_tensor_t& t, bool packed);
DType to_dtype(ringattn_dtype_t d);
size_t dtype_size(DType d);

// The runs of a whole (unsharded) problem: one run per sequence, positions 0..len-1.
std::vector<PosRun> whole_sequence_runs(const AttnShape& shape, const AttnOptions& opts);

}  // namespace ringattn
