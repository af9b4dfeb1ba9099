// CPU matrix products through OpenBLAS cblas_sgemm (row-major).
#include <cblas.h>

#include <atomic>

#include "engine/kernels/kernels.h"

namespace ms::cpu {

// A statistic for `medslip bench` only; never read on the compute path.
static std::atomic<uint64_t> g_gemm_flops{0};
uint64_t gemm_flop_count() { return g_gemm_flops.load(std::memory_order_relaxed); }

void gemm_batched(bool ta, bool tb, int64_t batch, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                  int64_t strideA, const float* B, int64_t strideB, float beta, float* C, int64_t strideC) {
  g_gemm_flops.fetch_add(uint64_t(2 * batch * M * N * K), std::memory_order_relaxed);
  const int lda = int(ta ? M : K), ldb = int(tb ? K : N), ldc = int(N);
  for (int64_t b = 0; b < batch; ++b) {
    if (K == 0) {  // sgemm with K=0 would still apply beta; do it ourselves for clarity
      float* c = C + b * strideC;
      for (int64_t i = 0; i < M * N; ++i) c[i] = beta == 0.f ? 0.f : beta * c[i];
      continue;
    }
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(M), int(N), int(K),
                alpha, A + b * strideA, lda, B + b * strideB, ldb, beta, C + b * strideC, ldc);
  }
}

}  // namespace ms::cpu
