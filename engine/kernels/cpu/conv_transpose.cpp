// CPU reference kernels for conv_transpose2d (torch.nn.functional.conv_transpose2d without
// output_padding, groups or dilation). A transposed convolution is the adjoint of conv2d
// with the same weight read as [O'=C, C'=O, kh, kw]: its forward is conv2d's input-gradient
// path (GEMM, then col2im) and its backward is conv2d's forward path (im2col, then GEMM).
//
// Dimensions: N images, C input channels of H x W, O output channels of OH x OW, where
// OH = (H - 1) * stride - 2 * pad + kh (and OW likewise); K = O*kh*kw rows and L = H*W
// columns of the column matrix `col` (one image at a time).
//
// Images run one after another; each GEMM and col2im/im2col is threaded inside, and the
// weight gradient adds the images in order, so the bits do not depend on the thread count.
#include <algorithm>
#include <cstring>

#include "engine/kernels/kernels.h"

namespace ms::cpu {

// y[n] = col2im(W^T x[n]): W^T [K, C] times x[n] [C, L] gives, for every input pixel, the
// kh x kw patch it paints into the output; col2im adds the overlapping patches.
void conv_transpose2d_forward(const float* x, const float* w, float* y, float* col, int64_t N, int64_t C, int64_t H,
                              int64_t W, int64_t O, int64_t kh, int64_t kw, int64_t stride, int64_t pad, int64_t OH,
                              int64_t OW) {
  const int64_t K = O * kh * kw, L = H * W, OL = O * OH * OW;
  for (int64_t n = 0; n < N; ++n) {
    gemm_batched(true, false, 1, K, L, C, 1.f, w, 0, x + n * C * L, 0, 0.f, col, 0);  // (K, L)
    float* yn = y + n * OL;                                                            // (O, OH, OW)
    std::memset(yn, 0, size_t(OL) * sizeof(float));
    col2im(col, yn, O, OH, OW, kh, kw, stride, pad, H, W);
  }
}

// With G = im2col(gy[n]) [K, L] (conv2d's columns of the upstream gradient):
//   dx[n] = W G             (C, L)   — conv2d of gy with the same weight
//   dW    = sum_n x[n] G^T  (C, K)   — images added in order
void conv_transpose2d_backward(const float* x, const float* w, const float* gy, float* gx, float* gw, float* col,
                               int64_t N, int64_t C, int64_t H, int64_t W, int64_t O, int64_t kh, int64_t kw,
                               int64_t stride, int64_t pad, int64_t OH, int64_t OW) {
  const int64_t K = O * kh * kw, L = H * W, OL = O * OH * OW;
  if (gw && N == 0) std::fill(gw, gw + C * K, 0.f);
  for (int64_t n = 0; n < N; ++n) {
    im2col(gy + n * OL, col, O, OH, OW, kh, kw, stride, pad, H, W);  // (K, L)
    if (gx) gemm_batched(false, false, 1, C, L, K, 1.f, w, 0, col, 0, 0.f, gx + n * C * L, 0);
    if (gw) gemm_batched(false, true, 1, C, K, L, 1.f, x + n * C * L, 0, col, 0, n ? 1.f : 0.f, gw, 0);
  }
}

}  // namespace ms::cpu
