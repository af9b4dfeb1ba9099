// CPU matrix products through OpenBLAS cblas_sgemm (row-major).
#include <cblas.h>

#include <algorithm>
#include <atomic>

#include <omp.h>

#include "engine/kernels/kernels.h"

namespace ms::cpu {

// A statistic for `medslip bench` only; never read on the compute path.
static std::atomic<uint64_t> g_gemm_flops{0};
uint64_t gemm_flop_count() { return g_gemm_flops.load(std::memory_order_relaxed); }

// OpenBLAS cuts K into blocks of GEMM_Q (320 for its SkylakeX/Cooperlake sgemm, 384 for
// Haswell/Zen) and splits a remainder between Q and 2Q in two, but its one-thread and its
// threaded drivers round that half differently, so e.g. K = 600 or 784 summed in a different
// order on 1 and on 2 threads (measured: about 1 in 3 entries of such a product differ).
// K is therefore cut here into chunks of at most kChunkK (<= Q), each a multiple of 32 but
// the last; every chunk is one block for OpenBLAS and C accumulates the chunks in order, so
// the result does not depend on the thread count. Measured cost: none (within 1-2 %).
constexpr int64_t kChunkK = 256;

void gemm_batched(bool ta, bool tb, int64_t batch, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                  int64_t strideA, const float* B, int64_t strideB, float beta, float* C, int64_t strideC) {
  g_gemm_flops.fetch_add(uint64_t(2 * batch * M * N * K), std::memory_order_relaxed);
  const int lda = int(ta ? M : K), ldb = int(tb ? K : N), ldc = int(N);
  const int64_t pieces = (K + kChunkK - 1) / kChunkK;
  const int64_t chunk = pieces > 1 ? std::min<int64_t>(kChunkK, ((K + pieces - 1) / pieces + 31) / 32 * 32) : K;
  auto one = [&](int64_t b) {
    float* c = C + b * strideC;
    if (K == 0) {  // sgemm with K=0 would still apply beta; do it ourselves for clarity
      for (int64_t i = 0; i < M * N; ++i) c[i] = beta == 0.f ? 0.f : beta * c[i];
      return;
    }
    for (int64_t k0 = 0; k0 < K; k0 += chunk) {
      const int64_t kc = std::min(chunk, K - k0);
      // The chunk's columns of op(A) and rows of op(B).
      const float* a = A + b * strideA + (ta ? k0 * lda : k0);
      const float* bb = B + b * strideB + (tb ? k0 : k0 * ldb);
      cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(M), int(N),
                  int(kc), alpha, a, lda, bb, ldb, k0 == 0 ? beta : 1.f, c, ldc);
    }
  };
  // Separate products (distinct C) go to the threads whole: one OpenBLAS call per thread
  // instead of every call split over all threads, which syncs the threads per call and is
  // far slower for the many small products of attention and per-image convolutions. A
  // product's bits do not depend on the thread that computes it (see kChunkK).
  const int threads = omp_get_max_threads();
  if (batch > 1 && strideC != 0 && threads > 1 && !omp_in_parallel()) {
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < batch; ++b) one(b);
  } else {
    for (int64_t b = 0; b < batch; ++b) one(b);
  }
}

}  // namespace ms::cpu

namespace ms::cpu {
// No TF32 on the CPU: float32 products throughout.
void set_tf32(bool) {}
bool tf32_enabled() { return false; }
}  // namespace ms::cpu
