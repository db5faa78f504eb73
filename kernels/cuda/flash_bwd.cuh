// Fused attention backward on tensor cores (fp16/bf16 in, float32 accumulation), deterministic:
// no float atomics. Two kernels recompute P tile by tile from the forward's LSE:
//  - dK/dV: one CTA per (key tile, kv head, batch) holds its K/V tile in shared memory and walks
//    over the query tiles of every query head of its GQA group (a fixed order, so the group sum
//    is reproducible); each warp owns 16 key rows and computes S^T = K Q^T and dP^T = V dO^T
//    directly, so P^T and dS^T feed dV += P^T dO and dK += dS^T Q from registers.
//  - dQ: one CTA per (query tile, head, batch) walks over key tiles: dQ += dS K.
// (Q, dO) and (K, V) tiles are double buffered with cp.async. Included only by the generated
// per-(dtype, head dim) instantiation files.
#pragma once

#include <cuda_runtime.h>

#include "device_utils.cuh"
#include "flash_config.h"
#include "kernel_params.h"

namespace ringattn {
namespace cuda {

constexpr float kLog2e = 1.4426950408889634f;

// LSE in log2 units for exp2; rows that see no key (or lie past the end) get +inf so that
// exp2(s - lse2) is 0 rather than NaN.
__device__ __forceinline__ float lse_log2(const float* lse, int64_t row, int64_t rows) {
  if (row >= rows) return __int_as_float(0x7f800000);
  const float l = lse[row];
  return l == neg_inf() ? __int_as_float(0x7f800000) : l * kLog2e;
}

// Writes a 16-row float32 accumulator slab (rows row0 + lane/4 (+8), columns 8*db + 2*(lane%4))
// scaled by `mul`: added into float32 when accumulating, else stored in the gradient's dtype.
template <typename T, int kDB>
__device__ __forceinline__ void store_grad_rows(const float (&acc)[kDB][4], float mul,
                                                const TensorArg& g, DType g_dtype, bool accumulate,
                                                int64_t b, int64_t h, int64_t row0, int64_t rows,
                                                int lane) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t row = row0 + (lane >> 2) + 8 * r;
    if (row >= rows) continue;
    const int64_t off = b * g.sb + row * g.ss + h * g.sh + (lane & 3) * 2;
    if (accumulate || g_dtype == kF32) {
      float* o = static_cast<float*>(g.data) + off;
#pragma unroll
      for (int db = 0; db < kDB; ++db) {
        float2 v = make_float2(acc[db][2 * r] * mul, acc[db][2 * r + 1] * mul);
        if (accumulate) {
          const float2 prev = *reinterpret_cast<const float2*>(o + db * 8);
          v.x += prev.x;
          v.y += prev.y;
        }
        *reinterpret_cast<float2*>(o + db * 8) = v;
      }
    } else {
      uint16_t* o = static_cast<uint16_t*>(g.data) + off;
#pragma unroll
      for (int db = 0; db < kDB; ++db) {
        *reinterpret_cast<uint32_t*>(o + db * 8) =
            Elem<T>::pack(acc[db][2 * r] * mul, acc[db][2 * r + 1] * mul);
      }
    }
  }
}

// Sets masked entries of a 16 x (8 * kNB) score slab to -inf. Rows are `row_map` rows
// row0 + lane/4 (+8); columns are `col_map` rows col0 + 8*nb + 2*(lane%4) (+1).
template <int kNB>
__device__ __forceinline__ void mask_slab(float (&acc)[kNB][4], const MaskSpec& mask,
                                          const PosMap& row_map, int64_t row0, int64_t rows,
                                          const PosMap& col_map, int64_t col0, int64_t cols,
                                          bool rows_are_queries, int lane) {
  const RowLocator rl = make_locator(row_map), cl = make_locator(col_map);
  int64_t rs[2], rp[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t row = row0 + (lane >> 2) + 8 * r;
    rs[r] = -2;
    rp[r] = 0;
    if (row < rows) locate(rl, row, &rs[r], &rp[r]);
  }
#pragma unroll
  for (int nb = 0; nb < kNB; ++nb) {
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      const int64_t col = col0 + nb * 8 + (lane & 3) * 2 + c;
      int64_t cs = -3, cp = 0;
      if (col < cols) locate(cl, col, &cs, &cp);
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const bool vis = rows_are_queries ? mask_visible(mask, rs[r], rp[r], cs, cp)
                                          : mask_visible(mask, cs, cp, rs[r], rp[r]);
        if (!vis) acc[nb][2 * r + c] = neg_inf();
      }
    }
  }
}

