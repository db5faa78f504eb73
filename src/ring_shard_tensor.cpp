// C API: shard and unshard a global host tensor by a scheme (ringattn.h). Row copies only:
// which global row each local row is comes from scheme_runs, as everywhere else.
#include <cstring>
#include <string>

#include "positions.h"
#include "ringattn/ringattn.h"
#include "status.h"
#include "validate.h"

namespace ringattn {
namespace {

Status check_tensor(const ringattn_tensor_t* t, const char* name, bool packed) {
  if (t == nullptr) return set_errorf(RINGATTN_ERROR_NULL_POINTER, "argument '%s' is NULL", name);
  const int want = packed ? 3 : 4;
  if (t->ndim != want) {
    return set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT, "'%s' has ndim %d, expected %d (%s)", name,
                      t->ndim, want, packed ? "[T, H, D] with cu_seqlens" : "[B, S, H, D]");
  }
  for (int i = 0; i < t->ndim; ++i) {
    if (t->shape[i] < 0 || t->strides[i] < 0) {
      return set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT, "'%s' has a negative size or stride",
                        name);
    }
  }
  if (t->strides[t->ndim - 1] != 1 && t->shape[t->ndim - 1] > 1) {
    return set_errorf(RINGATTN_ERROR_BAD_STRIDE, "'%s' last dimension is not contiguous", name);
  }
  const int64_t dtype = enum_value(t->dtype);
  if (dtype != RINGATTN_FLOAT32 && dtype != RINGATTN_FLOAT16 && dtype != RINGATTN_BFLOAT16) {
    return set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT, "'%s' has an unknown dtype value %lld", name,
                      static_cast<long long>(dtype));
  }
  return check_tensor_extent(t, name);
}

