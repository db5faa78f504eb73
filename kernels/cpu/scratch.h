// Reusable scratch memory for the host kernels. Each thread (the caller's and every OpenMP
// worker, which persist across parallel regions) keeps its own buffers and grows them only when a
// call needs more, so steady-state calls allocate nothing and tiles never allocate.
#pragma once

#include <stddef.h>
#include <stdlib.h>

#include <new>

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
    const size_t bytes = (count * sizeof(T) + 63) / 64 * 64;
    if (bytes > cap_) {
      free(ptr_);
      ptr_ = aligned_alloc(64, bytes);
      if (ptr_ == nullptr) throw std::bad_alloc();
      cap_ = bytes;
    }
    return static_cast<T*>(ptr_);
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
  kSlotPackC,
  kSlotPackD,
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

}  // namespace cpu
}  // namespace ringattn
