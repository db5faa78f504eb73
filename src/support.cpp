// The support table and its lookup (src/support.h).
#include "support.h"

#include <string>

#include "backend.h"
#include "validate.h"

namespace ringattn {
namespace {

constexpr uint32_t kAllMasks = RINGATTN_MASK_FULL | RINGATTN_MASK_CAUSAL | RINGATTN_MASK_WINDOW;

// Keep in step with the table in include/ringattn/ringattn.h.
constexpr ringattn_support_entry_t kTable[] = {
    {RINGATTN_BACKEND_CPU, RINGATTN_FLOAT32, 32, 256, 8, kAllMasks, 0},
    {RINGATTN_BACKEND_CPU, RINGATTN_FLOAT16, 32, 256, 8, kAllMasks, 0},
    {RINGATTN_BACKEND_CPU, RINGATTN_BFLOAT16, 32, 256, 8, kAllMasks, 0},
    {RINGATTN_BACKEND_CUDA, RINGATTN_FLOAT32, 32, 256, 8, kAllMasks, 80},
    {RINGATTN_BACKEND_CUDA, RINGATTN_FLOAT16, 32, 256, 8, kAllMasks, 80},
    {RINGATTN_BACKEND_CUDA, RINGATTN_BFLOAT16, 32, 256, 8, kAllMasks, 80},
};
constexpr size_t kTableSize = sizeof(kTable) / sizeof(kTable[0]);

const char* backend_name(ringattn_backend_t b) {
  return b == RINGATTN_BACKEND_CUDA ? "cuda" : "cpu";
}

const char* dtype_name(DType d) {
  return d == kF32 ? "float32" : d == kF16 ? "float16" : "bfloat16";
}

std::string masks_text(uint32_t kinds) {
  std::string s;
  const char* names[] = {"full", "causal", "window"};
  for (int i = 0; i < 3; ++i) {
    if ((kinds & (1u << i)) == 0) continue;
    if (!s.empty()) s += ", ";
    s += names[i];
  }
  return s.empty() ? std::string("none") : s;
}

std::string arch_text(ringattn_backend_t backend, int32_t arch) {
  if (backend == RINGATTN_BACKEND_CPU) return "the host";
  return "sm_" + std::to_string(arch);
}

bool covers(const ringattn_support_entry_t& e, int64_t head_dim, ringattn_mask_kind_t mask,
            int32_t arch) {
  return head_dim >= e.head_dim_min && head_dim <= e.head_dim_max &&
         (head_dim - e.head_dim_min) % e.head_dim_step == 0 && (e.mask_kinds & mask) != 0 &&
         arch >= e.min_arch;
}

}  // namespace

ringattn_mask_kind_t mask_kind(const MaskSpec& m) {
  if (m.left < 0 && m.right < 0) return RINGATTN_MASK_FULL;
  if (m.left < 0 && m.right == 0) return RINGATTN_MASK_CAUSAL;
  return RINGATTN_MASK_WINDOW;
}

Status check_support(ringattn_backend_t backend, DType dtype, int64_t head_dim,
                     ringattn_mask_kind_t mask, int32_t arch) {
  if (backend == RINGATTN_BACKEND_CUDA && arch < 0) {
    return set_error(RINGATTN_ERROR_UNSUPPORTED, "cuda backend: no CUDA device is available");
  }
  const ringattn_dtype_t dt = dtype == kF32   ? RINGATTN_FLOAT32
                              : dtype == kF16 ? RINGATTN_FLOAT16
                                              : RINGATTN_BFLOAT16;
  const ringattn_support_entry_t* offered = nullptr;
  for (const ringattn_support_entry_t& e : kTable) {
    if (e.backend != backend || e.dtype != dt) continue;
    if (covers(e, head_dim, mask, backend == RINGATTN_BACKEND_CPU ? 0 : arch)) {
      return RINGATTN_SUCCESS;
    }
    offered = &e;
  }
  const std::string asked = std::string(backend_name(backend)) + ", " + dtype_name(dtype) +
                            ", head dim " + std::to_string(head_dim) + ", mask " +
                            masks_text(mask) + ", " + arch_text(backend, arch);
  if (offered == nullptr) {
    return set_errorf(RINGATTN_ERROR_UNSUPPORTED,
                      "%s backend: no entry of the support table for (%s)", backend_name(backend),
                      asked.c_str());
  }
  return set_errorf(RINGATTN_ERROR_UNSUPPORTED,
                    "%s backend: no entry of the support table for (%s): %s %s runs head dim "
                    "%d..%d in steps of %d, masks %s, on %s%s (ringattn_support_table)",
                    backend_name(backend), asked.c_str(), backend_name(backend), dtype_name(dtype),
                    offered->head_dim_min, offered->head_dim_max, offered->head_dim_step,
                    masks_text(offered->mask_kinds).c_str(),
                    arch_text(backend, offered->min_arch).c_str(),
                    backend == RINGATTN_BACKEND_CPU ? "" : " or newer");
}

}  // namespace ringattn

extern "C" {

ringattn_status_t ringattn_support_table(const ringattn_support_entry_t** entries, size_t* count) {
  ringattn::clear_error();
  if (entries == nullptr || count == nullptr) {
    return ringattn::set_error(RINGATTN_ERROR_NULL_POINTER, entries == nullptr
                                                                ? "argument 'entries' is NULL"
                                                                : "argument 'count' is NULL");
  }
  *entries = ringattn::kTable;
  *count = ringattn::kTableSize;
  return RINGATTN_SUCCESS;
}

ringattn_status_t ringattn_check_support(ringattn_backend_t backend, ringattn_dtype_t dtype,
                                         int64_t head_dim, ringattn_mask_kind_t mask,
                                         int32_t arch) {
  ringattn::clear_error();
  // Any integer may arrive from C: read the enums as integers.
  const int64_t b = ringattn::enum_value(backend), d = ringattn::enum_value(dtype),
                m = ringattn::enum_value(mask);
  if (b != RINGATTN_BACKEND_CPU && b != RINGATTN_BACKEND_CUDA) {
    return ringattn::set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT,
                                "argument 'backend' has an unknown value %lld",
                                static_cast<long long>(b));
  }
  if (d < RINGATTN_FLOAT32 || d > RINGATTN_BFLOAT16) {
    return ringattn::set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT,
                                "argument 'dtype' has an unknown value %lld",
                                static_cast<long long>(d));
  }
  if (m != RINGATTN_MASK_FULL && m != RINGATTN_MASK_CAUSAL && m != RINGATTN_MASK_WINDOW) {
    return ringattn::set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT,
                                "argument 'mask' has an unknown value %lld (one of "
                                "RINGATTN_MASK_FULL, _CAUSAL, _WINDOW)",
                                static_cast<long long>(m));
  }
  RINGATTN_API_GUARD_BEGIN
  const ringattn_backend_t be = static_cast<ringattn_backend_t>(b);
  int32_t a = arch;
  if (be == RINGATTN_BACKEND_CUDA && arch == 0) {
    ringattn::Backend* cuda = ringattn::cuda_backend();
    a = cuda != nullptr ? cuda->arch() : -1;
  }
  return ringattn::check_support(be, ringattn::to_dtype(static_cast<ringattn_dtype_t>(d)), head_dim,
                                 static_cast<ringattn_mask_kind_t>(m), a);
  RINGATTN_API_GUARD_END
}

}  // extern "C"
