#include "transport.h"

#include <cstdlib>

namespace ringattn {
namespace comm {

int64_t default_timeout_ms() {
  const char* env = std::getenv("RINGATTN_TIMEOUT_MS");
  if (env != nullptr && *env != '\0') {
    char* end = nullptr;
    const long long v = std::strtoll(env, &end, 10);
    if (end != nullptr && *end == '\0' && v > 0) return static_cast<int64_t>(v);
  }
  return 300000;
}

}  // namespace comm
}  // namespace ringattn
