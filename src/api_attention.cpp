// C API: single-process attention (the whole sequence on one device), forward and backward.
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
Status prepare(const AttnShape& shape, const ringattn_attn_params_t* params,
               const ringattn_backend_t& kind, AttnOptions* opts, Backend** be) {
  RINGATTN_RETURN_IF_ERROR(validate_params(params, shape, opts));
  RINGATTN_RETURN_IF_ERROR(check_packed_total(shape, *opts));
  RINGATTN_RETURN_IF_ERROR(get_backend(kind, be));
  return (*be)->supports(shape.d, shape.dtype);
}

Status forward(const ringattn_tensor_t* q, const ringattn_tensor_t* k,
               const ringattn_tensor_t* v, ringattn_tensor_t* o, ringattn_tensor_t* lse,
               const ringattn_attn_params_t* params, const ringattn_backend_t& kind,
               void* stream) {
  AttnShape shape;
  RINGATTN_RETURN_IF_ERROR(validate_forward_tensors(q, k, v, o, lse, &shape));
  AttnOptions opts;
  Backend* be = nullptr;
  RINGATTN_RETURN_IF_ERROR(prepare(shape, params, kind, &opts, &be));
  if (shape.batch == 0 || shape.seq == 0) return RINGATTN_SUCCESS;

  const std::vector<PosRun> runs = whole_sequence_runs(shape, opts);
  FwdParams p{};
  p.batch = shape.batch;
  p.sq = p.sk = shape.seq;
  p.hq = shape.hq;
  p.hkv = shape.hkv;
  p.d = shape.d;
  p.q = tensor_ref(*q, shape.packed);
  p.k = tensor_ref(*k, shape.packed);
  p.v = tensor_ref(*v, shape.packed);
  p.o = tensor_ref(*o, shape.packed);
  p.lse = lse != nullptr ? rowstat_ref(*lse, shape.packed) : RowStatRef{nullptr, 0, 0};
  p.scale = opts.scale;
  p.mask = opts.mask;
  p.q_pos = p.k_pos = PosMap{runs.data(), static_cast<int32_t>(runs.size())};
  p.out_mode = kOutFinal;
  return be->forward(p, stream);
}

Status backward(const ringattn_tensor_t* q, const ringattn_tensor_t* k,
                const ringattn_tensor_t* v, const ringattn_tensor_t* o,
                const ringattn_tensor_t* lse, const ringattn_tensor_t* dout,
                ringattn_tensor_t* dq, ringattn_tensor_t* dk, ringattn_tensor_t* dv,
                const ringattn_attn_params_t* params, const ringattn_backend_t& kind,
                void* stream) {
  AttnShape shape;
  RINGATTN_RETURN_IF_ERROR(
      validate_backward_tensors(q, k, v, o, lse, dout, dq, dk, dv, &shape));
  AttnOptions opts;
  Backend* be = nullptr;
  RINGATTN_RETURN_IF_ERROR(prepare(shape, params, kind, &opts, &be));
  if (shape.batch == 0 || shape.seq == 0) return RINGATTN_SUCCESS;

  // Delta = rowsum(dO * O) in float32, [B, Hq, S] contiguous.
  const size_t delta_bytes = sizeof(float) * shape.batch * shape.hq * shape.seq;
  float* delta = static_cast<float*>(be->alloc(delta_bytes, stream));
  if (delta == nullptr) return RINGATTN_ERROR_OUT_OF_MEMORY;
  const RowStatRef delta_ref{delta, shape.hq * shape.seq, shape.seq};

  const std::vector<PosRun> runs = whole_sequence_runs(shape, opts);
  BwdParams p{};
  p.batch = shape.batch;
  p.sq = p.sk = shape.seq;
  p.hq = shape.hq;
  p.hkv = shape.hkv;
  p.d = shape.d;
  p.q = tensor_ref(*q, shape.packed);
  p.k = tensor_ref(*k, shape.packed);
  p.v = tensor_ref(*v, shape.packed);
  p.dout = tensor_ref(*dout, shape.packed);
  p.lse = rowstat_ref(*lse, shape.packed);
  p.delta = delta_ref;
  p.dq = tensor_ref(*dq, shape.packed);
  p.dk = tensor_ref(*dk, shape.packed);
  p.dv = tensor_ref(*dv, shape.packed);
  p.accumulate = false;
  p.scale = opts.scale;
  p.mask = opts.mask;
  p.q_pos = p.k_pos = PosMap{runs.data(), static_cast<int32_t>(runs.size())};

  Status st = be->compute_delta(shape.batch, shape.seq, shape.hq, shape.d, p.dout,
                                tensor_ref(*o, shape.packed), delta_ref, stream);
  if (st == RINGATTN_SUCCESS) st = be->backward(p, stream);
  be->free(delta, stream);
  return st;
}

}  // namespace
}  // namespace ringattn

extern "C" {

ringattn_status_t ringattn_attention_forward(const ringattn_tensor_t* q,
                                             const ringattn_tensor_t* k,
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
  return ringattn::backward(q, k, v, o, lse, dout, dq, dk, dv, params, backend, stream);
  RINGATTN_API_GUARD_END
}

}  // extern "C"
