// The one small-GEMM primitive the host kernels are built on.
#pragma once

#include <stdint.h>

namespace ringattn {
namespace cpu {

// Row-major C[M x N] = A[M x K] * B[K x N], or C += A * B when `accumulate`. float32, runs on the
// calling thread only (safe inside an OpenMP parallel region). Leading dimensions in elements.
void gemm_nn(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
             int64_t ldb, float* c, int64_t ldc, bool accumulate);

}  // namespace cpu
}  // namespace ringattn
