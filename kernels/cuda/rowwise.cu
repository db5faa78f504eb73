// Row-wise kernels around attention: Delta = rowsum(dO * O), the float32 merge of partial results,
// dtype conversion and row-statistics fill. Memory-bound; one warp per (b, s, h) row.
#include "attention_cuda.h"
#include "elem_io.cuh"

namespace ringattn {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kRowsPerBlock = kThreads / 32;

// Row r of the [B, S, H] row space -> (b, s, h).
struct RowIndex {
  int64_t b, s, h;
};
__device__ __forceinline__ RowIndex row_index(int64_t r, int64_t s, int64_t h) {
  return RowIndex{r / (s * h), (r / h) % s, r % h};
}

__global__ void delta_kernel(int64_t rows, int64_t s, int64_t h, int d, TensorArg dout,
                             DType dout_dt, TensorArg o, DType o_dt, RowStatArg delta) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= rows) return;
  const RowIndex ix = row_index(r, s, h);
  const int64_t doff = ix.b * dout.sb + ix.s * dout.ss + ix.h * dout.sh;
  const int64_t ooff = ix.b * o.sb + ix.s * o.ss + ix.h * o.sh;
  float acc = 0.0f;
  for (int i = lane; i < d; i += 32) {
    acc = fmaf(load_elem(dout.data, dout_dt, doff + i), load_elem(o.data, o_dt, ooff + i), acc);
  }
  acc = warp_sum(acc);
  if (lane == 0) delta.data[ix.b * delta.sb + ix.h * delta.sh + ix.s] = acc;
}

__global__ void merge_kernel(int64_t rows, int64_t s, int64_t h, int d, TensorArg o1,
                             RowStatArg lse1, TensorArg o2, DType o2_dt, RowStatArg lse2) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= rows) return;
  const RowIndex ix = row_index(r, s, h);
  float* l1 = lse1.data + ix.b * lse1.sb + ix.h * lse1.sh + ix.s;
  const float l2 = lse2.data[ix.b * lse2.sb + ix.h * lse2.sh + ix.s];
  const MergeWeights w = merge_weights(*l1, l2, neg_inf());
  __syncwarp();  // every lane has read lse1 before lane 0 rewrites it
  float* a = static_cast<float*>(o1.data) + ix.b * o1.sb + ix.s * o1.ss + ix.h * o1.sh;
  const int64_t coff = ix.b * o2.sb + ix.s * o2.ss + ix.h * o2.sh;
  for (int i = lane; i < d; i += 32) {
    // Written this way (not w1*a + w2*c) so a hidden side (weight 0) never turns inf/NaN
    // garbage into NaN: an empty partial may hold anything.
    const float x = w.w1 == 0.0f ? 0.0f : w.w1 * a[i];
    const float y = w.w2 == 0.0f ? 0.0f : w.w2 * load_elem(o2.data, o2_dt, coff + i);
    a[i] = x + y;
  }
  if (lane == 0) *l1 = w.lse;
}

// dst = src (cast), or with kAdd dst (float32) += src.
template <bool kAdd>
__global__ void convert_kernel(int64_t rows, int64_t s, int64_t h, int d, TensorArg src,
                               DType src_dt, TensorArg dst, DType dst_dt) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= rows) return;
  const RowIndex ix = row_index(r, s, h);
  const int64_t doff = ix.b * dst.sb + ix.s * dst.ss + ix.h * dst.sh;
  const int64_t soff = ix.b * src.sb + ix.s * src.ss + ix.h * src.sh;
  for (int i = lane; i < d; i += 32) {
    const float v = src.data != nullptr ? load_elem(src.data, src_dt, soff + i) : 0.0f;
    if (kAdd) {
      static_cast<float*>(dst.data)[doff + i] += v;
    } else {
      store_elem(dst.data, dst_dt, doff + i, v);
    }
  }
}

__global__ void fill_kernel(int64_t n, int64_t h, int64_t s, RowStatArg dst, float value) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int64_t b = i / (h * s), hh = (i / s) % h, ss = i % s;
  dst.data[b * dst.sb + hh * dst.sh + ss] = value;
}

unsigned row_blocks(int64_t rows) {
  return static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock);
}

}  // namespace

cudaError_t compute_delta(int64_t batch, int64_t s, int64_t h, int64_t d, const TensorRef& dout,
                          const TensorRef& o, const RowStatRef& delta, cudaStream_t stream) {
  const int64_t rows = batch * s * h;
  if (rows == 0) return cudaSuccess;
  delta_kernel<<<row_blocks(rows), kThreads, 0, stream>>>(
      rows, s, h, static_cast<int>(d), tensor_arg(dout), dout.dtype, tensor_arg(o), o.dtype,
      rowstat_arg(delta));
  return cudaGetLastError();
}

cudaError_t merge_partial(int64_t batch, int64_t s, int64_t h, int64_t d, const TensorRef& o1,
                          const RowStatRef& lse1, const TensorRef& o2, const RowStatRef& lse2,
                          cudaStream_t stream) {
  const int64_t rows = batch * s * h;
  if (rows == 0) return cudaSuccess;
  merge_kernel<<<row_blocks(rows), kThreads, 0, stream>>>(
      rows, s, h, static_cast<int>(d), tensor_arg(o1), rowstat_arg(lse1), tensor_arg(o2), o2.dtype,
      rowstat_arg(lse2));
  return cudaGetLastError();
}

namespace {

template <bool kAdd>
cudaError_t launch_convert(int64_t batch, int64_t s, int64_t h, int64_t d, const TensorRef& src,
                           const TensorRef& dst, cudaStream_t stream) {
  const int64_t rows = batch * s * h;
  if (rows == 0) return cudaSuccess;
  convert_kernel<kAdd><<<row_blocks(rows), kThreads, 0, stream>>>(
      rows, s, h, static_cast<int>(d), tensor_arg(src), src.dtype, tensor_arg(dst), dst.dtype);
  return cudaGetLastError();
}

}  // namespace

cudaError_t convert(int64_t batch, int64_t s, int64_t h, int64_t d, const TensorRef& src,
                    const TensorRef& dst, cudaStream_t stream) {
  return launch_convert<false>(batch, s, h, d, src, dst, stream);
}

cudaError_t accumulate(int64_t batch, int64_t s, int64_t h, int64_t d, const TensorRef& src,
                       const TensorRef& dst, cudaStream_t stream) {
  return launch_convert<true>(batch, s, h, d, src, dst, stream);
}

cudaError_t fill_rowstat(int64_t batch, int64_t h, int64_t s, const RowStatRef& dst, float value,
                         cudaStream_t stream) {
  const int64_t n = batch * h * s;
  if (n == 0) return cudaSuccess;
  fill_kernel<<<static_cast<unsigned>((n + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
      n, h, s, rowstat_arg(dst), value);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace ringattn
