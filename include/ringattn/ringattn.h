/*
 * ringattn: exact attention over sequences sharded across ranks.
 *
 * This is the C ABI. Every function returns a ringattn_status_t and never throws, aborts or
 * exits; on failure ringattn_get_last_error() returns a thread-local message naming the argument
 * (and the rank, for distributed calls) that was wrong.
 *
 * Tensor layouts (all strides are int64 ELEMENT strides; the last dimension must be contiguous):
 *   Fixed length:   Q  [B, S, Hq,  D]      K, V  [B, S, Hkv, D]      O like Q
 *                   LSE float32 [B, Hq, S]
 *   Packed varlen:  Q  [T, Hq,  D]         K, V  [T, Hkv, D]         O like Q
 *                   LSE float32 [Hq, T]
 *                   with params.cu_seqlens = B+1 int64 offsets (host memory) of the packed batch.
 * In distributed calls S (or T) is the rank's LOCAL length; for packed calls cu_seqlens always
 * describes the GLOBAL packed batch and each sequence is sharded on its own by the scheme.
 *
 * LSE is the natural-log sum of exp(scale * q.k) over the keys a row sees. A row that sees no key
 * has LSE = -inf and output 0 (never NaN).
 *
 * Non-finite values propagate as in plain float arithmetic, never as a fake empty row: a score
 * scale * q.k that is NaN (a NaN in the row's q or in a key it sees) or +inf (an infinite input,
 * or logits beyond float32) makes that row's O and LSE NaN, and the gradients that depend on it
 * (its dQ, the dK/dV of the keys it sees) NaN; rows that do not see it keep finite O and LSE. A
 * score of -inf weighs nothing, like a masked key (a row whose every visible score is -inf is a
 * row that sees no key). Gradients of keys a NaN row does not see may be NaN too, as in a dense
 * float implementation (0 x NaN in a product).
 *
 * dtypes: float32, float16, bfloat16 in and out; accumulation is always float32. Gradients are
 * returned in the dtype of their input.
 *
 * GQA/MQA: Hq % Hkv == 0; query head h reads kv head h / (Hq / Hkv).
 * What runs where is one table (ringattn_support_table, below), used by every call's checks:
 *
 *   backend   dtypes                       head dims            masks                 devices
 *   cpu       float32, float16, bfloat16   32..256, steps of 8  full, causal, window  the host
 *   cuda      float32, float16, bfloat16   32..256, steps of 8  full, causal, window  sm_80+
 *
 * A call outside it returns RINGATTN_ERROR_UNSUPPORTED naming the (backend, dtype, head dim,
 * mask, device) it asked for and what the table offers for that backend and dtype. On CUDA,
 * float16/bfloat16 at the head dims of the build's RINGATTN_HEADDIMS (64, 128, 256 by default)
 * run on tensor-core kernels; the others on a float32-arithmetic kernel (docs/cuda.md).
 *
 * Masks are computed from global positions: causal (key position <= query position) and a sliding
 * window (left, right): a query at position p sees keys in [p - left, p + right]; -1 is unbounded.
 * Causal is the same as right = 0. A side of 2^61 or more is unbounded too (no overflow).
 *
 * A tensor's data pointer is aligned to its element size (4 bytes for float32, 2 for float16 and
 * bfloat16), as every framework's tensors are; a misaligned one is RINGATTN_ERROR_INVALID_ARGUMENT.
 *
 * Limits, checked on every call with overflow-safe arithmetic (RINGATTN_ERROR_INVALID_ARGUMENT or
 * RINGATTN_ERROR_BAD_STRIDE naming the tensor): a tensor has at most 2^48 elements and its
 * strides reach at most element 2^48; a packed call has at most 2^31 - 1 sequences and 2^48
 * tokens. Enum fields with values outside their enumerators are INVALID_ARGUMENT.
 *
 * Outputs never share memory with an input or with another output (no in-place calls), and an
 * output's own elements never share memory (no zero stride on a dimension of size > 1):
 * INVALID_ARGUMENT / BAD_STRIDE naming them. Views with the same dtype, shape and strides are
 * compared element by element, so interleaved views of one buffer (dK and dV in one
 * [B, S, 2, Hkv, D] tensor, say) are accepted; other views of one buffer whose byte ranges meet
 * are rejected. Inputs may share memory with each other (Q, K, V from one QKV tensor).
 */
#ifndef RINGATTN_RINGATTN_H_
#define RINGATTN_RINGATTN_H_

