// CUDA twins of engine/kernels/cpu/conv.cpp: im2col / col2im, max pooling and adaptive
// average pooling on [NC, H, W] planes. The backward kernels gather instead of scatter: a
// thread owns its output element and adds the contributions in the CPU's order, so they need
// no atomics and give the CPU's bits (col2im, adaptive pool) or the CPU's order (max pool).
#include "engine/kernels/cuda/common.cuh"
#include "engine/device.h"
#include "engine/kernels/kernels.h"

namespace ms::cuda {

namespace {

// col[(c*kh + i)*kw + j, oh*OW + ow] = x[c, oh*stride - pad + i, ow*stride - pad + j], 0 outside.
__global__ void im2col_kernel(const float* x, float* col, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw,
                              int64_t stride, int64_t pad, int64_t OH, int64_t OW) {
  const int64_t L = OH * OW;
  CUDA_FOR(t, C * kh * kw * L) {
    const int64_t r = t / L, l = t % L;
    const int64_t c = r / (kh * kw), i = (r / kw) % kh, j = r % kw;
    const int64_t ih = (l / OW) * stride - pad + i, iw = (l % OW) * stride - pad + j;
    col[t] = (ih >= 0 && ih < H && iw >= 0 && iw < W) ? x[(c * H + ih) * W + iw] : 0.f;
  }
}

// x[c, ih, iw] += the col entries that im2col read from it, in (i, j) order as on the CPU.
__global__ void col2im_kernel(const float* col, float* x, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw,
                              int64_t stride, int64_t pad, int64_t OH, int64_t OW) {
  const int64_t L = OH * OW;
  CUDA_FOR(t, C * H * W) {
    const int64_t c = t / (H * W), ih = (t / W) % H, iw = t % W;
    float acc = x[t];
    for (int64_t i = 0; i < kh; ++i) {
      const int64_t dh = ih + pad - i;  // = oh * stride
      if (dh < 0 || dh % stride) continue;
      const int64_t oh = dh / stride;
      if (oh >= OH) continue;
      for (int64_t j = 0; j < kw; ++j) {
        const int64_t dw = iw + pad - j;
        if (dw < 0 || dw % stride) continue;
        const int64_t ow = dw / stride;
        if (ow >= OW) continue;
        acc += col[((c * kh + i) * kw + j) * L + oh * OW + ow];
      }
    }
    x[t] = acc;
  }
}

// The CPU's scan: first maximum in row-major order wins, NaN propagates.
__global__ void max_pool2d_kernel(const float* x, float* y, int64_t* arg, int64_t NC, int64_t H, int64_t W, int64_t k,
                                  int64_t stride, int64_t pad, int64_t OH, int64_t OW) {
  CUDA_FOR(t, NC * OH * OW) {
    const int64_t p = t / (OH * OW), oh = (t / OW) % OH, ow = t % OW;
    const float* xp = x + p * H * W;
    const int64_t h0 = max(oh * stride - pad, int64_t(0)), h1 = min(oh * stride - pad + k, H);
    const int64_t w0 = max(ow * stride - pad, int64_t(0)), w1 = min(ow * stride - pad + k, W);
    float best = -INFINITY;
    int64_t bi = (h0 < h1 && w0 < w1) ? h0 * W + w0 : -1;
    for (int64_t h = h0; h < h1; ++h)
      for (int64_t w = w0; w < w1; ++w) {
        const float v = xp[h * W + w];
        if (v > best || isnan(v)) {
          best = v;
          bi = h * W + w;
        }
      }
    y[t] = best;
    if (arg) arg[t] = bi;  // null: values only
  }
}

constexpr int kPoolWarps = 8;

// One warp per plane walks the outputs 32 at a time, in order. Lanes whose argmax coincide
// (overlapping windows) are grouped with __match_any_sync and the group's first lane adds
// their gradients in lane order, so each gx element receives its terms in output order, as on
// the CPU. gx was zeroed before.
__global__ void max_pool2d_backward_kernel(const float* gy, const int64_t* arg, float* gx, int64_t NC, int64_t HW,
                                           int64_t OHW) {
  __shared__ float sg[kPoolWarps][32];
  const int lane = threadIdx.x & 31, wp = threadIdx.x >> 5;
  const int64_t p = int64_t(blockIdx.x) * kPoolWarps + wp;
  if (p >= NC) return;  // whole warps leave together
  float* gp = gx + p * HW;
  const float* gyp = gy + p * OHW;
  const int64_t* ap = arg + p * OHW;
  for (int64_t base = 0; base < OHW; base += 32) {
    const int64_t o = base + lane;
    long long key = -2 - lane;  // distinct per lane: lanes with nothing to add group alone
    float g = 0.f;
    if (o < OHW && ap[o] >= 0) {
      key = ap[o];
      g = gyp[o];
    }
    sg[wp][lane] = g;
    const unsigned same = __match_any_sync(kFullMask, (unsigned long long)key);
    __syncwarp();
    if (key >= 0 && lane == __ffs(same) - 1) {
      float acc = gp[key];
      for (unsigned m = same; m; m &= m - 1) acc += sg[wp][__ffs(m) - 1];
      gp[key] = acc;
    }
    __syncwarp();  // the next chunk reads what this one wrote and reuses sg
  }
}

// PyTorch's adaptive bins: [floor(i*H/OH), ceil((i+1)*H/OH)).
__device__ __forceinline__ int64_t bin_start(int64_t i, int64_t in, int64_t out) { return (i * in) / out; }
__device__ __forceinline__ int64_t bin_end(int64_t i, int64_t in, int64_t out) {
  return ((i + 1) * in + out - 1) / out;
}

__global__ void adaptive_avg_pool2d_kernel(const float* x, float* y, int64_t NC, int64_t H, int64_t W, int64_t OH,
                                           int64_t OW) {
  CUDA_FOR(t, NC * OH * OW) {
    const int64_t p = t / (OH * OW), oh = (t / OW) % OH, ow = t % OW;
    const float* xp = x + p * H * W;
    const int64_t h0 = bin_start(oh, H, OH), h1 = bin_end(oh, H, OH);
    const int64_t w0 = bin_start(ow, W, OW), w1 = bin_end(ow, W, OW);
    double s = 0.0;
    for (int64_t h = h0; h < h1; ++h)
      for (int64_t w = w0; w < w1; ++w) s += xp[h * W + w];
    y[t] = float(s / double((h1 - h0) * (w1 - w0)));
  }
}

// gx[h, w] = sum over the bins holding (h, w), in (oh, ow) order, of gy / bin area.
__global__ void adaptive_avg_pool2d_backward_kernel(const float* gy, float* gx, int64_t NC, int64_t H, int64_t W,
                                                    int64_t OH, int64_t OW) {
  CUDA_FOR(t, NC * H * W) {
    const int64_t p = t / (H * W), h = (t / W) % H, w = t % W;
    float acc = 0.f;
    for (int64_t oh = 0; oh < OH; ++oh) {
      const int64_t h0 = bin_start(oh, H, OH), h1 = bin_end(oh, H, OH);
      if (h0 > h) break;  // bins start in non-decreasing order
      if (h >= h1) continue;
      for (int64_t ow = 0; ow < OW; ++ow) {
        const int64_t w0 = bin_start(ow, W, OW), w1 = bin_end(ow, W, OW);
        if (w0 > w) break;
        if (w >= w1) continue;
        acc += gy[(p * OH + oh) * OW + ow] / float((h1 - h0) * (w1 - w0));
      }
    }
    gx[t] = acc;
  }
}

}  // namespace

void im2col(const float* x, float* col, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t stride,
            int64_t pad, int64_t OH, int64_t OW) {
  const int64_t n = C * kh * kw * OH * OW;
  if (n <= 0) return;
  im2col_kernel<<<grid_for(n), kBlock>>>(x, col, C, H, W, kh, kw, stride, pad, OH, OW);
  cudaCheckLaunch();
}

void col2im(const float* col, float* x, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t stride,
            int64_t pad, int64_t OH, int64_t OW) {
  const int64_t n = C * H * W;
  if (n <= 0) return;
  col2im_kernel<<<grid_for(n), kBlock>>>(col, x, C, H, W, kh, kw, stride, pad, OH, OW);
  cudaCheckLaunch();
}

void max_pool2d_forward(const float* x, float* y, int64_t* arg, int64_t NC, int64_t H, int64_t W, int64_t k,
                        int64_t stride, int64_t pad, int64_t OH, int64_t OW) {
  const int64_t n = NC * OH * OW;
  if (n <= 0) return;
  max_pool2d_kernel<<<grid_for(n), kBlock>>>(x, y, arg, NC, H, W, k, stride, pad, OH, OW);
  cudaCheckLaunch();
}

void max_pool2d_backward(const float* gy, const int64_t* arg, float* gx, int64_t NC, int64_t H, int64_t W, int64_t OH,
                         int64_t OW) {
  if (NC * H * W <= 0) return;
  cudaCheck(cudaMemsetAsync(gx, 0, size_t(NC * H * W) * sizeof(float), 0));
  if (OH * OW <= 0) return;
  max_pool2d_backward_kernel<<<grid_for(NC, kPoolWarps), 32 * kPoolWarps>>>(gy, arg, gx, NC, H * W, OH * OW);
  cudaCheckLaunch();
}

void adaptive_avg_pool2d_forward(const float* x, float* y, int64_t NC, int64_t H, int64_t W, int64_t OH, int64_t OW) {
  const int64_t n = NC * OH * OW;
  if (n <= 0) return;
  adaptive_avg_pool2d_kernel<<<grid_for(n), kBlock>>>(x, y, NC, H, W, OH, OW);
  cudaCheckLaunch();
}

void adaptive_avg_pool2d_backward(const float* gy, float* gx, int64_t NC, int64_t H, int64_t W, int64_t OH,
                                  int64_t OW) {
  const int64_t n = NC * H * W;
  if (n <= 0) return;
  adaptive_avg_pool2d_backward_kernel<<<grid_for(n), kBlock>>>(gy, gx, NC, H, W, OH, OW);
  cudaCheckLaunch();
}

// One image at a time through one im2col buffer (the CPU spreads images over threads; here
// each GEMM fills the GPU). A pointwise convolution is one batched GEMM on x itself.
void conv2d_forward(const float* x, const float* w, float* y, const Conv2dShape& s) {
  const int64_t K = s.C * s.kh * s.kw, L = s.OH * s.OW;
  if (s.pointwise()) {  // y[n] = W x[n]
    gemm_batched(false, false, s.N, s.O, L, K, 1.f, w, 0, x, s.C * s.H * s.W, 0.f, y, s.O * L);
    return;
  }
  if (s.N == 0) return;
  DeviceArray<float> col(K * L, Device::CUDA);  // one image's columns, reused across the batch
  for (int64_t n = 0; n < s.N; ++n) {
    im2col(x + n * s.C * s.H * s.W, col.data(), s.C, s.H, s.W, s.kh, s.kw, s.stride, s.pad, s.OH, s.OW);
    gemm_batched(false, false, 1, s.O, L, K, 1.f, w, 0, col.data(), 0, 0.f, y + n * s.O * L, 0);
  }
}

// Evaluation conv + BatchNorm (+ residual) (+ ReLU): here the two kernels one after the other
// (the BatchNorm in place on the convolution's output; the CPU applies it in cache).
void conv2d_bn_act_forward(const float* x, const float* w, float* y, const Conv2dShape& s, const float* mean,
                           const float* rstd, const float* bn_w, const float* bn_b, const float* res, bool relu) {
  conv2d_forward(x, w, y, s);
  batch_norm_act_apply(y, mean, rstd, bn_w, bn_b, res, y, s.N, s.O, s.OH * s.OW, relu);
}

// dW = sum_n g[n] col(x[n])^T with the images added in order (beta = 1 after the first), as
// on the CPU; col2im accumulates, so dx starts from zeros.
void conv2d_backward(const float* x, const float* w, const float* g, float* gx, float* gw, const Conv2dShape& s) {
  const int64_t K = s.C * s.kh * s.kw, L = s.OH * s.OW;
  if (s.pointwise()) {
    if (gx)  // dx[n] = W^T g[n]
      gemm_batched(true, false, s.N, s.C, L, s.O, 1.f, w, 0, g, s.O * L, 0.f, gx, s.C * L);
    if (gw)
      for (int64_t n = 0; n < s.N; ++n)
        gemm_batched(false, true, 1, s.O, s.C, L, 1.f, g + n * s.O * L, 0, x + n * s.C * L, 0, n ? 1.f : 0.f, gw, 0);
  } else {
    if (gx) device_fill(gx, 0.f, s.N * s.C * s.H * s.W);
    DeviceArray<float> col(K * L, Device::CUDA);
    for (int64_t n = 0; n < s.N; ++n) {
      const float* gn = g + n * s.O * L;
      if (gw) {  // dW += g[n] col(x[n])^T
        im2col(x + n * s.C * s.H * s.W, col.data(), s.C, s.H, s.W, s.kh, s.kw, s.stride, s.pad, s.OH, s.OW);
        gemm_batched(false, true, 1, s.O, K, L, 1.f, gn, 0, col.data(), 0, n ? 1.f : 0.f, gw, 0);
      }
      if (gx) {  // dx[n] = col2im(W^T g[n])
        gemm_batched(true, false, 1, K, L, s.O, 1.f, w, 0, gn, 0, 0.f, col.data(), 0);
        col2im(col.data(), gx + n * s.C * s.H * s.W, s.C, s.H, s.W, s.kh, s.kw, s.stride, s.pad, s.OH, s.OW);
      }
    }
  }
  if (gw && s.N == 0) device_fill(gw, 0.f, s.O * K);
}

}  // namespace ms::cuda
