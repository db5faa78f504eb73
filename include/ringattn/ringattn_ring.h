/*
 * ringattn ring contexts: ring attention across the ranks of a communicator, independent of
 * which one. This header includes neither mpi.h nor nccl.h; a context is created from a
 * communicator by the transport's header:
 *   ringattn_mpi.h    ringattn_context_create (an MPI_Comm; host buffers, or device buffers
 *                     staged through pinned host memory) and ringattn_context_create_nccl_mpi
 *                     (an NCCL communicator of the library's own, bootstrapped over MPI);
 *   ringattn_nccl.h   ringattn_context_create_nccl (a caller's ncclComm_t; no MPI anywhere);
 *   here              ringattn_context_create_compute_only (one rank's share, no transfers).
 *
 * A context is made once per communicator and reused for many calls. It owns a workspace that
 * grows on the first call of a problem and is reused by later calls of the same problem (or use
 * a plan, below, whose workspace size is known before its first run). Every call is collective
 * over the communicator: all ranks call forward (or backward) with their LOCAL shards of the
 * same global problem. Before any data moves, the ranks agree on the problem; a mismatch (shapes,
 * dtype, scheme, mask, window, scale, cu_seqlens) or an invalid argument on one rank is an error
 * on every rank that names the difference, and a rank that does not call at all makes the others
 * fail with RINGATTN_ERROR_TIMEOUT.
 *
 * Tensors are the descriptors of ringattn.h with S (or T) the rank's local length:
 *   fixed length  Q [B, S_local, Hq, D], K/V [B, S_local, Hkv, D], LSE [B, Hq, S_local];
 *                 S_local must be the rank's share of S = sum of S_local by params.scheme.
 *   packed        Q [T_local, Hq, D], K/V [T_local, Hkv, D], LSE [Hq, T_local], with
 *                 params.cu_seqlens the GLOBAL offsets; local tokens are the rank's part of
 *                 sequence 0, then of sequence 1, ... (ringattn_shard_positions per sequence).
 * Local rows are in the scheme's order (ringattn_shard_positions gives their global positions).
 *
 * After RINGATTN_ERROR_TIMEOUT or RINGATTN_ERROR_COMM the context is unusable: later calls fail
 * fast, and ringattn_context_destroy releases what it safely can.
 *
 * Threads: one thread at a time per context; a context makes communicator calls only from the
 * thread that calls it (for MPI, MPI_THREAD_FUNNELED or SINGLE from the main thread is enough).
 */
#ifndef RINGATTN_RINGATTN_RING_H_
#define RINGATTN_RINGATTN_RING_H_

#include "ringattn/ringattn.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ringattn_context* ringattn_context_t;

/* Which ranks form the all-to-all (Ulysses) groups of a hybrid context (ulysses_degree U > 1):
 *   ULYSSES_CONSECUTIVE  ranks [g*U, (g+1)*U) form Ulysses group g (inside a node with mpirun's
 *                        by-slot mapping); ring k joins rank k of every group.
 *   RING_CONSECUTIVE     ranks [k*R, (k+1)*R) form ring k (R = P / U); Ulysses group g joins
 *                        rank g of every ring.
 *   AUTO                 Ulysses groups of U consecutive ranks inside each host (hosts told apart
 *                        by their host name, exchanged at creation), so that the all-to-all
 *                        stays inside a host; every host must hold a multiple of U ranks. */
typedef enum ringattn_placement {
  RINGATTN_PLACEMENT_ULYSSES_CONSECUTIVE = 0,
  RINGATTN_PLACEMENT_RING_CONSECUTIVE = 1,
  RINGATTN_PLACEMENT_AUTO = 2
} ringattn_placement_t;

