// Row-wise helpers of the ring: Delta = rowsum(dO * O), the log-sum-exp merge of partial results,
// and dtype conversion / zero fill of [B, S, H, D] tensors. All O(S) and memory bound: parallel
// over rows, no tiling.
#include <omp.h>

#include <cstring>

#include "attention_cpu.h"
#include "dtype_row.h"
#include "merge_row.h"
#include "scratch.h"

namespace ringattn {
namespace cpu {

void compute_delta(int64_t batch, int64_t s, int64_t h, int64_t d, const TensorRef& dout,
                   const TensorRef& o, const RowStatRef& delta) {
  const int64_t rows = batch * s * h;
  reserve_thread_scratch({{kSlotTileA, sizeof(float) * 2 * d}}, omp_get_max_threads());
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t hh = r % h, ss = (r / h) % s, b = r / (h * s);
    float* buf = thread_scratch(kSlotTileA).get<float>(static_cast<size_t>(2 * d));
    load_row(dout.dtype, tensor_row(dout, b, ss, hh), d, 1.0f, buf);
    load_row(o.dtype, tensor_row(o, b, ss, hh), d, 1.0f, buf + d);
    float acc = 0.0f;
    for (int64_t i = 0; i < d; ++i) acc += buf[i] * buf[d + i];
    *rowstat_ptr(delta, b, hh, ss) = acc;
  }
}

void merge_partial(int64_t batch, int64_t s, int64_t h, int64_t d, const TensorRef& o1,
                   const RowStatRef& lse1, const TensorRef& o2, const RowStatRef& lse2) {
  const int64_t rows = batch * s * h;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t hh = r % h, ss = (r / h) % s, b = r / (h * s);
    merge_row(static_cast<float*>(tensor_row(o1, b, ss, hh)), rowstat_ptr(lse1, b, hh, ss),
              static_cast<const float*>(tensor_row(o2, b, ss, hh)), 1.0f,
              *rowstat_ptr(lse2, b, hh, ss), d);
  }
}

namespace {

// dst = src cast to dst's dtype (src.data == nullptr: zeros), or with kAdd dst (float32) += src.
template <bool kAdd>
void convert_rows(int64_t batch, int64_t s, int64_t h, int64_t d, const TensorRef& src,
                  const TensorRef& dst) {
  const int64_t rows = batch * s * h;
  reserve_thread_scratch({{kSlotTileA, sizeof(float) * d}}, omp_get_max_threads());
  const size_t dst_row_bytes = static_cast<size_t>(d) * (dst.dtype == kF32 ? 4 : 2);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t hh = r % h, ss = (r / h) % s, b = r / (h * s);
    void* out = tensor_row(dst, b, ss, hh);
    // Direct paths (no staging row): zeros, float32 sources (the ring's accumulators) and
    // copies.
    if (src.data == nullptr) {
      if (!kAdd) std::memset(out, 0, dst_row_bytes);
      continue;
    }
    if (src.dtype == kF32) {
      store_row(dst.dtype, static_cast<const float*>(tensor_row(src, b, ss, hh)), d, 1.0f, out,
                kAdd);
      continue;
    }
    if (!kAdd && src.dtype == dst.dtype) {  // a copy (the ring's K/V buffer)
      std::memcpy(out, tensor_row(src, b, ss, hh), dst_row_bytes);
      continue;
    }
    float* buf = thread_scratch(kSlotTileA).get<float>(static_cast<size_t>(d));
    load_row(src.dtype, tensor_row(src, b, ss, hh), d, 1.0f, buf);
    if (kAdd) {
      float* acc = static_cast<float*>(out);
      for (int64_t i = 0; i < d; ++i) acc[i] += buf[i];
    } else {
      store_row(dst.dtype, buf, d, 1.0f, out);
    }
  }
}

}  // namespace

void add_convert(int64_t batch, int64_t s, int64_t h, int64_t d, const TensorRef& a,
                 const TensorRef& b, const TensorRef& dst) {
  const int64_t rows = batch * s * h;
  reserve_thread_scratch({{kSlotTileA, sizeof(float) * d}}, omp_get_max_threads());
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t hh = r % h, ss = (r / h) % s, bb = r / (h * s);
    float* sum = thread_scratch(kSlotTileA).get<float>(static_cast<size_t>(d));
    const float* x = static_cast<const float*>(tensor_row(a, bb, ss, hh));
    const float* y = static_cast<const float*>(tensor_row(b, bb, ss, hh));
    const hn::ScalableTag<float> df;
    const int64_t L = static_cast<int64_t>(hn::Lanes(df));
    int64_t i = 0;
    for (; i + L <= d; i += L)
      hn::StoreU(hn::Add(hn::LoadU(df, x + i), hn::LoadU(df, y + i)), df, sum + i);
    for (; i < d; ++i) sum[i] = x[i] + y[i];
    store_row(dst.dtype, sum, d, 1.0f, tensor_row(dst, bb, ss, hh));
  }
}

void convert(int64_t batch, int64_t s, int64_t h, int64_t d, const TensorRef& src,
             const TensorRef& dst) {
  convert_rows<false>(batch, s, h, d, src, dst);
}

void accumulate(int64_t batch, int64_t s, int64_t h, int64_t d, const TensorRef& src,
                const TensorRef& dst) {
  convert_rows<true>(batch, s, h, d, src, dst);
}

}  // namespace cpu
}  // namespace ringattn
