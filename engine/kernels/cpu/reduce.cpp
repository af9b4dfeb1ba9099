// CPU reference kernels: reductions along one axis of [outer, n, inner]. Each output
// element is summed in index order, so results do not depend on the thread count.
#include <algorithm>
#include <limits>
#include <vector>

#include "engine/kernels/kernels.h"

namespace ms::cpu {

void sum_dim(const float* x, float* y, int64_t outer, int64_t n, int64_t inner) {
#pragma omp parallel for schedule(static) if (outer * inner > 256 && outer * n * inner > 32768)
  for (int64_t o = 0; o < outer; ++o) {
    float* yo = y + o * inner;
    for (int64_t i = 0; i < inner; ++i) yo[i] = 0.f;
    for (int64_t j = 0; j < n; ++j) {
      const float* xr = x + (o * n + j) * inner;
      for (int64_t i = 0; i < inner; ++i) yo[i] += xr[i];
    }
  }
}

void max_dim(const float* x, float* y, int64_t* arg, int64_t outer, int64_t n, int64_t inner) {
#pragma omp parallel for schedule(static) if (outer * n * inner > 32768)
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      float best = -std::numeric_limits<float>::infinity();
      int64_t bi = 0;
      for (int64_t j = 0; j < n; ++j) {
        float v = x[(o * n + j) * inner + i];
        if (v > best || (j == 0)) { best = v; bi = j; }
      }
      y[o * inner + i] = best;
      if (arg) arg[o * inner + i] = bi;
    }
}

void max_dim_backward(const float* gy, const int64_t* arg, float* gx, int64_t outer, int64_t n, int64_t inner) {
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) gx[(o * n + arg[o * inner + i]) * inner + i] += gy[o * inner + i];
}

void repeat_dim(const float* x, float* y, int64_t outer, int64_t n, int64_t inner) {
#pragma omp parallel for schedule(static) if (outer * n * inner > 32768)
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t i = 0; i < inner; ++i) y[(o * n + j) * inner + i] = x[o * inner + i];
}

}  // namespace ms::cpu
