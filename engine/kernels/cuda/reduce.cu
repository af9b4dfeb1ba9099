// CUDA twins of engine/kernels/cpu/reduce.cpp: reductions along the middle axis of
// [outer, n, inner]. Deterministic: every sum runs in a fixed order set by the launch
// configuration (strided per-thread partials, then a fixed tree), never through atomics.
// Partial sums are kept in double, so the GPU result is at least as accurate as the CPU's
// float running sum; the two differ by summation order only.
#include <algorithm>

#include "engine/device.h"
#include "engine/kernels/cuda/common.cuh"
#include "engine/kernels/kernels.h"

namespace ms::cuda {

namespace {

constexpr int kTileX = 32, kTileY = 8;  // sum over n with inner > 1: 32 columns x 8 row slices

// Short reductions (n <= 64): one thread per output, summing in index order.
__global__ void sum_serial_kernel(const float* x, float* y, int64_t outer, int64_t n, int64_t inner) {
  CUDA_FOR(t, outer * inner) {
    const int64_t o = t / inner, i = t % inner;
    double s = 0.0;
    for (int64_t j = 0; j < n; ++j) s += x[(o * n + j) * inner + i];
    y[t] = float(s);
  }
}

// inner == 1: one block per row of n contiguous values.
__global__ void sum_rows_kernel(const float* x, float* y, int64_t n) {
  __shared__ double smem[33];
  const float* xr = x + int64_t(blockIdx.x) * n;
  double s = 0.0;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) s += xr[j];
  s = block_sum(s, smem);
  if (threadIdx.x == 0) y[blockIdx.x] = float(s);
}

// inner > 1: block (32, 8) owns 32 columns of one outer slice; thread row ty sums rows
// j = ty, ty+8, ... and the 8 partials are then added in ty order.
__global__ void sum_cols_kernel(const float* x, float* y, int64_t n, int64_t inner) {
  __shared__ double part[kTileY][kTileX + 1];
  const int64_t o = blockIdx.y;
  const int64_t i = int64_t(blockIdx.x) * kTileX + threadIdx.x;
  double s = 0.0;
  if (i < inner)
    for (int64_t j = threadIdx.y; j < n; j += kTileY) s += x[(o * n + j) * inner + i];
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && i < inner) {
    double t = 0.0;
    for (int k = 0; k < kTileY; ++k) t += part[k][threadIdx.x];
    y[o * inner + i] = float(t);
  }
}

// One thread per output element: the CPU's scan, so ties and NaN behave the same (the first
// maximum wins; a NaN counts only in slot 0).
__global__ void max_dim_kernel(const float* x, float* y, int64_t* arg, int64_t outer, int64_t n, int64_t inner) {
  CUDA_FOR(t, outer * inner) {
    const int64_t o = t / inner, i = t % inner;
    float best = -INFINITY;
    int64_t bi = 0;
    for (int64_t j = 0; j < n; ++j) {
      const float v = x[(o * n + j) * inner + i];
      if (v > best || j == 0) {
        best = v;
        bi = j;
      }
    }
    y[t] = best;
    if (arg) arg[t] = bi;
  }
}

// Each (o, i) hits one distinct gx element, so threads never collide.
__global__ void max_dim_backward_kernel(const float* gy, const int64_t* arg, float* gx, int64_t outer, int64_t n,
                                        int64_t inner) {
  CUDA_FOR(t, outer * inner) {
    const int64_t o = t / inner, i = t % inner;
    gx[(o * n + arg[t]) * inner + i] += gy[t];
  }
}

__global__ void repeat_dim_kernel(const float* x, float* y, int64_t outer, int64_t n, int64_t inner) {
  CUDA_FOR(t, outer * n * inner) {
    const int64_t i = t % inner, o = t / (n * inner);
    y[t] = x[o * inner + i];
  }
}

}  // namespace

void sum_dim(const float* x, float* y, int64_t outer, int64_t n, int64_t inner) {
  if (outer * inner <= 0) return;
  if (n == 0) {
    cudaCheck(cudaMemset(y, 0, size_t(outer * inner) * sizeof(float)));
    return;
  }
  if (n <= 64) {
    sum_serial_kernel<<<grid_for(outer * inner), kBlock>>>(x, y, outer, n, inner);
    cudaCheckLaunch();
    return;
  }
  if (outer > 65535 && inner > 1) {  // grid.y limit: fall back to row blocks per outer slice
    for (int64_t o0 = 0; o0 < outer; o0 += 65535) {
      const int64_t oc = std::min<int64_t>(65535, outer - o0);
      sum_dim(x + o0 * n * inner, y + o0 * inner, oc, n, inner);
    }
    return;
  }
  if (inner == 1) {
    for (int64_t o0 = 0; o0 < outer; o0 += (int64_t(1) << 30)) {
      const int64_t oc = std::min<int64_t>(int64_t(1) << 30, outer - o0);
      sum_rows_kernel<<<unsigned(oc), kBlock>>>(x + o0 * n, y + o0, n);
      cudaCheckLaunch();
    }
    return;
  }
  dim3 grid(unsigned(CEIL_DIV(inner, int64_t(kTileX))), unsigned(outer));
  sum_cols_kernel<<<grid, dim3(kTileX, kTileY)>>>(x, y, n, inner);
  cudaCheckLaunch();
}

void max_dim(const float* x, float* y, int64_t* arg, int64_t outer, int64_t n, int64_t inner) {
  if (outer * inner <= 0) return;
  max_dim_kernel<<<grid_for(outer * inner), kBlock>>>(x, y, arg, outer, n, inner);
  cudaCheckLaunch();
}

void max_dim_backward(const float* gy, const int64_t* arg, float* gx, int64_t outer, int64_t n, int64_t inner) {
  if (outer * inner <= 0) return;
  max_dim_backward_kernel<<<grid_for(outer * inner), kBlock>>>(gy, arg, gx, outer, n, inner);
  cudaCheckLaunch();
}

void repeat_dim(const float* x, float* y, int64_t outer, int64_t n, int64_t inner) {
  if (outer * n * inner <= 0) return;
  repeat_dim_kernel<<<grid_for(outer * n * inner), kBlock>>>(x, y, outer, n, inner);
  cudaCheckLaunch();
}

}  // namespace ms::cuda
