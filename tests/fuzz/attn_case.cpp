#include "attn_case.h"

#include <stddef.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>

#include "positions.h"

namespace ringattn {
namespace fuzz {
namespace {

constexpr int64_t kMaxElements = int64_t{1} << 48;
constexpr int64_t kMaxSequences = (int64_t{1} << 31) - 1;
constexpr unsigned char kFill = 0x3c;  // 1.06 as float16, 0.0115 as float32 and bfloat16
// The most elements of one tensor that a call is made with (the oracles walk them all).
constexpr int64_t kMaxWalk = int64_t{1} << 18;
const char* const kRoleName[kNumRoles] = {"q", "k", "v", "o", "lse", "dout", "dq", "dk", "dv"};

// The regions, allocated once, each on its own so that AddressSanitizer's redzones separate
// them.
unsigned char* region(int i) {
  static std::unique_ptr<unsigned char[]> regions[kNumRoles];
  if (!regions[i]) regions[i].reset(new unsigned char[kRegionBytes]);
  return regions[i].get();
}

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "fuzz oracle failed: %s\n(last error: %s)\n", what.c_str(),
               ringattn_get_last_error());
  std::abort();
}

int32_t raw_dtype(const ringattn_tensor_t& t) {
  int32_t v;
  std::memcpy(&v, &t.dtype, sizeof(v));
  return v;
}

void set_raw(ringattn_dtype_t* e, int64_t v) {
  const int32_t x = static_cast<int32_t>(v);
  std::memcpy(e, &x, sizeof(x));
}

void set_raw(ringattn_scheme_t* e, int64_t v) {
  const int32_t x = static_cast<int32_t>(v);
  std::memcpy(e, &x, sizeof(x));
}

int64_t elem_bytes(const ringattn_tensor_t& t) { return raw_dtype(t) == RINGATTN_FLOAT32 ? 4 : 2; }

bool is_empty(const ringattn_tensor_t& t) {
  for (int32_t i = 0; i < t.ndim; ++i) {
    if (t.shape[i] == 0) return true;
  }
  return false;
}

// Offset of the last element, for a descriptor with valid sizes and strides.
int64_t last_offset(const ringattn_tensor_t& t) {
  int64_t last = 0;
  for (int32_t i = 0; i < t.ndim; ++i) last += (t.shape[i] - 1) * t.strides[i];
  return last;
}

ringattn_tensor_t dense(Role r, ringattn_dtype_t dtype, int ndim, const int64_t* shape) {
  ringattn_tensor_t t{};
  t.data = region(r);
  t.dtype = dtype;
  t.ndim = ndim;
  int64_t stride = 1;
  for (int i = ndim - 1; i >= 0; --i) {
    t.shape[i] = shape[i];
    t.strides[i] = stride;
    stride *= shape[i] > 0 ? shape[i] : 1;
  }
  return t;
}

// Calls f(byte offset from t.data) for every element of a descriptor that fits its region.
template <typename F>
void for_each_element(const ringattn_tensor_t& t, F&& f) {
  if (is_empty(t)) return;
  int64_t n[4] = {1, 1, 1, 1}, s[4] = {0, 0, 0, 0};
  for (int32_t i = 0; i < t.ndim; ++i) n[i] = t.shape[i], s[i] = t.strides[i];
  const int64_t e = elem_bytes(t);
  for (int64_t a = 0; a < n[0]; ++a)
    for (int64_t b = 0; b < n[1]; ++b)
      for (int64_t c = 0; c < n[2]; ++c)
        for (int64_t d = 0; d < n[3]; ++d) f((a * s[0] + b * s[1] + c * s[2] + d * s[3]) * e);
}

// The region index and offset of a pointer, or false when it is in none.
bool locate(const void* p, int* which, size_t* offset) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  for (int i = 0; i < kNumRoles; ++i) {
    const uintptr_t r = reinterpret_cast<uintptr_t>(region(i));
    if (a >= r && a < r + kRegionBytes) {
      *which = i;
      *offset = a - r;
      return true;
    }
  }
  return false;
}