// acc[16 x 8*kNB] += A[16 rows of sA from row a_row0] * B^T, B = kNB*8 rows of sB (both [.][kD]
// swizzled): the "rows . rows" product (S = Q K^T and its relatives). Addresses: one per-lane row
// base and chunk offset per operand, stepped over k by XOR (tiling.h, swizzle_chunk_step); the
// 16-row blocks of B are immediate offsets (a multiple of 8 rows keeps the swizzle).
template <typename T, int kD, int kNB>
__device__ __forceinline__ void mma_rows_rows(float (&acc)[kNB][4], const uint16_t* sA, int a_row0,
                                              const uint16_t* sB, int lane) {
  const int a_row = a_row0 + (lane & 15), b_row = (lane >> 4) * 8 + (lane & 7);
  const uint32_t a_base = smem_addr(sA) + static_cast<uint32_t>(a_row * kD * 2);
  const uint32_t b_base = smem_addr(sB) + static_cast<uint32_t>(b_row * kD * 2);
  const uint32_t a_chunk = swizzle_chunk_bytes(a_row, lane >> 4);
  const uint32_t b_chunk = swizzle_chunk_bytes(b_row, (lane >> 3) & 1);
#pragma unroll
  for (int kk = 0; kk < kD / 16; ++kk) {
    uint32_t a[4];
    ldmatrix_x4(a, a_base + (a_chunk ^ swizzle_chunk_step(kk)));
    const uint32_t b_k = b_base + (b_chunk ^ swizzle_chunk_step(kk));
#pragma unroll
    for (int nb = 0; nb < kNB; nb += 2) {
      uint32_t bf[4];
      ldmatrix_x4(bf, b_k + static_cast<uint32_t>(nb * 8 * kD * 2));
      Elem<T>::mma(acc[nb], a, bf);
      Elem<T>::mma(acc[nb + 1], a, bf + 2);
    }
  }
}

// acc[16 x kD] += X[16 x 8*kNB] (float registers, rounded to T) * B, B = the 8*kNB rows of sB
// ([.][kD] swizzled) taken as a (8*kNB) x kD matrix: the "probabilities . rows" product. The
// chunk pair db steps by XOR, the 16-row blocks kk are immediate offsets.
template <typename T, int kD, int kNB>
__device__ __forceinline__ void mma_regs_rows(float (&acc)[kD / 8][4], const float (&x)[kNB][4],
                                              const uint16_t* sB, int lane) {
  const int b_row = ((lane >> 3) & 1) * 8 + (lane & 7);
  const uint32_t b_base = smem_addr(sB) + static_cast<uint32_t>(b_row * kD * 2);
  const uint32_t b_chunk = swizzle_chunk_bytes(b_row, lane >> 4);
#pragma unroll
  for (int kk = 0; kk < kNB / 2; ++kk) {
    uint32_t a[4];
    a[0] = Elem<T>::pack(x[2 * kk][0], x[2 * kk][1]);
    a[1] = Elem<T>::pack(x[2 * kk][2], x[2 * kk][3]);
    a[2] = Elem<T>::pack(x[2 * kk + 1][0], x[2 * kk + 1][1]);
    a[3] = Elem<T>::pack(x[2 * kk + 1][2], x[2 * kk + 1][3]);
#pragma unroll
    for (int db = 0; db < kD / 8; db += 2) {
      uint32_t bf[4];
      ldmatrix_x4_trans(bf, b_base + static_cast<uint32_t>(kk * 16 * kD * 2) +
                                (b_chunk ^ swizzle_chunk_step(db / 2)));
      Elem<T>::mma(acc[db], a, bf);
      Elem<T>::mma(acc[db + 1], a, bf + 2);
    }
  }
}

