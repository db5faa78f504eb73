// The compute-backend interface that the single-process API and the ring executor run over.
// One implementation per kernels/ backend (backend_cpu.cpp, backend_cuda.cpp); the executor is
// written once against this interface.
//
// All tensors are described with the structs of kernels/common/local_params.h. Pointers are host
// pointers for the CPU backend and device pointers for the CUDA backend; PosMaps always point to
// HOST memory here, valid only during the call (a backend that needs them elsewhere copies them
// itself, stream-ordered, before it returns, unless the map carries a device copy made once by a
// plan: PosMap::device_runs).
// `stream` is the caller's stream (cudaStream_t for CUDA, ignored on the CPU); every call is
// ordered on it and none synchronizes the host.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <memory>

#include "compute_timer.h"
#include "local_params.h"
#include "status.h"
#include "support.h"

namespace ringattn {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual ringattn_backend_t kind() const = 0;

  // The compute capability of the calling thread's current device (major * 10 + minor, cached
  // per device), negative when there is none; 0 on the CPU.
  virtual int32_t arch() const { return 0; }
  // Can this backend run this head dim, dtype and mask here? The support table's answer
  // (src/support.h): RINGATTN_ERROR_UNSUPPORTED with a message otherwise (the "can implement"
  // check, made before anything runs).
  // `local_kernel` (ringattn_local_kernel_t): can this backend run it at all (cuDNN: built in and
  // loadable)? Where it cannot compute a block, our kernels do.
  Status supports(int64_t head_dim, DType dtype, const MaskSpec& mask,
                  int32_t local_kernel = RINGATTN_LOCAL_KERNEL_OWN) const {
    RINGATTN_RETURN_IF_ERROR(check_support(kind(), dtype, head_dim, mask_kind(mask), arch()));
    return local_kernel == RINGATTN_LOCAL_KERNEL_OWN ? RINGATTN_SUCCESS : supports_cudnn();
  }
  virtual Status supports_cudnn() const {
    return set_error(RINGATTN_ERROR_UNSUPPORTED,
                     "'params'.local_kernel RINGATTN_LOCAL_KERNEL_CUDNN needs backend "
                     "RINGATTN_BACKEND_CUDA");
  }

  virtual Status forward(const FwdParams& p, void* stream) = 0;
  virtual Status backward(const BwdParams& p, void* stream) = 0;
  // Optional, for several backward calls over the same query rows (the ring's key chunks and
  // steps), so that per-query-row preparation runs once instead of once per call: the caller
  // gives backward_query_pack_bytes(p) bytes of this backend's memory (64-byte aligned), fills
  // them with pack_backward_queries(p, ...) and passes them as BwdParams::query_pack. Only the
  // shape and query side (q, dout, lse, delta) of `p` are read and must stay unchanged while the
  // pack is in use. 0 bytes (the default): the backend prepares nothing; calls pass nullptr.
  virtual size_t backward_query_pack_bytes(const BwdParams& /*p*/) const { return 0; }
  virtual Status pack_backward_queries(const BwdParams& /*p*/, void* /*pack*/, void* /*stream*/) {
    return RINGATTN_SUCCESS;
  }
  // The forward's counterpart (the ring's query chunks of one step share the step's key rows):
  // forward_key_pack_bytes(p) bytes filled by pack_forward_keys(p, ...) and passed as
  // FwdParams::key_pack. Only the shape and key side (k, v, sk) of `p` are read. 0 bytes (the
  // default): the backend prepares nothing.
  virtual size_t forward_key_pack_bytes(const FwdParams& /*p*/) const { return 0; }
  virtual Status pack_forward_keys(const FwdParams& /*p*/, void* /*pack*/, void* /*stream*/) {
    return RINGATTN_SUCCESS;
  }
  virtual Status compute_delta(int64_t batch, int64_t s, int64_t h, int64_t d,
                               const TensorRef& dout, const TensorRef& o, const RowStatRef& delta,
                               void* stream) = 0;
  // Cast/copy [B, S, H, D]; src.data == nullptr zero-fills dst.
  virtual Status convert(int64_t batch, int64_t s, int64_t h, int64_t d, const TensorRef& src,
                         const TensorRef& dst, void* stream) = 0;
  // dst (float32) += src (any dtype) over [B, S, H, D].
  virtual Status accumulate(int64_t batch, int64_t s, int64_t h, int64_t d, const TensorRef& src,
                            const TensorRef& dst, void* stream) = 0;
  // dst = a + b cast to dst's dtype, a and b float32 over [B, S, H, D]. `a` is scratch: the
  // default adds b into it and casts it; a backend may do both in one pass without changing it.
  virtual Status add_convert(int64_t batch, int64_t s, int64_t h, int64_t d, const TensorRef& a,
                             const TensorRef& b, const TensorRef& dst, void* stream) {
    RINGATTN_RETURN_IF_ERROR(accumulate(batch, s, h, d, b, a, stream));
    return convert(batch, s, h, d, a, dst, stream);
  }
  // Should the ring cut its steps into chunks of key/value heads (every row) rather than of rows,
  // where there are enough heads? Head chunks use each head's operands once per step, which
  // keeps them in cache on the CPU; row chunks give more work per call.
  virtual bool chunks_by_heads() const { return false; }
  // Does backward honour BwdParams::overwrite_kv? Where it does not, callers zero-fill
  // accumulators before their first call adds to them.
  virtual bool backward_overwrites_kv() const { return false; }
  // Fill a float32 row-statistics tensor [B, H, S] with a value (e.g. -inf for an empty LSE).
  virtual Status fill_rowstat(int64_t batch, int64_t h, int64_t s, const RowStatRef& dst,
                              float value, void* stream) = 0;

