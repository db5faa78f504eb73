// Fused attention forward on tensor cores (fp16/bf16 in, float32 accumulation), FlashAttention-2
// style: one CTA per (query tile, head, batch); each warp owns 16 * kMT query rows; K and V tiles
// stream through shared memory with cp.async, the load of V_j overlapping S = Q K_j^T and the load
// of the next visible K tile overlapping the softmax and O += P V_j; online softmax in registers.
// Included only by the generated per-(dtype, head dim) instantiation files.
#pragma once

#include <cuda_runtime.h>

#include "device_utils.cuh"
#include "flash_config.h"
#include "kernel_params.h"
#include "online_softmax.h"

namespace ringattn {
namespace cuda {

template <typename T, int kD, int kBM, int kBN, int kWarps>
__global__ void __launch_bounds__(kWarps * 32)
    flash_fwd_kernel(const __grid_constant__ FwdKernelParams p) {
  constexpr int kThreads = kWarps * 32;
  constexpr int kMT = kBM / (16 * kWarps);  // m16 row tiles per warp
  constexpr int kNB = kBN / 8;              // n8 column blocks of S
  constexpr int kDB = kD / 8;               // n8 column blocks of O
  static_assert(kMT >= 1 && kBM == kMT * 16 * kWarps, "kBM must be 16 * kWarps * kMT");
  static_assert(kD % 64 == 0 && kBN % 16 == 0, "tile shape");

  extern __shared__ __align__(128) uint16_t smem[];
  uint16_t* sQ = smem;
  uint16_t* sK = sQ + kBM * kD;
  uint16_t* sV = sK + kBN * kD;

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int64_t num_m = ceil_div(p.sq, kBM);
  const int64_t m_blk = num_m - 1 - blockIdx.x;  // late (causally heavy) tiles start first
  const int h = blockIdx.y, b = blockIdx.z, hk = h / p.group;
  const int64_t q0 = m_blk * kBM;
  const int64_t num_k = ceil_div(p.sk, kBN);
  const PosMap qmap = inline_view(p.qmap), kmap = inline_view(p.kmap);

  const uint16_t* gQ = static_cast<const uint16_t*>(p.q.data) + b * p.q.sb + q0 * p.q.ss +
                       static_cast<int64_t>(h) * p.q.sh;
  const uint16_t* gK =
      static_cast<const uint16_t*>(p.k.data) + b * p.k.sb + static_cast<int64_t>(hk) * p.k.sh;
  const uint16_t* gV =
      static_cast<const uint16_t*>(p.v.data) + b * p.v.sb + static_cast<int64_t>(hk) * p.v.sh;

  const int q_valid = static_cast<int>(p.sq - q0 < kBM ? p.sq - q0 : kBM);
  load_tile_async<kBM, kD, kThreads>(sQ, gQ, p.q.ss, q_valid, tid);
  // The query tile's summary and its walk over key tiles live in shared memory, not in registers
  // (all are taken by the accumulators); the first read follows the loop's first barrier.
  __shared__ TileRange s_qr;
  __shared__ TileWalk s_walk;
  TileClass cls;
  int64_t j;
  {
    const TileRange qr = query_tile_range(qmap, p.sq, q0, kBM);
    const TileWalk walk = key_tile_walk(p.mask, qr, kmap, p.sk, kBN);
    if (tid == 0) {
      s_qr = qr;
      s_walk = walk;
    }
    j = next_visible_key_tile(p.mask, qr, kmap, p.sk, kBN, 0, walk, &cls);
  }
  if (j < num_k) {
    const int64_t k0 = j * kBN;
    load_tile_async<kBN, kD, kThreads>(sK, gK + k0 * p.k.ss, p.k.ss,
                                       static_cast<int>(p.sk - k0 < kBN ? p.sk - k0 : kBN), tid);
  }
  cp_async_commit();

  float acc_o[kMT][kDB][4];
  float row_m[kMT][2], row_l[kMT][2];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
    for (int db = 0; db < kDB; ++db) {
#pragma unroll
      for (int e = 0; e < 4; ++e) acc_o[mt][db][e] = 0.0f;
    }
    row_m[mt][0] = row_m[mt][1] = neg_inf();
    row_l[mt][0] = row_l[mt][1] = 0.0f;
  }
  const float sl2 = p.scale_log2;
  const int warp_row0 = warp * kMT * 16;

