// The CPU backend: the Backend interface over kernels/cpu.
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "attention_cpu.h"
#include "backend.h"
#include "validate.h"

namespace ringattn {
namespace {

// The host kernels report a failed scratch allocation with std::bad_alloc on the caller's thread.
template <typename F>
Status run_kernel(const char* what, F&& f) {
  try {
    f();
  } catch (const std::bad_alloc&) {
    return set_errorf(RINGATTN_ERROR_OUT_OF_MEMORY, "cpu backend: out of host memory in %s", what);
  }
  return RINGATTN_SUCCESS;
}

class CpuBackend final : public Backend {
 public:
  ringattn_backend_t kind() const override { return RINGATTN_BACKEND_CPU; }

  Status forward(const FwdParams& p, void*) override {
    if (p.counts != nullptr) ++p.counts->own_calls;
    return run_kernel("forward", [&] { cpu::attention_forward(p); });
  }
  Status backward(const BwdParams& p, void*) override {
    if (p.counts != nullptr) ++p.counts->own_calls;
    return run_kernel("backward", [&] { cpu::attention_backward(p); });
  }
  size_t forward_key_pack_bytes(const FwdParams& p) const override {
    return cpu::forward_key_pack_bytes(p);
  }
  Status pack_forward_keys(const FwdParams& p, void* pack, void*) override {
    return run_kernel("pack_forward_keys", [&] { cpu::pack_forward_keys(p, pack); });
  }
  size_t backward_query_pack_bytes(const BwdParams& p) const override {
    return cpu::backward_query_pack_bytes(p);
  }
  Status pack_backward_queries(const BwdParams& p, void* pack, void*) override {
    cpu::pack_backward_queries(p, pack);
    return RINGATTN_SUCCESS;
  }
  Status compute_delta(int64_t batch, int64_t s, int64_t h, int64_t d, const TensorRef& dout,
                       const TensorRef& o, const RowStatRef& delta, void*) override {
    return run_kernel("compute_delta", [&] { cpu::compute_delta(batch, s, h, d, dout, o, delta); });
  }
  Status convert(int64_t batch, int64_t s, int64_t h, int64_t d, const TensorRef& src,
                 const TensorRef& dst, void*) override {
    return run_kernel("convert", [&] { cpu::convert(batch, s, h, d, src, dst); });
  }
  Status accumulate(int64_t batch, int64_t s, int64_t h, int64_t d, const TensorRef& src,
                    const TensorRef& dst, void*) override {
    return run_kernel("accumulate", [&] { cpu::accumulate(batch, s, h, d, src, dst); });
  }
  Status add_convert(int64_t batch, int64_t s, int64_t h, int64_t d, const TensorRef& a,
                     const TensorRef& b, const TensorRef& dst, void*) override {
    return run_kernel("add_convert", [&] { cpu::add_convert(batch, s, h, d, a, b, dst); });
  }
  bool backward_overwrites_kv() const override { return true; }
  bool chunks_by_heads() const override { return true; }
  Status fill_rowstat(int64_t batch, int64_t h, int64_t s, const RowStatRef& dst, float value,
                      void*) override {
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t hh = 0; hh < h; ++hh) {
        float* row = dst.data + b * dst.stride_b + hh * dst.stride_h;
        for (int64_t i = 0; i < s; ++i) row[i] = value;
      }
    }
    return RINGATTN_SUCCESS;
  }

  Status upload(void* dst, const void* host, size_t bytes, void*) override {
    std::memcpy(dst, host, bytes);
    return RINGATTN_SUCCESS;
  }

  void* alloc(size_t bytes, void*) override {
    if (bytes == 0) bytes = 64;
    // 64-byte alignment for vector loads; rounded up as aligned_alloc requires.
    void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (p == nullptr) {
      set_errorf(RINGATTN_ERROR_OUT_OF_MEMORY, "cpu backend: cannot allocate %zu bytes", bytes);
    }
    return p;
  }
  void free(void* ptr, void*) override { std::free(ptr); }
};

}  // namespace

Backend* cpu_backend() {
  static CpuBackend backend;
  return &backend;
}

Status get_backend(const ringattn_backend_t& kind, Backend** out) {
  *out = nullptr;
  const int64_t value = enum_value(kind);  // read as an integer: it may be out of range
  if (value == RINGATTN_BACKEND_CPU) {
    *out = cpu_backend();
    return RINGATTN_SUCCESS;
  }
  if (value == RINGATTN_BACKEND_CUDA) {
    *out = cuda_backend();
    return *out != nullptr ? RINGATTN_SUCCESS : RINGATTN_ERROR_UNSUPPORTED;
  }
  return set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT, "argument 'backend' has an unknown value %lld",
                    static_cast<long long>(value));
}

}  // namespace ringattn

extern "C" int ringattn_backend_available(ringattn_backend_t backend) {
  const int64_t value = ringattn::enum_value(backend);  // any int from a C caller
  if (value == RINGATTN_BACKEND_CPU) return 1;
  if (value == RINGATTN_BACKEND_CUDA) {
    const std::string saved = ringattn::last_error();
    const int ok = ringattn::cuda_backend() != nullptr;
    ringattn::set_error(RINGATTN_SUCCESS, saved);
    return ok;
  }
  return 0;
}
