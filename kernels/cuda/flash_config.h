// Tile shapes of the tensor-core kernels per head dim, and the shared memory they need. One place
// for the kernels, their launchers and the CPU tests of the tile arithmetic.
#pragma once

#include <stddef.h>

namespace ringattn {
namespace cuda {

// Forward: kBM query rows per CTA (16 * kMT rows per warp), kBN keys per K/V tile.
// D <= 128 uses 32 rows per warp so each K/V fragment read from shared memory feeds two MMAs;
// D = 256 drops to 16 rows per warp to keep the 16 x 256 float32 accumulator in registers.
template <int D>
struct FwdTileConfig {
  static constexpr int kWarps = 4;
  static constexpr int kBM = D <= 128 ? 128 : 64;
  static constexpr int kBN = 64;
};

// Backward, dK/dV pass: one CTA per key tile of kBN rows (16 per warp) walks over query tiles of
// kBM rows. D = 256 computes dV and dK in two passes so one 16 x 256 accumulator fits in
// registers; the other head dims compute both at once.
template <int D>
struct BwdKvTileConfig {
  static constexpr int kWarps = 4;
  static constexpr int kBN = 64;
  static constexpr int kBM = D <= 128 ? 64 : 32;
  static constexpr bool kSplit = D > 128;
};

// Backward, dQ pass: one CTA per query tile of kBM rows (16 per warp) walks over key tiles.
template <int D>
struct BwdQTileConfig {
  static constexpr int kWarps = 4;
  static constexpr int kBM = 64;
  static constexpr int kBN = D <= 128 ? 64 : 32;
};

constexpr size_t kElemBytes = 2;  // fp16 / bf16

// Q tile + one K tile + one V tile.
constexpr size_t fwd_smem_bytes_for(int bm, int bn, int d) {
  return (static_cast<size_t>(bm) + 2 * static_cast<size_t>(bn)) * d * kElemBytes;
}
template <int D>
constexpr size_t fwd_smem_bytes() {
  return fwd_smem_bytes_for(FwdTileConfig<D>::kBM, FwdTileConfig<D>::kBN, D);
}

// K, V tiles (resident) + two stages of (Q, dO) tiles + two stages of (LSE, Delta) rows.
constexpr size_t bwd_kv_smem_bytes_for(int bm, int bn, int d) {
  return 2 * static_cast<size_t>(bn) * d * kElemBytes +
         2 * 2 * static_cast<size_t>(bm) * d * kElemBytes + 2 * 2 * static_cast<size_t>(bm) * 4;
}
template <int D>
constexpr size_t bwd_kv_smem_bytes() {
  return bwd_kv_smem_bytes_for(BwdKvTileConfig<D>::kBM, BwdKvTileConfig<D>::kBN, D);
}

// Q, dO tiles (resident) + two stages of (K, V) tiles.
constexpr size_t bwd_q_smem_bytes_for(int bm, int bn, int d) {
  return 2 * static_cast<size_t>(bm) * d * kElemBytes +
         2 * 2 * static_cast<size_t>(bn) * d * kElemBytes;
}
template <int D>
constexpr size_t bwd_q_smem_bytes() {
  return bwd_q_smem_bytes_for(BwdQTileConfig<D>::kBM, BwdQTileConfig<D>::kBN, D);
}

// Largest dynamic shared memory a block may use on sm_80 (163 KB); every config must fit it so
// one binary serves sm_80 and sm_90.
constexpr size_t kMaxSmemSm80 = 163 * 1024;

static_assert(fwd_smem_bytes<256>() <= kMaxSmemSm80, "fwd D=256 tiles exceed sm_80 smem");
static_assert(bwd_kv_smem_bytes<256>() <= kMaxSmemSm80, "bwd dK/dV D=256 tiles exceed sm_80 smem");
static_assert(bwd_q_smem_bytes<256>() <= kMaxSmemSm80, "bwd dQ D=256 tiles exceed sm_80 smem");

}  // namespace cuda
}  // namespace ringattn