// Copies rows between the global and local tensor; to_local chooses the direction.
// `scheme` by reference and read as an integer: a C caller may pass any value.
Status shard_copy(const ringattn_tensor_t* global, const ringattn_tensor_t* local,
                  const ringattn_scheme_t& scheme, const int64_t* cu, int64_t num_seqs,
                  int32_t world, int32_t rank, bool to_local) {
  const int64_t scheme_value = enum_value(scheme);
  if (scheme_value != RINGATTN_SCHEME_CONTIGUOUS && scheme_value != RINGATTN_SCHEME_ZIGZAG &&
      scheme_value != RINGATTN_SCHEME_STRIPED) {
    return set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT,
                      "argument 'scheme' has an unknown value %lld",
                      static_cast<long long>(scheme_value));
  }
  if (world <= 0 || rank < 0 || rank >= world) {
    return set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT,
                      "arguments 'rank' (%d) / 'world' (%d) are "
                      "invalid",
                      rank, world);
  }
  const bool packed = cu != nullptr;
  if (!packed && num_seqs != 0) {
    return set_error(RINGATTN_ERROR_NULL_POINTER, "argument 'cu_seqlens' is NULL but num_seqs > 0");
  }
  RINGATTN_RETURN_IF_ERROR(check_tensor(global, "global", packed));
  RINGATTN_RETURN_IF_ERROR(check_tensor(local, "local", packed));
  if (global->dtype != local->dtype) {
    return set_error(RINGATTN_ERROR_INVALID_ARGUMENT, "'global' and 'local' dtypes differ");
  }
  const int hd = packed ? 1 : 2;  // index of the head dimension
  if (global->shape[hd] != local->shape[hd] || global->shape[hd + 1] != local->shape[hd + 1] ||
      (!packed && global->shape[0] != local->shape[0])) {
    return set_error(RINGATTN_ERROR_SHAPE_MISMATCH,
                     "'global' and 'local' differ in batch, heads or head dim");
  }
  const int64_t batch = packed ? 1 : global->shape[0];
  const int64_t H = global->shape[hd], D = global->shape[hd + 1];
  const size_t esz = dtype_size(to_dtype(global->dtype));
  if (packed && (num_seqs < 0 || num_seqs > kMaxSequences)) {
    return set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT,
                      "argument 'num_seqs' is %lld, must be in 0..2^31-1",
                      static_cast<long long>(num_seqs));
  }
  for (int64_t b = 0; packed && b <= num_seqs; ++b) {
    if (cu[b] < 0 || cu[b] > kMaxTensorElements || (b == 0 ? cu[0] != 0 : cu[b] < cu[b - 1])) {
      return set_error(RINGATTN_ERROR_INVALID_ARGUMENT,
                       "'cu_seqlens' is not 0-based non-decreasing (at most 2^48 tokens)");
    }
  }
  // (sequence offset in the global rows, length) per sequence.
  const int64_t nseq = packed ? num_seqs : 1;
  int64_t local_rows = 0;
  for (int64_t b = 0; b < nseq; ++b) {
    const int64_t len = packed ? cu[b + 1] - cu[b] : global->shape[1];
    local_rows += scheme_local_len(scheme, len, world, rank);
  }
  const int64_t global_rows = packed ? cu[num_seqs] : global->shape[1];
  if (global->shape[packed ? 0 : 1] != global_rows) {
    return set_errorf(RINGATTN_ERROR_SHAPE_MISMATCH, "'global' holds %lld rows, expected %lld",
                      static_cast<long long>(global->shape[packed ? 0 : 1]),
                      static_cast<long long>(global_rows));
  }
  if (local->shape[packed ? 0 : 1] != local_rows) {
    return set_errorf(RINGATTN_ERROR_SHAPE_MISMATCH,
                      "'local' holds %lld rows, but rank %d's share is %lld",
                      static_cast<long long>(local->shape[packed ? 0 : 1]), rank,
                      static_cast<long long>(local_rows));
  }
  if ((global->data == nullptr || local->data == nullptr) && local_rows > 0 && batch * H * D > 0) {
    return set_error(RINGATTN_ERROR_NULL_POINTER, "'global' or 'local' data is NULL");
  }
  const int ss = packed ? 0 : 1;  // index of the sequence dimension
  int64_t lrow = 0;
  for (int64_t b = 0; b < nseq; ++b) {
    const int64_t base = packed ? cu[b] : 0;
    const int64_t len = packed ? cu[b + 1] - cu[b] : global->shape[1];
    PosRun runs[2];
    const int32_t n = scheme_runs(scheme, b, len, world, rank, runs);
    for (int32_t r = 0; r < n; ++r) {
      for (int64_t i = 0; i < runs[r].count; ++i, ++lrow) {
        const int64_t grow = base + runs[r].start + i * runs[r].stride;
        for (int64_t bb = 0; bb < batch; ++bb) {
          for (int64_t h = 0; h < H; ++h) {
            const int64_t go = (packed ? 0 : bb * global->strides[0]) + grow * global->strides[ss] +
                               h * global->strides[hd];
            const int64_t lo = (packed ? 0 : bb * local->strides[0]) + lrow * local->strides[ss] +
                               h * local->strides[hd];
            char* g = static_cast<char*>(global->data) + go * static_cast<int64_t>(esz);
            char* l = static_cast<char*>(local->data) + lo * static_cast<int64_t>(esz);
            if (to_local) {
              std::memcpy(l, g, esz * D);
            } else {
              std::memcpy(g, l, esz * D);
            }
          }
        }
      }
    }
  }
  return RINGATTN_SUCCESS;
}

}  // namespace
}  // namespace ringattn

extern "C" {

ringattn_status_t ringattn_shard_tensor(const ringattn_tensor_t* global, ringattn_tensor_t* local,
                                        ringattn_scheme_t scheme, const int64_t* cu_seqlens,
                                        int64_t num_seqs, int32_t world, int32_t rank) {
  ringattn::clear_error();
  return ringattn::shard_copy(global, local, scheme, cu_seqlens, num_seqs, world, rank, true);
}

ringattn_status_t ringattn_unshard_tensor(const ringattn_tensor_t* local, ringattn_tensor_t* global,
                                          ringattn_scheme_t scheme, const int64_t* cu_seqlens,
                                          int64_t num_seqs, int32_t world, int32_t rank) {
  ringattn::clear_error();
  return ringattn::shard_copy(global, local, scheme, cu_seqlens, num_seqs, world, rank, false);
}

}  // extern "C"
