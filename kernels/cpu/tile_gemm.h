// The small-GEMM and transpose primitives (libxsmm JIT kernels) the host kernels are built on.
#pragma once

#include <stdint.h>

namespace ringattn {
namespace cpu {

// Row-major C[M x N] = A[M x K] * B[K x N], or C += A * B when `accumulate`. float32, runs on the
// calling thread only (safe inside an OpenMP parallel region). Leading dimensions in elements.
void gemm_nn(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
             int64_t ldb, float* c, int64_t ldc, bool accumulate);

// Row-major dst[cols x rows] = src[rows x cols]^T (exact), on the calling thread only.
void transpose(const float* src, int64_t rows, int64_t cols, int64_t lds, float* dst, int64_t ldd);

}  // namespace cpu
}  // namespace ringattn
