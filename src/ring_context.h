// The ring executor's context: a transport, a compute backend, the plan of the last problem and
// a workspace that grows once per problem and is reused. Written once over the Backend and
// Transport interfaces; forward and backward live in ring_forward.cpp and ring_backward.cpp.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <memory>
#include <string>
#include <vector>

#include "agree.h"
#include "backend.h"
#include "compute_timer.h"
#include "hybrid_layout.h"
#include "ring_plan.h"
#include "ringattn/ringattn.h"
#include "subgroup_transport.h"
#include "transport.h"
#include "validate.h"

namespace ringattn {

// Message tag of the K/V blocks (forward and backward); gradient chunks use tags above it.
constexpr int kTagKv = 1;

// Workspace regions start on 64-byte boundaries.
inline size_t align64(size_t x) { return (x + 63) / 64 * 64; }

// Seconds on a monotonic clock.
double ring_now();

// One agreed problem: its shapes, options and plan. A context keeps the one of its last one-shot
// call; a ring plan (ringattn_ring_plan_t) keeps its own.
struct RingProblemState {
  AttnShape shape;  // the tensors of a call: this rank's shard of the sequence, every head
  // The tensors the ring runs on: `shape`, or with a hybrid layout the block of this rank's
  // ring position (its Ulysses group's rows) at this rank's heads.
  AttnShape ring;
  HeadSplit heads;  // hybrid layouts: how the heads split over the Ulysses group
  AttnOptions opts;
  RingPlan plan;
  // The plan's position runs in the backend's memory (RingContext::upload_runs), owned by the
  // holder of the state; nullptr when the kernels take every map inline.
  void* device_runs = nullptr;
};

// Where the regions of a forward's or a backward's workspace lie (64-byte aligned), and the
// bytes in all.
struct FwdLayout {
  size_t kv_bytes = 0, o_bytes = 0, lse_bytes = 0, kpack_bytes = 0, total = 0;
};
struct BwdLayout {
  size_t kv_bytes = 0, dq_bytes = 0, delta_bytes = 0, slot_bytes = 0, grad_bytes = 0,
         qpack_bytes = 0, total = 0;
};

// Backward parameters with only the shape of the query side set (the fields a backward call over
// the same query rows shares, and that Backend::backward_query_pack_bytes reads).
inline BwdParams query_side_shape(const AttnShape& sh, const AttnOptions& opts) {
  BwdParams p{};
  set_call_problem(sh, opts, &p);
  return p;
}

struct RingStats {
  double total_seconds = 0, compute_seconds = 0, comm_wait_seconds = 0;
  int64_t bytes_sent = 0;
  // Hybrid layouts: the all-to-alls (packing, exchanges, unpacking) and the bytes they sent;
  // not counted in comm_wait_seconds and bytes_sent, which are the ring's.
  double alltoall_seconds = 0;
  int64_t alltoall_bytes = 0;
  int32_t steps = 0, steps_skipped = 0;
  // Sub-blocks computed by cuDNN and calls of our kernels (ringattn_context_kernel_stats).
  LocalKernelCounts kernels{0, 0};
};

// Byte offsets of a hybrid run's workspace regions (after the ring's own at offset 0), and the
// bytes in all.
struct HybridRegions {
  size_t qh = 0, kh = 0, vh = 0, oh = 0, lseh = 0, doh = 0, dqh = 0, dkh = 0, dvh = 0;
  size_t acc_k = 0, acc_v = 0, send = 0, recv = 0, total = 0;
};

// One tensor of a hybrid all-to-all: `local` is this rank's shard of the sequence at every head
// (a view at head 0), `sharded` the ring block at this rank's heads (a view at row 0).
struct A2APart {
  TensorRef local, sharded;
  int64_t d;  // elements per row: D, or 1 for row statistics
  bool kv;    // key/value heads (HeadSplit::kv_first), else query heads
  bool add;   // back from the ring: add into a float32 `local` (replicated key/value heads)
};

class RingContext {
 public:
  // `capturable`: no host waits on device work inside a call (options.capturable); turns the
  // device timer off, since reading it waits.
  // `layout`: the hybrid layout agreed at creation (agree_hybrid_layout); the default is the
  // pure ring over all ranks of `transport`.
  RingContext(std::unique_ptr<comm::Transport> transport, Backend* backend, int32_t chunks,
              bool capturable = false, HybridLayout layout = HybridLayout());
  ~RingContext();
  RingContext(const RingContext&) = delete;
  RingContext& operator=(const RingContext&) = delete;

