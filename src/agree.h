// Agreement on the problem before the first exchange: every rank publishes a fingerprint of its
// call (shapes, dtype, scheme, mask, window, scale, cu_seqlens, and whether its own arguments
// were valid); every rank checks all of them, so a mismatch or a local error becomes the same
// error on every rank, naming the difference, instead of a hang in the ring.
#pragma once

#include <stdint.h>

#include <vector>

#include "status.h"
#include "transport.h"
#include "validate.h"

namespace ringattn {

enum RingOp : int64_t { kOpForward = 1, kOpBackward = 2, kOpPlan = 3 };

// One rank's fingerprint: kFingerprintSize int64 values; kFingerprintOpField holds the RingOp.
constexpr int kFingerprintSize = 20;
constexpr size_t kFingerprintOpField = 1;

// Fill `fp` for this call. `local_status` is the outcome of this rank's own validation (the
// other fields are only compared when every rank's is RINGATTN_SUCCESS).
void make_fingerprint(RingOp op, Status local_status, const AttnShape& shape,
                      const AttnOptions& opts, const ringattn_attn_params_t* params, bool has_lse,
                      int32_t chunks, int64_t* fp);

// Exchange fingerprints (into `all`, world * kFingerprintSize values) and check them. On
// success, *global_seq is the global S of fixed-length tensors (sum of the local lengths, checked
// against the scheme) and every rank's local length is in local_rows (world values).
// `local_message` is this rank's own validation message, kept when it is the one that failed.
Status agree_on_problem(comm::Transport* t, const int64_t* fp, std::vector<int64_t>* all,
                        int64_t* global_seq, std::vector<int64_t>* local_rows,
                        const std::string& local_message);

}  // namespace ringattn