void roles_of(Op op, std::vector<Role>* inputs, std::vector<Role>* outputs) {
  if (op == kForward) {
    *inputs = {kQ, kK, kV};
    *outputs = {kO, kLse};
  } else {
    *inputs = {kQ, kK, kV, kO, kLse, kDout};
    *outputs = {kDq, kDk, kDv};
  }
}

}  // namespace

void AttnCase::fill_regions() {
  for (int i = 0; i < kNumRoles; ++i) std::memset(region(i), kFill, kRegionBytes);
}

void AttnCase::decode(FuzzBytes* in, bool ring) {
  ring_ = ring;
  baseline(in, ring);
  while (!in->empty()) edit(in, ring);
  set_cu_pointer();
}

void AttnCase::baseline(FuzzBytes* in, bool ring) {
  const uint8_t h0 = in->u8(), h1 = in->u8(), h2 = in->u8(), h3 = in->u8(), h4 = in->u8(),
                h5 = in->u8(), h6 = in->u8();
  switch (h0 & 3) {
    case 1:
      ops = {kBackward};
      break;
    case 2:
      ops = {kForward, kBackward};
      break;
    default:
      ops = {kForward};
      break;
  }
  const bool packed = h0 & 4;
  const int32_t dtypes[4] = {RINGATTN_FLOAT32, RINGATTN_FLOAT16, RINGATTN_BFLOAT16,
                             RINGATTN_FLOAT32};
  ringattn_dtype_t dtype;
  set_raw(&dtype, dtypes[(h0 >> 5) & 3]);
  compute_only = ring && (h0 & 128);
  int64_t B = packed ? 1 : 1 + h1 % 2;
  const int64_t hkv = 1 + (h1 >> 1) % 2;
  const int64_t hq = hkv * (1 + (h1 >> 2) % 3), D = 32 + 8 * (h2 % 29);
  const int32_t scheme = h5 % 3;
  world = ring ? 1 + (h5 >> 2) % 8 : 1;
  rank = ring ? h6 % world : 0;
  chunks = 1 + (h6 >> 3) % 8;

  params = RINGATTN_ATTN_PARAMS_INIT;
  params.causal = (h0 & 8) ? 1 : 0;
  if (h4 & 1) {
    params.window_left = (h4 >> 1) % 6 - 1;
    params.window_right = (h4 >> 4) % 6 - 1;
  }
  set_raw(&params.scheme, scheme);

  // Local rows: fixed length S (in the ring, an equal share of world * S, as the replaying
  // transport presents every rank with this rank's problem); packed T, this rank's share of
  // sequences of 0..8 tokens.
  int64_t rows = 0;
  cu_storage_.assign(1, 0);
  cu_present = packed;
  if (packed) {
    const int n = h3 % 5;
    for (int b = 0; b < n; ++b) {
      const int64_t len = in->u8() % 9;
      cu_storage_.push_back(cu_storage_.back() + len);
      rows += scheme_local_len(scheme, len, world, rank);
    }
    num_seqs_raw_ = n;
  } else {
    rows = ring ? 2 * (h3 % 9) : h3 % 17;
    num_seqs_raw_ = 0;
    // An empty batch over a long sequence (up to 2^42 local tokens): nothing to read or compute,
    // but every length, plan and workspace size is derived from a huge S.
    const uint8_t h7 = in->u8();
    if (h7 & 1) {
      B = 0;
      rows = int64_t{1} << (16 + (h7 >> 1) % 27);
    }
  }

  const int nd = packed ? 3 : 4;
  const int64_t qs[4] = {B, rows, hq, D}, ks[4] = {B, rows, hkv, D}, ls[3] = {B, hq, rows};
  const int64_t* q_shape = packed ? qs + 1 : qs;
  const int64_t* k_shape = packed ? ks + 1 : ks;
  const int64_t* l_shape = packed ? ls + 1 : ls;
  for (Role r : {kQ, kO, kDout, kDq}) t[r] = dense(r, dtype, nd, q_shape);
  for (Role r : {kK, kV, kDk, kDv}) t[r] = dense(r, dtype, nd, k_shape);
  ringattn_dtype_t f32;
  set_raw(&f32, RINGATTN_FLOAT32);
  t[kLse] = dense(kLse, f32, nd - 1, l_shape);
  for (bool& p : present) p = true;
  if ((h0 & 16) && ops.size() == 1 && ops[0] == kForward) present[kLse] = false;
}