#include <stddef.h>
#include <stdint.h>

#define RINGATTN_VERSION_MAJOR 0
#define RINGATTN_VERSION_MINOR 1
#define RINGATTN_VERSION_PATCH 0
#define RINGATTN_VERSION_CODE \
  (RINGATTN_VERSION_MAJOR * 10000 + RINGATTN_VERSION_MINOR * 100 + RINGATTN_VERSION_PATCH)

#if defined(_WIN32)
#define RINGATTN_API __declspec(dllexport)
#else
#define RINGATTN_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ringattn_status {
  RINGATTN_SUCCESS = 0,
  /* Invalid input: the call was wrong. */
  RINGATTN_ERROR_INVALID_ARGUMENT = 1, /* a bad value: negative size, bad window, bad enum... */
  RINGATTN_ERROR_NULL_POINTER = 2,     /* a required pointer was NULL */
  RINGATTN_ERROR_SHAPE_MISMATCH = 3,   /* tensors disagree, or Hq % Hkv != 0 */
  RINGATTN_ERROR_BAD_STRIDE = 4,       /* negative stride or non-contiguous last dimension */
  /* Valid input that this build, backend or device cannot run. */
  RINGATTN_ERROR_UNSUPPORTED = 5, /* head dim, dtype, architecture, backend not built */
  /* Runtime failures. */
  RINGATTN_ERROR_OUT_OF_MEMORY = 6,
  RINGATTN_ERROR_CUDA = 7,      /* a CUDA runtime / cuBLAS call failed (named in the message) */
  RINGATTN_ERROR_COMM = 8,      /* a transport (MPI / NCCL) call failed */
  RINGATTN_ERROR_TIMEOUT = 9,   /* a peer did not answer within the timeout */
  RINGATTN_ERROR_MISMATCH = 10, /* ranks disagree on the problem */
  RINGATTN_ERROR_INTERNAL = 11
} ringattn_status_t;

typedef enum ringattn_dtype {
  RINGATTN_FLOAT32 = 0,
  RINGATTN_FLOAT16 = 1,
  RINGATTN_BFLOAT16 = 2
} ringattn_dtype_t;

typedef enum ringattn_backend {
  RINGATTN_BACKEND_CPU = 0,
  RINGATTN_BACKEND_CUDA = 1
} ringattn_backend_t;

/* How a sequence is split over P ranks (DESIGN.md). */
typedef enum ringattn_scheme {
  RINGATTN_SCHEME_CONTIGUOUS = 0, /* rank r holds [r*S/P, (r+1)*S/P) */
  RINGATTN_SCHEME_ZIGZAG = 1,     /* 2P chunks; rank r holds chunk r then chunk 2P-1-r */
  RINGATTN_SCHEME_STRIPED = 2     /* token t lives on rank t mod P */
} ringattn_scheme_t;

/* Which kernel computes each local block (a rank's queries against one K/V block):
 *   OWN    this library's kernels (every backend, dtype, head dim and mask of the support table).
 *   CUDNN  cuDNN's fused attention (its SDPA graphs, cuDNN 9 and the cuDNN frontend) wherever it
 *          can compute a sub-block: backend CUDA, float16/bfloat16, masks split into full and
 *          causal (optionally windowed) sub-blocks; this library's kernels for the rest (float32,
 *          the window's ragged edges, head dims or shapes cuDNN refuses). Each partial result is
 *          merged into float32 accumulators. Needs a library built with cuDNN
 *          (ringattn_backend_available does not say; a call reports RINGATTN_ERROR_UNSUPPORTED)
 *          and backend CUDA. docs/cuda.md, "The cuDNN path". */
typedef enum ringattn_local_kernel {
  RINGATTN_LOCAL_KERNEL_OWN = 0,
  RINGATTN_LOCAL_KERNEL_CUDNN = 1
} ringattn_local_kernel_t;

/* Non-owning tensor descriptor. ndim is 4 ([B,S,H,D]), 3 ([T,H,D] packed, or LSE [B,H,S]) or
 * 2 (packed LSE [H,T]). strides[i] is the element stride of dimension i; strides[ndim-1] == 1. */
typedef struct ringattn_tensor {
  void* data;
  ringattn_dtype_t dtype;
  int32_t ndim;
  int64_t shape[4];
  int64_t strides[4];
} ringattn_tensor_t;

/* Attention options. Always initialize with RINGATTN_ATTN_PARAMS_INIT so that fields added in
 * later versions get their defaults. */
