// Fused blocked forward with online softmax (FlashAttention-style) on the host.
//
// Per call: K is packed once into float32 transposed tiles [D x kBlockK] and V into float32 rows
// (both O(S) memory), which also converts f16/bf16 inputs once instead of once per query tile.
// Then every (batch, query head, query tile) is an independent work item: it streams over the key
// tiles, skipping hidden ones, with S = Q K^T and O += P V on libxsmm tile GEMMs and float32
// accumulation; only full tiles skip the per-element mask.
#include <math.h>
#include <omp.h>

#include "attention_cpu.h"
#include "dtype_row.h"
#include "merge_row.h"
#include "scratch.h"
#include "softmax_tile.h"
#include "tile_gemm.h"
#include "tile_index.h"

namespace ringattn {
namespace cpu {
namespace {

// Tile sizes, chosen by measurement with ringattn_kernel_bench (fp32, D = 128, one thread,
// S = 2048, H = 1; forward GFLOP/s, best of 10, single-core FMA peak ~92 GFLOP/s on the 2-core
// Zen 3 VM, measured while the machine was quiet):
//   (kBlockQ, kBlockK) = (128, 64): 70.4, 70.5   (128, 128): 67.4, 64.6   (256, 64): 69.3
//   (128, 32): 64.8   (64, 64): 56.7   (128, 64) with 64-wide GEMM chunks: 70.6
// (earlier runs under interference ranked them the same way: (32, 128) 44.7, (64, 128) 55.0).
// A taller query tile reuses each packed K^T/V tile for more rows; 128 x 64 keeps Q, O, S and the
// K/V tiles (64 + 64 + 32 + 32 + 32 KiB) inside the 512 KiB L2.
constexpr int64_t kBlockQ = 128;
constexpr int64_t kBlockK = 64;

struct PackedKV {
  const float* kt;  // [B, Hkv, nkt, D, kBlockK]
  const float* v;   // [B, Hkv, Sk, D]
};

int64_t key_tiles(const FwdParams& p) { return (p.sk + kBlockK - 1) / kBlockK; }

// Float counts of the packed K^T tiles and V rows.
int64_t packed_kt_floats(const FwdParams& p) {
  return p.batch * p.hkv * key_tiles(p) * p.d * kBlockK;
}
int64_t packed_v_floats(const FwdParams& p) { return p.batch * p.hkv * p.sk * p.d; }

// Packs K and V into `kt` and `v` (the layouts of PackedKV).
// K rows are converted into a float32 block and transposed into the tile by libxsmm's
// transposition (a scalar transpose costs more than the conversion: each key row touches d cache
// lines of the tile).
void pack_kv_into(const FwdParams& p, float* kt, float* v) {
  const int64_t d = p.d, nkt = key_tiles(p);
  const int64_t items = p.batch * p.hkv * nkt;
#pragma omp parallel for schedule(static)
  for (int64_t it = 0; it < items; ++it) {
    const int64_t t = it % nkt, bh = it / nkt, b = bh / p.hkv, h = bh % p.hkv;
    const int64_t k0 = t * kBlockK;
    const int64_t cols = p.sk - k0 < kBlockK ? p.sk - k0 : kBlockK;
    float* rows = thread_scratch(kSlotTileA).get<float>(static_cast<size_t>(kBlockK * d));
    for (int64_t j = 0; j < cols; ++j) {
      load_row(p.k.dtype, tensor_row(p.k, b, k0 + j, h), d, 1.0f, rows + j * d);
      load_row(p.v.dtype, tensor_row(p.v, b, k0 + j, h), d, 1.0f, v + (bh * p.sk + k0 + j) * d);
    }
    transpose(rows, cols, d, d, kt + it * d * kBlockK, kBlockK);
  }
}

// The call's packed K/V: the caller's (FwdParams::key_pack), or packed now into scratch.
PackedKV packed_kv(const FwdParams& p) {
  if (p.key_pack != nullptr) {
    const float* kt = static_cast<const float*>(p.key_pack);
    return PackedKV{kt, kt + packed_kt_floats(p)};
  }
  float* kt = thread_scratch(kSlotPackA).get<float>(static_cast<size_t>(packed_kt_floats(p)));
  float* v = thread_scratch(kSlotPackB).get<float>(static_cast<size_t>(packed_v_floats(p)));
  pack_kv_into(p, kt, v);
  return PackedKV{kt, v};
}

void write_rows(const FwdParams& p, int64_t b, int64_t h, int64_t q0, int64_t rows,
                const float* acc, const float* m, const float* l) {
  const int64_t d = p.d;
  for (int64_t i = 0; i < rows; ++i) {
    const bool empty = l[i] == 0.0f;  // the row saw no key
    const float mul = empty ? 0.0f : 1.0f / l[i];
    const float lse = empty ? -INFINITY : m[i] + logf(l[i]);
    const float* a = acc + i * d;
    if (p.out_mode == kOutMergeF32) {
      merge_row(static_cast<float*>(tensor_row(p.o, b, q0 + i, h)),
                rowstat_ptr(p.lse, b, h, q0 + i), a, mul, lse, d);
      continue;
    }
    store_row(p.o.dtype, a, d, mul, tensor_row(p.o, b, q0 + i, h));
    if (p.lse.data != nullptr) *rowstat_ptr(p.lse, b, h, q0 + i) = lse;
  }
}

}  // namespace

size_t forward_key_pack_bytes(const FwdParams& p) {
  if (p.batch <= 0 || p.sk <= 0 || p.hkv <= 0) return 0;
  return sizeof(float) * static_cast<size_t>(packed_kt_floats(p) + packed_v_floats(p));
}

void pack_forward_keys(const FwdParams& p, void* pack) {
  if (forward_key_pack_bytes(p) == 0) return;
  reserve_thread_scratch({{kSlotTileA, sizeof(float) * kBlockK * p.d}}, omp_get_max_threads());
  float* kt = static_cast<float*>(pack);
  pack_kv_into(p, kt, kt + packed_kt_floats(p));
}

void attention_forward(const FwdParams& p) {
  if (p.batch <= 0 || p.sq <= 0 || p.hq <= 0) return;
  const int64_t d = p.d;
  const TileIndex qix = make_tile_index(p.q_pos, p.sq, kBlockQ, kSlotQPos);
  const TileIndex kix = make_tile_index(p.k_pos, p.sk, kBlockK, kSlotKPos);
  const int64_t nqt = qix.ntiles, nkt = kix.ntiles;
  reserve_thread_scratch({{kSlotTileA, sizeof(float) * kBlockQ * d},
                          {kSlotTileB, sizeof(float) * kBlockQ * d},
                          {kSlotTileC, sizeof(float) * kBlockQ * kBlockK},
                          {kSlotTileD, sizeof(float) * 2 * kBlockQ}},
                         omp_get_max_threads());
  const PackedKV kv = nkt > 0 ? packed_kv(p) : PackedKV{nullptr, nullptr};
  const int64_t group = p.hq / p.hkv;
  const int64_t lanes = simd_lanes();
  const int64_t items = p.batch * p.hq * nqt;

#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t it = 0; it < items; ++it) {
    // Later query tiles first: under a causal mask they see the most keys, and starting them
    // early keeps the last threads from finishing alone.
    const int64_t qt = nqt - 1 - it % nqt, bh = it / nqt, b = bh / p.hq, h = bh % p.hq;
    const int64_t hk = h / group;
    const int64_t q0 = qt * kBlockQ;
    const int64_t rows = qix.tile_rows(qt);
    // A tile that sees no key of this call leaves the partial result it would merge into as it
    // is (a ring step's call covers rows that see none of its block).
    if (p.out_mode == kOutMergeF32) {
      bool any = false;
      for (int64_t kt = 0; kt < nkt && !any; ++kt) {
        any = classify_tile(p.mask, qix.ranges[qt], kix.ranges[kt]) != kTileHidden;
      }
      if (!any) continue;
    }
    float* qs = thread_scratch(kSlotTileA).get<float>(static_cast<size_t>(kBlockQ * d));
    float* acc = thread_scratch(kSlotTileB).get<float>(static_cast<size_t>(kBlockQ * d));
    float* s = thread_scratch(kSlotTileC).get<float>(static_cast<size_t>(kBlockQ * kBlockK));
    float* ml = thread_scratch(kSlotTileD).get<float>(static_cast<size_t>(2 * kBlockQ));
    float* m = ml;
    float* l = ml + kBlockQ;
    // The softmax scale is folded into Q once per tile.
    for (int64_t i = 0; i < rows; ++i) {
      load_row(p.q.dtype, tensor_row(p.q, b, q0 + i, h), d, p.scale, qs + i * d);
      m[i] = -INFINITY;
      l[i] = 0.0f;
    }
    for (int64_t i = 0; i < rows * d; ++i) acc[i] = 0.0f;

    for (int64_t kt = 0; kt < nkt; ++kt) {
      const TileClass cls = classify_tile(p.mask, qix.ranges[qt], kix.ranges[kt]);
      if (cls == kTileHidden) continue;
      const int64_t k0 = kt * kBlockK;
      const int64_t cols = kix.tile_rows(kt);
      const int64_t cols_pad = (cols + lanes - 1) / lanes * lanes;
      const float* kt_tile = kv.kt + ((b * p.hkv + hk) * nkt + kt) * d * kBlockK;
      const float* v_tile = kv.v + ((b * p.hkv + hk) * p.sk + k0) * d;
      gemm_nn(rows, cols, d, qs, d, kt_tile, kBlockK, s, kBlockK, false);
      for (int64_t i = 0; i < rows; ++i) {
        float* srow = s + i * kBlockK;
        for (int64_t j = cols; j < cols_pad; ++j) srow[j] = -INFINITY;
        if (cls == kTilePartial) {
          const int64_t qseq = qix.seq[q0 + i], qpos = qix.pos[q0 + i];
          for (int64_t j = 0; j < cols; ++j) {
            if (!mask_visible(p.mask, qseq, qpos, kix.seq[k0 + j], kix.pos[k0 + j]))
              srow[j] = -INFINITY;
          }
        }
        const float alpha = online_softmax_row(srow, cols_pad, m + i, l + i);
        if (alpha != 1.0f) scale_row(acc + i * d, d, alpha);
      }
      gemm_nn(rows, d, cols, s, kBlockK, v_tile, d, acc, d, true);
    }
    write_rows(p, b, h, q0, rows, acc, m, l);
  }
}

}  // namespace cpu
}  // namespace ringattn