template <int N, int M>
__device__ __forceinline__ void zero(float (&acc)[N][M]) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
#pragma unroll
    for (int e = 0; e < M; ++e) acc[i][e] = 0.0f;
  }
}

// kPass: 0 computes dK and dV, 1 only dV, 2 only dK.
template <typename T, int kD, int kBM, int kBN, int kWarps, int kPass>
__global__ void __launch_bounds__(kWarps * 32)
    flash_bwd_dkdv_kernel(const __grid_constant__ BwdKernelParams p) {
  constexpr int kThreads = kWarps * 32;
  constexpr int kNBq = kBM / 8;
  constexpr int kDB = kD / 8;
  constexpr bool kWantDv = kPass != 2, kWantDk = kPass != 1;
  static_assert(kBN == 16 * kWarps, "one 16-row key slab per warp");

  extern __shared__ __align__(128) uint16_t smem[];
  uint16_t* sK = smem;
  uint16_t* sV = sK + kBN * kD;
  uint16_t* sQ = sV + kBN * kD;                                // [2][kBM][kD]
  uint16_t* sdO = sQ + 2 * kBM * kD;                           // [2][kBM][kD]
  float* sLse = reinterpret_cast<float*>(sdO + 2 * kBM * kD);  // [2][kBM]
  float* sDelta = sLse + 2 * kBM;                              // [2][kBM]

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int hk = blockIdx.y, b = blockIdx.z;
  const int64_t k0 = static_cast<int64_t>(blockIdx.x) * kBN;
  const int k_valid = static_cast<int>(p.sk - k0 < kBN ? p.sk - k0 : kBN);
  const int64_t num_q = ceil_div(p.sq, kBM);
  const PosMap qmap = inline_view(p.qmap), kmap = inline_view(p.kmap);

  load_tile_async<kBN, kD, kThreads>(
      sK, static_cast<const uint16_t*>(p.k.data) + b * p.k.sb + k0 * p.k.ss + hk * p.k.sh, p.k.ss,
      k_valid, tid);
  load_tile_async<kBN, kD, kThreads>(
      sV, static_cast<const uint16_t*>(p.v.data) + b * p.v.sb + k0 * p.v.ss + hk * p.v.sh, p.v.ss,
      k_valid, tid);

  // (Q, dO, LSE, Delta) of query tile i of head h into stage st.
  auto load_stage = [&](int st, int h, int64_t i) {
    const int64_t q0 = i * kBM;
    const int q_valid = static_cast<int>(p.sq - q0 < kBM ? p.sq - q0 : kBM);
    load_tile_async<kBM, kD, kThreads>(
        sQ + st * kBM * kD,
        static_cast<const uint16_t*>(p.q.data) + b * p.q.sb + q0 * p.q.ss + h * p.q.sh, p.q.ss,
        q_valid, tid);
    load_tile_async<kBM, kD, kThreads>(
        sdO + st * kBM * kD,
        static_cast<const uint16_t*>(p.dout.data) + b * p.dout.sb + q0 * p.dout.ss + h * p.dout.sh,
        p.dout.ss, q_valid, tid);
    const float* lse = p.lse.data + b * p.lse.sb + h * p.lse.sh + q0;
    const float* delta = p.delta.data + b * p.delta.sb + h * p.delta.sh + q0;
    static_assert(kBM <= kThreads, "one thread per row of LSE and Delta");
    if (tid < kBM) {
      sLse[st * kBM + tid] = lse_log2(lse, tid, q_valid);
      sDelta[st * kBM + tid] = tid < q_valid ? delta[tid] : 0.0f;
    }
  };

  const TileRange kr =
      k_valid > 0 ? tile_range(kmap, k0, k_valid) : TileRange{-1, true, 0, -1, true};
  const bool k_ragged = k_valid < kBN;
  int hh = 0;
  // The key tile's walk over query tiles lives in shared memory (registers are scarce).
  __shared__ TileWalk s_walk;
  TileClass cls;
  int64_t i;
  {
    const TileWalk walk = query_tile_walk(p.mask, kr, k_ragged, qmap, p.sq, kBM);
    if (tid == 0) s_walk = walk;
    i = next_visible_query_tile(p.mask, qmap, p.sq, kBM, kr, k_ragged, 0, walk, &cls);
  }
  const int64_t first_i = i;
  const TileClass first_cls = cls;
  if (i < num_q) load_stage(0, hk * p.group, i);
  cp_async_commit();
  __syncthreads();  // s_walk is visible to the loop's first walk

  float acc_dv[kWantDv ? kDB : 1][4], acc_dk[kWantDk ? kDB : 1][4];
  zero(acc_dv);
  zero(acc_dk);
  const int slab = warp * 16;
  int st = 0;

  while (i < num_q) {
    // The next (head, query tile), prefetched into the other stage.
    int hn = hh;
    TileClass cls_next;
    int64_t in =
        next_visible_query_tile(p.mask, qmap, p.sq, kBM, kr, k_ragged, i + 1, s_walk, &cls_next);
    if (in >= num_q && hh + 1 < p.group) {
      hn = hh + 1;
      in = first_i;
      cls_next = first_cls;
    }
    if (in < num_q) load_stage(st ^ 1, hk * p.group + hn, in);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();

    const uint16_t* cQ = sQ + st * kBM * kD;
    const uint16_t* cdO = sdO + st * kBM * kD;
    const float* cLse = sLse + st * kBM;
    const float* cDelta = sDelta + st * kBM;
    const int64_t q0 = i * kBM;

    float acc_s[kNBq][4];
    zero(acc_s);
    mma_rows_rows<T, kD, kNBq>(acc_s, sK, slab, cQ, lane);
    if (cls == kTilePartial) {
      mask_slab<kNBq>(acc_s, p.mask, kmap, k0 + slab, p.sk, qmap, q0, p.sq, false, lane);
    }
#pragma unroll
    for (int nb = 0; nb < kNBq; ++nb) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int col = nb * 8 + (lane & 3) * 2 + (e & 1);
        acc_s[nb][e] = exp2_approx(acc_s[nb][e] * p.scale_log2 - cLse[col]);
      }
    }
    if constexpr (kWantDv) mma_regs_rows<T, kD, kNBq>(acc_dv, acc_s, cdO, lane);
    if constexpr (kWantDk) {
      float acc_dp[kNBq][4];
      zero(acc_dp);
      mma_rows_rows<T, kD, kNBq>(acc_dp, sV, slab, cdO, lane);
#pragma unroll
      for (int nb = 0; nb < kNBq; ++nb) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int col = nb * 8 + (lane & 3) * 2 + (e & 1);
          acc_dp[nb][e] = acc_s[nb][e] * (acc_dp[nb][e] - cDelta[col]);
        }
      }
      mma_regs_rows<T, kD, kNBq>(acc_dk, acc_dp, cQ, lane);
    }
    __syncthreads();  // stage st is free for the prefetch two iterations on
    st ^= 1;
    hh = hn;
    i = in;
    cls = cls_next;
  }
  cp_async_wait<0>();

  if constexpr (kWantDv) {
    store_grad_rows<T, kDB>(acc_dv, 1.0f, p.dv, p.dv_dtype, p.accumulate, b, hk, k0 + slab, p.sk,
                            lane);
  }
  if constexpr (kWantDk) {
    store_grad_rows<T, kDB>(acc_dk, p.scale, p.dk, p.dk_dtype, p.accumulate, b, hk, k0 + slab, p.sk,
                            lane);
  }
}

