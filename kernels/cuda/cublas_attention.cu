// Unfused attention through cuBLAS (see cublas_attention.h).
#include "cublas_attention.h"
#include "elem_io.cuh"
#include "kernel_params.h"

namespace ringattn {
namespace cuda {
namespace {

constexpr int kThreads = 256;

size_t dtype_bytes(DType d) { return d == kF32 ? 4 : 2; }

cudaDataType_t cuda_type(DType d) {
  return d == kF32 ? CUDA_R_32F : d == kF16 ? CUDA_R_16F : CUDA_R_16BF;
}

__device__ float block_reduce(float v, bool is_max, float* red) {
  v = is_max ? warp_max(v) : warp_sum(v);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float r = red[0];
  for (int i = 1; i < kThreads / 32; ++i) r = is_max ? fmaxf(r, red[i]) : r + red[i];
  return r;
}

// One block per (batch, query row) of one head: masked, scaled softmax of the float32 scores,
// P written in the input dtype, LSE in float32.
__global__ void softmax_kernel(const float* scores, void* probs, DType probs_dt, int64_t sq,
                               int64_t sk, float scale, MaskSpec mask, PosMap qmap, PosMap kmap,
                               float* lse, int64_t lse_sb) {
  __shared__ float red[kThreads / 32];
  const int64_t b = blockIdx.y, i = blockIdx.x;
  const float* row = scores + (b * sq + i) * sk;
  const int64_t out = (b * sq + i) * sk;
  int64_t qs, qp;
  posmap_lookup(qmap, i, &qs, &qp);
  float mx = neg_inf();
  for (int64_t j = threadIdx.x; j < sk; j += kThreads) {
    int64_t ks, kp;
    posmap_lookup(kmap, j, &ks, &kp);
    if (mask_visible(mask, qs, qp, ks, kp)) mx = fmaxf(mx, row[j] * scale);
  }
  mx = block_reduce(mx, true, red);
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < sk; j += kThreads) {
    int64_t ks, kp;
    posmap_lookup(kmap, j, &ks, &kp);
    if (mask_visible(mask, qs, qp, ks, kp)) sum += expf(row[j] * scale - mx);
  }
  sum = block_reduce(sum, false, red);
  const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
  for (int64_t j = threadIdx.x; j < sk; j += kThreads) {
    int64_t ks, kp;
    posmap_lookup(kmap, j, &ks, &kp);
    const float pr = mask_visible(mask, qs, qp, ks, kp) ? expf(row[j] * scale - mx) * inv : 0.0f;
    store_elem(probs, probs_dt, out + j, pr);
  }
  if (lse != nullptr && threadIdx.x == 0)
    lse[b * lse_sb + i] = sum > 0.0f ? mx + logf(sum) : neg_inf();
}

}  // namespace

size_t cublas_attention_workspace(const FwdParams& p) {
  return static_cast<size_t>(p.batch * p.sq * p.sk) * (4 + dtype_bytes(p.q.dtype));
}

const char* cublas_attention_forward(const FwdParams& p, void* workspace, cublasHandle_t handle,
                                     cudaStream_t stream) {
  if (p.batch == 0 || p.sq == 0 || p.hq == 0) return nullptr;
  if (p.sk == 0) return "sk == 0 (no keys: not served by the baseline)";
  if (cublasSetStream(handle, stream) != CUBLAS_STATUS_SUCCESS) return "cublasSetStream";
  const int64_t n_scores = p.batch * p.sq * p.sk;
  float* scores = static_cast<float*>(workspace);
  void* probs = scores + n_scores;
  const cudaDataType_t in_t = cuda_type(p.q.dtype);
  const size_t esz = dtype_bytes(p.q.dtype);
  const int64_t group = p.hq / p.hkv;
  const float one = 1.0f, zero = 0.0f;
  for (int64_t h = 0; h < p.hq; ++h) {
    const int64_t hk = h / group;
    const char* kptr = static_cast<const char*>(p.k.data) + hk * p.k.stride_h * esz;
    const char* qptr = static_cast<const char*>(p.q.data) + h * p.q.stride_h * esz;
    const char* vptr = static_cast<const char*>(p.v.data) + hk * p.v.stride_h * esz;
    char* optr = static_cast<char*>(p.o.data) + h * p.o.stride_h * dtype_bytes(p.o.dtype);
    {
      // Column-major view: scores^T (sk x sq) = K (d x sk)^T * Q (d x sq).
      if (cublasGemmStridedBatchedEx(
              handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(p.sk), static_cast<int>(p.sq),
              static_cast<int>(p.d), &one, kptr, in_t, static_cast<int>(p.k.stride_s), p.k.stride_b,
              qptr, in_t, static_cast<int>(p.q.stride_s), p.q.stride_b, &zero, scores, CUDA_R_32F,
              static_cast<int>(p.sk), p.sq * p.sk, static_cast<int>(p.batch), CUBLAS_COMPUTE_32F,
              CUBLAS_GEMM_DEFAULT) != CUBLAS_STATUS_SUCCESS) {
        return "cublasGemmStridedBatchedEx(Q K^T)";
      }
    }
    const dim3 grid(static_cast<unsigned>(p.sq), static_cast<unsigned>(p.batch));
    float* lse = p.lse.data != nullptr ? p.lse.data + h * p.lse.stride_h : nullptr;
    softmax_kernel<<<grid, kThreads, 0, stream>>>(scores, probs, p.q.dtype, p.sq, p.sk, p.scale,
                                                  p.mask, p.q_pos, p.k_pos, lse, p.lse.stride_b);
    if (cudaGetLastError() != cudaSuccess) return "softmax_kernel launch";
    // Column-major view: O^T (d x sq) = V^T (d x sk) * P^T (sk x sq).
    if (cublasGemmStridedBatchedEx(
            handle, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(p.d), static_cast<int>(p.sq),
            static_cast<int>(p.sk), &one, vptr, in_t, static_cast<int>(p.v.stride_s), p.v.stride_b,
            probs, in_t, static_cast<int>(p.sk), p.sq * p.sk, &zero, optr, cuda_type(p.o.dtype),
            static_cast<int>(p.o.stride_s), p.o.stride_b, static_cast<int>(p.batch),
            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) != CUBLAS_STATUS_SUCCESS) {
      return "cublasGemmStridedBatchedEx(P V)";
    }
  }
  return nullptr;
}

}  // namespace cuda
}  // namespace ringattn
