#include "cudnn_path.h"

#include <cmath>
#include <string>
#include <vector>

#include "attention_cuda.h"
#include "cudnn_sdpa.h"
#include "sub_blocks.h"

namespace ringattn {
namespace {

Status cuda_failed(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return RINGATTN_SUCCESS;
  cudaGetLastError();
  return set_errorf(
      err == cudaErrorMemoryAllocation ? RINGATTN_ERROR_OUT_OF_MEMORY : RINGATTN_ERROR_CUDA,
      "cuda backend (cuDNN path): %s failed: %s", what, cudaGetErrorString(err));
}

TensorRef rows(const TensorRef& t, int64_t row0) {
  TensorRef r = t;
  if (r.data != nullptr) {
    r.data = static_cast<char*>(r.data) +
             static_cast<size_t>(row0 * t.stride_s) * (t.dtype == kF32 ? 4 : 2);
  }
  return r;
}
RowStatRef rows(const RowStatRef& t, int64_t row0) {
  RowStatRef r = t;
  if (r.data != nullptr) r.data += row0;
  return r;
}

bool sixteen_bit(DType d) { return d == kF16 || d == kBF16; }

// A dense [B, S, H, D] temporary and a float32 [B, H, S] one.
TensorRef dense(void* p, DType dt, int64_t s, int64_t h, int64_t d) {
  return TensorRef{p, dt, s * h * d, h * d, d};
}
RowStatRef dense_stat(void* p, int64_t s, int64_t h) {
  return RowStatRef{static_cast<float*>(p), h * s, s};
}
size_t aligned(size_t bytes) { return (bytes + 255) / 256 * 256; }

cudnn::SdpaBlock block_of(const AttnCall& p, const SubBlock& b) {
  cudnn::SdpaBlock s{};
  s.batch = p.batch;
  s.sq = b.m;
  s.sk = b.n;
  s.hq = p.hq;
  s.hkv = p.hkv;
  s.d = p.d;
  s.dtype = p.q.dtype;
  s.scale = p.scale;
  s.causal = b.kind == kSubCausal;
  s.window = b.window;
  s.q = rows(p.q, b.q0);
  s.k = rows(p.k, b.k0);
  s.v = rows(p.v, b.k0);
  return s;
}

// The library's result: OK, our kernels instead (unsupported), or an error.
Status library_result(cudnn::Result r, const std::string& message, bool* fallback) {
  *fallback = r == cudnn::Result::kUnsupported;
  if (r == cudnn::Result::kError) return set_error(RINGATTN_ERROR_CUDA, message);
  return RINGATTN_SUCCESS;
}

void count(const AttnCall& p, bool library) {
  if (p.counts == nullptr) return;
  ++(library ? p.counts->library_blocks : p.counts->own_calls);
}

// Our kernels on one sub-block: exact positions, merged (forward) or added (backward) into the
// call's float32 accumulators.
Status own_forward(const FwdParams& p, const SubBlock& b, cudaStream_t stream) {
  FwdParams s = p;
  s.sq = b.m;
  s.sk = b.n;
  s.q = rows(p.q, b.q0);
  s.k = rows(p.k, b.k0);
  s.v = rows(p.v, b.k0);
  s.o = rows(p.o, b.q0);
  s.lse = rows(p.lse, b.q0);
  s.q_pos = PosMap{&b.q_run, 1};
  s.k_pos = PosMap{&b.k_run, 1};
  s.out_mode = kOutMergeF32;
  s.key_pack = nullptr;
  count(p, false);
  return cuda_failed(cuda::forward(s, stream), "attention forward of a sub-block");
}

Status own_backward(const BwdParams& p, const SubBlock& b, cudaStream_t stream) {
  BwdParams s = p;
  s.sq = b.m;
  s.sk = b.n;
  s.q = rows(p.q, b.q0);
  s.dout = rows(p.dout, b.q0);
  s.dq = rows(p.dq, b.q0);
  s.lse = rows(p.lse, b.q0);
  s.delta = rows(p.delta, b.q0);
  s.k = rows(p.k, b.k0);
  s.v = rows(p.v, b.k0);
  s.dk = rows(p.dk, b.k0);
  s.dv = rows(p.dv, b.k0);
  s.q_pos = PosMap{&b.q_run, 1};
  s.k_pos = PosMap{&b.k_run, 1};
  s.query_pack = nullptr;
  count(p, false);
  return cuda_failed(cuda::backward(s, stream), "attention backward of a sub-block");
}

std::vector<SubBlock>& blocks_buffer() {
  thread_local std::vector<SubBlock> blocks;  // reused: the hot path allocates nothing
  return blocks;
}

}  // namespace

Status cudnn_path_available() {
  // Asked by every call's validation: cuDNN's presence does not change within a process.
  static std::string why;
  static const bool ok = cudnn::available(&why);
  if (ok) return RINGATTN_SUCCESS;
  return set_errorf(RINGATTN_ERROR_UNSUPPORTED,
                    "'params'.local_kernel RINGATTN_LOCAL_KERNEL_CUDNN: cuDNN cannot run here: %s",
                    why.c_str());
}

Status cudnn_path_forward(const FwdParams& p, cudaStream_t stream, bool* handled) {
  *handled = false;
  if (p.local_kernel != kLocalCudnn || !sixteen_bit(p.q.dtype) || p.batch == 0 || p.sq == 0 ||
      p.sk == 0) {
    return RINGATTN_SUCCESS;
  }
  std::vector<SubBlock>& blocks = blocks_buffer();
  split_sub_blocks(p.q_pos, p.k_pos, p.mask, &blocks);
  std::string msg;
  if (p.out_mode == kOutFinal) {
    // cuDNN writes the final output itself only when one block is the whole call.
    if (!single_library_block(blocks, p.sq, p.sk) || p.o.dtype != p.q.dtype) {
      return RINGATTN_SUCCESS;
    }
    cudnn::SdpaBlock s = block_of(p, blocks[0]);
    s.o = p.o;
    s.lse = p.lse;
    if (s.lse.data == nullptr) {  // LSE not wanted: a temporary
      void* t =
          cudnn::scratch(sizeof(float) * static_cast<size_t>(p.batch * p.hq * p.sq), stream, &msg);
      if (t == nullptr) return set_error(RINGATTN_ERROR_OUT_OF_MEMORY, msg);
      s.lse = dense_stat(t, p.sq, p.hq);
    }
    bool fallback = false;
    RINGATTN_RETURN_IF_ERROR(library_result(cudnn::forward(s, stream, &msg), msg, &fallback));
    if (fallback) return RINGATTN_SUCCESS;
    count(p, true);
    *handled = true;
    return RINGATTN_SUCCESS;
  }
  *handled = true;
  if (p.out_mode == kOutPartialF32) {  // rows no block reaches: O = 0, LSE = -inf
    const TensorRef zero{nullptr, kF32, 0, 0, 0};
    RINGATTN_RETURN_IF_ERROR(cuda_failed(cuda::convert(p.batch, p.sq, p.hq, p.d, zero, p.o, stream),
                                         "zero-filling the partial output"));
    RINGATTN_RETURN_IF_ERROR(cuda_failed(
        cuda::fill_rowstat(p.batch, p.hq, p.sq, p.lse, -INFINITY, stream), "filling the LSE"));
  }
  int64_t max_m = 0;
  for (const SubBlock& b : blocks) max_m = b.kind != kSubOwn && b.m > max_m ? b.m : max_m;
  char* temp = nullptr;
  size_t o_bytes = 0;
  if (max_m > 0) {
    o_bytes = aligned(2 * static_cast<size_t>(p.batch * max_m * p.hq * p.d));
    const size_t lse_bytes = aligned(sizeof(float) * static_cast<size_t>(p.batch * p.hq * max_m));
    temp = static_cast<char*>(cudnn::scratch(o_bytes + lse_bytes, stream, &msg));
    if (temp == nullptr) return set_error(RINGATTN_ERROR_OUT_OF_MEMORY, msg);
  }
  for (const SubBlock& b : blocks) {
    bool fallback = b.kind == kSubOwn;
    if (!fallback) {
      cudnn::SdpaBlock s = block_of(p, b);
      s.o = dense(temp, p.q.dtype, b.m, p.hq, p.d);
      s.lse = dense_stat(temp + o_bytes, b.m, p.hq);
      RINGATTN_RETURN_IF_ERROR(library_result(cudnn::forward(s, stream, &msg), msg, &fallback));
      if (!fallback) {
        RINGATTN_RETURN_IF_ERROR(
            cuda_failed(cuda::merge_partial(p.batch, b.m, p.hq, p.d, rows(p.o, b.q0),
                                            rows(p.lse, b.q0), s.o, s.lse, stream),
                        "merging a cuDNN partial"));
        count(p, true);
      }
    }
    if (fallback) RINGATTN_RETURN_IF_ERROR(own_forward(p, b, stream));
  }
  return RINGATTN_SUCCESS;
}

Status cudnn_path_backward(const BwdParams& p, cudaStream_t stream, bool* handled) {
  *handled = false;
  if (p.local_kernel != kLocalCudnn || !sixteen_bit(p.q.dtype) || p.o.data == nullptr ||
      p.batch == 0 || p.sq == 0 || p.sk == 0) {
    return RINGATTN_SUCCESS;
  }
  std::vector<SubBlock>& blocks = blocks_buffer();
  split_sub_blocks(p.q_pos, p.k_pos, p.mask, &blocks);
  std::string msg;
  if (!p.accumulate) {
    // Gradients written in their dtype: cuDNN writes them itself only when one block is the
    // whole call.
    if (!single_library_block(blocks, p.sq, p.sk) || p.dq.dtype != p.q.dtype ||
        p.dk.dtype != p.q.dtype || p.dv.dtype != p.q.dtype) {
      return RINGATTN_SUCCESS;
    }
    cudnn::SdpaBlock s = block_of(p, blocks[0]);
    s.o = p.o;
    s.lse = p.lse;
    s.dout = p.dout;
    s.dq = p.dq;
    s.dk = p.dk;
    s.dv = p.dv;
    bool fallback = false;
    RINGATTN_RETURN_IF_ERROR(library_result(cudnn::backward(s, stream, &msg), msg, &fallback));
    if (fallback) return RINGATTN_SUCCESS;
    count(p, true);
    *handled = true;
    return RINGATTN_SUCCESS;
  }
  *handled = true;
  int64_t max_m = 0, max_n = 0;
  for (const SubBlock& b : blocks) {
    if (b.kind == kSubOwn) continue;
    max_m = b.m > max_m ? b.m : max_m;
    max_n = b.n > max_n ? b.n : max_n;
  }
  char* temp = nullptr;
  size_t dq_bytes = 0, dk_bytes = 0;
  if (max_m > 0) {
    dq_bytes = aligned(2 * static_cast<size_t>(p.batch * max_m * p.hq * p.d));
    dk_bytes = aligned(2 * static_cast<size_t>(p.batch * max_n * p.hkv * p.d));
    temp = static_cast<char*>(cudnn::scratch(dq_bytes + 2 * dk_bytes, stream, &msg));
    if (temp == nullptr) return set_error(RINGATTN_ERROR_OUT_OF_MEMORY, msg);
  }
  for (const SubBlock& b : blocks) {
    bool fallback = b.kind == kSubOwn;
    if (!fallback) {
      cudnn::SdpaBlock s = block_of(p, b);
      s.o = rows(p.o, b.q0);
      s.lse = rows(p.lse, b.q0);
      s.dout = rows(p.dout, b.q0);
      s.dq = dense(temp, p.q.dtype, b.m, p.hq, p.d);
      s.dk = dense(temp + dq_bytes, p.q.dtype, b.n, p.hkv, p.d);
      s.dv = dense(temp + dq_bytes + dk_bytes, p.q.dtype, b.n, p.hkv, p.d);
      RINGATTN_RETURN_IF_ERROR(library_result(cudnn::backward(s, stream, &msg), msg, &fallback));
      if (!fallback) {
        const char* what = "adding a cuDNN block's gradients";
        RINGATTN_RETURN_IF_ERROR(cuda_failed(
            cuda::accumulate(p.batch, b.m, p.hq, p.d, s.dq, rows(p.dq, b.q0), stream), what));
        RINGATTN_RETURN_IF_ERROR(cuda_failed(
            cuda::accumulate(p.batch, b.n, p.hkv, p.d, s.dk, rows(p.dk, b.k0), stream), what));
        RINGATTN_RETURN_IF_ERROR(cuda_failed(
            cuda::accumulate(p.batch, b.n, p.hkv, p.d, s.dv, rows(p.dv, b.k0), stream), what));
        count(p, true);
      }
    }
    if (fallback) RINGATTN_RETURN_IF_ERROR(own_backward(p, b, stream));
  }
  return RINGATTN_SUCCESS;
}

}  // namespace ringattn