template <typename T, int kD, int kBM, int kBN, int kWarps>
__global__ void __launch_bounds__(kWarps * 32)
    flash_bwd_dq_kernel(const __grid_constant__ BwdKernelParams p) {
  constexpr int kThreads = kWarps * 32;
  constexpr int kNB = kBN / 8;
  constexpr int kDB = kD / 8;
  static_assert(kBM == 16 * kWarps, "one 16-row query slab per warp");

  extern __shared__ __align__(128) uint16_t smem[];
  uint16_t* sQ = smem;
  uint16_t* sdO = sQ + kBM * kD;
  uint16_t* sK = sdO + kBM * kD;     // [2][kBN][kD]
  uint16_t* sV = sK + 2 * kBN * kD;  // [2][kBN][kD]

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int64_t num_m = ceil_div(p.sq, kBM);
  const int64_t m_blk = num_m - 1 - blockIdx.x;
  const int h = blockIdx.y, b = blockIdx.z, hk = h / p.group;
  const int64_t q0 = m_blk * kBM;
  const int q_valid = static_cast<int>(p.sq - q0 < kBM ? p.sq - q0 : kBM);
  const int64_t num_k = ceil_div(p.sk, kBN);
  const PosMap qmap = inline_view(p.qmap), kmap = inline_view(p.kmap);
  const uint16_t* gK =
      static_cast<const uint16_t*>(p.k.data) + b * p.k.sb + static_cast<int64_t>(hk) * p.k.sh;
  const uint16_t* gV =
      static_cast<const uint16_t*>(p.v.data) + b * p.v.sb + static_cast<int64_t>(hk) * p.v.sh;

  load_tile_async<kBM, kD, kThreads>(
      sQ, static_cast<const uint16_t*>(p.q.data) + b * p.q.sb + q0 * p.q.ss + h * p.q.sh, p.q.ss,
      q_valid, tid);
  load_tile_async<kBM, kD, kThreads>(
      sdO,
      static_cast<const uint16_t*>(p.dout.data) + b * p.dout.sb + q0 * p.dout.ss + h * p.dout.sh,
      p.dout.ss, q_valid, tid);
  auto load_stage = [&](int st, int64_t j) {
    const int64_t k0 = j * kBN;
    const int kv = static_cast<int>(p.sk - k0 < kBN ? p.sk - k0 : kBN);
    load_tile_async<kBN, kD, kThreads>(sK + st * kBN * kD, gK + k0 * p.k.ss, p.k.ss, kv, tid);
    load_tile_async<kBN, kD, kThreads>(sV + st * kBN * kD, gV + k0 * p.v.ss, p.v.ss, kv, tid);
  };
  const TileRange qr = query_tile_range(qmap, p.sq, q0, kBM);
  __shared__ TileWalk s_walk;  // the query tile's walk over key tiles (registers are scarce)
  TileClass cls;
  int64_t j;
  {
    const TileWalk walk = key_tile_walk(p.mask, qr, kmap, p.sk, kBN);
    if (tid == 0) s_walk = walk;
    j = next_visible_key_tile(p.mask, qr, kmap, p.sk, kBN, 0, walk, &cls);
  }
  if (j < num_k) load_stage(0, j);
  cp_async_commit();
  __syncthreads();  // s_walk is visible to the loop's first walk

  const int slab = warp * 16;
  float lse2[2], dlt[2];
  {
    const float* lse = p.lse.data + b * p.lse.sb + static_cast<int64_t>(h) * p.lse.sh + q0;
    const float* delta = p.delta.data + b * p.delta.sb + static_cast<int64_t>(h) * p.delta.sh + q0;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int t = slab + (lane >> 2) + 8 * r;
      lse2[r] = lse_log2(lse, t, q_valid);
      dlt[r] = t < q_valid ? delta[t] : 0.0f;
    }
  }

  float acc_dq[kDB][4];
  zero(acc_dq);
  int st = 0;
  while (j < num_k) {
    TileClass cls_next;
    const int64_t jn = next_visible_key_tile(p.mask, qr, kmap, p.sk, kBN, j + 1, s_walk, &cls_next);
    if (jn < num_k) load_stage(st ^ 1, jn);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();

    const uint16_t* cK = sK + st * kBN * kD;
    const uint16_t* cV = sV + st * kBN * kD;
    const int64_t k0 = j * kBN;
    float acc_s[kNB][4];
    zero(acc_s);
    mma_rows_rows<T, kD, kNB>(acc_s, sQ, slab, cK, lane);
    if (cls == kTilePartial) {
      mask_slab<kNB>(acc_s, p.mask, qmap, q0 + slab, p.sq, kmap, k0, p.sk, true, lane);
    }
    float acc_dp[kNB][4];
    zero(acc_dp);
    mma_rows_rows<T, kD, kNB>(acc_dp, sdO, slab, cV, lane);
#pragma unroll
    for (int nb = 0; nb < kNB; ++nb) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e >> 1;
        const float pr = exp2_approx(acc_s[nb][e] * p.scale_log2 - lse2[r]);
        acc_s[nb][e] = pr * (acc_dp[nb][e] - dlt[r]);
      }
    }
    mma_regs_rows<T, kD, kNB>(acc_dq, acc_s, cK, lane);
    __syncthreads();
    st ^= 1;
    j = jn;
    cls = cls_next;
  }
  cp_async_wait<0>();
  store_grad_rows<T, kDB>(acc_dq, p.scale, p.dq, p.dq_dtype, p.accumulate, b, h, q0 + slab, p.sq,
                          lane);
}

