#include "validate.h"

#include <cmath>
#include <string>

namespace ringattn {
namespace {

const char* dtype_name(ringattn_dtype_t d) {
  switch (d) {
    case RINGATTN_FLOAT32: return "float32";
    case RINGATTN_FLOAT16: return "float16";
    case RINGATTN_BFLOAT16: return "bfloat16";
  }
  return "unknown";
}

bool valid_dtype(ringattn_dtype_t d) {
  return d == RINGATTN_FLOAT32 || d == RINGATTN_FLOAT16 || d == RINGATTN_BFLOAT16;
}

// Structural checks of one descriptor: pointer, ndim, non-negative sizes and strides,
// contiguous last dimension.
Status check_descriptor(const ringattn_tensor_t* t, const char* name, int32_t ndim_a,
                        int32_t ndim_b) {
  if (t == nullptr) return set_errorf(RINGATTN_ERROR_NULL_POINTER, "argument '%s' is NULL", name);
  if (t->ndim != ndim_a && t->ndim != ndim_b) {
    return set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT, "'%s' has ndim %d, expected %d or %d", name,
                      t->ndim, ndim_a, ndim_b);
  }
  if (!valid_dtype(t->dtype)) {
    return set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT, "'%s' has an unknown dtype value %d", name,
                      static_cast<int>(t->dtype));
  }
  int64_t elems = 1;
  for (int32_t i = 0; i < t->ndim; ++i) {
    if (t->shape[i] < 0) {
      return set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT, "'%s' has a negative size %lld in dim %d",
                        name, static_cast<long long>(t->shape[i]), i);
    }
    if (t->strides[i] < 0) {
      return set_errorf(RINGATTN_ERROR_BAD_STRIDE, "'%s' has a negative stride %lld in dim %d",
                        name, static_cast<long long>(t->strides[i]), i);
    }
    elems *= t->shape[i];
  }
  if (t->strides[t->ndim - 1] != 1 && t->shape[t->ndim - 1] > 1) {
    return set_errorf(RINGATTN_ERROR_BAD_STRIDE,
                      "'%s' last dimension is not contiguous (stride %lld, must be 1)", name,
                      static_cast<long long>(t->strides[t->ndim - 1]));
  }
  if (t->data == nullptr && elems > 0) {
    return set_errorf(RINGATTN_ERROR_NULL_POINTER, "'%s'.data is NULL", name);
  }
  return RINGATTN_SUCCESS;
}

std::string dims(const ringattn_tensor_t* t) {
  std::string s = "[";
  for (int32_t i = 0; i < t->ndim; ++i) {
    if (i) s += ",";
    s += std::to_string(t->shape[i]);
  }
  return s + "]";
}

Status expect_shape(const ringattn_tensor_t* t, const char* name, int32_t ndim,
                    const int64_t* want, const char* layout) {
  bool ok = t->ndim == ndim;
  for (int32_t i = 0; ok && i < ndim; ++i) ok = t->shape[i] == want[i];
  if (!ok) {
    ringattn_tensor_t w{};
    w.ndim = ndim;
    for (int32_t i = 0; i < ndim; ++i) w.shape[i] = want[i];
    return set_errorf(RINGATTN_ERROR_SHAPE_MISMATCH, "'%s' has shape %s, expected %s %s", name,
                      dims(t).c_str(), dims(&w).c_str(), layout);
  }
  return RINGATTN_SUCCESS;
}

Status expect_dtype(const ringattn_tensor_t* t, const char* name, ringattn_dtype_t want) {
  if (t->dtype != want) {
    return set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT, "'%s' has dtype %s, expected %s", name,
                      dtype_name(t->dtype), dtype_name(want));
  }
  return RINGATTN_SUCCESS;
}