void AttnCase::edit(FuzzBytes* in, bool ring) {
  const int target = in->u8() % 12;
  const int field = in->u8();
  if (target < kNumRoles) {
    ringattn_tensor_t& x = t[target];
    switch (field % 12) {
      case 0:
        x.ndim = static_cast<int32_t>(in->value(x.ndim));
        break;
      case 1:
        set_raw(&x.dtype, in->value(raw_dtype(x)));
        break;
      case 2:
      case 3:
      case 4:
      case 5:
        x.shape[field % 12 - 2] = in->value(x.shape[field % 12 - 2]);
        break;
      case 6:
      case 7:
      case 8:
      case 9:
        x.strides[field % 12 - 6] = in->value(x.strides[field % 12 - 6]);
        break;
      case 10: {
        const uint8_t how = in->u8();
        if (how % 4 == 0) {  // anywhere in any region
          const uint64_t off = static_cast<uint64_t>(in->value(0)) % kRegionBytes;
          x.data = region(in->u8() % kNumRoles) + off;
        } else if (how % 4 == 1) {
          x.data = nullptr;
        } else if (how % 4 == 2) {  // an address no tensor may touch
          x.data = reinterpret_cast<void*>(static_cast<uintptr_t>(16 + in->u8()));
        } else {  // exactly where another tensor starts
          x.data = t[in->u8() % kNumRoles].data;
        }
        break;
      }
      default:
        present[target] = !present[target];
        break;
    }
    return;
  }
  if (target == kNumRoles) {
    switch (field % 10) {
      case 0:
        params.struct_size = static_cast<size_t>(in->value(sizeof(params)));
        break;
      case 1: {
        static const float kFloats[] = {0.0f,
                                        -0.0f,
                                        1.0f,
                                        -1.0f,
                                        0.125f,
                                        1e-30f,
                                        1e30f,
                                        std::numeric_limits<float>::infinity(),
                                        -std::numeric_limits<float>::infinity(),
                                        std::numeric_limits<float>::quiet_NaN(),
                                        std::numeric_limits<float>::denorm_min(),
                                        std::numeric_limits<float>::max()};
        const uint8_t b = in->u8();
        if (b & 1) {
          uint32_t bits = 0;
          for (int i = 0; i < 4; ++i) bits |= static_cast<uint32_t>(in->u8()) << (8 * i);
          std::memcpy(&params.softmax_scale, &bits, sizeof(bits));
        } else {
          params.softmax_scale = kFloats[(b >> 1) % (sizeof(kFloats) / sizeof(kFloats[0]))];
        }
        break;
      }
      case 2:
        params.causal = static_cast<int32_t>(in->value(params.causal));
        break;
      case 3:
        params.window_left = in->value(params.window_left);
        break;
      case 4:
        params.window_right = in->value(params.window_right);
        break;
      case 5: {
        int32_t s;
        std::memcpy(&s, &params.scheme, sizeof(s));
        set_raw(&params.scheme, in->value(s));
        break;
      }
      case 6:
        num_seqs_raw_ = in->value(num_seqs_raw_);
        break;
      case 7: {
        const size_t i = in->u8() % cu_storage_.size();
        cu_storage_[i] = in->value(cu_storage_[i]);
        break;
      }
      case 8: {  // grow or shrink the offsets (1..65 entries)
        const size_t n = 1 + in->u8() % 65;
        cu_storage_.resize(n, cu_storage_.back());
        break;
      }
      default:
        cu_present = !cu_present;
        break;
    }
    return;
  }
  if (target == kNumRoles + 1) {
    params_present = !params_present;
    return;
  }
  switch (field % 6) {
    case 0:
      backend = static_cast<int32_t>(in->value(backend));
      break;
    case 1: {
      const uint8_t b = in->u8() % 3;
      ops = b == 0   ? std::vector<Op>{kForward}
            : b == 1 ? std::vector<Op>{kBackward}
                     : std::vector<Op>{kForward, kBackward};
      break;
    }
    case 2:
      if (ring) {
        world = 1 + in->u8() % 64;
        rank = rank % world;
      }
      break;
    case 3:
      if (ring) rank = in->u8() % world;
      break;
    case 4: {
      // As ringattn_context_create takes options.chunks: <= 0 is the default, at most 1024.
      const int64_t c = in->value(chunks);
      chunks = c <= 0 ? 4 : c > 1024 ? 1024 : static_cast<int32_t>(c);
      break;
    }
    default:
      compute_only = ring && !compute_only;
      break;
  }
}

