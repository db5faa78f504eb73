// C API: the sharding helpers (which positions of a sequence a rank holds).
#include "positions.h"
#include "status.h"
#include "validate.h"

namespace ringattn {
namespace {

// `scheme` by reference and read as an integer: a C caller may pass any value.
Status check_shard_args(const ringattn_scheme_t& scheme, int64_t seq_len, int32_t world,
                        int32_t rank) {
  const int64_t value = enum_value(scheme);
  if (value != RINGATTN_SCHEME_CONTIGUOUS && value != RINGATTN_SCHEME_ZIGZAG &&
      value != RINGATTN_SCHEME_STRIPED) {
    return set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT,
                      "argument 'scheme' has an unknown value %lld", static_cast<long long>(value));
  }
  if (seq_len < 0) {
    return set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT, "argument 'seq_len' is negative (%lld)",
                      static_cast<long long>(seq_len));
  }
  if (world <= 0) {
    return set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT, "argument 'world' must be positive (%d)",
                      world);
  }
  if (rank < 0 || rank >= world) {
    return set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT,
                      "argument 'rank' (%d) is outside [0, world=%d)", rank, world);
  }
  return RINGATTN_SUCCESS;
}

}  // namespace
}  // namespace ringattn

extern "C" {

ringattn_status_t ringattn_shard_length(ringattn_scheme_t scheme, int64_t seq_len, int32_t world,
                                        int32_t rank, int64_t* local_len) {
  ringattn::clear_error();
  RINGATTN_RETURN_IF_ERROR(ringattn::check_shard_args(scheme, seq_len, world, rank));
  if (local_len == nullptr) {
    return ringattn::set_error(RINGATTN_ERROR_NULL_POINTER, "argument 'local_len' is NULL");
  }
  *local_len = ringattn::scheme_local_len(scheme, seq_len, world, rank);
  return RINGATTN_SUCCESS;
}

ringattn_status_t ringattn_shard_positions(ringattn_scheme_t scheme, int64_t seq_len, int32_t world,
                                           int32_t rank, int64_t* positions, int64_t capacity) {
  ringattn::clear_error();
  RINGATTN_RETURN_IF_ERROR(ringattn::check_shard_args(scheme, seq_len, world, rank));
  ringattn::PosRun runs[2];
  const int32_t n = ringattn::scheme_runs(scheme, 0, seq_len, world, rank, runs);
  int64_t need = 0;
  for (int32_t i = 0; i < n; ++i) need += runs[i].count;
  if (need > 0 && positions == nullptr) {
    return ringattn::set_error(RINGATTN_ERROR_NULL_POINTER, "argument 'positions' is NULL");
  }
  if (capacity < need) {
    return ringattn::set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT,
                                "argument 'capacity' (%lld) is smaller than the shard (%lld)",
                                static_cast<long long>(capacity), static_cast<long long>(need));
  }
  int64_t j = 0;
  for (int32_t i = 0; i < n; ++i) {
    for (int64_t c = 0; c < runs[i].count; ++c) positions[j++] = runs[i].start + c * runs[i].stride;
  }
  return RINGATTN_SUCCESS;
}

}  // extern "C"
