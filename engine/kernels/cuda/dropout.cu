// CUDA twin of engine/kernels/cpu/dropout.cpp: inverted dropout with the shared Philox rule
// (engine/rng.h philox_keep): element i keeps iff unit(philox(counter0 + i/4, key)[i%4]) >= p.
// One thread per block of four elements draws one Philox block, as the CPU loop does, so a
// (seed, stream, counter) drops the same elements on both devices.
#include "engine/kernels/cuda/common.cuh"
#include "engine/philox.h"
#include "engine/kernels/kernels.h"

namespace ms::cuda {

namespace {

__global__ void dropout_forward_kernel(const float* x, float* y, uint8_t* keep, int64_t n, float p, float scale,
                                       uint64_t key, uint64_t counter0) {
  CUDA_FOR(b, CEIL_DIV(n, int64_t(4))) {
    const Philox4 r = philox_block(counter0 + uint64_t(b), 0, key);
    for (int j = 0; j < 4 && b * 4 + j < n; ++j) {
      const int64_t i = b * 4 + j;
      const bool k = u32_to_unit_float(r.v[j]) >= p;
      keep[i] = k;
      y[i] = k ? x[i] * scale : 0.f;
    }
  }
}

__global__ void dropout_backward_kernel(const float* gy, const uint8_t* keep, float* gx, int64_t n, float scale) {
  CUDA_FOR(i, n) gx[i] = keep[i] ? gy[i] * scale : 0.f;
}

}  // namespace

void dropout_forward(const float* x, float* y, uint8_t* keep, int64_t n, float p, uint64_t key, uint64_t counter0) {
  if (n <= 0) return;
  const float scale = 1.f / (1.f - p);  // computed on the host, as the CPU twin does
  dropout_forward_kernel<<<grid_for(CEIL_DIV(n, int64_t(4))), kBlock>>>(x, y, keep, n, p, scale, key, counter0);
  cudaCheckLaunch();
}

void dropout_backward(const float* gy, const uint8_t* keep, float* gx, int64_t n, float p) {
  if (n <= 0) return;
  const float scale = 1.f / (1.f - p);
  dropout_backward_kernel<<<grid_for(n), kBlock>>>(gy, keep, gx, n, scale);
  cudaCheckLaunch();
}

}  // namespace ms::cuda
