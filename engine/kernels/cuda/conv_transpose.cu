// CUDA twin of engine/kernels/cpu/conv_transpose.cpp: the same per-image sequence of a
// cuBLAS product and the gathering col2im / im2col kernels of conv.cu (no atomics). The
// weight gradient adds the images in order (beta = 1 after the first), as on the CPU.
// Dimensions as there: K = O*kh*kw, L = H*W; col holds one image's [K, L] columns.
#include "engine/kernels/cuda/common.cuh"
#include "engine/kernels/kernels.h"

namespace ms::cuda {

// y[n] = col2im(W^T x[n])
void conv_transpose2d_forward(const float* x, const float* w, float* y, float* col, int64_t N, int64_t C, int64_t H,
                              int64_t W, int64_t O, int64_t kh, int64_t kw, int64_t stride, int64_t pad, int64_t OH,
                              int64_t OW) {
  const int64_t K = O * kh * kw, L = H * W, OL = O * OH * OW;
  if (N > 0) cudaCheck(cudaMemsetAsync(y, 0, size_t(N * OL) * sizeof(float), 0));  // col2im accumulates
  for (int64_t n = 0; n < N; ++n) {
    gemm_batched(true, false, 1, K, L, C, 1.f, w, 0, x + n * C * L, 0, 0.f, col, 0);  // (K, L)
    col2im(col, y + n * OL, O, OH, OW, kh, kw, stride, pad, H, W);
  }
}

// G = im2col(gy[n]); dx[n] = W G; dW = sum_n x[n] G^T
void conv_transpose2d_backward(const float* x, const float* w, const float* gy, float* gx, float* gw, float* col,
                               int64_t N, int64_t C, int64_t H, int64_t W, int64_t O, int64_t kh, int64_t kw,
                               int64_t stride, int64_t pad, int64_t OH, int64_t OW) {
  const int64_t K = O * kh * kw, L = H * W, OL = O * OH * OW;
  if (gw && N == 0) cudaCheck(cudaMemsetAsync(gw, 0, size_t(C * K) * sizeof(float), 0));
  for (int64_t n = 0; n < N; ++n) {
    im2col(gy + n * OL, col, O, OH, OW, kh, kw, stride, pad, H, W);  // (K, L)
    if (gx) gemm_batched(false, false, 1, C, L, K, 1.f, w, 0, col, 0, 0.f, gx + n * C * L, 0);
    if (gw) gemm_batched(false, true, 1, C, K, L, 1.f, x + n * C * L, 0, col, 0, n ? 1.f : 0.f, gw, 0);
  }
}

}  // namespace ms::cuda
