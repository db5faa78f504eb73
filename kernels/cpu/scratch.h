// Reusable scratch memory for the host kernels. Each thread (the caller's and every OpenMP
// worker, which persist across parallel regions) keeps its own buffers and grows them only when a
// call needs more, so steady-state calls allocate nothing and tiles never allocate.
#pragma once

#include <omp.h>
#include <stddef.h>
#include <stdlib.h>

#include <atomic>
#include <initializer_list>
#include <new>
#include <utility>

namespace ringattn {
namespace cpu {

class ScratchBuffer {
 public:
  ScratchBuffer() = default;
  ScratchBuffer(const ScratchBuffer&) = delete;
  ScratchBuffer& operator=(const ScratchBuffer&) = delete;
  ~ScratchBuffer() { free(ptr_); }

  // At least `count` elements of T, 64-byte aligned; contents unspecified.
  template <typename T>
  T* get(size_t count) {
    if (!reserve(count * sizeof(T))) throw std::bad_alloc();
    return static_cast<T*>(ptr_);
  }

  // Grows the buffer to at least `bytes`; false if the allocation failed (buffer left empty).
  bool reserve(size_t bytes) noexcept {
    bytes = (bytes + 63) / 64 * 64;
    if (bytes > cap_) {
      free(ptr_);
      cap_ = 0;
      ptr_ = aligned_alloc(64, bytes);
      if (ptr_ == nullptr) return false;
      cap_ = bytes;
    }
    return true;
  }

 private:
  void* ptr_ = nullptr;
  size_t cap_ = 0;
};

// Named per-thread slots, so that one kernel can hold several buffers at once.
enum ScratchSlot : int {
  kSlotQPos = 0,
  kSlotKPos,
  kSlotPackA,
  kSlotPackB,
  kSlotThreadPtrs,  // a pointer per OpenMP thread (the backward's dQ buffers)
  kSlotTileA,
  kSlotTileB,
  kSlotTileC,
  kSlotTileD,
  kSlotTileE,
  kSlotCount
};

inline ScratchBuffer& thread_scratch(ScratchSlot slot) {
  thread_local ScratchBuffer buffers[kSlotCount];
  return buffers[slot];
}

// Grows the given slots on every thread of an OpenMP team of `nthreads` before the parallel region
// that uses them, so that the region's get() calls never allocate. An allocation failure then
// surfaces as std::bad_alloc on the caller's thread (which the C API turns into
// RINGATTN_ERROR_OUT_OF_MEMORY) instead of an exception escaping a parallel region, which would
// terminate the program.
inline void reserve_thread_scratch(std::initializer_list<std::pair<ScratchSlot, size_t>> slots,
                                   int nthreads) {
  std::atomic<bool> ok{true};
#pragma omp parallel num_threads(nthreads)
  for (const auto& s : slots) {
    if (!thread_scratch(s.first).reserve(s.second)) ok.store(false);
  }
  if (!ok.load()) throw std::bad_alloc();
}

}  // namespace cpu
}  // namespace ringattn