template <typename Kernel>
cudaError_t launch_with_smem(Kernel kernel, dim3 grid, int threads, size_t smem,
                             const BwdKernelParams& p, cudaStream_t stream) {
  cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  if (err != cudaSuccess) return err;
  kernel<<<grid, threads, smem, stream>>>(p);
  return cudaGetLastError();
}

template <typename T, int kD>
cudaError_t launch_flash_bwd(const BwdKernelParams& p, cudaStream_t stream) {
  using Kv = BwdKvTileConfig<kD>;
  using Qc = BwdQTileConfig<kD>;
  const dim3 kv_grid(static_cast<unsigned>(ceil_div(p.sk, Kv::kBN)), static_cast<unsigned>(p.hkv),
                     static_cast<unsigned>(p.batch));
  const size_t kv_smem = bwd_kv_smem_bytes<kD>();
  cudaError_t err;
  if constexpr (Kv::kSplit) {
    err = launch_with_smem(flash_bwd_dkdv_kernel<T, kD, Kv::kBM, Kv::kBN, Kv::kWarps, 1>, kv_grid,
                           Kv::kWarps * 32, kv_smem, p, stream);
    if (err != cudaSuccess) return err;
    err = launch_with_smem(flash_bwd_dkdv_kernel<T, kD, Kv::kBM, Kv::kBN, Kv::kWarps, 2>, kv_grid,
                           Kv::kWarps * 32, kv_smem, p, stream);
  } else {
    err = launch_with_smem(flash_bwd_dkdv_kernel<T, kD, Kv::kBM, Kv::kBN, Kv::kWarps, 0>, kv_grid,
                           Kv::kWarps * 32, kv_smem, p, stream);
  }
  if (err != cudaSuccess) return err;
  const dim3 q_grid(static_cast<unsigned>(ceil_div(p.sq, Qc::kBM)), static_cast<unsigned>(p.hq),
                    static_cast<unsigned>(p.batch));
  return launch_with_smem(flash_bwd_dq_kernel<T, kD, Qc::kBM, Qc::kBN, Qc::kWarps>, q_grid,
                          Qc::kWarps * 32, bwd_q_smem_bytes<kD>(), p, stream);
}

}  // namespace cuda
}  // namespace ringattn