  // One-shot calls (ringattn_ring_forward/backward): agree on the call with every rank, then
  // run the context's own plan of the problem (rebuilt only when the problem changes) exactly as
  // a plan's run, in the context's workspace (grown once per problem and operation).
  Status forward(const ringattn_tensor_t* q, const ringattn_tensor_t* k, const ringattn_tensor_t* v,
                 ringattn_tensor_t* o, ringattn_tensor_t* lse, const ringattn_attn_params_t* params,
                 void* stream);
  Status backward(const ringattn_tensor_t* q, const ringattn_tensor_t* k,
                  const ringattn_tensor_t* v, const ringattn_tensor_t* o,
                  const ringattn_tensor_t* lse, const ringattn_tensor_t* dout,
                  ringattn_tensor_t* dq, ringattn_tensor_t* dk, ringattn_tensor_t* dv,
                  const ringattn_attn_params_t* params, void* stream);

  // Plans (ringattn_ring_plan_t): agree on the problem of q, k, v and params once (collective)
  // into `state`, and give the bytes of workspace a run needs (the larger of forward and
  // backward). Runs of a plan do no agreement and no allocation: they check the tensors against
  // the plan on this rank only and run in `ws` (at least the plan's bytes).
  Status make_plan(const ringattn_tensor_t* q, const ringattn_tensor_t* k,
                   const ringattn_tensor_t* v, const ringattn_attn_params_t* params,
                   RingProblemState* state, size_t* ws_bytes);
  Status plan_forward(const RingProblemState& state, const ringattn_tensor_t* q,
                      const ringattn_tensor_t* k, const ringattn_tensor_t* v, ringattn_tensor_t* o,
                      ringattn_tensor_t* lse, char* ws, size_t ws_bytes, void* stream);
  Status plan_backward(const RingProblemState& state, const ringattn_tensor_t* q,
                       const ringattn_tensor_t* k, const ringattn_tensor_t* v,
                       const ringattn_tensor_t* o, const ringattn_tensor_t* lse,
                       const ringattn_tensor_t* dout, ringattn_tensor_t* dq, ringattn_tensor_t* dk,
                       ringattn_tensor_t* dv, char* ws, size_t ws_bytes, void* stream);
  // When the backend's kernels would otherwise upload some of the plan's position maps on every
  // call (maps longer than Backend::max_inline_runs), copies all of its runs into the backend's
  // memory once, ordered on `stream`, into state->device_runs (nothing to do: stays nullptr).
  Status upload_runs(RingProblemState* state, void* stream);
  // Collective: every rank learns whether each allocated its plan workspace (`ok`).
  Status agree_allocation(bool ok, const char* what);
  Backend* backend() const { return backend_; }

  comm::Transport* transport() { return transport_.get(); }
  const HybridLayout& layout() const { return layout_; }
  size_t workspace_bytes() const { return ws_bytes_; }
  const RingStats& stats() const { return stats_; }
  // Device time of the last call's compute (waits for it); 0 without a device timer.
  double device_compute_seconds();

