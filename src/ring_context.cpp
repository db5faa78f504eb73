#include "ring_context.h"

#include <chrono>

namespace ringattn {

double ring_now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

TensorRef offset_rows(const TensorRef& t, int64_t row0) {
  TensorRef r = t;
  r.data =
      static_cast<char*>(t.data) + row0 * t.stride_s * static_cast<int64_t>(dtype_size(t.dtype));
  return r;
}

RowStatRef offset_rows(const RowStatRef& t, int64_t row0) {
  RowStatRef r = t;
  r.data = t.data + row0;
  return r;
}

TensorRef offset_heads(const TensorRef& t, int64_t h0) {
  TensorRef r = t;
  r.data = static_cast<char*>(t.data) + h0 * t.stride_h * static_cast<int64_t>(dtype_size(t.dtype));
  return r;
}

RowStatRef offset_heads(const RowStatRef& t, int64_t h0) {
  RowStatRef r = t;
  r.data = t.data + h0 * t.stride_h;
  return r;
}

int64_t narrow_heads(const HeadRange& kv, AttnCall* call) {
  const int64_t group = call->hq / call->hkv, q0 = kv.h0 * group;
  call->q = offset_heads(call->q, q0);
  call->k = offset_heads(call->k, kv.h0);
  call->v = offset_heads(call->v, kv.h0);
  call->hq = kv.count * group;
  call->hkv = kv.count;
  return q0;
}

RingContext::RingContext(std::unique_ptr<comm::Transport> transport, Backend* backend,
                         int32_t chunks, bool capturable, HybridLayout layout)
    : transport_(std::move(transport)),
      layout_(std::move(layout)),
      backend_(backend),
      chunks_(chunks) {
  ring_ = transport_.get();
  if (layout_.hybrid()) {
    ring_view_.reset(new comm::SubgroupTransport(transport_.get(), layout_.ring_group()));
    uly_view_.reset(new comm::SubgroupTransport(transport_.get(), layout_.ulysses_group()));
    ring_ = ring_view_.get();
  }
  chunk_ex_.resize(static_cast<size_t>(chunks_));
  chunk_init_.resize(static_cast<size_t>(chunks_));
  if (!capturable) timer_ = backend_->make_timer();
  ws_fence_ = backend_->make_use_fence();
}

double RingContext::device_compute_seconds() { return timer_ ? timer_->seconds() : 0.0; }

RingContext::~RingContext() {
  // A broken transport may still write into the workspace (a receive that could not be
  // cancelled): leak it rather than free memory that MPI may touch.
  // The legacy stream waits for the last call that used the workspace (recorded on its own
  // stream) before the free: no host wait, and no free overtaking a kernel still reading it.
  if (transport_->broken()) return;
  release_after_use(backend_, ws_fence_.get(), own_.device_runs, nullptr);
  if (ws_ != nullptr) release_workspace(nullptr);
}

void RingContext::release_workspace(void* stream) {
  release_after_use(backend_, ws_fence_.get(), ws_, stream);
  ws_ = nullptr;
  ws_bytes_ = 0;
}

void RingContext::end_call(void* stream) {
  // A call captured into a graph is not recorded: its event would belong to the capture. Such a
  // call never grows the workspace (refused), and the graph's replays are the caller's to finish
  // before the context is destroyed.
  if (ws_fence_ && ws_ != nullptr && !backend_->stream_capturing(stream)) ws_fence_->record(stream);
}

Status RingContext::ensure_workspace(size_t bytes, void* stream) {
  if (bytes <= ws_bytes_) return RINGATTN_SUCCESS;
  // Memory allocated during a capture belongs to the graph: the workspace must outlive it.
  if (backend_->stream_capturing(stream)) {
    return set_errorf(RINGATTN_ERROR_UNSUPPORTED,
                      "rank %d: the ring workspace must grow to %zu bytes while the stream is "
                      "being captured: run one call of this problem before capturing it",
                      transport_->rank(), bytes);
  }
  // The old workspace may still be read by the previous call, on another stream: the free
  // waits for that call's recorded end.
  if (ws_ != nullptr) release_workspace(stream);
  ws_ = static_cast<char*>(backend_->alloc(bytes, stream));
  if (ws_ == nullptr) {
    return set_errorf(RINGATTN_ERROR_OUT_OF_MEMORY,
                      "rank %d: cannot allocate %zu bytes of ring "
                      "workspace",
                      transport_->rank(), bytes);
  }
  ws_bytes_ = bytes;
  return RINGATTN_SUCCESS;
}

Status RingContext::workspace_for(RingOp op, size_t bytes, void* stream) {
  if (ws_agreed_[op]) return ensure_workspace(bytes, stream);
  const Status st = ensure_workspace(bytes, stream);
  const std::string msg = st == RINGATTN_SUCCESS ? std::string() : last_error();
  const int P = transport_->size();
  int64_t mine = st;
  std::vector<int64_t> all(static_cast<size_t>(P));
  const double t0 = ring_now();
  const Status ag = transport_->allgather_i64(&mine, 1, all.data());
  stats_.comm_wait_seconds += ring_now() - t0;
  if (ag != RINGATTN_SUCCESS) return transport_error(ag);
  if (st != RINGATTN_SUCCESS) return set_error(st, msg);
  for (int r = 0; r < P; ++r) {
    if (all[r] != RINGATTN_SUCCESS) {
      return set_errorf(static_cast<Status>(all[r]),
                        "rank %d: rank %d could not allocate its ring workspace (%s)",
                        transport_->rank(), r, ringattn_status_string(static_cast<Status>(all[r])));
    }
  }
  ws_agreed_[op] = true;
  return RINGATTN_SUCCESS;
}

Status RingContext::abandon(Status st, comm::Exchange* ex, int n) {
  const std::string msg = last_error();
  // A broken transport fails every wait at once; a healthy one finishes what is in flight.
  for (int i = 0; ex != nullptr && i < n; ++i) {
    if (ex[i].active) ring_->wait(&ex[i]);
  }
  for (comm::Exchange& e : chunk_ex_) {
    if (e.active) ring_->wait(&e);
  }
  return set_error(st, msg);
}

Status RingContext::transport_error(Status st) { return set_error(st, transport_->error()); }

Status RingContext::start(const void* send, size_t send_bytes, int dst, void* recv,
                          size_t recv_bytes, int src, int tag, comm::Exchange* ex, bool relay) {
  const double t0 = ring_now();
  const Status st =
      relay ? ring_->start_relay(send, send_bytes, dst, recv, recv_bytes, src, tag, ex)
            : ring_->start_exchange(send, send_bytes, dst, recv, recv_bytes, src, tag, ex);
  stats_.comm_wait_seconds += ring_now() - t0;
  stats_.bytes_sent += static_cast<int64_t>(send_bytes);
  return st == RINGATTN_SUCCESS ? st : transport_error(st);
}

namespace {

// Bytes of one half (K or V) of a K/V ring buffer: [B, max_rows, Hkv, D] in the input dtype.
size_t kv_half_bytes(const RingProblemState& st) {
  const AttnShape& sh = st.ring;
  return align64(static_cast<size_t>(sh.batch * st.plan.max_rows() * sh.hkv * sh.d) *
                 dtype_size(sh.dtype));
}

// A caller's tensor of `rows` rows is dense [B, rows, H, D] (one contiguous region).
bool dense_block(const TensorRef& t, int64_t batch, int64_t rows, int64_t h, int64_t d) {
  return t.stride_h == d && t.stride_s == h * d && (batch == 1 || t.stride_b == rows * h * d);
}

}  // namespace

Status RingContext::start_kv(int32_t i, KvSteps* s) {
  const RingPlan& plan = cur_->plan;
  const AttnShape& sh = cur_->ring;
  const int P = plan.world(), me = ring_->rank();
  const size_t row = static_cast<size_t>(sh.batch * sh.hkv * sh.d) * dtype_size(sh.dtype);
  const size_t send_bytes = static_cast<size_t>(plan.rows_of(plan.step_source(i))) * row;
  const size_t recv_bytes = static_cast<size_t>(plan.rows_of(plan.step_source(i + 1))) * row;
  char* const to = s->buf[s->next];
  for (int which = 0; which < 2; ++which) {
    RINGATTN_RETURN_IF_ERROR(start(s->cur.kv[which], send_bytes, (me + 1) % P,
                                   to + which * kv_half_bytes(*cur_), recv_bytes, (me - 1 + P) % P,
                                   kTagKv + which, &s->ex[which], /*relay=*/i > 0));
  }
  return RINGATTN_SUCCESS;
}

Status RingContext::next_kv(KvSteps* s) {
  for (comm::Exchange& e : s->ex) RINGATTN_RETURN_IF_ERROR(wait(&e));
  s->cur = kv_block(s->buf[s->next]);
  s->next = 1 - s->next;
  return RINGATTN_SUCCESS;
}

Status RingContext::wait(comm::Exchange* ex) {
  const double t0 = ring_now();
  const Status st = ring_->wait(ex);
  stats_.comm_wait_seconds += ring_now() - t0;
  return st == RINGATTN_SUCCESS ? st : transport_error(st);
}

void RingContext::progress(comm::Exchange* exs, int n) {
  const double t0 = ring_now();
  for (int i = 0; i < n; ++i) ring_->progress(&exs[i]);
  stats_.comm_wait_seconds += ring_now() - t0;
}

RingContext::KvBlock RingContext::kv_block(char* buf) const {
  KvBlock b;
  b.kv[0] = buf;
  b.kv[1] = buf + kv_half_bytes(*cur_);
  return b;
}

TensorRef RingContext::kv_ref(const KvBlock& blk, int which, int64_t rows, int64_t row0) const {
  const AttnShape& sh = cur_->ring;
  const int64_t H = sh.hkv, D = sh.d;
  const char* base = blk.kv[which];
  return TensorRef{
      const_cast<char*>(base) + row0 * H * D * static_cast<int64_t>(dtype_size(sh.dtype)), sh.dtype,
      rows * H * D, H * D, D};
}

Status RingContext::begin_kv(const ringattn_tensor_t* k, const ringattn_tensor_t* v, char* bufs,
                             KvSteps* s, void* stream) {
  const AttnShape& sh = cur_->ring;
  s->buf[0] = bufs;
  s->buf[1] = bufs + 2 * kv_half_bytes(*cur_);
  s->next = 1;
  const TensorRef kr = tensor_ref(*k, sh.packed), vr = tensor_ref(*v, sh.packed);
  if (dense_block(kr, sh.batch, sh.seq, sh.hkv, sh.d) &&
      dense_block(vr, sh.batch, sh.seq, sh.hkv, sh.d)) {
    s->cur.kv[0] = static_cast<const char*>(k->data);
    s->cur.kv[1] = static_cast<const char*>(v->data);
    return RINGATTN_SUCCESS;
  }
  s->cur = kv_block(s->buf[0]);
  if (sh.seq == 0 || sh.batch == 0) return RINGATTN_SUCCESS;
  return timed_compute([&] {
    RINGATTN_RETURN_IF_ERROR(backend_->convert(sh.batch, sh.seq, sh.hkv, sh.d, kr,
                                               kv_ref(s->cur, 0, sh.seq, 0), stream));
    return backend_->convert(sh.batch, sh.seq, sh.hkv, sh.d, vr, kv_ref(s->cur, 1, sh.seq, 0),
                             stream);
  });
}

namespace {

// Packed tensors hold exactly this rank's share of every sequence of the global batch.
Status check_packed_share(const AttnShape& shape, const AttnOptions& opts, int32_t world,
                          int32_t rank) {
  if (!shape.packed) return RINGATTN_SUCCESS;
  int64_t want = 0;
  for (size_t b = 0; b + 1 < opts.cu_seqlens.size(); ++b) {
    want += scheme_local_len(opts.scheme, opts.cu_seqlens[b + 1] - opts.cu_seqlens[b], world, rank);
  }
  if (want != shape.seq) {
    return set_errorf(
        RINGATTN_ERROR_SHAPE_MISMATCH,
        "'q' holds T=%lld local tokens but rank %d's share of 'params'.cu_seqlens "
        "(%lld sequences, %lld tokens) on %d ranks is %lld",
        static_cast<long long>(shape.seq), rank, static_cast<long long>(opts.cu_seqlens.size() - 1),
        static_cast<long long>(opts.cu_seqlens.back()), world, static_cast<long long>(want));
  }
  return RINGATTN_SUCCESS;
}

}  // namespace

Status RingContext::check_share(const AttnShape& shape, const AttnOptions& opts) const {
  // A compute-only ring stands this rank's block in for every other: only equal fixed-length
  // shares give every rank this rank's problem (the agreement checks the lengths).
  if (!transport_->moves_data() && shape.packed) {
    return set_error(RINGATTN_ERROR_UNSUPPORTED,
                     "a compute-only context takes fixed-length [B,S,H,D] problems, not packed");
  }
  return check_packed_share(shape, opts, transport_->size(), transport_->rank());
}

FwdLayout RingContext::forward_layout(const RingProblemState& st, bool has_lse) const {
  const AttnShape& sh = st.ring;
  FwdLayout at;
  at.kv_bytes = 2 * kv_half_bytes(st);
  at.o_bytes = align64(sizeof(float) * sh.batch * sh.seq * sh.hq * sh.d);
  at.lse_bytes = has_lse ? 0 : align64(sizeof(float) * sh.batch * sh.hq * sh.seq);
  // The backend's packed key side of one block (the largest), shared by a step's row chunks.
  if (st.plan.chunks() > 1 && !st.plan.head_chunks()) {
    FwdParams keys{};
    set_call_problem(sh, st.opts, &keys);
    keys.sk = st.plan.max_rows();
    at.kpack_bytes = align64(backend_->forward_key_pack_bytes(keys));
  }
  at.total = 2 * at.kv_bytes + at.o_bytes + at.lse_bytes + at.kpack_bytes + 64;
  return at;
}

BwdLayout RingContext::backward_layout(const RingProblemState& st) const {
  const AttnShape& sh = st.ring;
  BwdLayout at;
  at.kv_bytes = 2 * kv_half_bytes(st);
  at.dq_bytes = align64(sizeof(float) * sh.batch * sh.seq * sh.hq * sh.d);
  at.delta_bytes = align64(sizeof(float) * sh.batch * sh.hq * sh.seq);
  const int64_t grad_row = 2 * sh.batch * st.plan.slot_heads(sh.hkv) * sh.d;
  at.slot_bytes = sizeof(float) * static_cast<size_t>(st.plan.slot_rows() * grad_row);
  at.grad_bytes = align64(at.slot_bytes * static_cast<size_t>(st.plan.chunks()));
  at.qpack_bytes = align64(backend_->backward_query_pack_bytes(query_side_shape(sh, st.opts)));
  at.total =
      2 * at.kv_bytes + at.dq_bytes + at.delta_bytes + 3 * at.grad_bytes + at.qpack_bytes + 64;
  return at;
}

size_t RingContext::run_bytes(const RingProblemState& st, RingOp op, bool has_lse) const {
  if (layout_.hybrid()) return hybrid_regions(st, op == kOpBackward).total;
  return op == kOpBackward ? backward_layout(st).total : forward_layout(st, has_lse).total;
}

Status RingContext::run_call_forward(const ringattn_tensor_t* q, const ringattn_tensor_t* k,
                                     const ringattn_tensor_t* v, ringattn_tensor_t* o,
                                     ringattn_tensor_t* lse, void* stream) {
  return layout_.hybrid() ? run_hybrid_forward(q, k, v, o, lse, stream)
                          : run_forward(q, k, v, o, lse, stream);
}

Status RingContext::run_call_backward(const ringattn_tensor_t* q, const ringattn_tensor_t* k,
                                      const ringattn_tensor_t* v, const ringattn_tensor_t* o,
                                      const ringattn_tensor_t* lse, const ringattn_tensor_t* dout,
                                      ringattn_tensor_t* dq, ringattn_tensor_t* dk,
                                      ringattn_tensor_t* dv, void* stream) {
  return layout_.hybrid() ? run_hybrid_backward(q, k, v, lse, o, dout, dq, dk, dv, stream)
                          : run_backward(q, k, v, lse, o, dout, dq, dk, dv, stream);
}

Status RingContext::workspace(size_t bytes, char** ws) const {
  if (run_ws_ == nullptr || bytes > run_ws_bytes_) {
    return set_errorf(RINGATTN_ERROR_INTERNAL,
                      "rank %d: the run's workspace holds %zu bytes, the plan needs %zu",
                      transport_->rank(), run_ws_bytes_, bytes);
  }
  *ws = run_ws_;
  return RINGATTN_SUCCESS;
}

namespace {

// The tensors of a run have the plan's shapes and dtype.
Status check_plan_shape(const AttnShape& got, const AttnShape& plan) {
  if (got.packed != plan.packed || got.batch != plan.batch || got.seq != plan.seq ||
      got.hq != plan.hq || got.hkv != plan.hkv || got.d != plan.d || got.dtype != plan.dtype) {
    return set_errorf(RINGATTN_ERROR_SHAPE_MISMATCH,
                      "the tensors (%s B=%lld S=%lld Hq=%lld Hkv=%lld D=%lld) are not the "
                      "plan's (%s B=%lld S=%lld Hq=%lld Hkv=%lld D=%lld, and its dtype)",
                      got.packed ? "packed" : "fixed", static_cast<long long>(got.batch),
                      static_cast<long long>(got.seq), static_cast<long long>(got.hq),
                      static_cast<long long>(got.hkv), static_cast<long long>(got.d),
                      plan.packed ? "packed" : "fixed", static_cast<long long>(plan.batch),
                      static_cast<long long>(plan.seq), static_cast<long long>(plan.hq),
                      static_cast<long long>(plan.hkv), static_cast<long long>(plan.d));
  }
  return RINGATTN_SUCCESS;
}

}  // namespace

Status RingContext::local_problem(Status st, const AttnShape& shape,
                                  const ringattn_attn_params_t* params, AttnOptions* opts,
                                  std::string* message) const {
  if (st == RINGATTN_SUCCESS) st = validate_params(params, shape, opts);
  if (st == RINGATTN_SUCCESS) st = check_share(shape, *opts);
  if (st == RINGATTN_SUCCESS) {
    st = backend_->supports(shape.d, shape.dtype, opts->mask, opts->local_kernel);
  }
  HeadSplit heads;
  if (st == RINGATTN_SUCCESS && layout_.hybrid()) {
    st = split_heads(shape.hq, shape.hkv, layout_.ulysses, &heads);
  }
  *message = st == RINGATTN_SUCCESS ? std::string() : last_error();
  return st;
}

Status RingContext::make_plan(const ringattn_tensor_t* q, const ringattn_tensor_t* k,
                              const ringattn_tensor_t* v,
                              const ringattn_attn_params_t* caller_params, RingProblemState* state,
                              size_t* ws_bytes) {
  ringattn_attn_params_t params_copy;
  const ringattn_attn_params_t* params = versioned_params(caller_params, &params_copy);
  stats_ = RingStats{};
  AttnShape shape;
  AttnOptions opts;
  std::string msg;
  const Status st =
      local_problem(validate_qkv_tensors(q, k, v, &shape), shape, params, &opts, &msg);
  int64_t global_seq = 0;
  RINGATTN_RETURN_IF_ERROR(agree(kOpPlan, st, msg, shape, opts, params, true, &global_seq));
  build_state(shape, opts, global_seq, state);
  const size_t fwd = run_bytes(*state, kOpForward, false),
               bwd = run_bytes(*state, kOpBackward, true);
  *ws_bytes = fwd > bwd ? fwd : bwd;
  return RINGATTN_SUCCESS;
}

Status RingContext::upload_runs(RingProblemState* state, void* stream) {
  const RingPlan& plan = state->plan;
  if (plan.max_map_runs() <= backend_->max_inline_runs()) return RINGATTN_SUCCESS;
  const size_t bytes = sizeof(PosRun) * plan.runs().size();
  void* dev = backend_->alloc(bytes, stream);
  if (dev == nullptr) return RINGATTN_ERROR_OUT_OF_MEMORY;  // alloc set the message
  const Status st = backend_->upload(dev, plan.runs().data(), bytes, stream);
  if (st != RINGATTN_SUCCESS) {
    backend_->free(dev, stream);
    return st;
  }
  state->device_runs = dev;
  state->plan.set_device_runs(static_cast<const PosRun*>(dev));
  return RINGATTN_SUCCESS;
}

Status RingContext::agree_allocation(bool ok, const char* what) {
  const int P = transport_->size();
  int64_t mine = ok ? RINGATTN_SUCCESS : RINGATTN_ERROR_OUT_OF_MEMORY;
  std::vector<int64_t> all(static_cast<size_t>(P));
  const Status ag = transport_->allgather_i64(&mine, 1, all.data());
  if (ag != RINGATTN_SUCCESS) return transport_error(ag);
  for (int r = 0; r < P; ++r) {
    if (all[r] != RINGATTN_SUCCESS) {
      return set_errorf(RINGATTN_ERROR_OUT_OF_MEMORY, "rank %d: rank %d could not allocate %s",
                        transport_->rank(), r, what);
    }
  }
  return RINGATTN_SUCCESS;
}

template <typename Run>
Status RingContext::in_plan(const RingProblemState& state, const AttnShape& shape, char* ws,
                            size_t ws_bytes, void* stream, const Run& run) {
  RINGATTN_RETURN_IF_ERROR(check_plan_shape(shape, state.shape));
  begin_call(stream);
  cur_ = &state;
  run_ws_ = ws;
  run_ws_bytes_ = ws_bytes;
  const Status st = run();
  cur_ = nullptr;
  run_ws_ = nullptr;
  run_ws_bytes_ = 0;
  return st;
}

Status RingContext::plan_forward(const RingProblemState& state, const ringattn_tensor_t* q,
                                 const ringattn_tensor_t* k, const ringattn_tensor_t* v,
                                 ringattn_tensor_t* o, ringattn_tensor_t* lse, char* ws,
                                 size_t ws_bytes, void* stream) {
  const double t0 = ring_now();
  stats_ = RingStats{};
  AttnShape shape;
  RINGATTN_RETURN_IF_ERROR(validate_forward_tensors(q, k, v, o, lse, &shape));
  const Status st = in_plan(state, shape, ws, ws_bytes, stream,
                            [&] { return run_call_forward(q, k, v, o, lse, stream); });
  stats_.total_seconds = ring_now() - t0;
  return st;
}

Status RingContext::plan_backward(const RingProblemState& state, const ringattn_tensor_t* q,
                                  const ringattn_tensor_t* k, const ringattn_tensor_t* v,
                                  const ringattn_tensor_t* o, const ringattn_tensor_t* lse,
                                  const ringattn_tensor_t* dout, ringattn_tensor_t* dq,
                                  ringattn_tensor_t* dk, ringattn_tensor_t* dv, char* ws,
                                  size_t ws_bytes, void* stream) {
  const double t0 = ring_now();
  stats_ = RingStats{};
  AttnShape shape;
  RINGATTN_RETURN_IF_ERROR(validate_backward_tensors(q, k, v, o, lse, dout, dq, dk, dv, &shape));
  const Status st = in_plan(state, shape, ws, ws_bytes, stream, [&] {
    return run_call_backward(q, k, v, o, lse, dout, dq, dk, dv, stream);
  });
  stats_.total_seconds = ring_now() - t0;
  return st;
}

Status RingContext::agree(RingOp op, Status local_status, const std::string& local_message,
                          const AttnShape& shape, const AttnOptions& opts,
                          const ringattn_attn_params_t* params, bool has_lse, int64_t* global_seq) {
  int64_t fp[kFingerprintSize];
  make_fingerprint(op, local_status, shape, opts, params, has_lse, chunks_, fp);
  const double t0 = ring_now();
  const Status st =
      agree_on_problem(transport_.get(), fp, &agreed_, global_seq, &local_rows_, local_message);
  stats_.comm_wait_seconds += ring_now() - t0;
  return st;
}

void RingContext::build_state(const AttnShape& shape, const AttnOptions& opts, int64_t global_seq,
                              RingProblemState* state) const {
  state->shape = shape;
  state->opts = opts;
  RingProblem prob;
  prob.world = ring_->size();
  prob.rank = ring_->rank();
  if (layout_.hybrid()) prob.members = layout_.members;
  prob.scheme = opts.scheme;
  prob.packed = shape.packed;
  prob.batch = shape.batch;
  prob.seq_len = shape.packed ? 0 : global_seq;
  prob.cu_seqlens = opts.cu_seqlens;
  prob.hq = shape.hq;
  prob.hkv = shape.hkv;
  prob.d = shape.d;
  prob.mask = opts.mask;
  prob.chunks = chunks_;
  state->ring = shape;
  if (layout_.hybrid()) {
    // The ring runs over this rank's block (its Ulysses group's rows) and its heads.
    split_heads(shape.hq, shape.hkv, layout_.ulysses, &state->heads);  // checked when validated
    state->ring.hq = state->heads.hq;
    state->ring.hkv = state->heads.hkv;
  }
  if (chunks_ > 1 && backend_->chunks_by_heads() && state->ring.hkv >= chunks_) {
    prob.chunk_kv_heads = state->ring.hkv;
  }
  state->plan.build(prob);
  if (layout_.hybrid()) state->ring.seq = state->plan.rows_of(layout_.ring_rank);
}

Status RingContext::one_shot_plan(RingOp op, Status local_status, const std::string& local_message,
                                  const AttnShape& shape, const AttnOptions& opts,
                                  const ringattn_attn_params_t* params, bool has_lse,
                                  void* stream) {
  stats_ = RingStats{};
  transport_->set_stream(stream);  // a device transport's agreement is ordered on it
  int64_t global_seq = 0;
  RINGATTN_RETURN_IF_ERROR(
      agree(op, local_status, local_message, shape, opts, params, has_lse, &global_seq));
  // The plan depends on everything in the fingerprints but the operation (forward and backward
  // share it). Compared in place: the hot path allocates nothing.
  bool same = plan_valid_ && plan_key_.size() == agreed_.size();
  for (size_t i = 0; same && i < agreed_.size(); ++i) {
    same = i % kFingerprintSize == kFingerprintOpField || plan_key_[i] == agreed_[i];
  }
  if (!same) {
    // The previous problem's device runs are freed after the last call that read them.
    release_after_use(backend_, ws_fence_.get(), own_.device_runs, stream);
    own_.device_runs = nullptr;
    build_state(shape, opts, global_seq, &own_);
    plan_key_ = agreed_;
    plan_valid_ = true;
    ws_agreed_[kOpForward] = ws_agreed_[kOpBackward] = false;
    // Inside a capture the kernels upload the maps themselves (into the graph's memory); a
    // failed upload leaves them to do so too.
    if (!backend_->stream_capturing(stream) && upload_runs(&own_, stream) != RINGATTN_SUCCESS) {
      clear_error();
    }
  }
  own_.opts.local_kernel = opts.local_kernel;  // not part of the agreed problem: rank-local
  const size_t bytes = run_bytes(own_, op, has_lse);
  return workspace_for(op, bytes, stream);
}

void RingContext::begin_call(void* stream) {
  call_stream_ = stream;
  if (timer_) timer_->reset();
  transport_->set_stream(stream);  // device transports order their copies on it
}

Status RingContext::forward(const ringattn_tensor_t* q, const ringattn_tensor_t* k,
                            const ringattn_tensor_t* v, ringattn_tensor_t* o,
                            ringattn_tensor_t* lse, const ringattn_attn_params_t* caller_params,
                            void* stream) {
  ringattn_attn_params_t params_copy;
  const ringattn_attn_params_t* params = versioned_params(caller_params, &params_copy);
  const double t0 = ring_now();
  AttnShape shape;
  AttnOptions opts;
  std::string msg;
  const Status local =
      local_problem(validate_forward_tensors(q, k, v, o, lse, &shape), shape, params, &opts, &msg);
  RINGATTN_RETURN_IF_ERROR(
      one_shot_plan(kOpForward, local, msg, shape, opts, params, lse != nullptr, stream));
  const Status st = in_plan(own_, shape, ws_, ws_bytes_, stream,
                            [&] { return run_call_forward(q, k, v, o, lse, stream); });
  end_call(stream);
  stats_.total_seconds = ring_now() - t0;
  return st;
}

Status RingContext::backward(const ringattn_tensor_t* q, const ringattn_tensor_t* k,
                             const ringattn_tensor_t* v, const ringattn_tensor_t* o,
                             const ringattn_tensor_t* lse, const ringattn_tensor_t* dout,
                             ringattn_tensor_t* dq, ringattn_tensor_t* dk, ringattn_tensor_t* dv,
                             const ringattn_attn_params_t* caller_params, void* stream) {
  ringattn_attn_params_t params_copy;
  const ringattn_attn_params_t* params = versioned_params(caller_params, &params_copy);
  const double t0 = ring_now();
  AttnShape shape;
  AttnOptions opts;
  std::string msg;
  const Status local =
      local_problem(validate_backward_tensors(q, k, v, o, lse, dout, dq, dk, dv, &shape), shape,
                    params, &opts, &msg);
  RINGATTN_RETURN_IF_ERROR(
      one_shot_plan(kOpBackward, local, msg, shape, opts, params, true, stream));
  const Status st = in_plan(own_, shape, ws_, ws_bytes_, stream, [&] {
    return run_call_backward(q, k, v, o, lse, dout, dq, dk, dv, stream);
  });
  end_call(stream);
  stats_.total_seconds = ring_now() - t0;
  return st;
}

}  // namespace ringattn