  // Two barriers per key tile. The first makes K_j visible and frees sV (every warp is past
  // the previous P V); V_j then loads while S = Q K_j^T runs. The second makes V_j visible and
  // frees sK; the next visible K tile then loads during the softmax and O += P V_j.
  while (j < num_k) {
    const int64_t k0 = j * kBN;
    const int k_valid = static_cast<int>(p.sk - k0 < kBN ? p.sk - k0 : kBN);
    cp_async_wait<0>();  // Q and K_j have landed
    __syncthreads();
    load_tile_async<kBN, kD, kThreads>(sV, gV + k0 * p.v.ss, p.v.ss, k_valid, tid);
    cp_async_commit();

    float acc_s[kMT][kNB][4];
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
      for (int nb = 0; nb < kNB; ++nb) {
#pragma unroll
        for (int e = 0; e < 4; ++e) acc_s[mt][nb][e] = 0.0f;
      }
    }
    // ldmatrix addresses of Q and K: a per-lane row base and chunk offset per operand, stepped
    // over kk by XOR (tiling.h, swizzle_chunk_step); blocks of 16 rows are immediate offsets.
    // (The V addresses below are loop-invariant and the compiler keeps them; counted with
    // scripts/kernel_sass.sh, the XOR form there costs more than it saves at D = 256.)
    const int q_row = warp_row0 + (lane & 15), k_row = (lane >> 4) * 8 + (lane & 7);
    const uint32_t q_base = smem_addr(sQ) + static_cast<uint32_t>(q_row * kD * 2);
    const uint32_t k_base = smem_addr(sK) + static_cast<uint32_t>(k_row * kD * 2);
    const uint32_t q_chunk = swizzle_chunk_bytes(q_row, lane >> 4);
    const uint32_t k_chunk = swizzle_chunk_bytes(k_row, (lane >> 3) & 1);
#pragma unroll
    for (int kk = 0; kk < kD / 16; ++kk) {
      uint32_t a[kMT][4];
      const uint32_t q_k = q_base + (q_chunk ^ swizzle_chunk_step(kk));
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        ldmatrix_x4(a[mt], q_k + static_cast<uint32_t>(mt * 16 * kD * 2));
      }
      const uint32_t k_k = k_base + (k_chunk ^ swizzle_chunk_step(kk));
#pragma unroll
      for (int nb = 0; nb < kNB; nb += 2) {
        uint32_t bf[4];
        ldmatrix_x4(bf, k_k + static_cast<uint32_t>(nb * 8 * kD * 2));
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          Elem<T>::mma(acc_s[mt][nb], a[mt], bf);
          Elem<T>::mma(acc_s[mt][nb + 1], a[mt], bf + 2);
        }
      }
    }

    // Full tiles skip this; hidden tiles never got here.
    if (cls == kTilePartial) {
      // Positions are looked up here rather than kept live across the loop: registers are
      // the scarce resource of this kernel and partial tiles are few (the mask's boundary).
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int64_t row = q0 + warp_row0 + mt * 16 + (lane >> 2) + 8 * r;
          int64_t qs, qp;
          posmap_lookup(qmap, row < p.sq ? row : 0, &qs, &qp);
#pragma unroll
          for (int nb = 0; nb < kNB; ++nb) {
#pragma unroll
            for (int c = 0; c < 2; ++c) {
              const int64_t col = k0 + nb * 8 + (lane & 3) * 2 + c;
              int64_t ks = -1, kp = 0;
              if (col < p.sk) posmap_lookup(kmap, col, &ks, &kp);
              if (col >= p.sk || !mask_visible(p.mask, qs, qp, ks, kp)) {
                acc_s[mt][nb][2 * r + c] = neg_inf();
              }
            }
          }
        }
      }
    }

    cp_async_wait<0>();  // V_j has landed
    __syncthreads();     // ... for every thread, and every warp is done with sK
    TileClass cls_next;
    const int64_t jn =
        next_visible_key_tile(p.mask, s_qr, kmap, p.sk, kBN, j + 1, s_walk, &cls_next);
    if (jn < num_k) {
      const int64_t kn0 = jn * kBN;
      load_tile_async<kBN, kD, kThreads>(sK, gK + kn0 * p.k.ss, p.k.ss,
                                         static_cast<int>(p.sk - kn0 < kBN ? p.sk - kn0 : kBN),
                                         tid);
    }
    cp_async_commit();

    // Online softmax: rows live in quads (4 lanes), raw scores in acc_s, max in raw units. Each
    // row's reference max moves only when some row of the warp needs it to (online_softmax.h);
    // otherwise the rescale of the output accumulator is skipped.
    float tile_max[kMT][2];
    bool grow = false;
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float mx = row_m[mt][r];
#pragma unroll
        for (int nb = 0; nb < kNB; ++nb) {
          mx = fmaxf(mx, fmaxf(acc_s[mt][nb][2 * r], acc_s[mt][nb][2 * r + 1]));
        }
        tile_max[mt][r] = quad_max(mx);
        grow = grow || softmax_must_rescale(row_m[mt][r], tile_max[mt][r], sl2);
      }
    }
    if (__any_sync(0xffffffffu, grow)) {
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const float mx = tile_max[mt][r];
          // -inf stays -inf (nothing visible yet): alpha is then 0 and the row stays empty.
          const float alpha = exp2_approx(row_m[mt][r] * sl2 - (mx == neg_inf() ? 0.0f : mx * sl2));
          row_m[mt][r] = mx;
          row_l[mt][r] *= alpha;
#pragma unroll
          for (int db = 0; db < kDB; ++db) {
            acc_o[mt][db][2 * r] *= alpha;
            acc_o[mt][db][2 * r + 1] *= alpha;
          }
        }
      }
    }
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        // A row with nothing visible yet keeps max -inf; subtracting 0 keeps exp2 at 0, not NaN.
        const float m_scaled = row_m[mt][r] == neg_inf() ? 0.0f : row_m[mt][r] * sl2;
        float sum = 0.0f;