 private:
  // Fingerprint this call and agree on it with every rank; *global_seq: the global length.
  Status agree(RingOp op, Status local_status, const std::string& local_message,
               const AttnShape& shape, const AttnOptions& opts,
               const ringattn_attn_params_t* params, bool has_lse, int64_t* global_seq);
  // The plan of an agreed problem.
  void build_state(const AttnShape& shape, const AttnOptions& opts, int64_t global_seq,
                   RingProblemState* state) const;
  // The workspace layouts of a problem.
  FwdLayout forward_layout(const RingProblemState& st, bool has_lse) const;
  BwdLayout backward_layout(const RingProblemState& st) const;
  // This rank's part of a problem's validation, after its tensors' (`st`): params, share and
  // support. The status and *message are what the agreement carries to every rank.
  Status local_problem(Status st, const AttnShape& shape, const ringattn_attn_params_t* params,
                       AttnOptions* opts, std::string* message) const;
  // A run: the tensors' shape checked against the plan `state`, then `run` with that problem
  // and the workspace `ws` current. Plan runs and one-shot calls alike.
  template <typename Run>
  Status in_plan(const RingProblemState& state, const AttnShape& shape, char* ws, size_t ws_bytes,
                 void* stream, const Run& run);
  // The workspace of the run in progress, checked to hold `bytes`.
  Status workspace(size_t bytes, char** ws) const;
  // A one-shot call before its run: agree on the problem with every rank (every call, so that
  // ranks that change problems or operations between calls fail together), rebuild the
  // context's plan own_ when the problem changed, and size the context's workspace for `op`.
  Status one_shot_plan(RingOp op, Status local_status, const std::string& local_message,
                       const AttnShape& shape, const AttnOptions& opts,
                       const ringattn_attn_params_t* params, bool has_lse, void* stream);
  // This rank's tensors are its share of the problem (packed shares; a compute-only ring takes
  // fixed lengths only).
  Status check_share(const AttnShape& shape, const AttnOptions& opts) const;
  // Start of a forward or backward call on `stream`.
  void begin_call(void* stream);
  // End of a call that enqueued work on `stream`: marks the workspace's last use.
  void end_call(void* stream);
  // Free the workspace on `stream` after its last use (ws_fence_), and forget it.
  void release_workspace(void* stream);
  Status ensure_workspace(size_t bytes, void* stream);
  // The first call of an operation on a new plan allocates and then agrees that every rank
  // succeeded, so that one rank out of memory fails every rank instead of stalling the ring.
  Status workspace_for(RingOp op, size_t bytes, void* stream);
  // Timed wrappers: backend time counts as compute, transport time as waiting.
  template <typename F>
  Status timed_compute(F&& f);
  Status wait(comm::Exchange* ex);
  void progress(comm::Exchange* exs, int n);
  // `relay`: `send` is the buffer the previous exchange of `tag` received, unchanged
  // (Transport::start_relay).
  Status start(const void* send, size_t send_bytes, int dst, void* recv, size_t recv_bytes, int src,
               int tag, comm::Exchange* ex, bool relay = false);
  // K and V of one block (kv[0] = K, kv[1] = V), each [B, rows, Hkv, D] in the input dtype and
  // dense: the halves of a ring buffer, or this rank's own block straight from the caller's
  // tensors where they are dense (sent and read without a copy).
  struct KvBlock {
    const char* kv[2] = {nullptr, nullptr};
  };
  // The K/V side of a ring pass: the block of the current step, the two ring buffers, the one the
  // next step's block arrives in, and its two messages (K, V) in flight.
  struct KvSteps {
    char* buf[2] = {nullptr, nullptr};
    int next = 1;
    KvBlock cur;
    comm::Exchange ex[2];
  };
  // The halves of ring buffer `buf`.
  KvBlock kv_block(char* buf) const;
  // A pass's K/V side over the layout's two ring buffers at `bufs` (kv_bytes each), starting
  // with this rank's own block: the caller's K and V where both are dense, else copied into the
  // first buffer.
  Status begin_kv(const ringattn_tensor_t* k, const ringattn_tensor_t* v, char* bufs, KvSteps* s,
                  void* stream);
  // Start step i's K/V exchange (i + 1 < world), K and V as two messages: the current block goes
  // to the next rank while the block of step i + 1 arrives in the next ring buffer from the
  // previous one. From step 1 on the block sent is the one received at the previous step,
  // unchanged (relay).
  Status start_kv(int32_t i, KvSteps* s);
  // Finish the exchange started by start_kv; the block that arrived becomes the current one.
  Status next_kv(KvSteps* s);
  // K (which = 0) or V (1) of a block of `rows` rows, from row `row0`.
  TensorRef kv_ref(const KvBlock& blk, int which, int64_t rows, int64_t row0) const;
  Status transport_error(Status st);
  // After a failure in the middle of a ring, finish (bounded by the timeout) what is in flight
  // (the `n` exchanges `ex` and the gradient chunks) so that no transfer outlives the call;
  // returns `st`.
  Status abandon(Status st, comm::Exchange* ex, int n = 1);

