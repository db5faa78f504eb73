// The generic attention path: float32 inputs, head dims without a tensor-core instantiation
// (any multiple of 8 up to 256), and tensors whose alignment the tensor-core loads cannot take.
// One warp per output row, float32 arithmetic throughout; simple rather than fast, but exact in
// its masks, skips and output modes so that every call the backend accepts is served correctly.
#include "attention_cuda.h"
#include "elem_io.cuh"
#include "kernel_params.h"

namespace ringattn {
namespace cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kMaxD = 256;
constexpr int kPerLane = kMaxD / 32;
constexpr int kChunk = 32;  // keys (or queries) per step: one per lane

template <typename T>
__device__ float dot_row(const float* a, const T* row, int d) {
  float acc = 0.0f;
  for (int i = 0; i < d; ++i) acc = fmaf(a[i], to_float(row[i]), acc);
  return acc;
}

template <typename T>
__global__ void __launch_bounds__(kWarps * 32)
    generic_fwd_kernel(const __grid_constant__ FwdKernelParams p) {
  __shared__ float s_q[kWarps][kMaxD];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  const int h = blockIdx.y, b = blockIdx.z, hk = h / p.group;
  if (row >= p.sq) return;  // whole warp; no block-wide barrier follows
  const T* q = static_cast<const T*>(p.q.data) + b * p.q.sb + row * p.q.ss + h * p.q.sh;
  for (int d = lane; d < p.d; d += 32) s_q[warp][d] = to_float(q[d]);
  __syncwarp();
  const PosMap qmap = inline_view(p.qmap), kmap = inline_view(p.kmap);
  int64_t qs, qp;
  posmap_lookup(qmap, row, &qs, &qp);
  const T* kb = static_cast<const T*>(p.k.data) + b * p.k.sb + static_cast<int64_t>(hk) * p.k.sh;
  const T* vb = static_cast<const T*>(p.v.data) + b * p.v.sb + static_cast<int64_t>(hk) * p.v.sh;

  float o[kPerLane];
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) o[i] = 0.0f;
  float m = neg_inf(), l = 0.0f;
  for (int64_t k0 = 0; k0 < p.sk; k0 += kChunk) {
    if (classify_block(p.mask, qmap, p.sq, row, 1, kmap, p.sk, k0, kChunk) == kTileHidden) {
      continue;
    }
    const int64_t key = k0 + lane;
    float s = neg_inf();
    if (key < p.sk) {
      int64_t ks, kp;
      posmap_lookup(kmap, key, &ks, &kp);
      if (mask_visible(p.mask, qs, qp, ks, kp)) {
        s = dot_row(s_q[warp], kb + key * p.k.ss, p.d) * p.scale;
      }
    }
    // A NaN score makes the row NaN (never an empty row): its sum becomes NaN.
    if (__any_sync(0xffffffffu, !(s == s))) l = __int_as_float(0x7fc00000);
    const float cm = warp_max(s);
    if (cm == neg_inf()) continue;
    const float mn = fmaxf(m, cm);
    const float alpha = expf(m - mn);
    const float pr = expf(s - mn);
    l = l * alpha + warp_sum(pr);
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) o[i] *= alpha;
    const int n = static_cast<int>(p.sk - k0 < kChunk ? p.sk - k0 : kChunk);
    for (int jj = 0; jj < n; ++jj) {
      const float pj = __shfl_sync(0xffffffffu, pr, jj);
      if (pj == 0.0f) continue;
      const T* vr = vb + (k0 + jj) * p.v.ss;
#pragma unroll
      for (int i = 0; i < kPerLane; ++i) {
        const int d = lane + 32 * i;
        if (d < p.d) o[i] = fmaf(pj, to_float(vr[d]), o[i]);
      }
    }
    m = mn;
  }

  // l = 0: the row saw no key. A NaN l (a NaN or +inf score) gives NaN O and LSE.
  const float inv = l == 0.0f ? 0.0f : 1.0f / l;
  const float lse = l == 0.0f ? neg_inf() : m + logf(l);
  const int64_t o_off = b * p.o.sb + row * p.o.ss + static_cast<int64_t>(h) * p.o.sh;
  float* lse_ptr = p.lse.data != nullptr
                       ? p.lse.data + b * p.lse.sb + static_cast<int64_t>(h) * p.lse.sh + row
                       : nullptr;
  if (p.out_mode == kOutMergeF32) {
    const float old = *lse_ptr;
    __syncwarp();  // all lanes read the old LSE before lane 0 rewrites it
    const MergeWeights w = merge_weights(old, lse, neg_inf());
    float* out = static_cast<float*>(p.o.data) + o_off;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int d = lane + 32 * i;
      if (d < p.d) out[d] = w.w1 * out[d] + w.w2 * o[i] * inv;
    }
    if (lane == 0) *lse_ptr = w.lse;
    return;
  }
  const DType odt = p.out_mode == kOutFinal ? p.o_dtype : kF32;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int d = lane + 32 * i;
    if (d < p.d) store_elem(p.o.data, odt, o_off + d, o[i] * inv);
  }
  if (lse_ptr != nullptr && lane == 0) *lse_ptr = lse;
}