/* Context options. Always initialize with RINGATTN_CONTEXT_OPTIONS_INIT. */
typedef struct ringattn_context_options {
  size_t struct_size; /* sizeof(ringattn_context_options_t), set by the initializer */
  /* Bound on every wait for a peer, in ms. <= 0: the environment variable RINGATTN_TIMEOUT_MS
   * when set, else 300000 (5 minutes). */
  int64_t timeout_ms;
  /* Compute chunks per ring step (transfers progress between chunks). <= 0: 4. */
  int32_t chunks;
  /* Nonzero: a call never blocks the host on device work, so that it can be captured in a CUDA
   * graph (cudaStreamBeginCapture on the caller's stream) and replayed. NCCL transport with
   * backend CUDA only: the MPI transports must wait on the host for device data and refuse it
   * at creation with RINGATTN_ERROR_UNSUPPORTED. The price: no watchdog inside a call (a dead
   * peer stalls the stream instead of returning RINGATTN_ERROR_TIMEOUT; the host-side agreement
   * of each call is still bounded by the timeout), and no device timing in the statistics.
   * Run one call of a problem before capturing it: the workspace is allocated on the first
   * call, and a call that would allocate while the stream is capturing fails with
   * RINGATTN_ERROR_UNSUPPORTED. */
  int32_t capturable;
  /* Hybrid sequence parallelism (docs/ring.md, "Ulysses and hybrid"): U = ulysses_degree ranks
   * exchange heads by all-to-all, and the P / U groups run the K/V ring between them. <= 1: 1
   * (the pure ring); U = P: pure Ulysses (no ring steps). U must divide the world size, Hq must
   * be a multiple of U, and the key/value heads must split as well: Hkv a multiple of U, or,
   * when Hkv < U, K/V heads replicated so that each rank gets the one its query heads read
   * (which needs U to be a multiple of Hkv); other head counts are RINGATTN_ERROR_UNSUPPORTED
   * naming them (uneven head splits are not supported). The tensors' layout does not change
   * with U: each rank passes its shard of the sequence by params.scheme over all P ranks, as for
   * the pure ring, and gets the same results to rounding. Creation checks that every rank gave
   * the same U and placement (RINGATTN_ERROR_MISMATCH on every rank otherwise). Not with a
   * compute-only context. */
  int32_t ulysses_degree;
  /* ringattn_placement_t: which ranks form the Ulysses groups (above). */
  int32_t placement;
} ringattn_context_options_t;

#define RINGATTN_CONTEXT_OPTIONS_INIT \
  { sizeof(ringattn_context_options_t), 0, 0, 0, 0, RINGATTN_PLACEMENT_ULYSSES_CONSECUTIVE }

/* Timing of the last forward or backward call of a context on this rank. */
typedef struct ringattn_ring_stats {
  double total_seconds;     /* the whole call, agreement included */
  double compute_seconds;   /* time inside compute-backend calls */
  double comm_wait_seconds; /* time blocked in transport waits, progress calls and agreement */
  int64_t bytes_sent;       /* payload this rank sent */
  int32_t steps;            /* ring steps (= world size) */
  int32_t steps_skipped;    /* steps whose every block the mask hides */
  /* Device time of the call's compute (kernels, merges, casts; CUDA events around each backend
   * call, summed), read when the statistics are asked for: ringattn_context_last_stats then
   * waits for that work to finish. Backend CUDA without `capturable` only; 0 otherwise, where
   * compute_seconds (host time inside backend calls) is the compute time. On the CUDA backend
   * compute_seconds is the time spent enqueueing. With several processes on one GPU the
   * intervals include time slices of the other processes' kernels. */
  double device_compute_seconds;
} ringattn_ring_stats_t;

/* Rank `rank` of a `world`-rank ring, run alone for measurement: not collective, no transfer
 * and no communicator. Each step computes on this rank's own K/V in place of the block it would
 * receive, with everything else as in the real ring (the plan, the chunks, every step's mask from
 * the positions of the block it stands for, the merges), so the outputs are meaningless while
 * the compute and its statistics (device_compute_seconds, steps_skipped, bytes_sent as the
 * bytes the rank would send) are that rank's. Running every rank's share one after another on
 * one device measures the ring's compute summed over ranks without P devices. Fixed-length
 * problems only, whose global length is taken as world times the local one (so give S a
 * multiple of P, of 2P for zigzag: equal shares); a packed problem is
 * RINGATTN_ERROR_UNSUPPORTED. options as for ringattn_context_create (capturable allowed). */