void AttnCase::set_cu_pointer() {
  // The library reads num_seqs + 1 offsets once num_seqs is in range: pass exactly that many
  // (a heap array of that size, so that reading one more is an overflow), taking num_seqs modulo
  // what there is when it asks for more. Out of range, it must read nothing.
  int64_t n = num_seqs_raw_;
  if (n >= 0 && n <= kMaxSequences) {
    n %= static_cast<int64_t>(cu_storage_.size());
    cu.assign(cu_storage_.begin(), cu_storage_.begin() + n + 1);
  } else {
    cu = cu_storage_;
  }
  params.num_seqs = n;
  params.cu_seqlens = cu_present ? cu.data() : nullptr;
}

std::string AttnCase::descriptor_fault(Role r) const {
  const ringattn_tensor_t& x = t[r];
  const std::string name = kRoleName[r];
  const bool ndim_ok = r == kLse ? (x.ndim == 2 || x.ndim == 3) : (x.ndim == 3 || x.ndim == 4);
  if (!ndim_ok) return name + ": ndim " + std::to_string(x.ndim);
  const int32_t dt = raw_dtype(x);
  if (dt != RINGATTN_FLOAT32 && dt != RINGATTN_FLOAT16 && dt != RINGATTN_BFLOAT16) {
    return name + ": dtype " + std::to_string(dt);
  }
  if (r == kLse && dt != RINGATTN_FLOAT32) return name + ": lse not float32";
  for (int32_t i = 0; i < x.ndim; ++i) {
    if (x.shape[i] < 0) return name + ": negative size";
    if (x.strides[i] < 0) return name + ": negative stride";
  }
  if (is_empty(x)) return "";
  int64_t elems = 1, last = 0;
  for (int32_t i = 0; i < x.ndim; ++i) {
    if (__builtin_mul_overflow(elems, x.shape[i], &elems) || elems > kMaxElements) {
      return name + ": more than 2^48 elements";
    }
  }
  for (int32_t i = 0; i < x.ndim; ++i) {
    int64_t term;
    if (__builtin_mul_overflow(x.shape[i] - 1, x.strides[i], &term) ||
        __builtin_add_overflow(last, term, &last) || last >= kMaxElements) {
      return name + ": reaches beyond element 2^48";
    }
  }
  if (x.shape[x.ndim - 1] > 1 && x.strides[x.ndim - 1] != 1) {
    return name + ": last dimension not contiguous";
  }
  if (x.data == nullptr) return name + ": NULL data";
  if (reinterpret_cast<uintptr_t>(x.data) % elem_bytes(x) != 0) return name + ": misaligned data";
  return "";
}

