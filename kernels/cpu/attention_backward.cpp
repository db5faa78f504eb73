// Backward of the fused attention on the host: recompute P tile by tile from the full-attention
// LSE, then dV += P^T dO, dS = scale P (dP - Delta), dK += dS^T Q, dQ += dS K.
//
// Work is split per (batch, kv head) group: the group's Q, dO (float32 rows and transposed tiles)
// and K, V (float32 rows) are packed once, then each key tile is one work item that owns its dK/dV
// rows (summed over the query heads of the GQA group), so dK/dV need no synchronization. dQ rows
// receive contributions from every key tile: each thread adds into its own float32 dQ buffer and
// the buffers are summed in thread order afterwards; one thread adding into float32 dQ (the ring's
// accumulator) adds its products straight into it instead, so that a call touching few query rows
// costs nothing for the others. Key tiles are dealt to threads statically, so the result is
// bitwise reproducible for a fixed thread count. Calls that share their query rows (the ring's key
// chunks and steps) can take the query side packed once for all groups (pack_backward_queries), by
// the same routine, so their results are bitwise those of unpacked calls.
//
// Tiles are computed transposed (key rows x query columns): S^T = K Q^T puts the query index on
// the vector lanes, where LSE and Delta are per-lane loads, and makes dV += P^T dO and
// dK += dS^T Q plain NN GEMMs; only dS is transposed (once per tile) for dQ += dS K.
#include <math.h>
#include <omp.h>
#include <string.h>

#include <vector>

#include "attention_cpu.h"
#include "dtype_row.h"
#include "scratch.h"
#include "softmax_tile.h"
#include "tile_gemm.h"
#include "tile_index.h"