typedef struct ringattn_attn_params {
  size_t struct_size;        /* sizeof(ringattn_attn_params_t), set by the initializer */
  float softmax_scale;       /* <= 0 means 1/sqrt(D) */
  int32_t causal;            /* nonzero: key position <= query position */
  int64_t window_left;       /* sliding window; -1 = unbounded */
  int64_t window_right;      /* sliding window; -1 = unbounded */
  ringattn_scheme_t scheme;  /* distributed calls: how the sequence is sharded */
  const int64_t* cu_seqlens; /* packed calls: B+1 offsets of the GLOBAL packed batch (host) */
  int64_t num_seqs;          /* packed calls: B; 0 for fixed-length tensors */
  ringattn_local_kernel_t local_kernel; /* which kernel computes local blocks (OWN by default) */
} ringattn_attn_params_t;

#define RINGATTN_ATTN_PARAMS_INIT                                                         \
  {                                                                                       \
    sizeof(ringattn_attn_params_t), 0.0f, 0, -1, -1, RINGATTN_SCHEME_CONTIGUOUS, NULL, 0, \
        RINGATTN_LOCAL_KERNEL_OWN                                                         \
  }

/* ---- errors and version ---------------------------------------------------------------- */

/* A static string naming the code ("RINGATTN_ERROR_NULL_POINTER: ..."). Never NULL. */
RINGATTN_API const char* ringattn_status_string(ringattn_status_t status);
/* The message of the last failed call on this thread ("" after a success). Never NULL. */
RINGATTN_API const char* ringattn_get_last_error(void);
/* Runtime version as RINGATTN_VERSION_CODE; may differ from the header's macro. */
RINGATTN_API int ringattn_get_version(void);
/* 1 if the backend was compiled into this library (CUDA also needs a device at run time). */
RINGATTN_API int ringattn_backend_available(ringattn_backend_t backend);

/* ---- what runs where ---------------------------------------------------------------------- */

/* Mask kinds, as bits of ringattn_support_entry_t.mask_kinds. */
typedef enum ringattn_mask_kind {
  RINGATTN_MASK_FULL = 1,   /* no mask: both window sides unbounded, not causal */
  RINGATTN_MASK_CAUSAL = 2, /* causal, no other bound */
  RINGATTN_MASK_WINDOW = 4  /* a bounded window side (causal or not) */
} ringattn_mask_kind_t;

/* One entry of the support table: `backend` runs `dtype` at head dims head_dim_min..head_dim_max
 * in steps of head_dim_step, with the mask kinds in mask_kinds (bits of ringattn_mask_kind_t), on
 * devices of compute capability min_arch or newer (major * 10 + minor, 80 = sm_80; 0 on the CPU,
 * where any machine does). */
typedef struct ringattn_support_entry {
  ringattn_backend_t backend;
  ringattn_dtype_t dtype;
  int32_t head_dim_min, head_dim_max, head_dim_step;
  uint32_t mask_kinds;
  int32_t min_arch;
} ringattn_support_entry_t;

/* The table (static storage, *count entries): what the kernels of this library run, whether or
 * not a backend is built or has a device here (ringattn_backend_available says that). */
RINGATTN_API ringattn_status_t ringattn_support_table(const ringattn_support_entry_t** entries,
                                                      size_t* count);
/* RINGATTN_SUCCESS when the table has an entry for (backend, dtype, head_dim, mask, arch), else
 * RINGATTN_ERROR_UNSUPPORTED with a message naming what was asked and what the table offers.
 * arch: a compute capability (major * 10 + minor), or 0 for the current device of the calling
 * thread (CUDA; no device is UNSUPPORTED); ignored on the CPU. Bad enum values are
 * RINGATTN_ERROR_INVALID_ARGUMENT. */
RINGATTN_API ringattn_status_t ringattn_check_support(ringattn_backend_t backend,
                                                      ringattn_dtype_t dtype, int64_t head_dim,
                                                      ringattn_mask_kind_t mask, int32_t arch);

/* ---- single-process attention ------------------------------------------------------------ */

/* Forward: O = softmax(scale * Q K^T + mask) V over the whole local sequence, and its LSE.
 * q, k, v: inputs (same dtype); o: output, dtype of q; lse: float32 output, may be NULL.
 * backend CPU: host pointers, stream ignored (pass NULL). backend CUDA: device pointers, work is
 * enqueued on `stream` (a cudaStream_t, NULL = default stream) with no host synchronization. */