#pragma unroll
        for (int nb = 0; nb < kNB; ++nb) {
#pragma unroll
          for (int c = 0; c < 2; ++c) {
            const float e = exp2_approx(fmaf(acc_s[mt][nb][2 * r + c], sl2, -m_scaled));
            acc_s[mt][nb][2 * r + c] = e;
            sum += e;
          }
        }
        row_l[mt][r] += sum;
      }
    }

#pragma unroll
    for (int kk = 0; kk < kBN / 16; ++kk) {
      uint32_t a[kMT][4];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        a[mt][0] = Elem<T>::pack(acc_s[mt][2 * kk][0], acc_s[mt][2 * kk][1]);
        a[mt][1] = Elem<T>::pack(acc_s[mt][2 * kk][2], acc_s[mt][2 * kk][3]);
        a[mt][2] = Elem<T>::pack(acc_s[mt][2 * kk + 1][0], acc_s[mt][2 * kk + 1][1]);
        a[mt][3] = Elem<T>::pack(acc_s[mt][2 * kk + 1][2], acc_s[mt][2 * kk + 1][3]);
      }
#pragma unroll
      for (int db = 0; db < kDB; db += 2) {
        uint32_t bf[4];
        const int key = kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7);
        ldmatrix_x4_trans(bf, smem_addr(sV + swizzle_offset(key, db + (lane >> 4), kD)));
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          Elem<T>::mma(acc_o[mt][db], a[mt], bf);
          Elem<T>::mma(acc_o[mt][db + 1], a[mt], bf + 2);
        }
      }
    }
    j = jn;
    cls = cls_next;
  }
  cp_async_wait<0>();

  // Epilogue: normalize, then write O and LSE as the output mode asks.
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float l = quad_sum(row_l[mt][r]);
      // l = 0: the row saw no key. A NaN l (a NaN or +inf score) gives NaN O and LSE.
      const float inv = l == 0.0f ? 0.0f : 1.0f / l;
      const float lse = l == 0.0f ? neg_inf() : row_m[mt][r] * p.scale + logf(l);
      const int64_t row = q0 + warp_row0 + mt * 16 + (lane >> 2) + 8 * r;
      const bool in = row < p.sq;
      float* lse_ptr = p.lse.data != nullptr && in
                           ? p.lse.data + b * p.lse.sb + static_cast<int64_t>(h) * p.lse.sh + row
                           : nullptr;
      const int64_t o_off =
          b * p.o.sb + row * p.o.ss + static_cast<int64_t>(h) * p.o.sh + (lane & 3) * 2;
      if (p.out_mode == kOutFinal) {
        if (in) {
          uint16_t* o = static_cast<uint16_t*>(p.o.data) + o_off;
#pragma unroll
          for (int db = 0; db < kDB; ++db) {
            *reinterpret_cast<uint32_t*>(o + db * 8) =
                Elem<T>::pack(acc_o[mt][db][2 * r] * inv, acc_o[mt][db][2 * r + 1] * inv);
          }
        }
        if (lse_ptr != nullptr && (lane & 3) == 0) *lse_ptr = lse;
      } else if (p.out_mode == kOutPartialF32) {
        if (in) {
          float* o = static_cast<float*>(p.o.data) + o_off;
#pragma unroll
          for (int db = 0; db < kDB; ++db) {
            *reinterpret_cast<float2*>(o + db * 8) =
                make_float2(acc_o[mt][db][2 * r] * inv, acc_o[mt][db][2 * r + 1] * inv);
          }
        }
        if (lse_ptr != nullptr && (lane & 3) == 0) *lse_ptr = lse;
      } else {  // kOutMergeF32: (O, LSE) already hold a partial result
        const float old_lse = lse_ptr != nullptr ? *lse_ptr : neg_inf();
        __syncwarp();  // every lane of the quad has read the old LSE before lane 0 rewrites it
        if (in) {
          const MergeWeights w = merge_weights(old_lse, lse, neg_inf());
          float* o = static_cast<float*>(p.o.data) + o_off;
#pragma unroll
          for (int db = 0; db < kDB; ++db) {
            const float2 prev = *reinterpret_cast<const float2*>(o + db * 8);
            *reinterpret_cast<float2*>(o + db * 8) =
                make_float2(w.w1 * prev.x + w.w2 * acc_o[mt][db][2 * r] * inv,
                            w.w1 * prev.y + w.w2 * acc_o[mt][db][2 * r + 1] * inv);
          }
          if ((lane & 3) == 0) *lse_ptr = w.lse;
        }
      }
    }
  }
}

template <typename T, int kD>
cudaError_t launch_flash_fwd(const FwdKernelParams& p, cudaStream_t stream) {
  using Cfg = FwdTileConfig<kD>;
  auto kernel = flash_fwd_kernel<T, kD, Cfg::kBM, Cfg::kBN, Cfg::kWarps>;
  const size_t smem = fwd_smem_bytes<kD>();
  cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  if (err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned>(ceil_div(p.sq, Cfg::kBM)), static_cast<unsigned>(p.hq),
                  static_cast<unsigned>(p.batch));
  kernel<<<grid, Cfg::kWarps * 32, smem, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace ringattn
