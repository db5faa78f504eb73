// Bounded polling, shared by the transports: every wait for a peer or for device work is a loop
// of non-blocking checks under one deadline. The first 200 us spin for latency; after that the
// loop sleeps between checks, so that ranks sharing cores (tests oversubscribe) or a GPU leave
// them to the ranks that still compute.
#pragma once

#include <stdint.h>
#include <time.h>

#include <chrono>

#include "ringattn/ringattn.h"

namespace ringattn {
namespace comm {

// Calls `check()` until it returns true (the wait is over: done or failed, as the check
// records) or `timeout_ms` has passed. Returns false on the timeout.
template <typename Check>
bool poll_until(int64_t timeout_ms, Check&& check) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point start = Clock::now();
  const Clock::time_point deadline = start + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    if (check()) return true;
    const Clock::time_point now = Clock::now();
    if (now >= deadline) return false;
    if (now - start > std::chrono::microseconds(200)) {
      struct timespec ts = {0, 50 * 1000};
      nanosleep(&ts, nullptr);
    }
  }
}

}  // namespace comm
}  // namespace ringattn
