/* The single-process calls with the backend as any int32_t, as a C caller may pass it: in C an
 * enum parameter holds any value of its integer type, while in C++ (the fuzz target) loading an
 * out-of-range value as the enum type is undefined behaviour that UBSan reports. */
#include <stdint.h>

#include "ringattn/ringattn.h"

ringattn_status_t fuzz_forward_raw_backend(const ringattn_tensor_t* q, const ringattn_tensor_t* k,
                                           const ringattn_tensor_t* v, ringattn_tensor_t* o,
                                           ringattn_tensor_t* lse,
                                           const ringattn_attn_params_t* params, int32_t backend) {
  return ringattn_attention_forward(q, k, v, o, lse, params, (ringattn_backend_t)backend, 0);
}

ringattn_status_t fuzz_backward_raw_backend(const ringattn_tensor_t* q, const ringattn_tensor_t* k,
                                            const ringattn_tensor_t* v, const ringattn_tensor_t* o,
                                            const ringattn_tensor_t* lse,
                                            const ringattn_tensor_t* dout, ringattn_tensor_t* dq,
                                            ringattn_tensor_t* dk, ringattn_tensor_t* dv,
                                            const ringattn_attn_params_t* params, int32_t backend) {
  return ringattn_attention_backward(q, k, v, o, lse, dout, dq, dk, dv, params,
                                     (ringattn_backend_t)backend, 0);
}