namespace ringattn {
namespace cpu {
namespace {

// Tile sizes, chosen by measurement with ringattn_kernel_bench (fp32, D = 128, one thread,
// S = 1024, H = 1-2; backward GFLOP/s, best of 15, single-core FMA peak ~92 GFLOP/s; the shared
// machine moves single runs by +-10%, so each pair was measured two or three times):
//   (kBlockQ, kBlockK) = (64, 64): 60.2, 55.3, 71.0   (64, 128): 73.1, 65.1, 67.1
//   (128, 64): 47.1   (128, 128): 52.3   (32, 128): 55.5, 52.3   (64, 256): 53.6, 65.6
// A key tile of 128 rows halves the passes over Q/dO per key row; 64 query columns keep the
// transposed score tiles (2 x 32 KiB) and the dK/dV accumulators (2 x 64 KiB) in L2.
constexpr int64_t kBlockQ = 64;
constexpr int64_t kBlockK = 128;

// floats, so that every part of a pack starts on a 64-byte boundary.
inline int64_t up16(int64_t n) { return (n + 15) / 16 * 16; }

inline int64_t num_q_tiles(int64_t sq) { return (sq + kBlockQ - 1) / kBlockQ; }

// The query-side operands of one (batch, kv head) group. F is float while packing and const
// float while computing.
template <typename F>
struct QueryPack {
  F* q;      // [G, Sq, D]
  F* dout;   // [G, Sq, D]
  F* qt;     // [G, nqt, D, kBlockQ]
  F* dot;    // [G, nqt, D, kBlockQ]
  F* lse;    // [G, nqt * kBlockQ]: LSE, +inf where the row sees no key (P = 0)
  F* delta;  // [G, nqt * kBlockQ]
};

inline int64_t query_pack_floats(int64_t g, int64_t sq, int64_t nqt, int64_t d) {
  return 2 * up16(g * sq * d) + 2 * up16(g * nqt * d * kBlockQ) + 2 * up16(g * nqt * kBlockQ);
}

template <typename F>
QueryPack<F> carve_query_pack(F* at, int64_t g, int64_t sq, int64_t nqt, int64_t d) {
  QueryPack<F> p;
  p.q = at, at += up16(g * sq * d);
  p.dout = at, at += up16(g * sq * d);
  p.qt = at, at += up16(g * nqt * d * kBlockQ);
  p.dot = at, at += up16(g * nqt * d * kBlockQ);
  p.lse = at, at += up16(g * nqt * kBlockQ);
  p.delta = at;
  return p;
}

// Query tile qt of head g of group (b, hk): Q, dO rows and their transposed tiles; LSE, Delta.
// The one packing routine of both paths, so that a prepared pack holds exactly what a call would
// have packed itself.
void pack_query_tile(const BwdParams& p, const QueryPack<float>& pk, int64_t b, int64_t hk,
                     int64_t g, int64_t qt, int64_t nqt) {
  const int64_t d = p.d, sq = p.sq, h = hk * (p.hq / p.hkv) + g;
  const int64_t q0 = qt * kBlockQ, rows = sq - q0 < kBlockQ ? sq - q0 : kBlockQ;
  float* qrows = pk.q + (g * sq + q0) * d;
  float* drows = pk.dout + (g * sq + q0) * d;
  float* lse = pk.lse + g * nqt * kBlockQ + q0;
  float* delta = pk.delta + g * nqt * kBlockQ + q0;
  for (int64_t i = 0; i < rows; ++i) {
    load_row(p.q.dtype, tensor_row(p.q, b, q0 + i, h), d, 1.0f, qrows + i * d);
    load_row(p.dout.dtype, tensor_row(p.dout, b, q0 + i, h), d, 1.0f, drows + i * d);
    const float l = *rowstat_ptr(p.lse, b, h, q0 + i);
    lse[i] = l == -INFINITY ? INFINITY : l;
    delta[i] = *rowstat_ptr(p.delta, b, h, q0 + i);
  }
  for (int64_t i = rows; i < kBlockQ; ++i) {  // lanes past the tile: P = 0
    lse[i] = INFINITY;
    delta[i] = 0.0f;
  }
  const int64_t tile = g * nqt + qt;
  transpose(qrows, rows, d, d, pk.qt + tile * d * kBlockQ, kBlockQ);
  transpose(drows, rows, d, d, pk.dot + tile * d * kBlockQ, kBlockQ);
}

}  // namespace

void attention_backward(const BwdParams& p) {
  if (p.batch <= 0 || p.hq <= 0) return;
  const int64_t d = p.d, sq = p.sq, sk = p.sk;
  const int64_t group = p.hq / p.hkv;
  const TileIndex qix = make_tile_index(p.q_pos, sq, kBlockQ, kSlotQPos);
  const TileIndex kix = make_tile_index(p.k_pos, sk, kBlockK, kSlotKPos);
  const int64_t nqt = qix.ntiles, nkt = kix.ntiles;
  const int64_t qfloats = query_pack_floats(group, sq, nqt, d);
  const float* const prepared = static_cast<const float*>(p.query_pack);
  // Caller-thread scratch: one group's query side unless it comes prepared, then K, V rows.
  float* const scratch =
      thread_scratch(kSlotPackA)
          .get<float>(static_cast<size_t>((prepared ? 0 : qfloats) + 2 * up16(sk * d)));
  float* const kpack = scratch + (prepared ? 0 : qfloats);
  float* const vpack = kpack + up16(sk * d);
  const int64_t lanes = simd_lanes();
  const float scale = p.scale;
  const int nthreads = omp_get_max_threads();
  float** const dq_bufs =
      thread_scratch(kSlotThreadPtrs).get<float*>(static_cast<size_t>(nthreads));
  for (int t = 0; t < nthreads; ++t) dq_bufs[t] = nullptr;
  // One thread adding into float32 dQ: products go straight into it.
  const bool dq_direct = nthreads == 1 && p.accumulate && p.dq.dtype == kF32;
  // Otherwise each thread's dQ buffer, then a flag per query tile: has this thread written the
  // tile yet? A tile's first product overwrites it and only written tiles are summed, so that a
  // call touching few query tiles (a ring chunk under a causal mask) neither clears nor sums the
  // others.
  const int64_t dq_rows = dq_direct ? 0 : group * sq, nflags = dq_direct ? 0 : group * nqt;
  const int64_t dq_floats = up16(dq_rows * d), flag_floats = up16((nflags + 3) / 4);
  const bool add_kv = p.accumulate && !p.overwrite_kv;
  reserve_thread_scratch({{kSlotTileE, sizeof(float) * (dq_floats + flag_floats)},
                          {kSlotTileA, sizeof(float) * 2 * kBlockK * kBlockQ},
                          {kSlotTileB, sizeof(float) * kBlockQ * kBlockK},
                          {kSlotTileC, sizeof(float) * 2 * kBlockK * d},
                          {kSlotTileD, sizeof(float) * d}},
                         nthreads);

  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t hk = 0; hk < p.hkv; ++hk) {
      const QueryPack<const float> pk = carve_query_pack(
          prepared ? prepared + (hk * p.batch + b) * qfloats : scratch, group, sq, nqt, d);
#pragma omp parallel num_threads(nthreads)
      {
        const int tid = omp_get_thread_num();
        const int nt = omp_get_num_threads();
        float* dq_mine =
            thread_scratch(kSlotTileE).get<float>(static_cast<size_t>(dq_floats + flag_floats));
        dq_bufs[static_cast<size_t>(tid)] = dq_mine;
        uint8_t* const written = reinterpret_cast<uint8_t*>(dq_mine + dq_floats);
        for (int64_t i = 0; i < nflags; ++i) written[i] = 0;

        // ---- pack: Q, dO rows and their transposed tiles; LSE, Delta (unless prepared) ----
        if (prepared == nullptr) {
          const QueryPack<float> own = carve_query_pack(scratch, group, sq, nqt, d);
#pragma omp for schedule(static) nowait
          for (int64_t it = 0; it < group * nqt; ++it)
            pack_query_tile(p, own, b, hk, it / nqt, it % nqt, nqt);
        }
        // ---- pack: K, V rows ----
#pragma omp for schedule(static)
        for (int64_t j = 0; j < sk; ++j) {
          load_row(p.k.dtype, tensor_row(p.k, b, j, hk), d, 1.0f, kpack + j * d);
          load_row(p.v.dtype, tensor_row(p.v, b, j, hk), d, 1.0f, vpack + j * d);
        }

        // ---- compute: one key tile per work item, dealt statically (deterministic) ----
        float* st =
            thread_scratch(kSlotTileA).get<float>(static_cast<size_t>(2 * kBlockK * kBlockQ));
        float* dpt = st + kBlockK * kBlockQ;
        float* ds = thread_scratch(kSlotTileB).get<float>(static_cast<size_t>(kBlockQ * kBlockK));
        float* dkv = thread_scratch(kSlotTileC).get<float>(static_cast<size_t>(2 * kBlockK * d));
        float* dk_acc = dkv;
        float* dv_acc = dkv + kBlockK * d;
#pragma omp for schedule(static, 1)
        for (int64_t kt = 0; kt < nkt; ++kt) {
          const int64_t k0 = kt * kBlockK, cols = kix.tile_rows(kt);
          // Does any query of this call see a key of this tile? The first that does writes the
          // tile's dK/dV accumulators, the others add to them.
          bool seen = false;
          const float* krows = kpack + k0 * d;
          const float* vrows = vpack + k0 * d;
          for (int64_t g = 0; g < group; ++g) {
            for (int64_t qt = 0; qt < nqt; ++qt) {
              const TileClass cls = classify_tile(p.mask, qix.ranges[qt], kix.ranges[kt]);
              if (cls == kTileHidden) continue;
              const int64_t q0 = qt * kBlockQ, rows = qix.tile_rows(qt);
              const int64_t rows_pad = (rows + lanes - 1) / lanes * lanes;
              const int64_t tile = g * nqt + qt;
              gemm_nn(cols, rows, d, krows, d, pk.qt + tile * d * kBlockQ, kBlockQ, st, kBlockQ,
                      false);
              gemm_nn(cols, rows, d, vrows, d, pk.dot + tile * d * kBlockQ, kBlockQ, dpt, kBlockQ,
                      false);
              const float* lse = pk.lse + g * nqt * kBlockQ + q0;
              const float* delta = pk.delta + g * nqt * kBlockQ + q0;
              const hn::ScalableTag<float> df;
              const auto vscale = hn::Set(df, scale);
              for (int64_t j = 0; j < cols; ++j) {
                float* sr = st + j * kBlockQ;
                float* dr = dpt + j * kBlockQ;
                for (int64_t i = 0; i < rows_pad; i += lanes) {
                  // A NaN LSE (a row with a NaN score) gives NaN P: Highway's Exp need not.
                  const auto arg = hn::MulSub(hn::Load(df, sr + i), vscale, hn::LoadU(df, lse + i));
                  const auto pv = hn::IfThenElse(hn::IsNaN(arg), arg, hn::Exp(df, arg));
                  const auto dsv = hn::Mul(hn::Mul(pv, vscale),
                                           hn::Sub(hn::Load(df, dr + i), hn::LoadU(df, delta + i)));
                  hn::Store(pv, df, sr + i);
                  hn::Store(dsv, df, dr + i);
                }
                if (cls == kTilePartial) {
                  const int64_t kseq = kix.seq[k0 + j], kpos = kix.pos[k0 + j];
                  for (int64_t i = 0; i < rows; ++i) {
                    if (!mask_visible(p.mask, qix.seq[q0 + i], qix.pos[q0 + i], kseq, kpos)) {
                      sr[i] = 0.0f;
                      dr[i] = 0.0f;
                    }
                  }
                }
              }
              const float* qrows = pk.q + (g * sq + q0) * d;
              const float* drows = pk.dout + (g * sq + q0) * d;
              gemm_nn(cols, d, rows, st, kBlockQ, drows, d, dv_acc, d, seen);
              gemm_nn(cols, d, rows, dpt, kBlockQ, qrows, d, dk_acc, d, seen);
              seen = true;
              transpose(dpt, cols, rows, kBlockQ, ds, kBlockK);
              if (dq_direct) {
                gemm_nn(rows, d, cols, ds, kBlockK, krows, d,
                        static_cast<float*>(tensor_row(p.dq, b, q0, hk * group + g)), p.dq.stride_s,
                        true);
              } else {
                gemm_nn(rows, d, cols, ds, kBlockK, krows, d, dq_mine + (g * sq + q0) * d, d,
                        written[tile] != 0);
                written[tile] = 1;
              }
            }
          }
          if (!seen) {  // nothing to add; written: zeros
            if (add_kv) continue;
            const size_t dk_row = static_cast<size_t>(d) * dtype_size(p.dk.dtype);
            const size_t dv_row = static_cast<size_t>(d) * dtype_size(p.dv.dtype);
            for (int64_t j = 0; j < cols; ++j) {
              memset(tensor_row(p.dk, b, k0 + j, hk), 0, dk_row);
              memset(tensor_row(p.dv, b, k0 + j, hk), 0, dv_row);
            }
            continue;
          }
          for (int64_t j = 0; j < cols; ++j) {
            store_row(p.dk.dtype, dk_acc + j * d, d, 1.0f, tensor_row(p.dk, b, k0 + j, hk), add_kv);
            store_row(p.dv.dtype, dv_acc + j * d, d, 1.0f, tensor_row(p.dv, b, k0 + j, hk), add_kv);
          }
        }

        // ---- dQ: sum the per-thread buffers in thread order (implicit barrier above) ----
        float* row = thread_scratch(kSlotTileD).get<float>(static_cast<size_t>(d));
#pragma omp for schedule(static)
        for (int64_t r = 0; r < dq_rows; ++r) {
          const int64_t g = r / sq, i = r % sq, tile = g * nqt + i / kBlockQ;
          for (int64_t x = 0; x < d; ++x) row[x] = 0.0f;
          bool any = false;
          for (int t = 0; t < nt; ++t) {
            const float* src = dq_bufs[static_cast<size_t>(t)];
            if (reinterpret_cast<const uint8_t*>(src + dq_floats)[tile] == 0) continue;
            any = true;
            src += r * d;
            for (int64_t x = 0; x < d; ++x) row[x] += src[x];
          }
          if (!any && p.accumulate) continue;  // nothing to add
          store_row(p.dq.dtype, row, d, 1.0f, tensor_row(p.dq, b, i, hk * group + g), p.accumulate);
        }
      }
    }
  }
}

