// Internal status handling: a Status value carried upward, a thread-local last-error message,
// and one check macro per error source (file:line and the failing call recorded once).
#pragma once

#include <string>

#include "return_if_error.h"  // RINGATTN_RETURN_IF_ERROR, shared with the transports
#include "ringattn/ringattn.h"

namespace ringattn {

using Status = ringattn_status_t;

// Record `msg` as this thread's last error and return `code`.
Status set_error(Status code, const std::string& msg);
// printf-style variant.
Status set_errorf(Status code, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
// Clear the last error (called on entry of every C API function).
void clear_error();
const char* last_error();

}  // namespace ringattn

// Convert C++ exceptions at the C boundary into status codes (the C API never throws).
#define RINGATTN_API_GUARD_BEGIN try {
#define RINGATTN_API_GUARD_END                                                                  \
  }                                                                                             \
  catch (const std::bad_alloc&) {                                                               \
    return ::ringattn::set_error(RINGATTN_ERROR_OUT_OF_MEMORY, "out of host memory");           \
  }                                                                                             \
  catch (const std::exception& e) {                                                             \
    return ::ringattn::set_errorf(RINGATTN_ERROR_INTERNAL, "internal error: %s", e.what());     \
  }                                                                                             \
  catch (...) {                                                                                 \
    return ::ringattn::set_error(RINGATTN_ERROR_INTERNAL, "internal error: unknown exception"); \
  }