std::string AttnCase::params_fault() const {
  if (!ring_ && backend != RINGATTN_BACKEND_CPU) return "backend " + std::to_string(backend);
  if (!params_present) return "params NULL";
  // Versioned: the first version ends with window_right (32 bytes), the second with num_seqs
  // (56 bytes); their missing fields take their defaults; a longer struct is read up to the
  // fields the library knows; any other size is an error.
  constexpr size_t kFirstVersion = offsetof(ringattn_attn_params_t, window_right) + sizeof(int64_t);
  constexpr size_t kSecondVersion = offsetof(ringattn_attn_params_t, num_seqs) + sizeof(int64_t);
  if (params.struct_size != kFirstVersion && params.struct_size != kSecondVersion &&
      params.struct_size < sizeof(params)) {
    return "struct_size";
  }
  ringattn_attn_params_t p = RINGATTN_ATTN_PARAMS_INIT;
  std::memcpy(&p, &params, std::min(params.struct_size, sizeof(p)));
  if (!std::isfinite(p.softmax_scale)) return "softmax_scale not finite";
  if (p.window_left < -1 || p.window_right < -1) return "window below -1";
  int32_t scheme;
  std::memcpy(&scheme, &p.scheme, sizeof(scheme));
  if (scheme < 0 || scheme > 2) return "scheme " + std::to_string(scheme);
  if (!present[kQ] || (t[kQ].ndim != 3 && t[kQ].ndim != 4)) return "";  // a descriptor fault
  if (t[kQ].ndim == 4) {
    if (p.cu_seqlens != nullptr || p.num_seqs != 0) return "cu_seqlens for [B,S,H,D]";
    return "";
  }
  if (p.cu_seqlens == nullptr) return "packed without cu_seqlens";
  if (p.num_seqs < 0 || p.num_seqs > kMaxSequences) return "num_seqs out of range";
  if (cu[0] != 0) return "cu_seqlens[0] != 0";
  for (int64_t b = 0; b < p.num_seqs; ++b) {
    if (cu[b + 1] > kMaxElements) return "cu_seqlens beyond 2^48";
    if (cu[b + 1] < cu[b]) return "cu_seqlens decreasing";
  }
  if (!ring_ && cu[p.num_seqs] != t[kQ].shape[0]) return "cu_seqlens total != T";
  return "";
}

std::string AttnCase::fault(Op op) const {
  std::vector<Role> ins, outs;
  roles_of(op, &ins, &outs);
  ins.insert(ins.end(), outs.begin(), outs.end());
  for (Role r : ins) {
    if (!present[r]) {
      if (r == kLse && op == kForward) continue;  // optional in forward
      return std::string(kRoleName[r]) + " NULL";
    }
    const std::string f = descriptor_fault(r);
    if (!f.empty()) return f;
  }
  const ringattn_tensor_t& q = t[kQ];
  const ringattn_tensor_t& k = t[kK];
  const int64_t d = q.shape[q.ndim - 1], hq = q.shape[q.ndim - 2];
  if (d < 32 || d > 256 || d % 8 != 0) return "head dim " + std::to_string(d);
  if (hq == 0 || (k.ndim == q.ndim && k.shape[k.ndim - 2] == 0)) return "no heads";
  return params_fault();
}

bool AttnCase::callable(Op op, bool* must_fail) const {
  *must_fail = !fault(op).empty();
  if (*must_fail) return true;
  // Every argument is valid by the oracle's rules: the call is made only if every tensor it may
  // touch lies inside a region, and the compute is small.
  std::vector<Role> used, outs;
  roles_of(op, &used, &outs);
  used.insert(used.end(), outs.begin(), outs.end());
  for (Role r : used) {
    if (!present[r] || is_empty(t[r])) continue;
    // Inputs may repeat elements (a stride of 0 broadcasts): bound what the oracles walk.
    int64_t elems = 1;
    for (int32_t i = 0; i < t[r].ndim; ++i) elems *= t[r].shape[i];  // <= 2^48: valid
    if (elems > kMaxWalk) return false;
    int which;
    size_t off;
    if (!locate(t[r].data, &which, &off)) return false;
    const int64_t bytes = (last_offset(t[r]) + 1) * elem_bytes(t[r]);
    if (bytes > static_cast<int64_t>(kRegionBytes - off)) return false;
  }
  const ringattn_tensor_t& q = t[kQ];
  if (is_empty(q)) return true;  // no compute, whatever the lengths
  int64_t q_elems = 1;
  for (int32_t i = 0; i < q.ndim; ++i) q_elems *= q.shape[i];  // <= kMaxWalk
  // Keys each query row meets: the whole global sequence (packed: every sequence's tokens).
  const int64_t rows = q.shape[q.ndim == 4 ? 1 : 0];
  const int64_t total = q.ndim == 3 ? cu[params.num_seqs] : 0;
  const int64_t keys = world * rows > total ? world * rows : total;
  return keys <= (int64_t{1} << 12) && q_elems * keys <= (int64_t{1} << 24);
}

