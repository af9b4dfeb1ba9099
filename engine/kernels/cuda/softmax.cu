// CUDA twins of engine/kernels/cpu/softmax.cpp: (log-)softmax over the middle axis of
// [outer, n, inner]. Rows of contiguous values (inner == 1, the attention and class-score
// case) get one warp each; strided columns (inner > 1) one thread each, as on the CPU. Sums
// are in double like the CPU's, reduced in a fixed lane order.
#include "engine/kernels/cuda/common.cuh"
#include "engine/kernels/kernels.h"

namespace ms::cuda {

namespace {

constexpr int kWarpsPerBlock = 8;

__global__ void softmax_rows_kernel(const float* x, float* y, int64_t rows, int64_t n, bool log) {
  const int lane = threadIdx.x & 31;
  const int64_t r = int64_t(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (r >= rows) return;  // whole warps leave together
  const float* xr = x + r * n;
  float* yr = y + r * n;
  float m = -INFINITY;
  for (int64_t j = lane; j < n; j += 32) m = fmaxf(m, xr[j]);
  m = warp_max(m);
  double s = 0.0;
  for (int64_t j = lane; j < n; j += 32) s += exp(double(xr[j] - m));
  s = __shfl_sync(kFullMask, warp_sum(s), 0);
  if (log) {
    const float lse = m + float(::log(s));
    for (int64_t j = lane; j < n; j += 32) yr[j] = xr[j] - lse;
  } else {
    const float inv = float(1.0 / s);
    for (int64_t j = lane; j < n; j += 32) yr[j] = expf(xr[j] - m) * inv;
  }
}

__global__ void softmax_cols_kernel(const float* x, float* y, int64_t outer, int64_t n, int64_t inner, bool log) {
  CUDA_FOR(t, outer * inner) {
    const int64_t o = t / inner, i = t % inner;
    const float* xr = x + o * n * inner + i;
    float* yr = y + o * n * inner + i;
    float m = -INFINITY;
    for (int64_t j = 0; j < n; ++j) m = fmaxf(m, xr[j * inner]);
    double s = 0.0;
    for (int64_t j = 0; j < n; ++j) s += exp(double(xr[j * inner] - m));
    if (log) {
      const float lse = m + float(::log(s));
      for (int64_t j = 0; j < n; ++j) yr[j * inner] = xr[j * inner] - lse;
    } else {
      const float inv = float(1.0 / s);
      for (int64_t j = 0; j < n; ++j) yr[j * inner] = expf(xr[j * inner] - m) * inv;
    }
  }
}

// softmax: gx = y (gy - sum(gy y)); log_softmax: gx = gy - exp(y) sum(gy)
__global__ void softmax_backward_rows_kernel(const float* y, const float* gy, float* gx, int64_t rows, int64_t n,
                                             bool log) {
  const int lane = threadIdx.x & 31;
  const int64_t r = int64_t(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (r >= rows) return;
  const float *yr = y + r * n, *gr = gy + r * n;
  float* out = gx + r * n;
  double s = 0.0;
  if (log) {
    for (int64_t j = lane; j < n; j += 32) s += gr[j];
  } else {
    for (int64_t j = lane; j < n; j += 32) s += double(gr[j]) * yr[j];
  }
  const float sf = float(__shfl_sync(kFullMask, warp_sum(s), 0));
  if (log) {
    for (int64_t j = lane; j < n; j += 32) out[j] = gr[j] - expf(yr[j]) * sf;
  } else {
    for (int64_t j = lane; j < n; j += 32) out[j] = yr[j] * (gr[j] - sf);
  }
}

__global__ void softmax_backward_cols_kernel(const float* y, const float* gy, float* gx, int64_t outer, int64_t n,
                                             int64_t inner, bool log) {
  CUDA_FOR(t, outer * inner) {
    const int64_t o = t / inner, i = t % inner, base = o * n * inner + i;
    double s = 0.0;
    if (log) {
      for (int64_t j = 0; j < n; ++j) s += gy[base + j * inner];
      for (int64_t j = 0; j < n; ++j)
        gx[base + j * inner] = gy[base + j * inner] - expf(y[base + j * inner]) * float(s);
    } else {
      for (int64_t j = 0; j < n; ++j) s += double(gy[base + j * inner]) * y[base + j * inner];
      for (int64_t j = 0; j < n; ++j) gx[base + j * inner] = y[base + j * inner] * (gy[base + j * inner] - float(s));
    }
  }
}

}  // namespace

void softmax_forward(const float* x, float* y, int64_t outer, int64_t n, int64_t inner, bool log) {
  if (outer * n * inner <= 0) return;
  if (inner == 1)
    softmax_rows_kernel<<<grid_for(outer, kWarpsPerBlock), 32 * kWarpsPerBlock>>>(x, y, outer, n, log);
  else
    softmax_cols_kernel<<<grid_for(outer * inner), kBlock>>>(x, y, outer, n, inner, log);
  cudaCheckLaunch();
}

void softmax_backward(const float* y, const float* gy, float* gx, int64_t outer, int64_t n, int64_t inner, bool log) {
  if (outer * n * inner <= 0) return;
  if (inner == 1)
    softmax_backward_rows_kernel<<<grid_for(outer, kWarpsPerBlock), 32 * kWarpsPerBlock>>>(y, gy, gx, outer, n, log);
  else
    softmax_backward_cols_kernel<<<grid_for(outer * inner), kBlock>>>(y, gy, gx, outer, n, inner, log);
  cudaCheckLaunch();
}

}  // namespace ms::cuda
