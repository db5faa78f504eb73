#include "validate.h"

#include <stddef.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

namespace ringattn {
namespace {

const char* dtype_name(int64_t d) {
  switch (d) {
    case RINGATTN_FLOAT32:
      return "float32";
    case RINGATTN_FLOAT16:
      return "float16";
    case RINGATTN_BFLOAT16:
      return "bfloat16";
    default:
      return "unknown";
  }
}

bool valid_dtype(int64_t d) {
  return d == RINGATTN_FLOAT32 || d == RINGATTN_FLOAT16 || d == RINGATTN_BFLOAT16;
}

int64_t elem_bytes(const ringattn_tensor_t* t) {
  return enum_value(t->dtype) == RINGATTN_FLOAT32 ? 4 : 2;
}

bool empty(const ringattn_tensor_t* t) {
  for (int32_t i = 0; i < t->ndim; ++i) {
    if (t->shape[i] == 0) return true;
  }
  return false;
}

// Offset (in elements) of the last element of a validated, non-empty descriptor.
int64_t last_offset(const ringattn_tensor_t* t) {
  int64_t last = 0;
  for (int32_t i = 0; i < t->ndim; ++i) last += (t->shape[i] - 1) * t->strides[i];
  return last;
}

// The dims of size > 1 of a descriptor, by decreasing stride, with the largest offset the dims
// after each reach: reach[k] = sum over m >= k of (n_m - 1) * s_m.
struct Dims {
  int n = 0;
  int64_t size[4], stride[4], reach[5];
};
Dims sorted_dims(const ringattn_tensor_t* t) {
  Dims d;
  for (int32_t i = 0; i < t->ndim; ++i) {
    if (t->shape[i] > 1) d.size[d.n] = t->shape[i], d.stride[d.n] = t->strides[i], ++d.n;
  }
  for (int a = 1; a < d.n; ++a) {  // insertion sort, <= 4 dims
    for (int b = a; b > 0 && d.stride[b] > d.stride[b - 1]; --b) {
      std::swap(d.stride[b], d.stride[b - 1]);
      std::swap(d.size[b], d.size[b - 1]);
    }
  }
  d.reach[d.n] = 0;
  for (int k = d.n - 1; k >= 0; --k) d.reach[k] = d.reach[k + 1] + (d.size[k] - 1) * d.stride[k];
  return d;
}

// Two elements of the descriptor share memory: some dim's stride does not exceed what the
// smaller-stride dims reach (a zero stride on a dim of size > 1, for one).
bool self_overlapping(const ringattn_tensor_t* t) {
  const Dims d = sorted_dims(t);
  for (int k = 0; k < d.n; ++k) {
    if (d.stride[k] <= d.reach[k + 1]) return true;
  }
  return false;
}

int64_t floor_div(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

// Is `delta` a difference of two element offsets of the (non-self-overlapping) layout `d`, from
// dim k on: delta = sum of c_m * s_m with |c_m| <= n_m - 1?
bool offsets_differ_by(const Dims& d, int k, int64_t delta) {
  if (k >= d.n || k >= 4) return delta == 0;
  const int64_t s = d.stride[k], r = d.reach[k + 1], n = d.size[k];
  const int64_t lo = std::max(-(n - 1), -floor_div(r - delta, s));
  const int64_t hi = std::min(n - 1, floor_div(delta + r, s));
  for (int64_t c = lo; c <= hi; ++c) {
    if (offsets_differ_by(d, k + 1, delta - c * s)) return true;
  }
  return false;
}

struct Named {
  const ringattn_tensor_t* t;
  const char* name;
};

// Do two validated descriptors share memory? Byte ranges that do not meet never do; views with
// the same dtype, shape and strides (interleaved views of one buffer, such as dK and dV in one
// [B, S, 2, Hkv, D] tensor) are checked element by element; any other pair whose ranges meet
// is taken to share memory.
bool share_memory(const ringattn_tensor_t* a, const ringattn_tensor_t* b) {
  if (a->data == nullptr || b->data == nullptr || empty(a) || empty(b)) return false;
  const uintptr_t a0 = reinterpret_cast<uintptr_t>(a->data);
  const uintptr_t b0 = reinterpret_cast<uintptr_t>(b->data);
  const uintptr_t a1 = a0 + static_cast<uintptr_t>((last_offset(a) + 1) * elem_bytes(a));
  const uintptr_t b1 = b0 + static_cast<uintptr_t>((last_offset(b) + 1) * elem_bytes(b));
  if (a1 <= b0 || b1 <= a0) return false;
  bool same = enum_value(a->dtype) == enum_value(b->dtype) && a->ndim == b->ndim;
  for (int32_t i = 0; same && i < a->ndim; ++i) {
    same = a->shape[i] == b->shape[i] && a->strides[i] == b->strides[i];
  }
  const int64_t bytes = b0 >= a0 ? static_cast<int64_t>(b0 - a0) : -static_cast<int64_t>(a0 - b0);
  if (!same || bytes % elem_bytes(a) != 0 || self_overlapping(a)) return true;
  return offsets_differ_by(sorted_dims(a), 0, bytes / elem_bytes(a));
}

// Outputs share memory neither with an input nor with another output, nor within themselves.
Status check_outputs_apart(const Named* outs, int n_out, const Named* ins, int n_in) {
  for (int i = 0; i < n_out; ++i) {
    if (!empty(outs[i].t) && self_overlapping(outs[i].t)) {
      return set_errorf(RINGATTN_ERROR_BAD_STRIDE,
                        "output '%s': its strides map two elements to the same memory (for "
                        "example a stride of 0 on a dimension of size > 1)",
                        outs[i].name);
    }
    for (int j = 0; j < n_in; ++j) {
      if (share_memory(outs[i].t, ins[j].t)) {
        return set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT,
                          "output '%s' overlaps input '%s' in memory (in-place calls are not "
                          "supported)",
                          outs[i].name, ins[j].name);
      }
    }
    for (int j = 0; j < i; ++j) {
      if (share_memory(outs[i].t, outs[j].t)) {
        return set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT,
                          "outputs '%s' and '%s' overlap in memory", outs[j].name, outs[i].name);
      }
    }
  }
  return RINGATTN_SUCCESS;
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
  if (!valid_dtype(enum_value(t->dtype))) {
    return set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT, "'%s' has an unknown dtype value %lld", name,
                      static_cast<long long>(enum_value(t->dtype)));
  }
  for (int32_t i = 0; i < t->ndim; ++i) {
    if (t->shape[i] < 0) {
      return set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT, "'%s' has a negative size %lld in dim %d",
                        name, static_cast<long long>(t->shape[i]), i);
    }
    if (t->strides[i] < 0) {
      return set_errorf(RINGATTN_ERROR_BAD_STRIDE, "'%s' has a negative stride %lld in dim %d",
                        name, static_cast<long long>(t->strides[i]), i);
    }
  }
  RINGATTN_RETURN_IF_ERROR(check_tensor_extent(t, name));
  if (t->strides[t->ndim - 1] != 1 && t->shape[t->ndim - 1] > 1) {
    return set_errorf(RINGATTN_ERROR_BAD_STRIDE,
                      "'%s' last dimension is not contiguous (stride %lld, must be 1)", name,
                      static_cast<long long>(t->strides[t->ndim - 1]));
  }
  if (t->data == nullptr && !empty(t)) {
    return set_errorf(RINGATTN_ERROR_NULL_POINTER, "'%s'.data is NULL", name);
  }
  // The kernels load elements through typed pointers: a misaligned one is undefined behaviour
  // on the host and a fault on the device.
  if (!empty(t) && reinterpret_cast<uintptr_t>(t->data) % elem_bytes(t) != 0) {
    return set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT,
                      "'%s'.data (%p) is not aligned to its %lld-byte elements", name, t->data,
                      static_cast<long long>(elem_bytes(t)));
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

