// CPU reference kernel: one AdamW update, exactly as torch.optim.AdamW (non-amsgrad,
// single-tensor path): p *= 1 - lr wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
// p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps).
#include <cmath>

#include "engine/kernels/kernels.h"

namespace ms::cpu {

void adamw_step(float* p, const float* g, float* m, float* v, int64_t n, float lr, float beta1, float beta2, float eps,
                float weight_decay, float bc1, float bc2) {
  const float step_size = lr / bc1;
  const float bc2_sqrt = std::sqrt(bc2);
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    p[i] *= 1.f - lr * weight_decay;
    m[i] = m[i] + (1.f - beta1) * (g[i] - m[i]);  // torch: exp_avg.lerp_(grad, 1-beta1)
    v[i] = v[i] * beta2 + (1.f - beta2) * g[i] * g[i];
    float denom = std::sqrt(v[i]) / bc2_sqrt + eps;
    p[i] -= step_size * m[i] / denom;
  }
}

}  // namespace ms::cpu