uint64_t AttnCase::inputs_hash(Op op) const {
  std::vector<Role> ins, outs;
  roles_of(op, &ins, &outs);
  uint64_t h = 1469598103934665603ull;
  for (Role r : ins) {
    if (!present[r]) continue;
    const unsigned char* base = static_cast<const unsigned char*>(t[r].data);
    const int64_t e = elem_bytes(t[r]);
    for_each_element(t[r], [&](int64_t off) {
      for (int64_t i = 0; i < e; ++i) h = (h ^ base[off + i]) * 1099511628211ull;
    });
  }
  return h;
}

void AttnCase::check_after(Op op, ringattn_status_t st, bool must_fail,
                           uint64_t inputs_hash_before) const {
  const char* op_name = op == kForward ? "forward" : "backward";
  static const bool verbose = std::getenv("RINGATTN_FUZZ_VERBOSE") != nullptr;
  if (verbose) {
    std::fprintf(stderr, "fuzz: %s%s: %s %s\n", op_name, must_fail ? " (must fail)" : "",
                 ringattn_status_string(st), ringattn_get_last_error());
  }
  if (static_cast<int>(st) < 0 || static_cast<int>(st) > RINGATTN_ERROR_INTERNAL) {
    fail(std::string(op_name) + " returned the unknown status " + std::to_string(st));
  }
  if (st == RINGATTN_ERROR_INTERNAL) fail(std::string(op_name) + " failed internally");
  if (st != RINGATTN_SUCCESS && ringattn_get_last_error()[0] == '\0') {
    fail(std::string(op_name) + " failed without a message");
  }
  if (must_fail && st == RINGATTN_SUCCESS) {
    fail(std::string(op_name) + " accepted an invalid call: " + fault(op));
  }
  if (st >= RINGATTN_ERROR_INVALID_ARGUMENT && st <= RINGATTN_ERROR_UNSUPPORTED) {
    // Rejected before it ran: no byte of any region may have changed.
    static const std::vector<unsigned char> filled(kRegionBytes, kFill);
    for (int i = 0; i < kNumRoles; ++i) {
      if (std::memcmp(region(i), filled.data(), kRegionBytes) != 0) {
        fail(std::string(op_name) + " was rejected (" + ringattn_status_string(st) +
             ") but wrote into the region of '" + kRoleName[i] + "'");
      }
    }
  }
  if (st != RINGATTN_SUCCESS) return;
  if (inputs_hash(op) != inputs_hash_before) fail(std::string(op_name) + " changed an input");
  // Outputs share no byte with an input or with each other, nor within themselves.
  static std::vector<unsigned char> owner(kNumRoles * kRegionBytes);
  std::memset(owner.data(), 0, owner.size());
  constexpr unsigned char kInput = 0xff;
  auto mark = [&](Role r, bool input) {
    if (!present[r] || is_empty(t[r])) return;
    int which;
    size_t base;
    if (!locate(t[r].data, &which, &base)) {
      fail(std::string(kRoleName[r]) + " of a successful call lies outside the regions");
    }
    unsigned char* own = owner.data() + which * kRegionBytes + base;
    const int64_t e = elem_bytes(t[r]);
    for_each_element(t[r], [&](int64_t off) {
      for (int64_t i = 0; i < e; ++i) {
        unsigned char& o = own[off + i];
        if (!input && o != 0) {
          fail(std::string(op_name) + " succeeded with output '" + kRoleName[r] +
               "' sharing memory with " +
               (o == kInput ? std::string("an input") : "'" + std::string(kRoleName[o - 1]) + "'"));
        }
        o = input ? kInput : static_cast<unsigned char>(r + 1);
      }
    });
  };
  std::vector<Role> ins, outs;
  roles_of(op, &ins, &outs);
  for (Role r : ins) mark(r, true);
  for (Role r : outs) mark(r, false);
}

}  // namespace fuzz
}  // namespace ringattn
