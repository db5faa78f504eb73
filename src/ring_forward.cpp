// Ring forward (DESIGN.md): Q stays; K/V blocks move to rank r+1 each step while the current
// block is computed in chunks (of query rows, or of heads: RingPlan), with the transport driven
// between chunks. Each chunk's partial (O, LSE) is merged into float32 accumulators; O is cast
// once at the end.
#include <cmath>

#include "ring_context.h"

namespace ringattn {
Status RingContext::run_forward(const ringattn_tensor_t* q, const ringattn_tensor_t* k,
                                const ringattn_tensor_t* v, ringattn_tensor_t* o,
                                ringattn_tensor_t* lse, void* stream) {
  const RingPlan& plan = cur_->plan;
  const AttnShape& shape = cur_->ring;
  const int32_t P = plan.world(), C = plan.chunks();
  const int64_t B = shape.batch, S = shape.seq, Hq = shape.hq, Hkv = shape.hkv, D = shape.d;
  const int64_t group = Hq / Hkv;
  stats_.steps = P;
  if (B == 0 || plan.max_rows() == 0) return RINGATTN_SUCCESS;

  const FwdLayout at = forward_layout(*cur_, lse != nullptr);
  char* ws = nullptr;
  RINGATTN_RETURN_IF_ERROR(workspace(at.total, &ws));
  float* o32 = reinterpret_cast<float*>(ws + 2 * at.kv_bytes);
  const TensorRef o_acc{o32, kF32, S * Hq * D, Hq * D, D};
  // The caller's LSE is float32 already: accumulate in place.
  const RowStatRef lse_acc =
      lse != nullptr
          ? rowstat_ref(*lse, shape.packed)
          : RowStatRef{reinterpret_cast<float*>(ws + 2 * at.kv_bytes + at.o_bytes), Hq * S, S};
  // The step's key side packed once for its chunk calls (backends that pack; else nullptr).
  char* const kpack =
      at.kpack_bytes > 0 ? ws + 2 * at.kv_bytes + at.o_bytes + at.lse_bytes : nullptr;
  const TensorRef qref = tensor_ref(*q, shape.packed);
  FwdParams call{};  // what every chunk's call shares
  set_call_problem(shape, cur_->opts, &call);
  call.counts = &stats_.kernels;

  KvSteps kv;
  RINGATTN_RETURN_IF_ERROR(begin_kv(k, v, ws, &kv, stream));
  for (int32_t c = 0; c < C; ++c) chunk_init_[c] = 0;

  for (int32_t i = 0; i < P; ++i) {
    const int32_t src = plan.step_source(i);
    if (i + 1 < P) {
      const Status st = start_kv(i, &kv);
      if (st != RINGATTN_SUCCESS) return abandon(st, kv.ex, 2);
    }
    if (!plan.step_visible_fwd(i)) ++stats_.steps_skipped;
    int32_t visible = 0;
    for (int32_t c = 0; c < C; ++c) visible += plan.fwd_visible(i, c) ? 1 : 0;
    FwdParams keys = call;  // the step's key side
    keys.sk = plan.rows_of(src);
    keys.k = kv_ref(kv.cur, 0, keys.sk, 0);
    keys.v = kv_ref(kv.cur, 1, keys.sk, 0);
    if (kpack != nullptr && visible > 1 && !plan.head_chunks()) {
      const Status st =
          timed_compute([&] { return backend_->pack_forward_keys(keys, kpack, stream); });
      if (st != RINGATTN_SUCCESS) return abandon(st, kv.ex, 2);
      keys.key_pack = kpack;
    }
    for (int32_t c = 0; c < C; ++c) {
      if (!plan.fwd_visible(i, c)) continue;
      const RowChunk& qc = plan.q_chunk(c);
      FwdParams p = keys;
      p.sq = qc.rows;
      p.q = offset_rows(qref, qc.row0);
      const int64_t h0 = narrow_heads(plan.kv_heads(c, Hkv), &p);
      p.o = offset_heads(offset_rows(o_acc, qc.row0), h0);
      p.lse = offset_heads(offset_rows(lse_acc, qc.row0), h0);
      p.q_pos = plan.map(qc);
      p.k_pos = plan.block_map(src);
      p.out_mode = chunk_init_[c] ? kOutMergeF32 : kOutPartialF32;
      const Status st = timed_compute([&] { return backend_->forward(p, stream); });
      if (st != RINGATTN_SUCCESS) return abandon(st, kv.ex, 2);
      chunk_init_[c] = 1;
      progress(kv.ex, 2);
    }
    if (i + 1 < P) {
      const Status st = next_kv(&kv);
      if (st != RINGATTN_SUCCESS) return abandon(st, kv.ex, 2);
    }
  }
  return timed_compute([&] {
    // Rows that saw no key anywhere: O = 0, LSE = -inf.
    for (int32_t c = 0; c < C; ++c) {
      const RowChunk& qc = plan.q_chunk(c);
      if (chunk_init_[c] || qc.rows == 0) continue;
      const HeadRange hr = plan.kv_heads(c, Hkv);
      const int64_t h0 = hr.h0 * group, nh = hr.count * group;
      const TensorRef zero{nullptr, kF32, 0, 0, 0};
      RINGATTN_RETURN_IF_ERROR(backend_->convert(
          B, qc.rows, nh, D, zero, offset_heads(offset_rows(o_acc, qc.row0), h0), stream));
      RINGATTN_RETURN_IF_ERROR(backend_->fill_rowstat(
          B, nh, qc.rows, offset_heads(offset_rows(lse_acc, qc.row0), h0), -INFINITY, stream));
    }
    return backend_->convert(B, S, Hq, D, o_acc, tensor_ref(*o, shape.packed), stream);
  });
}

}  // namespace ringattn
