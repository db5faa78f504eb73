#include "agree.h"

#include <cstring>
#include <string>

#include "positions.h"

namespace ringattn {
namespace {

// Field indices of a fingerprint. Those before kFirstLocal must be equal on every rank.
enum Field : int {
  kMagic = 0,
  kOp,
  kPacked,
  kBatch,
  kHq,
  kHkv,
  kHeadDim,
  kDtype,
  kScheme,
  kCausal,
  kWindowLeft,
  kWindowRight,
  kScaleBits,
  kNumSeqs,
  kTotalTokens,
  kCuHash,
  kChunks,
  kFirstLocal,
  kStatus = kFirstLocal,
  kLocalRows,
  kHasLse,
};
static_assert(kHasLse < kFingerprintSize, "fingerprint too small");
static_assert(kOp == kFingerprintOpField, "the plan cache skips the operation field");

const char* const kFieldNames[kFirstLocal] = {"library version",
                                              "operation (forward/backward/plan)",
                                              "layout (packed or [B,S,H,D])",
                                              "batch size B",
                                              "query heads Hq",
                                              "key/value heads Hkv",
                                              "head dim D",
                                              "dtype",
                                              "scheme",
                                              "causal",
                                              "window_left",
                                              "window_right",
                                              "softmax scale",
                                              "number of packed sequences",
                                              "total packed tokens",
                                              "cu_seqlens",
                                              "compute chunks"};

constexpr int64_t kMagicValue = 0x52494e47 + RINGATTN_VERSION_CODE;  // "RING"

// FNV-1a over the offsets: equal arrays give equal hashes on every rank.
int64_t hash_offsets(const std::vector<int64_t>& v) {
  uint64_t h = 1469598103934665603ull;
  for (int64_t x : v) {
    for (int i = 0; i < 8; ++i) {
      h ^= static_cast<uint64_t>(x >> (8 * i)) & 0xffu;
      h *= 1099511628211ull;
    }
  }
  return static_cast<int64_t>(h);
}

const char* scheme_name(int64_t s) {
  return s == kContiguous ? "contiguous"
         : s == kZigzag   ? "zigzag"
         : s == kStriped  ? "striped"
                          : "?";
}

std::string field_value(int field, int64_t v) {
  switch (field) {
    case kOp:
      return v == kOpForward ? "forward" : v == kOpBackward ? "backward" : "plan creation";
    case kPacked:
      return v ? "packed [T,H,D]" : "[B,S,H,D]";
    case kDtype:
      return v == kF32 ? "float32" : v == kF16 ? "float16" : "bfloat16";
    case kScheme:
      return scheme_name(v);
    case kScaleBits: {
      const int32_t bits = static_cast<int32_t>(v);
      float f;
      std::memcpy(&f, &bits, sizeof(f));
      return std::to_string(f);
    }
    case kCuHash:
      return "hash " + std::to_string(v);
    default:
      return std::to_string(v);
  }
}

}  // namespace

void make_fingerprint(RingOp op, Status local_status, const AttnShape& shape,
                      const AttnOptions& opts, const ringattn_attn_params_t* params, bool has_lse,
                      int32_t chunks, int64_t* fp) {
  std::memset(fp, 0, sizeof(int64_t) * kFingerprintSize);
  fp[kMagic] = kMagicValue;
  fp[kOp] = op;
  fp[kStatus] = local_status;
  if (local_status != RINGATTN_SUCCESS) return;
  fp[kPacked] = shape.packed;
  fp[kBatch] = shape.batch;
  fp[kHq] = shape.hq;
  fp[kHkv] = shape.hkv;
  fp[kHeadDim] = shape.d;
  fp[kDtype] = shape.dtype;
  fp[kScheme] = opts.scheme;
  fp[kCausal] = opts.causal;
  fp[kWindowLeft] = params->window_left;
  fp[kWindowRight] = params->window_right;
  int32_t bits;
  std::memcpy(&bits, &opts.scale, sizeof(bits));
  fp[kScaleBits] = bits;
  if (shape.packed) {
    fp[kNumSeqs] = static_cast<int64_t>(opts.cu_seqlens.size()) - 1;
    fp[kTotalTokens] = opts.cu_seqlens.back();
    fp[kCuHash] = hash_offsets(opts.cu_seqlens);
  }
  fp[kChunks] = chunks;
  fp[kLocalRows] = shape.seq;
  fp[kHasLse] = has_lse;
}

Status agree_on_problem(comm::Transport* t, const int64_t* fp, std::vector<int64_t>* all,
                        int64_t* global_seq, std::vector<int64_t>* local_rows,
                        const std::string& local_message) {
  const int P = t->size(), me = t->rank();
  all->resize(static_cast<size_t>(P) * kFingerprintSize);
  const Status st = t->allgather_i64(fp, kFingerprintSize, all->data());
  if (st != RINGATTN_SUCCESS) {
    if (fp[kStatus] != RINGATTN_SUCCESS) {
      return set_error(static_cast<Status>(fp[kStatus]),
                       local_message + " (and: " + t->error() + ")");
    }
    return set_error(st, t->error());
  }
  auto at = [&](int r, int f) { return (*all)[static_cast<size_t>(r) * kFingerprintSize + f]; };
  // The library and the operation first: a rank in backward while another is in forward is a
  // mismatch whatever else they hold.
  for (int f : {static_cast<int>(kMagic), static_cast<int>(kOp)}) {
    for (int r = 1; r < P; ++r) {
      if (at(r, f) != at(0, f)) {
        return set_errorf(RINGATTN_ERROR_MISMATCH,
                          "rank %d: ranks disagree on %s: rank 0 has %s, "
                          "rank %d has %s",
                          me, kFieldNames[f], field_value(f, at(0, f)).c_str(), r,
                          field_value(f, at(r, f)).c_str());
      }
    }
  }
  // Local validation errors: every rank fails, with the lowest failing rank's code.
  for (int r = 0; r < P; ++r) {
    if (at(r, kStatus) != RINGATTN_SUCCESS) {
      if (fp[kStatus] != RINGATTN_SUCCESS) {
        return set_error(static_cast<Status>(fp[kStatus]),
                         "rank " + std::to_string(me) + ": " + local_message);
      }
      return set_errorf(static_cast<Status>(at(r, kStatus)),
                        "rank %d: rank %d rejected its arguments (%s); see that rank's error", me,
                        r, ringattn_status_string(static_cast<Status>(at(r, kStatus))));
    }
  }
  for (int f = 0; f < kFirstLocal; ++f) {
    for (int r = 1; r < P; ++r) {
      if (at(r, f) != at(0, f)) {
        return set_errorf(RINGATTN_ERROR_MISMATCH,
                          "rank %d: ranks disagree on %s: rank 0 has %s, rank %d has %s", me,
                          kFieldNames[f], field_value(f, at(0, f)).c_str(), r,
                          field_value(f, at(r, f)).c_str());
      }
    }
  }
  for (int r = 1; r < P; ++r) {
    if (at(r, kHasLse) != at(0, kHasLse)) {
      return set_errorf(RINGATTN_ERROR_MISMATCH,
                        "rank %d: ranks disagree on whether 'lse' is given: rank 0 %s, rank %d %s",
                        me, at(0, kHasLse) ? "does" : "does not", r,
                        at(r, kHasLse) ? "does" : "does not");
    }
  }
  local_rows->assign(P, 0);
  int64_t total = 0;
  for (int r = 0; r < P; ++r) {
    (*local_rows)[r] = at(r, kLocalRows);
    // Each local length is validated below 2^48; the sum is too, so that positions stay small.
    if (__builtin_add_overflow(total, at(r, kLocalRows), &total) || total > (int64_t{1} << 48)) {
      return set_errorf(RINGATTN_ERROR_SHAPE_MISMATCH,
                        "rank %d: the local lengths of the ranks add up to more than 2^48 tokens",
                        me);
    }
  }
  *global_seq = total;
  // Packed shares were checked locally against cu_seqlens; fixed lengths are checked here, where
  // the global length is known: every rank's S must be its share of the sum.
  if (!at(0, kPacked)) {
    const int32_t scheme = static_cast<int32_t>(at(0, kScheme));
    for (int r = 0; r < P; ++r) {
      const int64_t want = scheme_local_len(scheme, total, P, r);
      if (want != at(r, kLocalRows)) {
        return set_errorf(RINGATTN_ERROR_SHAPE_MISMATCH,
                          "rank %d: rank %d holds S=%lld tokens but the %s share of the global "
                          "S=%lld (sum over ranks) on %d ranks is %lld",
                          me, r, static_cast<long long>(at(r, kLocalRows)), scheme_name(scheme),
                          static_cast<long long>(total), P, static_cast<long long>(want));
      }
    }
  }
  return RINGATTN_SUCCESS;
}

}  // namespace ringattn
