// CPU reference kernels: inverted dropout.
#include "engine/kernels/kernels.h"
#include "engine/rng.h"

namespace ms::cpu {

void dropout_forward(const float* x, float* y, uint8_t* keep, int64_t n, float p, uint64_t key, uint64_t counter0) {
  const float scale = 1.f / (1.f - p);
#pragma omp parallel for schedule(static) if (n > 32768)
  for (int64_t b = 0; b < (n + 3) / 4; ++b) {
    auto r = philox4x32(counter0 + uint64_t(b), 0, key);
    for (int j = 0; j < 4 && b * 4 + j < n; ++j) {
      int64_t i = b * 4 + j;
      keep[i] = u32_to_unit_float(r[j]) >= p;  // same rule as philox_keep
      y[i] = keep[i] ? x[i] * scale : 0.f;
    }
  }
}

void dropout_backward(const float* gy, const uint8_t* keep, float* gx, int64_t n, float p) {
  const float scale = 1.f / (1.f - p);
#pragma omp parallel for simd schedule(static) if (n > 32768)
  for (int64_t i = 0; i < n; ++i) gx[i] = keep[i] ? gy[i] * scale : 0.f;
}

}  // namespace ms::cpu