RINGATTN_API ringattn_status_t ringattn_context_create_compute_only(
    int32_t rank, int32_t world, ringattn_backend_t backend,
    const ringattn_context_options_t* options, ringattn_context_t* ctx);

/* Frees the context and its workspace; never touches the caller's communicator. NULL is a
 * no-op. Not collective. With backend CUDA the device workspace is released without a host wait,
 * on the default stream after the last call's work on its own stream (an event recorded at the
 * end of every call): a call captured into a CUDA graph is not recorded, so finish the graph's
 * launches before destroying the context. */
RINGATTN_API ringattn_status_t ringattn_context_destroy(ringattn_context_t ctx);

/* Queries. On success they leave the thread's last error (ringattn_get_last_error) as it was,
 * so that statistics can be read after a failed call without losing its message. */
/* This rank and the number of ranks of the context. Either pointer may be NULL. */
RINGATTN_API ringattn_status_t ringattn_context_rank(ringattn_context_t ctx, int32_t* rank,
                                                     int32_t* world);
/* Bytes of workspace the context holds now. */
RINGATTN_API ringattn_status_t ringattn_context_workspace_size(ringattn_context_t ctx,
                                                               size_t* bytes);
RINGATTN_API ringattn_status_t ringattn_context_last_stats(ringattn_context_t ctx,
                                                           ringattn_ring_stats_t* stats);
/* Which kernels computed the last call on this rank: `library_blocks` sub-blocks by cuDNN
 * (params.local_kernel RINGATTN_LOCAL_KERNEL_CUDNN), `own_calls` calls (whole local blocks or
 * sub-blocks) by this library's kernels. Either pointer may be NULL. */
RINGATTN_API ringattn_status_t ringattn_context_kernel_stats(ringattn_context_t ctx,
                                                             int64_t* library_blocks,
                                                             int64_t* own_calls);
/* Hybrid contexts (ulysses_degree > 1), the last call on this rank: the time of its all-to-alls
 * (packing, exchanges, unpacking) and the bytes this rank sent in them. They are not in
 * ringattn_ring_stats_t's comm_wait_seconds and bytes_sent, which count the ring. 0 and 0 for
 * the pure ring. Either pointer may be NULL. */
RINGATTN_API ringattn_status_t ringattn_context_alltoall_stats(ringattn_context_t ctx,
                                                               double* seconds,
                                                               int64_t* bytes_sent);
/* The hybrid layout of a context (any pointer may be NULL): its ulysses_degree U, the number of
 * ranks in each ring R = world / U, and this rank's position in its Ulysses group and ring. */
RINGATTN_API ringattn_status_t ringattn_context_hybrid_layout(ringattn_context_t ctx,
                                                              int32_t* ulysses_degree,
                                                              int32_t* ring_size,
                                                              int32_t* ulysses_rank,
                                                              int32_t* ring_rank);

/* Ring forward on local shards: O and (optionally; NULL on every rank or on none) LSE of this
 * rank's queries against the whole global sequence. Collective. */
RINGATTN_API ringattn_status_t
ringattn_ring_forward(ringattn_context_t ctx, const ringattn_tensor_t* q,
                      const ringattn_tensor_t* k, const ringattn_tensor_t* v, ringattn_tensor_t* o,
                      ringattn_tensor_t* lse, const ringattn_attn_params_t* params, void* stream);

/* Ring backward on local shards: dQ, dK, dV of this rank's Q, K, V given dO and the forward's O
 * and LSE (all required). dK/dV contributions travel around the ring and arrive at their owner.
 * Collective. */