Status expect_shape(const ringattn_tensor_t* t, const char* name, int32_t ndim, const int64_t* want,
                    const char* layout) {
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
Status check_qkv(const ringattn_tensor_t* q, const ringattn_tensor_t* k, const ringattn_tensor_t* v,
                 AttnShape* s) {
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
    return set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT,
                      "head counts must be positive (Hq=%lld, Hkv=%lld)",
                      static_cast<long long>(s->hq), static_cast<long long>(s->hkv));
  }
  if (s->hq % s->hkv != 0) {
    return set_errorf(RINGATTN_ERROR_SHAPE_MISMATCH,
                      "'q' heads (Hq=%lld) are not a multiple of 'k'/'v' heads (Hkv=%lld)",
                      static_cast<long long>(s->hq), static_cast<long long>(s->hkv));
  }
  s->dtype = to_dtype(q->dtype);
  return RINGATTN_SUCCESS;
}

Status check_like_q(const ringattn_tensor_t* t, const char* name, const ringattn_tensor_t* q) {
  RINGATTN_RETURN_IF_ERROR(check_descriptor(t, name, 4, 3));
  RINGATTN_RETURN_IF_ERROR(expect_shape(
      t, name, q->ndim, q->shape, q->ndim == 3 ? "(like q [T, Hq, D])" : "(like q [B, S, Hq, D])"));
  return expect_dtype(t, name, q->dtype);
}

