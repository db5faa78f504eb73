// Hybrid sequence parallelism (options.ulysses_degree U > 1; docs/ring.md, "Ulysses and
// hybrid"): inside each Ulysses group of U ranks an all-to-all turns the sequence shards of all
// heads into the group's whole block of rows at H / U heads, the ring runs between the groups'
// blocks (ring_forward.cpp, ring_backward.cpp over the ring view of the transport), and a second
// all-to-all brings the results back to the sequence shards. The all-to-all is U - 1 paired
// exchanges over the transport (rank u sends to u + k and receives from u - k at step k), each
// bounded by the transport's timeout like the ring's.
#include <algorithm>

#include "ring_context.h"

namespace ringattn {
namespace {

constexpr int kTagAllToAll = 8;  // below the gradient tags (16 + chunk)

// A contiguous [B, S, H, D] tensor (a staging buffer or a ring tensor).
TensorRef dense(void* p, DType dt, int64_t s, int64_t h, int64_t d) {
  return TensorRef{p, dt, s * h * d, h * d, d};
}

// `t` from head `h` on.
TensorRef at_head(TensorRef t, int64_t h) {
  t.data = static_cast<char*>(t.data) + h * t.stride_h * static_cast<int64_t>(dtype_size(t.dtype));
  return t;
}

// Row statistics [B, H, S] seen as [B, S, H, 1] tensors, so that the all-to-all moves them like
// the others.
TensorRef stat_as_tensor(const RowStatRef& r) {
  return TensorRef{r.data, kF32, r.stride_b, 1, r.stride_h};
}

ringattn_dtype_t api_dtype(DType d) {
  return d == kF32 ? RINGATTN_FLOAT32 : d == kF16 ? RINGATTN_FLOAT16 : RINGATTN_BFLOAT16;
}

// Descriptors of the ring's contiguous tensors: [B, S, H, D] (packed: [T, H, D]) and LSE
// [B, H, S] (packed: [H, T]).
ringattn_tensor_t ring_tensor(void* p, DType dt, const AttnShape& rs, int64_t heads) {
  ringattn_tensor_t t{};
  t.data = p;
  t.dtype = api_dtype(dt);
  if (rs.packed) {
    t.ndim = 3;
    t.shape[0] = rs.seq, t.shape[1] = heads, t.shape[2] = rs.d;
    t.strides[0] = heads * rs.d, t.strides[1] = rs.d, t.strides[2] = 1;
  } else {
    t.ndim = 4;
    t.shape[0] = rs.batch, t.shape[1] = rs.seq, t.shape[2] = heads, t.shape[3] = rs.d;
    t.strides[0] = rs.seq * heads * rs.d, t.strides[1] = heads * rs.d, t.strides[2] = rs.d;
    t.strides[3] = 1;
  }
  return t;
}

ringattn_tensor_t ring_lse(float* p, const AttnShape& rs, int64_t heads) {
  ringattn_tensor_t t{};
  t.data = p;
  t.dtype = RINGATTN_FLOAT32;
  if (rs.packed) {
    t.ndim = 2;
    t.shape[0] = heads, t.shape[1] = rs.seq;
    t.strides[0] = rs.seq, t.strides[1] = 1;
  } else {
    t.ndim = 3;
    t.shape[0] = rs.batch, t.shape[1] = heads, t.shape[2] = rs.seq;
    t.strides[0] = heads * rs.seq, t.strides[1] = rs.seq, t.strides[2] = 1;
  }
  return t;
}

// A region allocator over the workspace: 64-byte aligned offsets.
struct Carve {
  size_t at = 0;
  size_t take(size_t bytes) {
    const size_t off = at;
    at += align64(bytes);
    return off;
  }
};

}  // namespace

HybridRegions RingContext::hybrid_regions(const RingProblemState& st, bool backward) const {
  const AttnShape& rs = st.ring;
  const size_t es = dtype_size(rs.dtype);
  const size_t B = static_cast<size_t>(rs.batch), S = static_cast<size_t>(rs.seq);
  const size_t D = static_cast<size_t>(rs.d), hq = static_cast<size_t>(rs.hq),
               hkv = static_cast<size_t>(rs.hkv);
  const size_t q_bytes = B * S * hq * D * es, kv_bytes = B * S * hkv * D * es;
  const size_t stat_bytes = sizeof(float) * B * hq * S;
  // Gradients of replicated key/value heads leave the ring in float32, to be added up.
  const size_t gkv_es = st.heads.replicated ? sizeof(float) : es;
  HybridRegions at;
  Carve c;
  c.take(backward ? backward_layout(st).total : forward_layout(st, true).total);  // the ring's
  at.qh = c.take(q_bytes);
  at.kh = c.take(kv_bytes);
  at.vh = c.take(kv_bytes);
  at.oh = c.take(q_bytes);
  at.lseh = c.take(stat_bytes);
  // Staging of one exchange: at most the largest member's rows, every tensor of a phase.
  int64_t max_rows = 0;
  for (int32_t u = 0; u < layout_.ulysses; ++u) {
    const int64_t r = st.plan.member_rows(layout_.ring_rank, u);
    max_rows = r > max_rows ? r : max_rows;
  }
  // Bytes per row of each phase's parts (LSE: 4 per head); each part is 64-byte aligned in the
  // staging buffer, hence the 63 bytes per part (at most 6) added below.
  size_t row_bytes = (hq + 2 * hkv) * D * es;             // forward in: Q, K, V
  row_bytes = std::max(row_bytes, hq * D * es + hq * 4);  // forward out: O, LSE
  if (backward) {
    at.doh = c.take(q_bytes);
    at.dqh = c.take(q_bytes);
    at.dkh = c.take(B * S * hkv * D * gkv_es);
    at.dvh = c.take(B * S * hkv * D * gkv_es);
    if (st.heads.replicated) {
      const size_t local_kv =
          sizeof(float) * static_cast<size_t>(st.shape.batch * st.shape.seq * st.shape.hkv) * D;
      at.acc_k = c.take(local_kv);
      at.acc_v = c.take(local_kv);
    }
    row_bytes = std::max(row_bytes, (3 * hq + 2 * hkv) * D * es + hq * 4);  // in
    row_bytes = std::max(row_bytes, hq * D * es + 2 * hkv * D * gkv_es);    // out
  }
  const size_t staging = B * static_cast<size_t>(max_rows) * row_bytes + 63 * 6;
  at.send = c.take(staging);
  at.recv = c.take(staging);
  at.total = c.at + 64;
  return at;
}

Status RingContext::alltoall(const RingProblemState& st, bool to_ring, const A2APart* parts, int n,
                             char* send, char* recv, void* stream) {
  const double t0 = ring_now();
  const int32_t U = layout_.ulysses, me = layout_.uly_rank, s = layout_.ring_rank;
  const int64_t B = st.ring.batch;
  const RingPlan& plan = st.plan;
  auto rows = [&](int32_t u) { return plan.member_rows(s, u); };
  auto first = [&](const A2APart& p, int32_t u) {
    return p.kv ? st.heads.kv_first(u) : st.heads.q_first(u);
  };
  auto count = [&](const A2APart& p) { return p.kv ? st.heads.hkv : st.heads.hq; };
  auto part_bytes = [&](const A2APart& p, int64_t r) {
    return align64(static_cast<size_t>(B * r * count(p) * p.d) * dtype_size(p.sharded.dtype));
  };
  // Moves `r` rows of `p` from `src` to `dst`: a cast, or back from the ring an addition into
  // float32.
  auto move = [&](const A2APart& p, int64_t r, const TensorRef& src, const TensorRef& dst) {
    return p.add && !to_ring ? backend_->accumulate(B, r, count(p), p.d, src, dst, stream)
                             : backend_->convert(B, r, count(p), p.d, src, dst, stream);
  };
  // Member u's rows, between its own row order (`mine`, at u's rows) and the block's (`block`):
  // one move per segment (a sequence's part).
  auto scatter = [&](const A2APart& p, int32_t u, const TensorRef& mine, const TensorRef& block,
                     bool into_block) {
    int32_t nseg = 0;
    const RingPlan::Segment* seg = plan.segments(s, u, &nseg);
    for (int32_t i = 0; i < nseg; ++i) {
      const TensorRef a = offset_rows(mine, seg[i].local_row0);
      const TensorRef b = offset_rows(block, seg[i].block_row0);
      const Status st_move = into_block ? move(p, seg[i].rows, a, b) : move(p, seg[i].rows, b, a);
      if (st_move != RINGATTN_SUCCESS) return st_move;
    }
    return RINGATTN_SUCCESS;
  };
  Status st_out = RINGATTN_SUCCESS;
  for (int32_t k = 0; k < U && st_out == RINGATTN_SUCCESS; ++k) {
    const int32_t dst = (me + k) % U, src = (me - k + U) % U;
    if (k == 0) {  // this rank's own rows and heads: no transfer
      for (int i = 0; i < n && st_out == RINGATTN_SUCCESS; ++i) {
        st_out = scatter(parts[i], me, at_head(parts[i].local, first(parts[i], me)),
                         parts[i].sharded, to_ring);
      }
      continue;
    }
    // Pack what `dst` needs, in dst's row order: to the ring, this rank's rows at dst's heads;
    // back, dst's rows of the block at this rank's heads.
    size_t sent = 0;
    for (int i = 0; i < n && st_out == RINGATTN_SUCCESS; ++i) {
      const A2APart& p = parts[i];
      const int64_t r = to_ring ? rows(me) : rows(dst);
      const TensorRef wire = dense(send + sent, p.sharded.dtype, r, count(p), p.d);
      if (to_ring) {
        st_out =
            backend_->convert(B, r, count(p), p.d, at_head(p.local, first(p, dst)), wire, stream);
      } else {
        int32_t nseg = 0;
        const RingPlan::Segment* seg = plan.segments(s, dst, &nseg);
        for (int32_t j = 0; j < nseg && st_out == RINGATTN_SUCCESS; ++j) {
          st_out = backend_->convert(B, seg[j].rows, count(p), p.d,
                                     offset_rows(p.sharded, seg[j].block_row0),
                                     offset_rows(wire, seg[j].local_row0), stream);
        }
      }
      sent += part_bytes(p, r);
    }
    size_t expect = 0;
    for (int i = 0; i < n; ++i) expect += part_bytes(parts[i], to_ring ? rows(src) : rows(me));
    if (st_out != RINGATTN_SUCCESS) break;
    comm::Exchange ex;
    st_out = uly_view_->start_exchange(send, sent, dst, recv, expect, src, kTagAllToAll, &ex);
    if (st_out == RINGATTN_SUCCESS) st_out = uly_view_->wait(&ex);
    if (st_out != RINGATTN_SUCCESS) {
      // The transport names the peers; say that the exchange was the all-to-all's.
      st_out = set_error(st_out, "all-to-all inside the Ulysses group: " + transport_->error());
      if (ex.active) uly_view_->wait(&ex);  // bounded; fails at once on a broken transport
      break;
    }
    stats_.alltoall_bytes += static_cast<int64_t>(sent);
    // Unpack what `src` sent: to the ring, its rows into their places in the block at this
    // rank's heads; back, this rank's rows at src's heads.
    size_t got = 0;
    for (int i = 0; i < n && st_out == RINGATTN_SUCCESS; ++i) {
      const A2APart& p = parts[i];
      const int64_t r = to_ring ? rows(src) : rows(me);
      const TensorRef wire = dense(recv + got, p.sharded.dtype, r, count(p), p.d);
      st_out = to_ring ? scatter(p, src, wire, p.sharded, true)
                       : move(p, r, wire, at_head(p.local, first(p, src)));
      got += part_bytes(p, r);
    }
  }
  stats_.alltoall_seconds += ring_now() - t0;
  return st_out;
}

Status RingContext::run_hybrid_forward(const ringattn_tensor_t* q, const ringattn_tensor_t* k,
                                       const ringattn_tensor_t* v, ringattn_tensor_t* o,
                                       ringattn_tensor_t* lse, void* stream) {
  const RingProblemState& st = *cur_;
  const AttnShape& sh = st.shape;
  const AttnShape& rs = st.ring;
  if (sh.batch == 0 || st.plan.max_rows() == 0) return RINGATTN_SUCCESS;
  const HybridRegions at = hybrid_regions(st, false);
  char* ws = nullptr;
  RINGATTN_RETURN_IF_ERROR(workspace(at.total, &ws));
  const DType dt = rs.dtype;
  const int64_t D = rs.d;
  ringattn_tensor_t qh = ring_tensor(ws + at.qh, dt, rs, rs.hq);
  ringattn_tensor_t kh = ring_tensor(ws + at.kh, dt, rs, rs.hkv);
  ringattn_tensor_t vh = ring_tensor(ws + at.vh, dt, rs, rs.hkv);
  ringattn_tensor_t oh = ring_tensor(ws + at.oh, dt, rs, rs.hq);
  ringattn_tensor_t lseh = ring_lse(reinterpret_cast<float*>(ws + at.lseh), rs, rs.hq);
  const A2APart in[3] = {{tensor_ref(*q, sh.packed), tensor_ref(qh, rs.packed), D, false, false},
                         {tensor_ref(*k, sh.packed), tensor_ref(kh, rs.packed), D, true, false},
                         {tensor_ref(*v, sh.packed), tensor_ref(vh, rs.packed), D, true, false}};
  RINGATTN_RETURN_IF_ERROR(alltoall(st, true, in, 3, ws + at.send, ws + at.recv, stream));
  RINGATTN_RETURN_IF_ERROR(run_forward(&qh, &kh, &vh, &oh, &lseh, stream));
  const A2APart out[2] = {
      {tensor_ref(*o, sh.packed), tensor_ref(oh, rs.packed), D, false, false},
      {lse != nullptr ? stat_as_tensor(rowstat_ref(*lse, sh.packed)) : TensorRef{},
       stat_as_tensor(rowstat_ref(lseh, rs.packed)), 1, false, false}};
  return alltoall(st, false, out, lse != nullptr ? 2 : 1, ws + at.send, ws + at.recv, stream);
}

Status RingContext::run_hybrid_backward(const ringattn_tensor_t* q, const ringattn_tensor_t* k,
                                        const ringattn_tensor_t* v, const ringattn_tensor_t* lse,
                                        const ringattn_tensor_t* o, const ringattn_tensor_t* dout,
                                        ringattn_tensor_t* dq, ringattn_tensor_t* dk,
                                        ringattn_tensor_t* dv, void* stream) {
  const RingProblemState& st = *cur_;
  const AttnShape& sh = st.shape;
  const AttnShape& rs = st.ring;
  if (sh.batch == 0 || st.plan.max_rows() == 0) return RINGATTN_SUCCESS;
  const HybridRegions at = hybrid_regions(st, true);
  char* ws = nullptr;
  RINGATTN_RETURN_IF_ERROR(workspace(at.total, &ws));
  const DType dt = rs.dtype;
  const DType gdt = st.heads.replicated ? kF32 : dt;  // dK, dV of the ring
  const int64_t D = rs.d;
  ringattn_tensor_t qh = ring_tensor(ws + at.qh, dt, rs, rs.hq);
  ringattn_tensor_t kh = ring_tensor(ws + at.kh, dt, rs, rs.hkv);
  ringattn_tensor_t vh = ring_tensor(ws + at.vh, dt, rs, rs.hkv);
  ringattn_tensor_t oh = ring_tensor(ws + at.oh, dt, rs, rs.hq);
  ringattn_tensor_t doh = ring_tensor(ws + at.doh, dt, rs, rs.hq);
  ringattn_tensor_t lseh = ring_lse(reinterpret_cast<float*>(ws + at.lseh), rs, rs.hq);
  ringattn_tensor_t dqh = ring_tensor(ws + at.dqh, dt, rs, rs.hq);
  ringattn_tensor_t dkh = ring_tensor(ws + at.dkh, gdt, rs, rs.hkv);
  ringattn_tensor_t dvh = ring_tensor(ws + at.dvh, gdt, rs, rs.hkv);
  const A2APart in[6] = {
      {tensor_ref(*q, sh.packed), tensor_ref(qh, rs.packed), D, false, false},
      {tensor_ref(*k, sh.packed), tensor_ref(kh, rs.packed), D, true, false},
      {tensor_ref(*v, sh.packed), tensor_ref(vh, rs.packed), D, true, false},
      {tensor_ref(*o, sh.packed), tensor_ref(oh, rs.packed), D, false, false},
      {tensor_ref(*dout, sh.packed), tensor_ref(doh, rs.packed), D, false, false},
      {stat_as_tensor(rowstat_ref(*lse, sh.packed)), stat_as_tensor(rowstat_ref(lseh, rs.packed)),
       1, false, false}};
  RINGATTN_RETURN_IF_ERROR(alltoall(st, true, in, 6, ws + at.send, ws + at.recv, stream));
  RINGATTN_RETURN_IF_ERROR(run_backward(&qh, &kh, &vh, &lseh, &oh, &doh, &dqh, &dkh, &dvh, stream));
  const TensorRef dk_ref = tensor_ref(*dk, sh.packed), dv_ref = tensor_ref(*dv, sh.packed);
  if (!st.heads.replicated) {
    const A2APart out[3] = {
        {tensor_ref(*dq, sh.packed), tensor_ref(dqh, rs.packed), D, false, false},
        {dk_ref, tensor_ref(dkh, rs.packed), D, true, false},
        {dv_ref, tensor_ref(dvh, rs.packed), D, true, false}};
    return alltoall(st, false, out, 3, ws + at.send, ws + at.recv, stream);
  }
  // Several ranks computed gradients of each key/value head: added up in float32 on the rank
  // that holds its rows, then cast once.
  const int64_t L = sh.seq, Hkv = sh.hkv;
  const TensorRef acc_k = dense(ws + at.acc_k, kF32, L, Hkv, D);
  const TensorRef acc_v = dense(ws + at.acc_v, kF32, L, Hkv, D);
  const TensorRef zero{nullptr, kF32, 0, 0, 0};
  RINGATTN_RETURN_IF_ERROR(backend_->convert(sh.batch, L, Hkv, D, zero, acc_k, stream));
  RINGATTN_RETURN_IF_ERROR(backend_->convert(sh.batch, L, Hkv, D, zero, acc_v, stream));
  const A2APart out[3] = {{tensor_ref(*dq, sh.packed), tensor_ref(dqh, rs.packed), D, false, false},
                          {acc_k, tensor_ref(dkh, rs.packed), D, true, true},
                          {acc_v, tensor_ref(dvh, rs.packed), D, true, true}};
  RINGATTN_RETURN_IF_ERROR(alltoall(st, false, out, 3, ws + at.send, ws + at.recv, stream));
  RINGATTN_RETURN_IF_ERROR(backend_->convert(sh.batch, L, Hkv, D, acc_k, dk_ref, stream));
  return backend_->convert(sh.batch, L, Hkv, D, acc_v, dv_ref, stream);
}

}  // namespace ringattn
