// CUDA twin of engine/kernels/cpu/conv_transpose.cpp: the same per-image sequence of a
// cuBLAS product and the gathering col2im / im2col kernels of conv.cu (no atomics), one image
// at a time (each GEMM fills the GPU). The weight gradient adds the images in order (beta = 1
// after the first); the CPU adds separately computed per-image terms in the same order, so
// the devices agree to rounding and each repeats its own bits.
// Dimensions as there: K = O*kh*kw, L = H*W; `col` holds one image's [K, L] columns.
#include "engine/device.h"
#include "engine/kernels/cuda/common.cuh"
#include "engine/kernels/kernels.h"

namespace ms::cuda {

// y[n] = col2im(W^T x[n])
void conv_transpose2d_forward(const float* x, const float* w, float* y, const ConvTranspose2dShape& s) {
  const int64_t K = s.O * s.kh * s.kw, L = s.H * s.W, OL = s.O * s.OH * s.OW;
  if (s.N == 0) return;
  device_fill(y, 0.f, s.N * OL);  // col2im accumulates
  DeviceArray<float> col(K * L, Device::CUDA);
  for (int64_t n = 0; n < s.N; ++n) {
    gemm_batched(true, false, 1, K, L, s.C, 1.f, w, 0, x + n * s.C * L, 0, 0.f, col.data(), 0);  // (K, L)
    col2im(col.data(), y + n * OL, s.O, s.OH, s.OW, s.kh, s.kw, s.stride, s.pad, s.H, s.W);
  }
}

// G = im2col(gy[n]); dx[n] = W G; dW = sum_n x[n] G^T
void conv_transpose2d_backward(const float* x, const float* w, const float* gy, float* gx, float* gw,
                               const ConvTranspose2dShape& s) {
  const int64_t K = s.O * s.kh * s.kw, L = s.H * s.W, OL = s.O * s.OH * s.OW;
  if (s.N == 0) {
    if (gw) device_fill(gw, 0.f, s.C * K);
    return;
  }
  DeviceArray<float> col(K * L, Device::CUDA);
  for (int64_t n = 0; n < s.N; ++n) {
    im2col(gy + n * OL, col.data(), s.O, s.OH, s.OW, s.kh, s.kw, s.stride, s.pad, s.H, s.W);  // (K, L)
    if (gx) gemm_batched(false, false, 1, s.C, L, K, 1.f, w, 0, col.data(), 0, 0.f, gx + n * s.C * L, 0);
    if (gw) gemm_batched(false, true, 1, s.C, K, L, 1.f, x + n * s.C * L, 0, col.data(), 0, n ? 1.f : 0.f, gw, 0);
  }
}

}  // namespace ms::cuda
