#include "status.h"

#include <cstdarg>
#include <cstdio>
#include <vector>

namespace ringattn {
namespace {
thread_local std::string g_last_error;
}

Status set_error(Status code, const std::string& msg) {
  g_last_error = msg;
  return code;
}

Status set_errorf(Status code, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  va_list ap2;
  va_copy(ap2, ap);
  const int n = std::vsnprintf(nullptr, 0, fmt, ap);
  va_end(ap);
  std::string s(n > 0 ? static_cast<size_t>(n) : 0, '\0');
  if (n > 0) std::vsnprintf(&s[0], s.size() + 1, fmt, ap2);
  va_end(ap2);
  g_last_error = std::move(s);
  return code;
}

void clear_error() { g_last_error.clear(); }
const char* last_error() { return g_last_error.c_str(); }

}  // namespace ringattn

extern "C" {

const char* ringattn_status_string(ringattn_status_t status) {
  switch (status) {
    case RINGATTN_SUCCESS:
      return "RINGATTN_SUCCESS: no error";
    case RINGATTN_ERROR_INVALID_ARGUMENT:
      return "RINGATTN_ERROR_INVALID_ARGUMENT: an argument has an invalid value";
    case RINGATTN_ERROR_NULL_POINTER:
      return "RINGATTN_ERROR_NULL_POINTER: a required pointer is NULL";
    case RINGATTN_ERROR_SHAPE_MISMATCH:
      return "RINGATTN_ERROR_SHAPE_MISMATCH: tensor shapes disagree";
    case RINGATTN_ERROR_BAD_STRIDE:
      return "RINGATTN_ERROR_BAD_STRIDE: a stride is negative or the last dimension is not "
             "contiguous";
    case RINGATTN_ERROR_UNSUPPORTED:
      return "RINGATTN_ERROR_UNSUPPORTED: not supported by this build, backend or device";
    case RINGATTN_ERROR_OUT_OF_MEMORY:
      return "RINGATTN_ERROR_OUT_OF_MEMORY: an allocation failed";
    case RINGATTN_ERROR_CUDA:
      return "RINGATTN_ERROR_CUDA: a CUDA call failed";
    case RINGATTN_ERROR_COMM:
      return "RINGATTN_ERROR_COMM: a communication call failed";
    case RINGATTN_ERROR_TIMEOUT:
      return "RINGATTN_ERROR_TIMEOUT: a peer did not answer in time";
    case RINGATTN_ERROR_MISMATCH:
      return "RINGATTN_ERROR_MISMATCH: ranks disagree on the problem";
    case RINGATTN_ERROR_INTERNAL:
      return "RINGATTN_ERROR_INTERNAL: internal error";
  }
  return "RINGATTN_ERROR_UNKNOWN: unknown status code";
}

const char* ringattn_get_last_error(void) { return ringattn::last_error(); }

int ringattn_get_version(void) { return RINGATTN_VERSION_CODE; }

}  // extern "C"
