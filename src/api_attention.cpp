// C API: single-process attention (the whole sequence on one device), forward and backward.
#include <stddef.h>
#include <stdint.h>

#include <vector>

#include "backend.h"
#include "validate.h"

namespace ringattn {
namespace {

// Packed tensors must hold exactly the tokens that cu_seqlens describes.
Status check_packed_total(const AttnShape& shape, const AttnOptions& opts) {
  if (!shape.packed) return RINGATTN_SUCCESS;
  const int64_t total = opts.cu_seqlens.back();
  if (total != shape.seq) {
    return set_errorf(RINGATTN_ERROR_SHAPE_MISMATCH,
                      "'q' holds T=%lld tokens but 'params'.cu_seqlens[%lld] = %lld",
                      static_cast<long long>(shape.seq),
                      static_cast<long long>(opts.cu_seqlens.size() - 1),
                      static_cast<long long>(total));
  }
  return RINGATTN_SUCCESS;
}

// The backend is passed by reference down to get_backend, which reads it as an integer: a C
// caller may pass any value, and copying an out-of-range value as the enum type is undefined.
// The positions of the whole sequence: a fixed-length problem's one run in *one (no allocation),
// a packed problem's runs in *many.
PosMap whole_sequence_map(const AttnShape& shape, const AttnOptions& opts, PosRun* one,
                          std::vector<PosRun>* many) {
  if (!shape.packed) {
    *one = PosRun{0, 0, shape.seq, 1};
    return PosMap{one, shape.seq > 0 ? 1 : 0};
  }
  *many = whole_sequence_runs(shape, opts);
  return PosMap{many->data(), static_cast<int32_t>(many->size())};
}

Status prepare(const AttnShape& shape, const ringattn_attn_params_t* params,
               const ringattn_backend_t& kind, AttnOptions* opts, Backend** be) {
  RINGATTN_RETURN_IF_ERROR(validate_params(params, shape, opts));
  RINGATTN_RETURN_IF_ERROR(check_packed_total(shape, *opts));
  RINGATTN_RETURN_IF_ERROR(get_backend(kind, be));
  return (*be)->supports(shape.d, shape.dtype, opts->mask, opts->local_kernel);
}

Status forward(const ringattn_tensor_t* q, const ringattn_tensor_t* k, const ringattn_tensor_t* v,
               ringattn_tensor_t* o, ringattn_tensor_t* lse,
               const ringattn_attn_params_t* caller_params, const ringattn_backend_t& kind,
               void* stream) {
  ringattn_attn_params_t params_copy;
  const ringattn_attn_params_t* params = versioned_params(caller_params, &params_copy);
  AttnShape shape;
  RINGATTN_RETURN_IF_ERROR(validate_forward_tensors(q, k, v, o, lse, &shape));
  AttnOptions opts;
  Backend* be = nullptr;
  RINGATTN_RETURN_IF_ERROR(prepare(shape, params, kind, &opts, &be));
  if (shape.batch == 0 || shape.seq == 0) return RINGATTN_SUCCESS;

  PosRun one_run;
  std::vector<PosRun> runs;
  const PosMap whole = whole_sequence_map(shape, opts, &one_run, &runs);
  FwdParams p{};
  set_call_problem(shape, opts, &p);
  p.q = tensor_ref(*q, shape.packed);
  p.k = tensor_ref(*k, shape.packed);
  p.v = tensor_ref(*v, shape.packed);
  p.o = tensor_ref(*o, shape.packed);
  p.lse = lse != nullptr ? rowstat_ref(*lse, shape.packed) : RowStatRef{nullptr, 0, 0};
  p.q_pos = p.k_pos = whole;
  p.out_mode = kOutFinal;
  return be->forward(p, stream);
}

// Bytes of the backward's float32 Delta [B, H, S], 64-byte aligned.
size_t delta_workspace_bytes(int64_t b, int64_t h, int64_t s) {
  const size_t raw =
      sizeof(float) * static_cast<size_t>(b) * static_cast<size_t>(h) * static_cast<size_t>(s);
  return (raw + 63) / 64 * 64;
}

Status backward(const ringattn_tensor_t* q, const ringattn_tensor_t* k, const ringattn_tensor_t* v,
                const ringattn_tensor_t* o, const ringattn_tensor_t* lse,
                const ringattn_tensor_t* dout, ringattn_tensor_t* dq, ringattn_tensor_t* dk,
                ringattn_tensor_t* dv, const ringattn_attn_params_t* caller_params, void* workspace,
                size_t workspace_bytes, const ringattn_backend_t& kind, void* stream) {
  ringattn_attn_params_t params_copy;
  const ringattn_attn_params_t* params = versioned_params(caller_params, &params_copy);
  AttnShape shape;
  RINGATTN_RETURN_IF_ERROR(validate_backward_tensors(q, k, v, o, lse, dout, dq, dk, dv, &shape));
  const size_t delta_bytes = delta_workspace_bytes(shape.batch, shape.hq, shape.seq);
  if (workspace != nullptr) {
    if (workspace_bytes < delta_bytes) {
      return set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT,
                        "argument 'workspace_bytes' is %zu, the call needs %zu "
                        "(ringattn_attention_backward_workspace_size)",
                        workspace_bytes, delta_bytes);
    }
    if (reinterpret_cast<uintptr_t>(workspace) % 64 != 0) {
      return set_error(RINGATTN_ERROR_INVALID_ARGUMENT,
                       "argument 'workspace' is not 64-byte aligned");
    }
  }
  AttnOptions opts;
  Backend* be = nullptr;
  RINGATTN_RETURN_IF_ERROR(prepare(shape, params, kind, &opts, &be));
  if (shape.batch == 0 || shape.seq == 0) return RINGATTN_SUCCESS;