  // The bytes of workspace a run of `op` needs (forward: `has_lse` says whether the caller
  // gives LSE).
  size_t run_bytes(const RingProblemState& st, RingOp op, bool has_lse) const;
  // A run of the problem in progress: the pure ring, or the hybrid layout's all-to-alls around
  // it (ring_hybrid.cpp).
  Status run_call_forward(const ringattn_tensor_t* q, const ringattn_tensor_t* k,
                          const ringattn_tensor_t* v, ringattn_tensor_t* o, ringattn_tensor_t* lse,
                          void* stream);
  Status run_call_backward(const ringattn_tensor_t* q, const ringattn_tensor_t* k,
                           const ringattn_tensor_t* v, const ringattn_tensor_t* o,
                           const ringattn_tensor_t* lse, const ringattn_tensor_t* dout,
                           ringattn_tensor_t* dq, ringattn_tensor_t* dk, ringattn_tensor_t* dv,
                           void* stream);
  HybridRegions hybrid_regions(const RingProblemState& st, bool backward) const;
  // Move `n` tensors inside the Ulysses group: to the ring blocks (`to_ring`) or back to the
  // sequence shards, through the staging buffers `send` and `recv`.
  Status alltoall(const RingProblemState& st, bool to_ring, const A2APart* parts, int n, char* send,
                  char* recv, void* stream);
  Status run_hybrid_forward(const ringattn_tensor_t* q, const ringattn_tensor_t* k,
                            const ringattn_tensor_t* v, ringattn_tensor_t* o,
                            ringattn_tensor_t* lse, void* stream);
  Status run_hybrid_backward(const ringattn_tensor_t* q, const ringattn_tensor_t* k,
                             const ringattn_tensor_t* v, const ringattn_tensor_t* lse,
                             const ringattn_tensor_t* o, const ringattn_tensor_t* dout,
                             ringattn_tensor_t* dq, ringattn_tensor_t* dk, ringattn_tensor_t* dv,
                             void* stream);
  Status run_forward(const ringattn_tensor_t* q, const ringattn_tensor_t* k,
                     const ringattn_tensor_t* v, ringattn_tensor_t* o, ringattn_tensor_t* lse,
                     void* stream);
  Status run_backward(const ringattn_tensor_t* q, const ringattn_tensor_t* k,
                      const ringattn_tensor_t* v, const ringattn_tensor_t* lse,
                      const ringattn_tensor_t* o, const ringattn_tensor_t* dout,
                      ringattn_tensor_t* dq, ringattn_tensor_t* dk, ringattn_tensor_t* dv,
                      void* stream);

  std::unique_ptr<comm::Transport> transport_;  // every rank: agreement, allocation checks
  HybridLayout layout_;
  // Hybrid layouts: views of transport_ for this rank's ring and Ulysses group.
  std::unique_ptr<comm::SubgroupTransport> ring_view_, uly_view_;
  comm::Transport* ring_ = nullptr;  // the ring's exchanges: transport_ or ring_view_
  Backend* backend_;
  int32_t chunks_;
  std::unique_ptr<ComputeTimer> timer_;    // CUDA events around backend calls (not when capturable)
  void* call_stream_ = nullptr;            // the stream of the call in progress
  RingProblemState own_;                   // the plan of the last one-shot call's problem
  const RingProblemState* cur_ = nullptr;  // the problem of the run in progress
  char* run_ws_ = nullptr;                 // the workspace of the run in progress
  size_t run_ws_bytes_ = 0;
  bool plan_valid_ = false;
  bool ws_agreed_[3] = {false, false, false};  // per RingOp, since the last plan change
  std::vector<int64_t> plan_key_;              // the agreed fingerprints the plan was built for
  std::vector<int64_t> agreed_, local_rows_;
  char* ws_ = nullptr;
  size_t ws_bytes_ = 0;
  std::unique_ptr<Backend::UseFence> ws_fence_;  // the workspace's last use (CUDA), or none
  std::vector<comm::Exchange> chunk_ex_;         // per chunk: gradient accumulators in flight
  std::vector<char> chunk_init_;                 // per Q chunk: forward accumulators hold a result
  RingStats stats_;
};

template <typename F>
Status RingContext::timed_compute(F&& f) {
  if (timer_) timer_->begin(call_stream_);
  const double t0 = ring_now();
  const Status st = f();
  stats_.compute_seconds += ring_now() - t0;
  if (timer_) timer_->end(call_stream_);
  return st;
}

// Element offset helpers for [B, S, H, D] views (and [B, H, S] row statistics).
TensorRef offset_rows(const TensorRef& t, int64_t row0);
RowStatRef offset_rows(const RowStatRef& t, int64_t row0);
TensorRef offset_heads(const TensorRef& t, int64_t h0);
RowStatRef offset_heads(const RowStatRef& t, int64_t h0);
// Narrows a call to the key/value heads `kv` and their query heads: q, k, v and the head
// counts (the caller narrows the tensors its call type adds). Returns the first query head.
int64_t narrow_heads(const HeadRange& kv, AttnCall* call);

}  // namespace ringattn