// q, k, v: layout, GQA, head dim (structure only; backend support is checked later).
Status check_qkv(const ringattn_tensor_t* q, const ringattn_tensor_t* k,
                 const ringattn_tensor_t* v, AttnShape* s) {
  RINGATTN_RETURN_IF_ERROR(check_descriptor(q, "q", 4, 3));
  RINGATTN_RETURN_IF_ERROR(check_descriptor(k, "k", 4, 3));
  RINGATTN_RETURN_IF_ERROR(check_descriptor(v, "v", 4, 3));
  s->packed = q->ndim == 3;
  const char* layout = s->packed ? "[T, Hkv, D]" : "[B, S, Hkv, D]";
  if (k->ndim != q->ndim) {
    return set_errorf(RINGATTN_ERROR_SHAPE_MISMATCH, "'k' has ndim %d but 'q' has ndim %d", k->ndim,
                      q->ndim);
  }
  if (s->packed) {
    s->batch = 1;
    s->seq = q->shape[0];
    s->hq = q->shape[1];
    s->d = q->shape[2];
  } else {
    s->batch = q->shape[0];
    s->seq = q->shape[1];
    s->hq = q->shape[2];
    s->d = q->shape[3];
  }
  s->hkv = k->shape[q->ndim - 2];
  int64_t want[4];
  if (s->packed) {
    want[0] = s->seq, want[1] = s->hkv, want[2] = s->d;
  } else {
    want[0] = s->batch, want[1] = s->seq, want[2] = s->hkv, want[3] = s->d;
  }
  RINGATTN_RETURN_IF_ERROR(expect_shape(k, "k", q->ndim, want, layout));
  RINGATTN_RETURN_IF_ERROR(expect_shape(v, "v", q->ndim, want, layout));
  RINGATTN_RETURN_IF_ERROR(expect_dtype(k, "k", q->dtype));
  RINGATTN_RETURN_IF_ERROR(expect_dtype(v, "v", q->dtype));
  if (s->hq == 0 || s->hkv == 0) {
    return set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT, "head counts must be positive (Hq=%lld, Hkv=%lld)",
                      static_cast<long long>(s->hq), static_cast<long long>(s->hkv));
  }
  if (s->hq % s->hkv != 0) {
    return set_errorf(RINGATTN_ERROR_SHAPE_MISMATCH,
                      "'q' heads (Hq=%lld) are not a multiple of 'k'/'v' heads (Hkv=%lld)",
                      static_cast<long long>(s->hq), static_cast<long long>(s->hkv));
  }
  if (s->d < 32 || s->d > 256 || s->d % 8 != 0) {
    return set_errorf(RINGATTN_ERROR_UNSUPPORTED,
                      "head dim D=%lld of 'q' is unsupported (supported: 32..256 in steps of 8)",
                      static_cast<long long>(s->d));
  }
  s->dtype = to_dtype(q->dtype);
  return RINGATTN_SUCCESS;
}

Status check_like_q(const ringattn_tensor_t* t, const char* name, const ringattn_tensor_t* q) {
  RINGATTN_RETURN_IF_ERROR(check_descriptor(t, name, 4, 3));
  RINGATTN_RETURN_IF_ERROR(
      expect_shape(t, name, q->ndim, q->shape, q->ndim == 3 ? "(like q [T, Hq, D])" : "(like q [B, S, Hq, D])"));
  return expect_dtype(t, name, q->dtype);
}

Status check_like_k(const ringattn_tensor_t* t, const char* name, const ringattn_tensor_t* k) {
  RINGATTN_RETURN_IF_ERROR(check_descriptor(t, name, 4, 3));
  RINGATTN_RETURN_IF_ERROR(
      expect_shape(t, name, k->ndim, k->shape, k->ndim == 3 ? "(like k [T, Hkv, D])" : "(like k [B, S, Hkv, D])"));
  return expect_dtype(t, name, k->dtype);
}

Status check_lse(const ringattn_tensor_t* lse, const AttnShape& s) {
  RINGATTN_RETURN_IF_ERROR(check_descriptor(lse, "lse", 3, 2));
  if (s.packed) {
    const int64_t want[2] = {s.hq, s.seq};
    RINGATTN_RETURN_IF_ERROR(expect_shape(lse, "lse", 2, want, "[Hq, T]"));
  } else {
    const int64_t want[3] = {s.batch, s.hq, s.seq};
    RINGATTN_RETURN_IF_ERROR(expect_shape(lse, "lse", 3, want, "[B, Hq, S]"));
  }
  return expect_dtype(lse, "lse", RINGATTN_FLOAT32);
}

}  // namespace

DType to_dtype(ringattn_dtype_t d) {
  return d == RINGATTN_FLOAT16 ? kF16 : d == RINGATTN_BFLOAT16 ? kBF16 : kF32;
}

size_t dtype_size(DType d) { return d == kF32 ? 4 : 2; }

Status validate_forward_tensors(const ringattn_tensor_t* q, const ringattn_tensor_t* k,
                                const ringattn_tensor_t* v, const ringattn_tensor_t* o,
                                const ringattn_tensor_t* lse, AttnShape* shape) {
  RINGATTN_RETURN_IF_ERROR(check_qkv(q, k, v, shape));
  RINGATTN_RETURN_IF_ERROR(check_like_q(o, "o", q));
  if (lse != nullptr) RINGATTN_RETURN_IF_ERROR(check_lse(lse, *shape));
  return RINGATTN_SUCCESS;
}

Status validate_backward_tensors(const ringattn_tensor_t* q, const ringattn_tensor_t* k,
                                 const ringattn_tensor_t* v, const ringattn_tensor_t* o,
                                 const ringattn_tensor_t* lse, const ringattn_tensor_t* dout,
                                 const ringattn_tensor_t* dq, const ringattn_tensor_t* dk,
                                 const ringattn_tensor_t* dv, AttnShape* shape) {
  RINGATTN_RETURN_IF_ERROR(check_qkv(q, k, v, shape));
  RINGATTN_RETURN_IF_ERROR(check_like_q(o, "o", q));
  if (lse == nullptr) return set_error(RINGATTN_ERROR_NULL_POINTER, "argument 'lse' is NULL");
  RINGATTN_RETURN_IF_ERROR(check_lse(lse, *shape));
  RINGATTN_RETURN_IF_ERROR(check_like_q(dout, "dout", q));
  RINGATTN_RETURN_IF_ERROR(check_like_q(dq, "dq", q));
  RINGATTN_RETURN_IF_ERROR(check_like_k(dk, "dk", k));
  RINGATTN_RETURN_IF_ERROR(check_like_k(dv, "dv", k));
  return RINGATTN_SUCCESS;
}

