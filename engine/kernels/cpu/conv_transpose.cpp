// CPU reference kernels for conv_transpose2d (torch.nn.functional.conv_transpose2d without
// output_padding, groups or dilation). A transposed convolution is the adjoint of conv2d
// with the same weight read as [O'=C, C'=O, kh, kw]: its forward is conv2d's input-gradient
// path (GEMM, then col2im) and its backward is conv2d's forward path (im2col, then GEMM).
//
// Dimensions (ConvTranspose2dShape): N images, C input channels of H x W, O output channels
// of OH x OW; K = O*kh*kw rows and L = H*W columns of one image's column matrix `col`.
//
// Images run one after another; each GEMM and col2im/im2col is threaded inside, and the
// weight gradient adds the images in order, so the bits do not depend on the thread count.
#include <algorithm>
#include <cstring>
#include <memory>

#include "engine/kernels/kernels.h"
#include "engine/tensor.h"

namespace ms::cpu {

// One image's columns [K, L] from the CPU caching allocator.
static std::shared_ptr<Storage> columns(const ConvTranspose2dShape& s) {
  return Storage::allocate(s.O * s.kh * s.kw * s.H * s.W, Device::CPU);
}

// y[n] = col2im(W^T x[n]): W^T [K, C] times x[n] [C, L] gives, for every input pixel, the
// kh x kw patch it paints into the output; col2im adds the overlapping patches.
void conv_transpose2d_forward(const float* x, const float* w, float* y, const ConvTranspose2dShape& s) {
  const int64_t K = s.O * s.kh * s.kw, L = s.H * s.W, OL = s.O * s.OH * s.OW;
  if (s.N == 0) return;
  auto col = columns(s);
  for (int64_t n = 0; n < s.N; ++n) {
    gemm_batched(true, false, 1, K, L, s.C, 1.f, w, 0, x + n * s.C * L, 0, 0.f, col->data, 0);  // (K, L)
    float* yn = y + n * OL;                                                                      // (O, OH, OW)
    std::memset(yn, 0, size_t(OL) * sizeof(float));
    col2im(col->data, yn, s.O, s.OH, s.OW, s.kh, s.kw, s.stride, s.pad, s.H, s.W);
  }
}

// With G = im2col(gy[n]) [K, L] (conv2d's columns of the upstream gradient):
//   dx[n] = W G             (C, L)   — conv2d of gy with the same weight
//   dW    = sum_n x[n] G^T  (C, K)   — images added in order
void conv_transpose2d_backward(const float* x, const float* w, const float* gy, float* gx, float* gw,
                               const ConvTranspose2dShape& s) {
  const int64_t K = s.O * s.kh * s.kw, L = s.H * s.W, OL = s.O * s.OH * s.OW;
  if (s.N == 0) {
    if (gw) std::fill(gw, gw + s.C * K, 0.f);
    return;
  }
  auto col = columns(s);
  for (int64_t n = 0; n < s.N; ++n) {
    im2col(gy + n * OL, col->data, s.O, s.OH, s.OW, s.kh, s.kw, s.stride, s.pad, s.H, s.W);  // (K, L)
    if (gx) gemm_batched(false, false, 1, s.C, L, K, 1.f, w, 0, col->data, 0, 0.f, gx + n * s.C * L, 0);
    if (gw) gemm_batched(false, true, 1, s.C, K, L, 1.f, x + n * s.C * L, 0, col->data, 0, n ? 1.f : 0.f, gw, 0);
  }
}

}  // namespace ms::cpu