RINGATTN_API ringattn_status_t ringattn_ring_backward(
    ringattn_context_t ctx, const ringattn_tensor_t* q, const ringattn_tensor_t* k,
    const ringattn_tensor_t* v, const ringattn_tensor_t* o, const ringattn_tensor_t* lse,
    const ringattn_tensor_t* dout, ringattn_tensor_t* dq, ringattn_tensor_t* dk,
    ringattn_tensor_t* dv, const ringattn_attn_params_t* params, void* stream);

/* ---- plans: agree once, run many ------------------------------------------------------
 *
 * A one-shot call above agrees on its problem with every rank (a host-synchronous allgather)
 * before any data moves. A plan does that once: runs of the plan do no agreement, and no
 * allocation when they get a workspace (the plan's own, or the caller's), so they cost only the
 * ring, and on a capturable NCCL context a run can be captured without a first eager call. The
 * price: a run checks its tensors against the plan on its own rank only, so a wrong argument in a
 * run fails on that rank while the others wait out the timeout. */
typedef struct ringattn_ring_plan* ringattn_ring_plan_t;

/* Collective over the context, like a call: the problem of q, k, v (valid descriptors of this
 * rank's local tensors; their data is not read) and params (cu_seqlens is copied), agreed by
 * every rank. own_workspace nonzero: the plan allocates its workspace now, in the backend's
 * memory (every rank agrees that it succeeded), and runs may pass workspace = NULL; zero: every
 * run passes a workspace. The context must outlive the plan. */
RINGATTN_API ringattn_status_t ringattn_ring_plan_create(
    ringattn_context_t ctx, const ringattn_tensor_t* q, const ringattn_tensor_t* k,
    const ringattn_tensor_t* v, const ringattn_attn_params_t* params, int32_t own_workspace,
    ringattn_ring_plan_t* plan);
/* Bytes of workspace a run needs (forward or backward), in the backend's memory (host for CPU,
 * device for CUDA), 64-byte aligned. Local. */
RINGATTN_API ringattn_status_t ringattn_ring_plan_workspace_size(ringattn_ring_plan_t plan,
                                                                 size_t* bytes);
/* Runs: the tensors of ringattn_ring_forward / ringattn_ring_backward, with the plan's shapes
 * and dtype (else RINGATTN_ERROR_SHAPE_MISMATCH on this rank). workspace: NULL for the plan's
 * own, else workspace_bytes >= ringattn_ring_plan_workspace_size bytes, 64-byte aligned, not
 * used by anything else until the run's work on `stream` is done. Collective; statistics as for
 * a call (ringattn_context_last_stats). */
RINGATTN_API ringattn_status_t ringattn_ring_plan_forward(
    ringattn_ring_plan_t plan, const ringattn_tensor_t* q, const ringattn_tensor_t* k,
    const ringattn_tensor_t* v, ringattn_tensor_t* o, ringattn_tensor_t* lse, void* workspace,
    size_t workspace_bytes, void* stream);
RINGATTN_API ringattn_status_t ringattn_ring_plan_backward(
    ringattn_ring_plan_t plan, const ringattn_tensor_t* q, const ringattn_tensor_t* k,
    const ringattn_tensor_t* v, const ringattn_tensor_t* o, const ringattn_tensor_t* lse,
    const ringattn_tensor_t* dout, ringattn_tensor_t* dq, ringattn_tensor_t* dk,
    ringattn_tensor_t* dv, void* workspace, size_t workspace_bytes, void* stream);
/* Frees the plan and its own workspace (CUDA: on the default stream after the plan's last eager
 * run; finish the launches of graphs that captured runs first). NULL is a no-op. Not
 * collective. */
RINGATTN_API ringattn_status_t ringattn_ring_plan_destroy(ringattn_ring_plan_t plan);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* RINGATTN_RINGATTN_RING_H_ */
