// Device-side timing of a ring call's compute. The host clock around a backend call measures
// compute on the CPU backend, but only enqueueing on the CUDA backend, whose kernels run later
// on the stream: there the backend provides a timer that brackets each backend call with a pair
// of stream events and sums their elapsed device time when asked.
#pragma once

#include <memory>

namespace ringattn {

class ComputeTimer {
 public:
  virtual ~ComputeTimer() = default;
  // Forget the intervals of the previous call (events are reused, never freed per call).
  virtual void reset() = 0;
  // Bracket one backend call on `stream` (best effort: a failed record drops the interval).
  virtual void begin(void* stream) = 0;
  virtual void end(void* stream) = 0;
  // Sum of the recorded intervals in seconds; waits for their work to finish. Intervals that
  // cannot be read (device error) count as 0.
  virtual double seconds() = 0;
};

// The CUDA events timer (nullptr in a build without CUDA).
std::unique_ptr<ComputeTimer> make_cuda_compute_timer();

}  // namespace ringattn
