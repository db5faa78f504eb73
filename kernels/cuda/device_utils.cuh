// Device building blocks of the tensor-core kernels: the mma.sync m16n8k16 instruction, ldmatrix,
// cp.async and the 16-bit element types. Inline PTX (sm_80+), no CUTLASS dependency.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "tiling.h"

namespace ringattn {
namespace cuda {

// 16-bit element traits: the PTX type name of mma and the float conversions.
template <typename T>
struct Elem;

template <>
struct Elem<__half> {
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
    const __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&h);
  }
  static __device__ __forceinline__ float2 unpack(uint32_t v) {
    return __half22float2(*reinterpret_cast<const __half2*>(&v));
  }
  static __device__ __forceinline__ void mma(float* c, const uint32_t* a, const uint32_t* b) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
};

template <>
struct Elem<__nv_bfloat16> {
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&h);
  }
  static __device__ __forceinline__ float2 unpack(uint32_t v) {
    return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&v));
  }
  static __device__ __forceinline__ void mma(float* c, const uint32_t* a, const uint32_t* b) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
};

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t* r, uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t* r, uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// 16-byte global -> shared copy; src_bytes = 0 zero-fills the destination (rows past the end).
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Load a [rows][D] tile of 16-bit elements (global row r at base + r * stride) into swizzled
// shared memory with cp.async; rows >= valid are zero-filled.
template <int kRows, int kD, int kThreads>
__device__ __forceinline__ void load_tile_async(uint16_t* smem, const uint16_t* base,
                                                int64_t stride, int valid, int tid) {
  constexpr int kChunks = kD / 8;
  static_assert(kThreads % kChunks == 0 && (kRows * kChunks) % kThreads == 0,
                "tile chunks must divide among threads");
  // Each thread copies one fixed chunk column of rows r0, r0 + kStep, ...: one base pointer and
  // one shared offset per thread, stepped by constants, so nothing per copy stays live in
  // registers across the main loop (the accumulators need them all).
  constexpr int kStep = kThreads / kChunks;
  const int c = tid % kChunks, r0 = tid / kChunks;
  const uint16_t* src = base + r0 * stride + c * 8;
  const int64_t src_step = kStep * stride;
  if (valid >= kRows) {  // a whole tile (uniform over the CTA): no per-row bound
#pragma unroll
    for (int i = 0; i < kRows / kStep; ++i) {
      cp_async_16(smem_addr(smem + swizzle_offset(r0 + i * kStep, c, kD)), src, 16);
      src += src_step;
    }
    return;
  }
#pragma unroll
  for (int i = 0; i < kRows / kStep; ++i) {
    const int r = r0 + i * kStep;
    const bool ok = r < valid;
    cp_async_16(smem_addr(smem + swizzle_offset(r, c, kD)), ok ? src : base, ok ? 16 : 0);
    src += src_step;
  }
}

__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// 2^x on the special-function unit (ex2.approx: 2 ulp, flushes denormals, -inf -> 0). The
// softmax needs no more: its result is rounded to 16 bits for the P V product anyway.
__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

}  // namespace cuda
}  // namespace ringattn