__device__ void store_grad(const TensorArg& g, DType dt, bool accumulate, int64_t off, int d,
                           float v) {
  if (accumulate) {
    static_cast<float*>(g.data)[off + d] += v;
  } else {
    store_elem(g.data, dt, off + d, v);
  }
}

template <typename T>
__global__ void __launch_bounds__(kWarps * 32)
    generic_bwd_dq_kernel(const __grid_constant__ BwdKernelParams p) {
  __shared__ float s_q[kWarps][kMaxD], s_do[kWarps][kMaxD];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  const int h = blockIdx.y, b = blockIdx.z, hk = h / p.group;
  if (row >= p.sq) return;
  const T* q = static_cast<const T*>(p.q.data) + b * p.q.sb + row * p.q.ss + h * p.q.sh;
  const T* dout =
      static_cast<const T*>(p.dout.data) + b * p.dout.sb + row * p.dout.ss + h * p.dout.sh;
  for (int d = lane; d < p.d; d += 32) {
    s_q[warp][d] = to_float(q[d]);
    s_do[warp][d] = to_float(dout[d]);
  }
  __syncwarp();
  const float lse = p.lse.data[b * p.lse.sb + static_cast<int64_t>(h) * p.lse.sh + row];
  const float delta = p.delta.data[b * p.delta.sb + static_cast<int64_t>(h) * p.delta.sh + row];
  const PosMap qmap = inline_view(p.qmap), kmap = inline_view(p.kmap);
  int64_t qs, qp;
  posmap_lookup(qmap, row, &qs, &qp);
  const T* kb = static_cast<const T*>(p.k.data) + b * p.k.sb + static_cast<int64_t>(hk) * p.k.sh;
  const T* vb = static_cast<const T*>(p.v.data) + b * p.v.sb + static_cast<int64_t>(hk) * p.v.sh;

  float dq[kPerLane];
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) dq[i] = 0.0f;
  // A row that sees no key has LSE -inf and no gradient.
  for (int64_t k0 = 0; lse != neg_inf() && k0 < p.sk; k0 += kChunk) {
    if (classify_block(p.mask, qmap, p.sq, row, 1, kmap, p.sk, k0, kChunk) == kTileHidden) {
      continue;
    }
    const int64_t key = k0 + lane;
    float ds = 0.0f;
    if (key < p.sk) {
      int64_t ks, kp;
      posmap_lookup(kmap, key, &ks, &kp);
      if (mask_visible(p.mask, qs, qp, ks, kp)) {
        const float s = dot_row(s_q[warp], kb + key * p.k.ss, p.d) * p.scale;
        const float pr = expf(s - lse);
        const float dp = dot_row(s_do[warp], vb + key * p.v.ss, p.d);
        ds = pr * (dp - delta);
      }
    }
    const int n = static_cast<int>(p.sk - k0 < kChunk ? p.sk - k0 : kChunk);
    for (int jj = 0; jj < n; ++jj) {
      const float dsj = __shfl_sync(0xffffffffu, ds, jj);
      if (dsj == 0.0f) continue;
      const T* kr = kb + (k0 + jj) * p.k.ss;
#pragma unroll
      for (int i = 0; i < kPerLane; ++i) {
        const int d = lane + 32 * i;
        if (d < p.d) dq[i] = fmaf(dsj, to_float(kr[d]), dq[i]);
      }
    }
  }
  const int64_t off = b * p.dq.sb + row * p.dq.ss + static_cast<int64_t>(h) * p.dq.sh;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int d = lane + 32 * i;
    if (d < p.d) store_grad(p.dq, p.dq_dtype, p.accumulate, off, d, dq[i] * p.scale);
  }
}