  // Delta = rowsum(dO * O) in float32, [B, Hq, S] contiguous: in the caller's workspace, or
  // allocated for the call.
  float* const delta = workspace != nullptr ? static_cast<float*>(workspace)
                                            : static_cast<float*>(be->alloc(delta_bytes, stream));
  if (delta == nullptr) return RINGATTN_ERROR_OUT_OF_MEMORY;
  const RowStatRef delta_ref{delta, shape.hq * shape.seq, shape.seq};

  PosRun one_run;
  std::vector<PosRun> runs;
  const PosMap whole = whole_sequence_map(shape, opts, &one_run, &runs);
  BwdParams p{};
  set_call_problem(shape, opts, &p);
  p.q = tensor_ref(*q, shape.packed);
  p.k = tensor_ref(*k, shape.packed);
  p.v = tensor_ref(*v, shape.packed);
  p.dout = tensor_ref(*dout, shape.packed);
  p.o = tensor_ref(*o, shape.packed);
  p.lse = rowstat_ref(*lse, shape.packed);
  p.delta = delta_ref;
  p.dq = tensor_ref(*dq, shape.packed);
  p.dk = tensor_ref(*dk, shape.packed);
  p.dv = tensor_ref(*dv, shape.packed);
  p.accumulate = false;
  p.q_pos = p.k_pos = whole;

  Status st = be->compute_delta(shape.batch, shape.seq, shape.hq, shape.d, p.dout,
                                tensor_ref(*o, shape.packed), delta_ref, stream);
  if (st == RINGATTN_SUCCESS) st = be->backward(p, stream);
  if (workspace == nullptr) be->free(delta, stream);
  return st;
}

}  // namespace
}  // namespace ringattn

extern "C" {

ringattn_status_t ringattn_attention_forward(const ringattn_tensor_t* q, const ringattn_tensor_t* k,
                                             const ringattn_tensor_t* v, ringattn_tensor_t* o,
                                             ringattn_tensor_t* lse,
                                             const ringattn_attn_params_t* params,
                                             ringattn_backend_t backend, void* stream) {
  ringattn::clear_error();
  RINGATTN_API_GUARD_BEGIN
  return ringattn::forward(q, k, v, o, lse, params, backend, stream);
  RINGATTN_API_GUARD_END
}

ringattn_status_t ringattn_attention_backward(
    const ringattn_tensor_t* q, const ringattn_tensor_t* k, const ringattn_tensor_t* v,
    const ringattn_tensor_t* o, const ringattn_tensor_t* lse, const ringattn_tensor_t* dout,
    ringattn_tensor_t* dq, ringattn_tensor_t* dk, ringattn_tensor_t* dv,
    const ringattn_attn_params_t* params, ringattn_backend_t backend, void* stream) {
  ringattn::clear_error();
  RINGATTN_API_GUARD_BEGIN
  return ringattn::backward(q, k, v, o, lse, dout, dq, dk, dv, params, nullptr, 0, backend, stream);
  RINGATTN_API_GUARD_END
}

ringattn_status_t ringattn_attention_backward_workspace_size(const ringattn_tensor_t* q,
                                                             size_t* bytes) {
  ringattn::clear_error();
  if (bytes == nullptr) {
    return ringattn::set_error(RINGATTN_ERROR_NULL_POINTER, "argument 'bytes' is NULL");
  }
  if (q == nullptr) return ringattn::set_error(RINGATTN_ERROR_NULL_POINTER, "argument 'q' is NULL");
  if (q->ndim != 4 && q->ndim != 3) {
    return ringattn::set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT,
                                "'q' has ndim %d: expected 4 ([B, S, H, D]) or 3 ([T, H, D])",
                                static_cast<int>(q->ndim));
  }
  const bool packed = q->ndim == 3;
  const int64_t b = packed ? 1 : q->shape[0], s = packed ? q->shape[0] : q->shape[1],
                h = packed ? q->shape[1] : q->shape[2];
  constexpr int64_t kMaxDim = int64_t{1} << 40;
  if (b < 0 || s < 0 || h < 0 || b > kMaxDim || s > kMaxDim || h > kMaxDim ||
      (b > 0 && s > 0 && h > kMaxDim / b / s)) {
    return ringattn::set_error(RINGATTN_ERROR_INVALID_ARGUMENT,
                               "'q' has a negative or too large shape");
  }
  *bytes = ringattn::delta_workspace_bytes(b, h, s);
  return RINGATTN_SUCCESS;
}

ringattn_status_t ringattn_attention_backward_with_workspace(
    const ringattn_tensor_t* q, const ringattn_tensor_t* k, const ringattn_tensor_t* v,
    const ringattn_tensor_t* o, const ringattn_tensor_t* lse, const ringattn_tensor_t* dout,
    ringattn_tensor_t* dq, ringattn_tensor_t* dk, ringattn_tensor_t* dv,
    const ringattn_attn_params_t* params, void* workspace, size_t workspace_bytes,
    ringattn_backend_t backend, void* stream) {
  ringattn::clear_error();
  RINGATTN_API_GUARD_BEGIN
  return ringattn::backward(q, k, v, o, lse, dout, dq, dk, dv, params, workspace, workspace_bytes,
                            backend, stream);
  RINGATTN_API_GUARD_END
}

}  // extern "C"