  // The most runs a PosMap passes to this backend's kernels by value; longer maps are uploaded
  // by every call unless they carry `device_runs` (see RingContext::upload_runs). The CPU reads
  // host maps directly: no limit.
  virtual int32_t max_inline_runs() const { return INT32_MAX; }
  // Copies `bytes` of host memory into this backend's memory, ordered on `stream` (the host
  // buffer may be reused once it returns).
  virtual Status upload(void* dst, const void* host, size_t bytes, void* stream) = 0;

  // Memory in this backend's address space (host or device), stream-ordered where the backend
  // has streams (CUDA: cudaMallocAsync / cudaFreeAsync on `stream`, so no host synchronization).
  // alloc returns nullptr on failure after setting the last error (RINGATTN_ERROR_OUT_OF_MEMORY).
  virtual void* alloc(size_t bytes, void* stream) = 0;
  virtual void free(void* ptr, void* stream) = 0;

  // Release of memory that calls on the caller's streams used (the ring workspace), ordered
  // after the last of those calls: record(stream) after each call that used it, and
  // release(ptr, stream) frees it on `stream` once the work recorded has finished, without
  // blocking the host (CUDA: an event recorded on the call's stream, which the freeing stream
  // waits for before cudaFreeAsync). nullptr where memory is not stream-ordered (the CPU
  // backend): the caller frees directly.
  class UseFence {
   public:
    virtual ~UseFence() = default;
    virtual void record(void* stream) = 0;
    virtual void release(void* ptr, void* stream) = 0;
    // The host waits for the work recorded last (e.g. an allocation enqueued on a stream).
    virtual void wait() = 0;
  };
  virtual std::unique_ptr<UseFence> make_use_fence() { return nullptr; }

  // Device timing of compute (compute_timer.h); nullptr where the host clock around a call
  // already measures its compute (the CPU backend).
  virtual std::unique_ptr<ComputeTimer> make_timer() { return nullptr; }
  // Is `stream` being captured into a graph? Never on the CPU backend.
  virtual bool stream_capturing(void* /*stream*/) const { return false; }
};

// Frees `ptr` (nullptr: nothing) after its last use recorded in `fence`, or at once where the
// backend has no fences (`fence` null).
inline void release_after_use(Backend* be, Backend::UseFence* fence, void* ptr, void* stream) {
  if (ptr == nullptr) return;
  if (fence != nullptr) {
    fence->release(ptr, stream);
  } else {
    be->free(ptr, stream);
  }
}

// The backend singletons. cuda_backend() returns nullptr when the library was built without
// CUDA; it sets RINGATTN_ERROR_UNSUPPORTED in that case.
Backend* cpu_backend();
Backend* cuda_backend();
// Either of the above, with the error set if unavailable.
Status get_backend(const ringattn_backend_t& kind, Backend** out);

}  // namespace ringattn
