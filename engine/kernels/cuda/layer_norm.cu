// CUDA twins of engine/kernels/cpu/layer_norm.cpp: layer norm over the rows of [R, C], one
// warp per row, statistics in double as on the CPU. The weight and bias gradients sum over
// rows in two deterministic passes: blocks of 32 columns x 256 rows write partial sums, then
// one thread per column adds the partials in row-chunk order (no atomics).
#include <algorithm>

#include "engine/device.h"
#include "engine/kernels/cuda/common.cuh"
#include "engine/kernels/kernels.h"

namespace ms::cuda {

namespace {

constexpr int kWarpsPerBlock = 8;
constexpr int kColTile = 32, kRowSlices = 8;
constexpr int64_t kRowsPerChunk = 256;

__global__ void layer_norm_forward_kernel(const float* x, const float* w, const float* b, float* y, float* mean,
                                          float* rstd, int64_t R, int64_t C, float eps) {
  const int lane = threadIdx.x & 31;
  const int64_t r = int64_t(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (r >= R) return;
  const float* xr = x + r * C;
  double m = 0.0;
  for (int64_t c = lane; c < C; c += 32) m += xr[c];
  m = __shfl_sync(kFullMask, warp_sum(m), 0) / double(C);
  double v = 0.0;
  for (int64_t c = lane; c < C; c += 32) {
    const double d = xr[c] - m;
    v += d * d;
  }
  v = __shfl_sync(kFullMask, warp_sum(v), 0) / double(C);  // biased, as torch.nn.LayerNorm
  const float rs = float(1.0 / sqrt(v + double(eps)));
  const float mf = float(m);
  if (lane == 0) {
    mean[r] = mf;
    rstd[r] = rs;
  }
  float* yr = y + r * C;
  for (int64_t c = lane; c < C; c += 32) {
    const float xh = (xr[c] - mf) * rs;
    yr[c] = (w ? w[c] : 1.f) * xh + (b ? b[c] : 0.f);
  }
}

// gx = rstd (g - mean(g) - xh mean(g xh)) with g = gy w
__global__ void layer_norm_backward_gx_kernel(const float* x, const float* w, const float* mean, const float* rstd,
                                              const float* gy, float* gx, int64_t R, int64_t C) {
  const int lane = threadIdx.x & 31;
  const int64_t r = int64_t(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (r >= R) return;
  const float* xr = x + r * C;
  const float* gr = gy + r * C;
  const float mr = mean[r], rr = rstd[r];
  double s1 = 0.0, s2 = 0.0;
  for (int64_t c = lane; c < C; c += 32) {
    const float xh = (xr[c] - mr) * rr;
    const float g = gr[c] * (w ? w[c] : 1.f);
    s1 += g;
    s2 += double(g) * xh;
  }
  const float m1 = float(__shfl_sync(kFullMask, warp_sum(s1), 0) / double(C));
  const float m2 = float(__shfl_sync(kFullMask, warp_sum(s2), 0) / double(C));
  for (int64_t c = lane; c < C; c += 32) {
    const float xh = (xr[c] - mr) * rr;
    const float g = gr[c] * (w ? w[c] : 1.f);
    gx[r * C + c] = rr * (g - m1 - xh * m2);
  }
}

// Pass 1: block (32 columns, 8 row slices) over row chunk blockIdx.y.
__global__ void layer_norm_wb_partial_kernel(const float* x, const float* mean, const float* rstd, const float* gy,
                                             double* part_w, double* part_b, int64_t R, int64_t C) {
  __shared__ double sw_s[kRowSlices][kColTile + 1], sb_s[kRowSlices][kColTile + 1];
  const int64_t c = int64_t(blockIdx.x) * kColTile + threadIdx.x;
  const int64_t r0 = int64_t(blockIdx.y) * kRowsPerChunk, r1 = min(R, r0 + kRowsPerChunk);
  double sw = 0.0, sb = 0.0;
  if (c < C)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kRowSlices) {
      const float xh = (x[r * C + c] - mean[r]) * rstd[r];
      const float g = gy[r * C + c];
      sw += double(g) * xh;
      sb += g;
    }
  sw_s[threadIdx.y][threadIdx.x] = sw;
  sb_s[threadIdx.y][threadIdx.x] = sb;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    double tw = 0.0, tb = 0.0;
    for (int k = 0; k < kRowSlices; ++k) {
      tw += sw_s[k][threadIdx.x];
      tb += sb_s[k][threadIdx.x];
    }
    part_w[int64_t(blockIdx.y) * C + c] = tw;
    part_b[int64_t(blockIdx.y) * C + c] = tb;
  }
}

// Pass 2: one thread per column adds the chunk partials in order.
__global__ void layer_norm_wb_final_kernel(const double* part_w, const double* part_b, float* gw, float* gb,
                                           int64_t chunks, int64_t C) {
  CUDA_FOR(c, C) {
    double tw = 0.0, tb = 0.0;
    for (int64_t k = 0; k < chunks; ++k) {
      tw += part_w[k * C + c];
      tb += part_b[k * C + c];
    }
    if (gw) gw[c] = float(tw);
    if (gb) gb[c] = float(tb);
  }
}

}  // namespace

void layer_norm_forward(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd, int64_t R,
                        int64_t C, float eps) {
  if (R <= 0 || C <= 0) return;
  layer_norm_forward_kernel<<<grid_for(R, kWarpsPerBlock), 32 * kWarpsPerBlock>>>(x, w, b, y, mean, rstd, R, C, eps);
  cudaCheckLaunch();
}

void layer_norm_backward(const float* x, const float* w, const float* mean, const float* rstd, const float* gy,
                         float* gx, float* gw, float* gb, int64_t R, int64_t C) {
  if (C <= 0) return;
  if (gx && R > 0) {
    layer_norm_backward_gx_kernel<<<grid_for(R, kWarpsPerBlock), 32 * kWarpsPerBlock>>>(x, w, mean, rstd, gy, gx, R, C);
    cudaCheckLaunch();
  }
  if (!gw && !gb) return;
  if (R <= 0) {  // an empty sum
    if (gw) cudaCheck(cudaMemset(gw, 0, size_t(C) * sizeof(float)));
    if (gb) cudaCheck(cudaMemset(gb, 0, size_t(C) * sizeof(float)));
    return;
  }
  const int64_t chunks = CEIL_DIV(R, kRowsPerChunk);
  if (chunks > 65535)
    throw std::invalid_argument("layer_norm_backward: " + std::to_string(R) + " rows exceed the CUDA kernel's limit");
  const size_t bytes = size_t(2 * chunks * C) * sizeof(double);
  double* part = static_cast<double*>(device_alloc(bytes));
  try {
    dim3 grid(unsigned(CEIL_DIV(C, int64_t(kColTile))), unsigned(chunks));
    layer_norm_wb_partial_kernel<<<grid, dim3(kColTile, kRowSlices)>>>(x, mean, rstd, gy, part, part + chunks * C, R,
                                                                       C);
    cudaCheckLaunch();
    layer_norm_wb_final_kernel<<<grid_for(C), kBlock>>>(part, part + chunks * C, gw, gb, chunks, C);
    cudaCheckLaunch();
  } catch (...) {
    device_free(part, bytes);
    throw;
  }
  device_free(part, bytes);
}

}  // namespace ms::cuda
