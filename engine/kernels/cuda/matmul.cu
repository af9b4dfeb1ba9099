// CUDA twin of engine/kernels/cpu/matmul.cpp: batched row-major GEMM through cuBLAS.
// cuBLAS is column-major; a row-major C[M,N] is a column-major C^T[N,M], so we compute
// C^T = op(B)^T op(A)^T, i.e. swap the operands and their dimensions (the usual trick).
// Float32 compute by default (no TF32), one handle on the default stream: cuBLAS then gives
// the same bits on every run on the same GPU model and toolkit.
#include <climits>
#include <mutex>

#include "engine/kernels/cuda/common.cuh"
#include "engine/kernels/kernels.h"

namespace ms {

namespace {
bool g_tf32 = false;

cublasHandle_t handle() {
  static cublasHandle_t h = [] {
    cublasHandle_t x;
    cublasCheck(cublasCreate(&x));
    cublasCheck(cublasSetStream(x, 0));
    cublasCheck(cublasSetMathMode(x, CUBLAS_DEFAULT_MATH));  // never TF32 unless asked per call
    return x;
  }();
  return h;
}

__global__ void scale_kernel(float* c, float beta, int64_t n) { CUDA_FOR(i, n) c[i] = beta == 0.f ? 0.f : beta * c[i]; }

int as_int(int64_t v, const char* what) {
  if (v < 0 || v > INT_MAX)
    throw std::invalid_argument(std::string("gemm_batched: ") + what + " = " + std::to_string(v) +
                                " is outside cuBLAS's int range");
  return int(v);
}
}  // namespace

namespace cuda {

void set_tf32(bool on) { g_tf32 = on; }
bool tf32_enabled() { return g_tf32; }

void gemm_batched(bool ta, bool tb, int64_t batch, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                  int64_t strideA, const float* B, int64_t strideB, float beta, float* C, int64_t strideC) {
  if (batch <= 0 || M <= 0 || N <= 0) return;
  if (K == 0 || (strideC == 0 && batch > 1)) {
    // K = 0: C = beta C (as the CPU twin). A shared C across the batch accumulates batch
    // after batch, so it runs as single products in order, as on the CPU.
    for (int64_t b = 0; b < batch; ++b) {
      if (K == 0) {
        scale_kernel<<<grid_for(M * N), kBlock>>>(C + b * strideC, beta, M * N);
        cudaCheckLaunch();
      } else {
        gemm_batched(ta, tb, 1, M, N, K, alpha, A + b * strideA, 0, B + b * strideB, 0, beta, C + b * strideC, 0);
      }
    }
    return;
  }
  const int m = as_int(N, "N"), n = as_int(M, "M"), k = as_int(K, "K"), nb = as_int(batch, "batch");
  const int lda = as_int(ta ? M : K, "lda"), ldb = as_int(tb ? K : N, "ldb"), ldc = m;
  const cublasOperation_t opA = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opB = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasComputeType_t compute = g_tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  cublasCheck(cublasGemmStridedBatchedEx(handle(), opB, opA, m, n, k, &alpha, B, CUDA_R_32F, ldb, strideB, A,
                                         CUDA_R_32F, lda, strideA, &beta, C, CUDA_R_32F, ldc, strideC, nb, compute,
                                         CUBLAS_GEMM_DEFAULT));
}

// The linear layer: the product, then the bias as a broadcast add over it (as the op did),
// then (relu) the relu op's kernel.
void linear_forward(const float* x, const float* w, const float* b, float* y, int64_t R, int64_t in, int64_t out,
                    bool relu) {
  gemm_batched(false, true, 1, R, out, in, 1.f, x, 0, w, 0, 0.f, y, 0);
  if (b && R > 0 && out > 0) binary_forward(BinaryOp::Add, y, b, y, make_broadcast({R, out}, {R, out}, {out}));
  if (relu && R > 0 && out > 0) unary_forward(UnaryOp::Relu, y, y, R * out, 0.f);
}

}  // namespace cuda
}  // namespace ms