size_t backward_query_pack_bytes(const BwdParams& p) {
  if (p.batch <= 0 || p.hq <= 0) return 0;
  const int64_t qfloats = query_pack_floats(p.hq / p.hkv, p.sq, num_q_tiles(p.sq), p.d);
  return sizeof(float) * static_cast<size_t>(p.batch * p.hkv * qfloats);
}

void pack_backward_queries(const BwdParams& p, void* pack) {
  if (p.batch <= 0 || p.hq <= 0) return;
  const int64_t group = p.hq / p.hkv, nqt = num_q_tiles(p.sq);
  const int64_t qfloats = query_pack_floats(group, p.sq, nqt, p.d);
  const int64_t per_group = group * nqt, items = p.batch * p.hkv * per_group;
  float* const base = static_cast<float*>(pack);
  // Head-major, (kv head, batch): the part of kv heads [h0, h1) is one range, which calls over
  // those heads alone take (the ring's head chunks).
#pragma omp parallel for schedule(static)
  for (int64_t it = 0; it < items; ++it) {
    const int64_t hb = it / per_group, r = it % per_group;
    const QueryPack<float> pk = carve_query_pack(base + hb * qfloats, group, p.sq, nqt, p.d);
    pack_query_tile(p, pk, hb % p.batch, hb / p.batch, r / nqt, r % nqt, nqt);
  }
}

}  // namespace cpu
}  // namespace ringattn