Status check_like_k(const ringattn_tensor_t* t, const char* name, const ringattn_tensor_t* k) {
  RINGATTN_RETURN_IF_ERROR(check_descriptor(t, name, 4, 3));
  RINGATTN_RETURN_IF_ERROR(
      expect_shape(t, name, k->ndim, k->shape,
                   k->ndim == 3 ? "(like k [T, Hkv, D])" : "(like k [B, S, Hkv, D])"));
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

Status check_tensor_extent(const ringattn_tensor_t* t, const char* name) {
  if (empty(t)) return RINGATTN_SUCCESS;
  int64_t elems = 1, last = 0;
  for (int32_t i = 0; i < t->ndim; ++i) {
    if (__builtin_mul_overflow(elems, t->shape[i], &elems) || elems > kMaxTensorElements) {
      return set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT,
                        "'%s' has shape %s: more than 2^48 elements", name, dims(t).c_str());
    }
  }
  for (int32_t i = 0; i < t->ndim; ++i) {
    int64_t term = 0;
    if (__builtin_mul_overflow(t->shape[i] - 1, t->strides[i], &term) ||
        __builtin_add_overflow(last, term, &last) || last >= kMaxTensorElements) {
      std::string strides = "[";
      for (int32_t j = 0; j < t->ndim; ++j) {
        strides += (j ? "," : "") + std::to_string(t->strides[j]);
      }
      return set_errorf(RINGATTN_ERROR_BAD_STRIDE,
                        "'%s' with shape %s and strides %s] reaches beyond element 2^48", name,
                        dims(t).c_str(), strides.c_str());
    }
  }
  return RINGATTN_SUCCESS;
}

DType to_dtype(ringattn_dtype_t d) {
  return d == RINGATTN_FLOAT16 ? kF16 : d == RINGATTN_BFLOAT16 ? kBF16 : kF32;
}

size_t dtype_size(DType d) { return d == kF32 ? 4 : 2; }

Status validate_qkv_tensors(const ringattn_tensor_t* q, const ringattn_tensor_t* k,
                            const ringattn_tensor_t* v, AttnShape* shape) {
  return check_qkv(q, k, v, shape);
}

Status validate_forward_tensors(const ringattn_tensor_t* q, const ringattn_tensor_t* k,
                                const ringattn_tensor_t* v, const ringattn_tensor_t* o,
                                const ringattn_tensor_t* lse, AttnShape* shape) {
  RINGATTN_RETURN_IF_ERROR(check_qkv(q, k, v, shape));
  RINGATTN_RETURN_IF_ERROR(check_like_q(o, "o", q));
  if (lse != nullptr) RINGATTN_RETURN_IF_ERROR(check_lse(lse, *shape));
  const Named outs[2] = {{o, "o"}, {lse, "lse"}};
  const Named ins[3] = {{q, "q"}, {k, "k"}, {v, "v"}};
  return check_outputs_apart(outs, lse != nullptr ? 2 : 1, ins, 3);
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
  const Named outs[3] = {{dq, "dq"}, {dk, "dk"}, {dv, "dv"}};
  const Named ins[6] = {{q, "q"}, {k, "k"}, {v, "v"}, {o, "o"}, {lse, "lse"}, {dout, "dout"}};
  return check_outputs_apart(outs, 3, ins, 6);
}

namespace {
// The published ringattn_attn_params_t before this one: the first ended with window_right, the
// second with num_seqs.
constexpr size_t kParamsFirstVersion =
    offsetof(ringattn_attn_params_t, window_right) + sizeof(int64_t);
constexpr size_t kParamsSecondVersion =
    offsetof(ringattn_attn_params_t, num_seqs) + sizeof(int64_t);
}  // namespace

