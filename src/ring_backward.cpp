// Ring backward (DESIGN.md): Delta = rowsum(dO * O) once; K/V travel as in forward, and float32
// dK/dV accumulators travel one step behind them, chunk by chunk: a rank adds its contribution
// for chunk c of the block it holds into the accumulator that the previous rank sent for that
// chunk, then forwards it. A block's accumulator starts at the first rank after its owner (step
// 1) and reaches the owner after the last step, which adds its own contribution (step 0, kept
// locally): P - 1 hops per block, not P. dQ accumulates locally in float32. Gradients are cast
// once at the end (the own block's: its two accumulators summed and cast in one pass).
//
// The accumulators that start at zero (steps 0 and 1) are zero-filled first, unless the backend
// overwrites dK/dV on request (Backend::backward_overwrites_kv): then a step's first call writes
// them and only chunks that no call visits are zero-filled.
//
// Chunks (of the block's key rows, or of heads: RingPlan) let the accumulators of chunk c travel
// while the later chunks compute, so the only exposed gradient transfer is the final chunk's
// last hop.
//
// Every call of the P x C steps and chunks has the same query side (Q, dO, LSE, Delta): a backend
// that prepares it (the CPU backend's float32 packing) does so once per ring call into the
// workspace (Backend::pack_backward_queries), not once per call.
#include <cmath>

#include "ring_context.h"

