// The one error-propagation macro of the library (transports and runtime alike).
#pragma once

#include "ringattn/ringattn.h"

// Return from the calling function when `expr` is not RINGATTN_SUCCESS.
#define RINGATTN_RETURN_IF_ERROR(expr)                                 \
  do {                                                                 \
    const ringattn_status_t ringattn_status_ = (expr);                 \
    if (ringattn_status_ != RINGATTN_SUCCESS) return ringattn_status_; \
  } while (0)