Status validate_params(const ringattn_attn_params_t* params, const AttnShape& shape,
                       AttnOptions* opts) {
  if (params == nullptr) return set_error(RINGATTN_ERROR_NULL_POINTER, "argument 'params' is NULL");
  if (params->struct_size < sizeof(ringattn_attn_params_t)) {
    return set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT,
                      "'params'.struct_size is %zu, expected %zu: initialize with "
                      "RINGATTN_ATTN_PARAMS_INIT",
                      params->struct_size, sizeof(ringattn_attn_params_t));
  }
  if (!std::isfinite(params->softmax_scale)) {
    return set_error(RINGATTN_ERROR_INVALID_ARGUMENT, "'params'.softmax_scale is not finite");
  }
  opts->scale = params->softmax_scale > 0.0f
                    ? params->softmax_scale
                    : static_cast<float>(1.0 / std::sqrt(static_cast<double>(shape.d)));
  if (params->window_left < -1 || params->window_right < -1) {
    return set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT,
                      "'params'.window (%lld, %lld) is invalid: each side is >= 0, or -1 for "
                      "unbounded",
                      static_cast<long long>(params->window_left),
                      static_cast<long long>(params->window_right));
  }
  opts->causal = params->causal != 0;
  opts->mask = make_mask_spec(opts->causal, params->window_left, params->window_right);
  if (params->scheme != RINGATTN_SCHEME_CONTIGUOUS && params->scheme != RINGATTN_SCHEME_ZIGZAG &&
      params->scheme != RINGATTN_SCHEME_STRIPED) {
    return set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT, "'params'.scheme has an unknown value %d",
                      static_cast<int>(params->scheme));
  }
  opts->scheme = static_cast<int32_t>(params->scheme);
  opts->cu_seqlens.clear();
  if (shape.packed) {
    if (params->cu_seqlens == nullptr) {
      return set_error(RINGATTN_ERROR_NULL_POINTER,
                       "'params'.cu_seqlens is NULL but the tensors are packed [T, H, D]");
    }
    if (params->num_seqs < 0) {
      return set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT, "'params'.num_seqs is negative (%lld)",
                        static_cast<long long>(params->num_seqs));
    }
    opts->cu_seqlens.assign(params->cu_seqlens, params->cu_seqlens + params->num_seqs + 1);
    if (opts->cu_seqlens[0] != 0) {
      return set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT, "'params'.cu_seqlens[0] is %lld, must be 0",
                        static_cast<long long>(opts->cu_seqlens[0]));
    }
    for (int64_t b = 0; b < params->num_seqs; ++b) {
      if (opts->cu_seqlens[b + 1] < opts->cu_seqlens[b]) {
        return set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT,
                          "'params'.cu_seqlens is decreasing at index %lld", static_cast<long long>(b + 1));
      }
    }
  } else if (params->cu_seqlens != nullptr || params->num_seqs != 0) {
    return set_error(RINGATTN_ERROR_INVALID_ARGUMENT,
                     "'params'.cu_seqlens is set but the tensors are not packed (4-d [B, S, H, D])");
  }
  return RINGATTN_SUCCESS;
}

TensorRef tensor_ref(const ringattn_tensor_t& t, bool packed) {
  if (packed) return TensorRef{t.data, to_dtype(t.dtype), 0, t.strides[0], t.strides[1]};
  return TensorRef{t.data, to_dtype(t.dtype), t.strides[0], t.strides[1], t.strides[2]};
}

RowStatRef rowstat_ref(const ringattn_tensor_t& t, bool packed) {
  if (packed) return RowStatRef{static_cast<float*>(t.data), 0, t.strides[0]};
  return RowStatRef{static_cast<float*>(t.data), t.strides[0], t.strides[1]};
}

std::vector<PosRun> whole_sequence_runs(const AttnShape& shape, const AttnOptions& opts) {
  std::vector<PosRun> runs;
  if (!shape.packed) {
    if (shape.seq > 0) runs.push_back(PosRun{0, 0, shape.seq, 1});
    return runs;
  }
  for (size_t b = 0; b + 1 < opts.cu_seqlens.size(); ++b) {
    const int64_t len = opts.cu_seqlens[b + 1] - opts.cu_seqlens[b];
    if (len > 0) runs.push_back(PosRun{static_cast<int64_t>(b), 0, len, 1});
  }
  return runs;
}

}  // namespace ringattn