RINGATTN_API ringattn_status_t ringattn_attention_forward(
    const ringattn_tensor_t* q, const ringattn_tensor_t* k, const ringattn_tensor_t* v,
    ringattn_tensor_t* o, ringattn_tensor_t* lse, const ringattn_attn_params_t* params,
    ringattn_backend_t backend, void* stream);

/* Backward: given dO, the forward's O and LSE, returns dQ, dK, dV (dtype of q).
 * Delta = rowsum(dO * O) is computed inside in float32. All pointers required. */
RINGATTN_API ringattn_status_t ringattn_attention_backward(
    const ringattn_tensor_t* q, const ringattn_tensor_t* k, const ringattn_tensor_t* v,
    const ringattn_tensor_t* o, const ringattn_tensor_t* lse, const ringattn_tensor_t* dout,
    ringattn_tensor_t* dq, ringattn_tensor_t* dk, ringattn_tensor_t* dv,
    const ringattn_attn_params_t* params, ringattn_backend_t backend, void* stream);

/* Backward with a caller's workspace (for Delta), so that the call allocates nothing: CUDA graph
 * capture, framework allocators. workspace: at least
 * ringattn_attention_backward_workspace_size(q) bytes of the backend's memory (host for CPU,
 * device for CUDA), 64-byte aligned, not used by anything else until the call's work on `stream`
 * is done; NULL: the call allocates it itself (ringattn_attention_backward). */
RINGATTN_API ringattn_status_t ringattn_attention_backward_with_workspace(
    const ringattn_tensor_t* q, const ringattn_tensor_t* k, const ringattn_tensor_t* v,
    const ringattn_tensor_t* o, const ringattn_tensor_t* lse, const ringattn_tensor_t* dout,
    ringattn_tensor_t* dq, ringattn_tensor_t* dk, ringattn_tensor_t* dv,
    const ringattn_attn_params_t* params, void* workspace, size_t workspace_bytes,
    ringattn_backend_t backend, void* stream);
/* Bytes of workspace the backward of queries `q` ([B, S, Hq, D] or packed [T, Hq, D]) needs:
 * float32 Delta [B, Hq, S], rounded up to 64 bytes. Reads only q's ndim and shape. */
RINGATTN_API ringattn_status_t
ringattn_attention_backward_workspace_size(const ringattn_tensor_t* q, size_t* bytes);

/* ---- sharding helpers ---------------------------------------------------------------------- */

/* Number of tokens rank `rank` of `world` holds of a sequence of `seq_len` tokens. */
RINGATTN_API ringattn_status_t ringattn_shard_length(ringattn_scheme_t scheme, int64_t seq_len,
                                                     int32_t world, int32_t rank,
                                                     int64_t* local_len);
/* positions[i] = global position (within its sequence) of local token i, for i < local_len. */
RINGATTN_API ringattn_status_t ringattn_shard_positions(ringattn_scheme_t scheme, int64_t seq_len,
                                                        int32_t world, int32_t rank,
                                                        int64_t* positions, int64_t capacity);

/* ---- shard / unshard of a global tensor (host memory; no communication) ------------------- */

/* Copy rank `rank`'s shard of a global tensor into a local one, by `scheme` over `world` ranks.
 * Fixed length: global [B, S, H, D] -> local [B, S_local, H, D] (cu_seqlens NULL, num_seqs 0).
 * Packed: global [T, H, D] -> local [T_local, H, D], each of the num_seqs sequences of
 * cu_seqlens (B+1 offsets) sharded on its own. Both tensors have the same dtype; strides are
 * honoured. */
RINGATTN_API ringattn_status_t ringattn_shard_tensor(const ringattn_tensor_t* global,
                                                     ringattn_tensor_t* local,
                                                     ringattn_scheme_t scheme,
                                                     const int64_t* cu_seqlens, int64_t num_seqs,
                                                     int32_t world, int32_t rank);
/* The inverse: write rank `rank`'s local rows into their places in the global tensor (rows of
 * other ranks are left untouched; call once per rank's shard to assemble the whole). */
RINGATTN_API ringattn_status_t ringattn_unshard_tensor(const ringattn_tensor_t* local,
                                                       ringattn_tensor_t* global,
                                                       ringattn_scheme_t scheme,
                                                       const int64_t* cu_seqlens, int64_t num_seqs,
                                                       int32_t world, int32_t rank);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* RINGATTN_RINGATTN_H_ */