const ringattn_attn_params_t* versioned_params(const ringattn_attn_params_t* in,
                                               ringattn_attn_params_t* copy) {
  if (in == nullptr || in->struct_size == sizeof(ringattn_attn_params_t)) return in;
  *copy = RINGATTN_ATTN_PARAMS_INIT;
  return read_versioned(*in, {kParamsFirstVersion, kParamsSecondVersion}, copy) ? copy : in;
}

Status validate_params(const ringattn_attn_params_t* params, const AttnShape& shape,
                       AttnOptions* opts) {
  if (params == nullptr) return set_error(RINGATTN_ERROR_NULL_POINTER, "argument 'params' is NULL");
  if (params->struct_size != kParamsFirstVersion && params->struct_size != kParamsSecondVersion &&
      params->struct_size < sizeof(ringattn_attn_params_t)) {
    return set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT,
                      "'params'.struct_size is %zu, expected %zu (or %zu or %zu, the earlier "
                      "versions): initialize with RINGATTN_ATTN_PARAMS_INIT",
                      params->struct_size, sizeof(ringattn_attn_params_t), kParamsFirstVersion,
                      kParamsSecondVersion);
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
  const int64_t scheme = enum_value(params->scheme);
  if (scheme != RINGATTN_SCHEME_CONTIGUOUS && scheme != RINGATTN_SCHEME_ZIGZAG &&
      scheme != RINGATTN_SCHEME_STRIPED) {
    return set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT, "'params'.scheme has an unknown value %lld",
                      static_cast<long long>(scheme));
  }
  opts->scheme = static_cast<int32_t>(scheme);
  const int64_t local_kernel = enum_value(params->local_kernel);
  if (local_kernel != RINGATTN_LOCAL_KERNEL_OWN && local_kernel != RINGATTN_LOCAL_KERNEL_CUDNN) {
    return set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT,
                      "'params'.local_kernel has an unknown value %lld",
                      static_cast<long long>(local_kernel));
  }
  opts->local_kernel = static_cast<int32_t>(local_kernel);
  opts->cu_seqlens.clear();
  if (shape.packed) {
    if (params->cu_seqlens == nullptr) {
      return set_error(RINGATTN_ERROR_NULL_POINTER,
                       "'params'.cu_seqlens is NULL but the tensors are packed [T, H, D]");
    }
    if (params->num_seqs < 0 || params->num_seqs > kMaxSequences) {
      return set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT,
                        "'params'.num_seqs is %lld, must be in 0..2^31-1",
                        static_cast<long long>(params->num_seqs));
    }
    opts->cu_seqlens.assign(params->cu_seqlens, params->cu_seqlens + params->num_seqs + 1);
    if (opts->cu_seqlens[0] != 0) {
      return set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT,
                        "'params'.cu_seqlens[0] is %lld, must be 0",
                        static_cast<long long>(opts->cu_seqlens[0]));
    }
    for (int64_t b = 0; b < params->num_seqs; ++b) {
      if (opts->cu_seqlens[b + 1] > kMaxTensorElements) {
        return set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT,
                          "'params'.cu_seqlens[%lld] is %lld, beyond 2^48 tokens",
                          static_cast<long long>(b + 1),
                          static_cast<long long>(opts->cu_seqlens[b + 1]));
      }
      if (opts->cu_seqlens[b + 1] < opts->cu_seqlens[b]) {
        return set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT,
                          "'params'.cu_seqlens is decreasing at index %lld",
                          static_cast<long long>(b + 1));
      }
    }
  } else if (params->cu_seqlens != nullptr || params->num_seqs != 0) {
    return set_error(
        RINGATTN_ERROR_INVALID_ARGUMENT,
        "'params'.cu_seqlens is set but the tensors are not packed (4-d [B, S, H, D])");
  }
  return RINGATTN_SUCCESS;
}

void set_call_problem(const AttnShape& shape, const AttnOptions& opts, AttnCall* call) {
  call->batch = shape.batch;
  call->sq = call->sk = shape.seq;
  call->hq = shape.hq;
  call->hkv = shape.hkv;
  call->d = shape.d;
  call->scale = opts.scale;
  call->mask = opts.mask;
  call->local_kernel = opts.local_kernel == RINGATTN_LOCAL_KERNEL_CUDNN ? kLocalCudnn : kLocalOwn;
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
