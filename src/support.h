// The support table (include/ringattn/ringattn.h: ringattn_support_table): which (backend,
// dtype, head dim, mask kind, architecture) runs, defined once and checked by every call through
// Backend::supports.
#pragma once

#include <stdint.h>

#include "local_params.h"
#include "ringattn/ringattn.h"
#include "status.h"

namespace ringattn {

// The kind of a resolved mask: RINGATTN_MASK_FULL, _CAUSAL or _WINDOW.
ringattn_mask_kind_t mask_kind(const MaskSpec& m);

// RINGATTN_SUCCESS when the table has an entry for the call, else RINGATTN_ERROR_UNSUPPORTED
// with a message naming the call and what the table offers. `arch`: the device's compute
// capability (major * 10 + minor), 0 on the CPU, negative when there is no device (CUDA).
Status check_support(ringattn_backend_t backend, DType dtype, int64_t head_dim,
                     ringattn_mask_kind_t mask, int32_t arch);

}  // namespace ringattn
