// Fuzz target: the single-process C API (ringattn_attention_forward / _backward, CPU backend) on
// descriptors and options decoded from the input (attn_case.h), under the oracles of
// attn_case.h. Accepted calls really run the CPU kernels, on small problems.
#include <stddef.h>
#include <stdint.h>

#include "attn_case.h"
#include "ringattn/ringattn.h"

using ringattn::fuzz::AttnCase;

// raw_enum_calls.c: the calls with any int32_t as the backend.
extern "C" {
ringattn_status_t fuzz_forward_raw_backend(const ringattn_tensor_t* q, const ringattn_tensor_t* k,
                                           const ringattn_tensor_t* v, ringattn_tensor_t* o,
                                           ringattn_tensor_t* lse,
                                           const ringattn_attn_params_t* params, int32_t backend);
ringattn_status_t fuzz_backward_raw_backend(const ringattn_tensor_t* q, const ringattn_tensor_t* k,
                                            const ringattn_tensor_t* v, const ringattn_tensor_t* o,
                                            const ringattn_tensor_t* lse,
                                            const ringattn_tensor_t* dout, ringattn_tensor_t* dq,
                                            ringattn_tensor_t* dk, ringattn_tensor_t* dv,
                                            const ringattn_attn_params_t* params, int32_t backend);
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ringattn::fuzz::FuzzBytes in(data, size);
  AttnCase c;
  c.decode(&in, /*ring=*/false);
  for (ringattn::fuzz::Op op : c.ops) {
    bool must_fail = false;
    if (!c.callable(op, &must_fail)) continue;
    AttnCase::fill_regions();
    const uint64_t before = must_fail ? 0 : c.inputs_hash(op);
    ringattn_status_t st;
    if (op == ringattn::fuzz::kForward) {
      st = fuzz_forward_raw_backend(c.arg(ringattn::fuzz::kQ), c.arg(ringattn::fuzz::kK),
                                    c.arg(ringattn::fuzz::kV), c.out(ringattn::fuzz::kO),
                                    c.out(ringattn::fuzz::kLse), c.params_arg(), c.backend);
    } else {
      st = fuzz_backward_raw_backend(c.arg(ringattn::fuzz::kQ), c.arg(ringattn::fuzz::kK),
                                     c.arg(ringattn::fuzz::kV), c.arg(ringattn::fuzz::kO),
                                     c.arg(ringattn::fuzz::kLse), c.arg(ringattn::fuzz::kDout),
                                     c.out(ringattn::fuzz::kDq), c.out(ringattn::fuzz::kDk),
                                     c.out(ringattn::fuzz::kDv), c.params_arg(), c.backend);
    }
    c.check_after(op, st, must_fail, before);
  }
  return 0;
}
