// CPU reference kernels: (log-)softmax over the middle axis of [outer, n, inner].
#include <cmath>
#include <limits>

#include "engine/kernels/kernels.h"

namespace ms::cpu {

void softmax_forward(const float* x, float* y, int64_t outer, int64_t n, int64_t inner, bool log) {
#pragma omp parallel for collapse(2) schedule(static) if (outer * n * inner > 16384)
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      const float* xr = x + o * n * inner + i;
      float* yr = y + o * n * inner + i;
      float m = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < n; ++j) m = std::max(m, xr[j * inner]);
      double s = 0.0;
      if (log) {
        for (int64_t j = 0; j < n; ++j) s += std::exp(double(xr[j * inner] - m));
        float lse = m + float(std::log(s));
        for (int64_t j = 0; j < n; ++j) yr[j * inner] = xr[j * inner] - lse;
      } else {
        // One float exp per element, kept in y; the sum of those values in double.
        for (int64_t j = 0; j < n; ++j) {
          const float e = std::exp(xr[j * inner] - m);
          yr[j * inner] = e;
          s += double(e);
        }
        float inv = float(1.0 / s);
        for (int64_t j = 0; j < n; ++j) yr[j * inner] *= inv;
      }
    }
}

// softmax: gx = y (gy - sum(gy y)); log_softmax: gx = gy - exp(y) sum(gy)
void softmax_backward(const float* y, const float* gy, float* gx, int64_t outer, int64_t n, int64_t inner, bool log) {
#pragma omp parallel for collapse(2) schedule(static) if (outer * n * inner > 16384)
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      const int64_t base = o * n * inner + i;
      double s = 0.0;
      if (log) {
        for (int64_t j = 0; j < n; ++j) s += gy[base + j * inner];
        for (int64_t j = 0; j < n; ++j) gx[base + j * inner] = gy[base + j * inner] - std::exp(y[base + j * inner]) * float(s);
      } else {
        for (int64_t j = 0; j < n; ++j) s += double(gy[base + j * inner]) * y[base + j * inner];
        for (int64_t j = 0; j < n; ++j) gx[base + j * inner] = y[base + j * inner] * (gy[base + j * inner] - float(s));
      }
    }
}

}  // namespace ms::cpu