namespace ringattn {
namespace {

constexpr int kTagGrad = 16;  // + chunk index

}  // namespace

Status RingContext::run_backward(const ringattn_tensor_t* q, const ringattn_tensor_t* k,
                                 const ringattn_tensor_t* v, const ringattn_tensor_t* lse,
                                 const ringattn_tensor_t* o, const ringattn_tensor_t* dout,
                                 ringattn_tensor_t* dq, ringattn_tensor_t* dk,
                                 ringattn_tensor_t* dv, void* stream) {
  const RingPlan& plan = cur_->plan;
  const AttnShape& shape = cur_->ring;
  const int32_t P = plan.world(), C = plan.chunks(), me = ring_->rank();
  const int64_t B = shape.batch, S = shape.seq, Hq = shape.hq, Hkv = shape.hkv, D = shape.d;
  const bool packed = shape.packed;
  stats_.steps = P;
  if (B == 0 || plan.max_rows() == 0) return RINGATTN_SUCCESS;

  // Gradient accumulators: one slot per chunk, [rows, 2 (dK, dV), B, heads, D] float32 (the
  // chunk's rows and key/value heads), so that a chunk is one contiguous message whatever the
  // block.
  const int64_t slot_heads = plan.slot_heads(Hkv);
  const BwdLayout at = backward_layout(*cur_);
  const size_t kv_bytes = at.kv_bytes, dq_bytes = at.dq_bytes, delta_bytes = at.delta_bytes;
  const size_t slot_bytes = at.slot_bytes, grad_bytes = at.grad_bytes;
  const size_t qpack_bytes = at.qpack_bytes;
  // Every backward call of this ring call shares its query rows: the fields they share are set
  // once here, and the backend may pack the query side once (0 bytes: it packs per call).
  BwdParams qside = query_side_shape(shape, cur_->opts);
  const bool overwrite = backend_->backward_overwrites_kv();
  char* ws = nullptr;
  RINGATTN_RETURN_IF_ERROR(workspace(at.total, &ws));
  char* p0 = ws + 2 * kv_bytes;  // after the two K/V ring buffers
  // [B, Hq, S, D]: a tile's dQ rows are contiguous (rows Hq * D floats apart alias in cache).
  const TensorRef dq_acc{p0, kF32, S * Hq * D, D, S * D};
  const RowStatRef delta{reinterpret_cast<float*>(p0 + dq_bytes), Hq * S, S};
  // Accumulators in flight (double-buffered by step), and this rank's own block's (step 0).
  char* grad[2] = {p0 + dq_bytes + delta_bytes, p0 + dq_bytes + delta_bytes + grad_bytes};
  char* const own = grad[1] + grad_bytes;
  auto grad_ref = [&](char* buf, int which, int32_t c) {
    const int64_t nh = plan.kv_heads(c, Hkv).count;
    float* base = reinterpret_cast<float*>(buf + slot_bytes * c) + which * B * nh * D;
    return TensorRef{base, kF32, nh * D, 2 * B * nh * D, D};
  };
  // Bytes of chunk c of a block whose chunk has `rows` rows.
  auto chunk_bytes = [&](int32_t c, int64_t rows) {
    return sizeof(float) * static_cast<size_t>(rows * 2 * B * plan.kv_heads(c, Hkv).count * D);
  };
  auto slot = [&](char* buf, int32_t c) { return buf + slot_bytes * c; };
  char* const qpack = own + grad_bytes;

  qside.q = tensor_ref(*q, packed);
  qside.dout = tensor_ref(*dout, packed);
  qside.o = tensor_ref(*o, packed);
  qside.counts = &stats_.kernels;
  qside.lse = rowstat_ref(*lse, packed);
  qside.delta = delta;
  qside.dq = dq_acc;
  qside.accumulate = true;
  qside.q_pos = plan.block_map(me);
  const TensorRef zero{nullptr, kF32, 0, 0, 0};
  size_t qpack_head = 0;  // bytes of one key/value head's part of the query pack
  RINGATTN_RETURN_IF_ERROR(timed_compute([&] {
    RINGATTN_RETURN_IF_ERROR(
        backend_->compute_delta(B, S, Hq, D, qside.dout, tensor_ref(*o, packed), delta, stream));
    if (qpack_bytes > 0) {  // after Delta, which the pack holds
      RINGATTN_RETURN_IF_ERROR(backend_->pack_backward_queries(qside, qpack, stream));
      qside.query_pack = qpack;
      qpack_head = backend_->backward_query_pack_bytes(qside) / static_cast<size_t>(Hkv);
    }
    RINGATTN_RETURN_IF_ERROR(backend_->convert(B, S, Hq, D, zero, dq_acc, stream));
    // Steps 0 (this rank's own block) and 1 (the first visit of the previous rank's block)
    // start their accumulators at zero; later ones arrive from the previous rank.
    if (overwrite) return RINGATTN_SUCCESS;
    const int64_t slot_rows = plan.slot_rows() * C * 2 * B;
    const TensorRef all{own, kF32, 0, slot_heads * D, D};
    RINGATTN_RETURN_IF_ERROR(backend_->convert(1, slot_rows, slot_heads, D, zero, all, stream));
    if (P == 1) return RINGATTN_SUCCESS;
    return backend_->convert(1, slot_rows, slot_heads, D, zero,
                             TensorRef{grad[1], kF32, 0, slot_heads * D, D}, stream);
  }));
  KvSteps kv;
  RINGATTN_RETURN_IF_ERROR(begin_kv(k, v, ws, &kv, stream));

  const int next = (me + 1) % P, prev = (me - 1 + P) % P;
  for (int32_t i = 0; i < P; ++i) {
    const int32_t src = plan.step_source(i);
    const int64_t src_rows = plan.rows_of(src);
    const int a = i % 2;                       // accumulators in flight of this step's block
    char* const acc = i == 0 ? own : grad[a];  // where this step's contributions go
    if (i + 1 < P) {
      const Status st = start_kv(i, &kv);
      if (st != RINGATTN_SUCCESS) return abandon(st, kv.ex, 2);
    }
    if (!plan.step_visible_bwd(i)) ++stats_.steps_skipped;
    for (int32_t c = 0; c < C; ++c) {
      const RowChunk& kc = plan.k_chunk(src, c);
      const HeadRange hr = plan.kv_heads(c, Hkv);
      if (i > 1) {  // the accumulator of this chunk arrived from the previous rank
        const Status st = wait(&chunk_ex_[c]);
        if (st != RINGATTN_SUCCESS) return abandon(st, kv.ex, 2);
      }
      const bool first = i < 2 && overwrite;  // this call starts the accumulator
      if (plan.bwd_visible(i, c)) {
        BwdParams p = qside;
        p.overwrite_kv = first;
        p.sk = kc.rows;
        p.k = kv_ref(kv.cur, 0, src_rows, kc.row0);
        p.v = kv_ref(kv.cur, 1, src_rows, kc.row0);
        p.dk = grad_ref(acc, 0, c);
        p.dv = grad_ref(acc, 1, c);
        p.k_pos = plan.map(kc);
        // The chunk's heads (all of them for row chunks) and their part of the query side.
        const int64_t h0 = narrow_heads(hr, &p);
        p.dout = offset_heads(p.dout, h0);
        p.o = offset_heads(p.o, h0);
        p.dq = offset_heads(p.dq, h0);
        p.lse = offset_heads(p.lse, h0);
        p.delta = offset_heads(p.delta, h0);
        if (p.query_pack != nullptr) {
          p.query_pack =
              static_cast<const char*>(p.query_pack) + qpack_head * static_cast<size_t>(hr.h0);
        }
        const Status st = timed_compute([&] { return backend_->backward(p, stream); });
        if (st != RINGATTN_SUCCESS) return abandon(st, kv.ex, 2);
      } else if (first && kc.rows > 0) {
        const Status st = timed_compute([&] {
          return backend_->convert(1, kc.rows * 2 * B, hr.count, D, zero,
                                   TensorRef{slot(acc, c), kF32, 0, hr.count * D, D}, stream);
        });
        if (st != RINGATTN_SUCCESS) return abandon(st, kv.ex, 2);
      }
      if (i > 0) {
        // Forward this chunk's accumulators; receive the same chunk of the next step's block
        // (after the last step: of this rank's own block, all but this rank's contribution).
        const int32_t nsrc = plan.step_source((i + 1) % P);
        const size_t send = chunk_bytes(c, kc.rows);
        const size_t recv = chunk_bytes(c, plan.k_chunk(nsrc, c).rows);
        const Status st = start(slot(grad[a], c), send, next, slot(grad[1 - a], c), recv, prev,
                                kTagGrad + c, &chunk_ex_[c]);
        if (st != RINGATTN_SUCCESS) return abandon(st, kv.ex, 2);
      }
      progress(kv.ex, 2);
      progress(chunk_ex_.data(), C);
    }
    if (i + 1 < P) {
      const Status st = next_kv(&kv);
      if (st != RINGATTN_SUCCESS) return abandon(st, kv.ex, 2);
    }
  }
  char* const others = grad[P % 2];  // the other ranks' contributions to this rank's block
  for (int32_t c = 0; c < C; ++c) {
    if (P > 1) {
      const Status st = wait(&chunk_ex_[c]);
      if (st != RINGATTN_SUCCESS) return abandon(st, kv.ex, 2);
    }
    const RowChunk& kc = plan.k_chunk(me, c);
    if (kc.rows == 0) continue;
    // Later chunks' accumulators may still be arriving: a failure here abandons them too, so
    // that no exchange outlives the call.
    const Status st = timed_compute([&] {
      const HeadRange hr = plan.kv_heads(c, Hkv);
      for (int which = 0; which < 2; ++which) {
        const TensorRef out =
            offset_heads(offset_rows(tensor_ref(which == 0 ? *dk : *dv, packed), kc.row0), hr.h0);
        RINGATTN_RETURN_IF_ERROR(
            P > 1
                ? backend_->add_convert(B, kc.rows, hr.count, D, grad_ref(own, which, c),
                                        grad_ref(others, which, c), out, stream)
                : backend_->convert(B, kc.rows, hr.count, D, grad_ref(own, which, c), out, stream));
      }
      return RINGATTN_SUCCESS;
    });
    if (st != RINGATTN_SUCCESS) return abandon(st, kv.ex, 2);
  }
  return timed_compute(
      [&] { return backend_->convert(B, S, Hq, D, dq_acc, tensor_ref(*dq, packed), stream); });
}

}  // namespace ringattn