// One warp per key row; the GQA group's query heads are summed in a fixed order.
template <typename T>
__global__ void __launch_bounds__(kWarps * 32)
    generic_bwd_dkdv_kernel(const __grid_constant__ BwdKernelParams p) {
  __shared__ float s_k[kWarps][kMaxD], s_v[kWarps][kMaxD];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t key = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  const int hk = blockIdx.y, b = blockIdx.z;
  if (key >= p.sk) return;
  const T* k = static_cast<const T*>(p.k.data) + b * p.k.sb + key * p.k.ss + hk * p.k.sh;
  const T* v = static_cast<const T*>(p.v.data) + b * p.v.sb + key * p.v.ss + hk * p.v.sh;
  for (int d = lane; d < p.d; d += 32) {
    s_k[warp][d] = to_float(k[d]);
    s_v[warp][d] = to_float(v[d]);
  }
  __syncwarp();
  const PosMap qmap = inline_view(p.qmap), kmap = inline_view(p.kmap);
  int64_t ks, kp;
  posmap_lookup(kmap, key, &ks, &kp);

  float dk[kPerLane], dv[kPerLane];
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) dk[i] = dv[i] = 0.0f;
  for (int g = 0; g < p.group; ++g) {
    const int64_t h = static_cast<int64_t>(hk) * p.group + g;
    const T* qb = static_cast<const T*>(p.q.data) + b * p.q.sb + h * p.q.sh;
    const T* ob = static_cast<const T*>(p.dout.data) + b * p.dout.sb + h * p.dout.sh;
    const float* lse = p.lse.data + b * p.lse.sb + h * p.lse.sh;
    const float* delta = p.delta.data + b * p.delta.sb + h * p.delta.sh;
    for (int64_t q0 = 0; q0 < p.sq; q0 += kChunk) {
      if (classify_block(p.mask, qmap, p.sq, q0, kChunk, kmap, p.sk, key, 1) == kTileHidden) {
        continue;
      }
      const int64_t qi = q0 + lane;
      float pr = 0.0f, ds = 0.0f;
      if (qi < p.sq) {
        int64_t qs, qp;
        posmap_lookup(qmap, qi, &qs, &qp);
        if (mask_visible(p.mask, qs, qp, ks, kp)) {
          const float s = dot_row(s_k[warp], qb + qi * p.q.ss, p.d) * p.scale;
          pr = expf(s - lse[qi]);
          const float dp = dot_row(s_v[warp], ob + qi * p.dout.ss, p.d);
          ds = pr * (dp - delta[qi]);
        }
      }
      const int n = static_cast<int>(p.sq - q0 < kChunk ? p.sq - q0 : kChunk);
      for (int jj = 0; jj < n; ++jj) {
        const float pj = __shfl_sync(0xffffffffu, pr, jj);
        const float dsj = __shfl_sync(0xffffffffu, ds, jj);
        if (pj == 0.0f && dsj == 0.0f) continue;
        const T* qr = qb + (q0 + jj) * p.q.ss;
        const T* orow = ob + (q0 + jj) * p.dout.ss;
#pragma unroll
        for (int i = 0; i < kPerLane; ++i) {
          const int d = lane + 32 * i;
          if (d < p.d) {
            dv[i] = fmaf(pj, to_float(orow[d]), dv[i]);
            dk[i] = fmaf(dsj, to_float(qr[d]), dk[i]);
          }
        }
      }
    }
  }
  const int64_t koff = b * p.dk.sb + key * p.dk.ss + static_cast<int64_t>(hk) * p.dk.sh;
  const int64_t voff = b * p.dv.sb + key * p.dv.ss + static_cast<int64_t>(hk) * p.dv.sh;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int d = lane + 32 * i;
    if (d < p.d) {
      store_grad(p.dk, p.dk_dtype, p.accumulate, koff, d, dk[i] * p.scale);
      store_grad(p.dv, p.dv_dtype, p.accumulate, voff, d, dv[i]);
    }
  }
}

template <typename T>
cudaError_t launch_generic_fwd(const FwdKernelParams& p, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(ceil_div(p.sq, kWarps)), static_cast<unsigned>(p.hq),
                  static_cast<unsigned>(p.batch));
  generic_fwd_kernel<T><<<grid, kWarps * 32, 0, stream>>>(p);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_generic_bwd(const BwdKernelParams& p, cudaStream_t stream) {
  const dim3 kv_grid(static_cast<unsigned>(ceil_div(p.sk, kWarps)), static_cast<unsigned>(p.hkv),
                     static_cast<unsigned>(p.batch));
  if (p.sk > 0) {
    generic_bwd_dkdv_kernel<T><<<kv_grid, kWarps * 32, 0, stream>>>(p);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  if (p.sq == 0) return cudaSuccess;
  const dim3 q_grid(static_cast<unsigned>(ceil_div(p.sq, kWarps)), static_cast<unsigned>(p.hq),
                    static_cast<unsigned>(p.batch));
  generic_bwd_dq_kernel<T><<<q_grid, kWarps * 32, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

cudaError_t generic_forward(const FwdKernelParams& p, cudaStream_t stream) {
  switch (p.in_dtype) {
    case kF32:
      return launch_generic_fwd<float>(p, stream);
    case kF16:
      return launch_generic_fwd<__half>(p, stream);
    default:
      return launch_generic_fwd<__nv_bfloat16>(p, stream);
  }
}

cudaError_t generic_backward(const BwdKernelParams& p, cudaStream_t stream) {
  switch (p.in_dtype) {
    case kF32:
      return launch_generic_bwd<float>(p, stream);
    case kF16:
      return launch_generic_bwd<__half>(p, stream);
    default:
      return launch_generic_bwd<__nv_bfloat16>(p, stream);
  }
}

}  // namespace cuda
}  // namespace ringattn
