// Local attention on the host: one Q shard against one K/V block (kernels/common/local_params.h).
// No MPI, no CUDA. Multi-threaded with OpenMP over (batch, head, query block); O(S) memory.
// Arguments are assumed valid: src/ validates before calling. Scratch memory is per thread and
// reused across calls; a failed allocation throws std::bad_alloc on the caller's thread.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "local_params.h"

namespace ringattn {
namespace cpu {

// Fused blocked forward with online softmax. Writes O and LSE according to p.out_mode.
void attention_forward(const FwdParams& p);

// Backward for one (Q, K/V) pair given the full-attention LSE and Delta.
void attention_backward(const BwdParams& p);

// Backward calls over the same query rows (the ring's key chunks and steps) would each repack
// Q, dO, LSE and Delta to float32 tiles; instead they can share one pack of
// backward_query_pack_bytes(p) bytes (64-byte aligned caller memory) passed as
// BwdParams::query_pack, with bitwise the same results. Only the shape and the query side (q,
// dout, lse, delta) of `p` are read; they must not change while the pack is in use. The pack is
// head-major: kv heads [h0, h0 + n) of it, at byte h0 * backward_query_pack_bytes(p) / p.hkv,
// serve a call over those heads alone.
// The forward's key side prepared once for several calls over the same key rows (the ring's
// query chunks of one step): forward_key_pack_bytes(p) bytes (64-byte aligned caller memory)
// filled by pack_forward_keys and passed as FwdParams::key_pack give bitwise the results of
// unpacked calls. Only the shape and the key side (k, v, sk) of `p` are read.
size_t forward_key_pack_bytes(const FwdParams& p);
void pack_forward_keys(const FwdParams& p, void* pack);
size_t backward_query_pack_bytes(const BwdParams& p);
void pack_backward_queries(const BwdParams& p, void* pack);

// Delta[b, h, s] = sum_d dO[b, s, h, d] * O[b, s, h, d], float32.
void compute_delta(int64_t batch, int64_t s, int64_t h, int64_t d, const TensorRef& dout,
                   const TensorRef& o, const RowStatRef& delta);

// Merge a partial result (o2, lse2) into (o1, lse1), float32, -inf safe:
//   L = logaddexp(L1, L2); O1 = exp(L1 - L) * O1 + exp(L2 - L) * O2; L1 = L.
void merge_partial(int64_t batch, int64_t s, int64_t h, int64_t d, const TensorRef& o1,
                   const RowStatRef& lse1, const TensorRef& o2, const RowStatRef& lse2);

// Copy/cast a [B, S, H, D] tensor between dtypes (float32 accumulators -> output dtype, or
// inputs -> float32). Also used to zero-fill when src.data == nullptr.
void convert(int64_t batch, int64_t s, int64_t h, int64_t d, const TensorRef& src,
             const TensorRef& dst);
// dst += src over a [B, S, H, D] tensor: dst float32, src any dtype (gradients of one key/value
// head computed on several ranks, added up).
void accumulate(int64_t batch, int64_t s, int64_t h, int64_t d, const TensorRef& src,
                const TensorRef& dst);
// dst = a + b cast to dst's dtype, a and b float32 (the ring's gradient accumulators of one block:
// this rank's contribution and the others', summed and cast in one pass).
void add_convert(int64_t batch, int64_t s, int64_t h, int64_t d, const TensorRef& a,
                 const TensorRef& b, const TensorRef& dst);

}  // namespace cpu
}  // namespace ringattn
