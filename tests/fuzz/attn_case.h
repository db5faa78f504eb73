// One attention call decoded from a fuzzer's input, for the single-process and the ring targets:
// a valid baseline problem (shapes, dtype, mask, packed sequences, ranks) from the first bytes,
// then any number of edits of single fields (a size, a stride, a dtype or ndim as a raw integer,
// a data pointer, a window side, cu_seqlens, num_seqs, ...) from the rest.
//
// Tensors live in separately allocated regions of kRegionBytes, so AddressSanitizer sees any
// access that leaves one. A descriptor the library must accept is only passed when it fits its
// region; a call is skipped when one would not (the library cannot know a buffer's size), unless
// some argument is invalid anyway, in which case the call must fail without touching anything.
//
// The oracles, each a crash when it fails (the fuzzer keeps the input):
//   - an argument that breaks a documented rule makes the call fail;
//   - a call that fails validation writes nothing;
//   - a call that succeeds leaves its inputs as they were, and its outputs share no byte with an
//     input, with each other or within themselves;
//   - every failure has a message and none is RINGATTN_ERROR_INTERNAL.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <string>
#include <vector>

#include "fuzz_bytes.h"
#include "ringattn/ringattn.h"

namespace ringattn {
namespace fuzz {

enum Role : int { kQ, kK, kV, kO, kLse, kDout, kDq, kDk, kDv, kNumRoles };

enum Op : int { kForward = 1, kBackward = 2 };

// Bytes of each tensor's region: enough for every baseline tensor (B <= 2, S or T <= 32,
// H <= 6, D <= 256, float32).
constexpr size_t kRegionBytes = size_t{256} << 10;

struct AttnCase {
  // Decode `in` into a problem for one rank `rank` of `world` (single-process calls: 1 of 1);
  // `ring` selects the ring's baseline (local shares, the ring's options).
  void decode(FuzzBytes* in, bool ring);

  // The operations to run, in order (forward, backward, or both: a training step).
  std::vector<Op> ops;
  ringattn_tensor_t t[kNumRoles];
  bool present[kNumRoles];  // false: the argument is NULL
  ringattn_attn_params_t params;
  bool params_present = true;
  std::vector<int64_t> cu;  // cu_seqlens as passed: exactly num_seqs + 1 entries when in range
  bool cu_present = false;
  int32_t backend = RINGATTN_BACKEND_CPU;  // raw value (single-process calls)
  int32_t world = 1, rank = 0, chunks = 4;
  bool compute_only = false;  // ring: the compute-only transport instead of the replaying one

  // Refill every region with the fill pattern (before each call).
  static void fill_regions();

  // Whether the call of `op` should be made: every argument the library must accept fits its
  // region and the compute is small, or some argument is invalid (then *must_fail is true).
  bool callable(Op op, bool* must_fail) const;
  // Why the call of `op` breaks a documented rule, or "" when it breaks none that the oracle
  // knows (it may still be refused: the oracle checks only rules whose breach must be refused).
  std::string fault(Op op) const;

  // After a call of `op` that returned `st`: abort with a message when an oracle fails.
  void check_after(Op op, ringattn_status_t st, bool must_fail, uint64_t inputs_hash) const;

  // Hash of the bytes of the inputs of `op` (to check that a call leaves them as they were).
  uint64_t inputs_hash(Op op) const;

  // Sets the tensor pointers of a call (NULL where not present).
  const ringattn_tensor_t* arg(Role r) const { return present[r] ? &t[r] : nullptr; }
  ringattn_tensor_t* out(Role r) { return present[r] ? &t[r] : nullptr; }
  const ringattn_attn_params_t* params_arg() const { return params_present ? &params : nullptr; }

 private:
  void baseline(FuzzBytes* in, bool ring);
  void edit(FuzzBytes* in, bool ring);
  void set_cu_pointer();
  // Why a descriptor of role `r` breaks a documented rule ("" when it does not).
  std::string descriptor_fault(Role r) const;
  std::string params_fault() const;

  bool ring_ = false;
  std::vector<int64_t> cu_storage_;  // the offsets, edited; cu is passed
  int64_t num_seqs_raw_ = 0;
};

}  // namespace fuzz
}  // namespace ringattn
