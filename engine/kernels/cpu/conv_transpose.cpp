// CPU reference kernels for conv_transpose2d (torch.nn.functional.conv_transpose2d without
// output_padding, groups or dilation). A transposed convolution is the adjoint of conv2d
// with the same weight read as [O'=C, C'=O, kh, kw]: its forward is conv2d's input-gradient
// path (GEMM, then col2im) and its backward is conv2d's forward path (im2col, then GEMM).
//
// Dimensions (ConvTranspose2dShape): N images, C input channels of H x W, O output channels
// of OH x OW; K = O*kh*kw rows and L = H*W columns of one image's column matrix `col`.
//
// Threads take whole images, as conv2d's CPU kernel does (each GEMM then runs on one thread;
// a single image keeps OpenBLAS's own threading). Measured while the 2 cores were shared
// (load 20-23, so only the ratios mean anything): the U-Net's k2 s2 up-sampling at 1024->512,
// 14 px, batch 2, forward + backward took 1400 ms with every GEMM split over both threads,
// 375 ms with the two images on one thread each, 274 ms on one thread alone; threads that
// synchronise inside every GEMM wait for each other whenever one is descheduled.
//
// An image's result does not depend on the thread that computes it, and the weight gradient
// adds the images' terms in image order, so the bits do not depend on the thread count.
#include <algorithm>
#include <cstring>
#include <memory>

#include <omp.h>

#include "engine/kernels/kernels.h"

namespace ms::cpu {

// Images in flight at once: one per thread, at most N.
static int64_t image_workers(int64_t N) { return std::max<int64_t>(1, std::min<int64_t>(omp_get_max_threads(), N)); }

// y[n] = col2im(W^T x[n]): W^T [K, C] times x[n] [C, L] gives, for every input pixel, the
// kh x kw patch it paints into the output; col2im adds the overlapping patches.
void conv_transpose2d_forward(const float* x, const float* w, float* y, const ConvTranspose2dShape& s) {
  const int64_t K = s.O * s.kh * s.kw, L = s.H * s.W, OL = s.O * s.OH * s.OW;
  if (s.N == 0) return;
  const int64_t T = image_workers(s.N);
  Scratch col(T * K * L);  // one [K, L] per thread
#pragma omp parallel for num_threads(int(T)) schedule(static) if (T > 1)
  for (int64_t n = 0; n < s.N; ++n) {
    float* c = col.data + int64_t(omp_get_thread_num()) * K * L;
    gemm_batched(true, false, 1, K, L, s.C, 1.f, w, 0, x + n * s.C * L, 0, 0.f, c, 0);  // (K, L)
    float* yn = y + n * OL;                                                              // (O, OH, OW)
    std::memset(yn, 0, size_t(OL) * sizeof(float));
    col2im(c, yn, s.O, s.OH, s.OW, s.kh, s.kw, s.stride, s.pad, s.H, s.W);
  }
}

// With G_n = im2col(gy[n]) [K, L] (conv2d's columns of the upstream gradient):
//   dx[n] = W G_n                          (C, L)  conv2d of gy with the same weight
//   dW    = (((P_0 + P_1) + P_2) + ...)   (C, K)  P_n = x[n] G_n^T, added in image order
// The images go in waves of T (one per thread); after each wave its P_n are added to dW in
// order, so dW is the same sum for any T, and the scratch is T images' worth, not N.
void conv_transpose2d_backward(const float* x, const float* w, const float* gy, float* gx, float* gw,
                               const ConvTranspose2dShape& s) {
  const int64_t K = s.O * s.kh * s.kw, L = s.H * s.W, OL = s.O * s.OH * s.OW, CK = s.C * K;
  if (s.N == 0) {
    if (gw) std::fill(gw, gw + CK, 0.f);
    return;
  }
  const int64_t T = image_workers(s.N);
  Scratch col(T * K * L);
  std::unique_ptr<Scratch> parts = gw ? std::make_unique<Scratch>(T * CK) : nullptr;
  for (int64_t n0 = 0; n0 < s.N; n0 += T) {
    const int64_t nb = std::min(T, s.N - n0);  // images in this wave
#pragma omp parallel for num_threads(int(T)) schedule(static) if (nb > 1)
    for (int64_t i = 0; i < nb; ++i) {
      const int64_t n = n0 + i;
      float* c = col.data + i * K * L;
      im2col(gy + n * OL, c, s.O, s.OH, s.OW, s.kh, s.kw, s.stride, s.pad, s.H, s.W);  // (K, L)
      if (gx) gemm_batched(false, false, 1, s.C, L, K, 1.f, w, 0, c, 0, 0.f, gx + n * s.C * L, 0);
      if (gw)  // P_0 straight into dW, the others into this wave's scratch
        gemm_batched(false, true, 1, s.C, K, L, 1.f, x + n * s.C * L, 0, c, 0, 0.f, n ? parts->data + i * CK : gw, 0);
    }
    if (!gw) continue;
    const int64_t first = n0 == 0 ? 1 : 0;  // P_0 is already in dW
    if (first >= nb) continue;
    const float* p = parts->data;
#pragma omp parallel for schedule(static) if (CK * (nb - first) > 65536)
    for (int64_t e = 0; e < CK; ++e) {
      float acc = gw[e];
      for (int64_t i = first; i < nb; ++i) acc += p[i * CK + e];
      gw[e] = acc;
    }
  }
}

}  // namespace ms::cpu
