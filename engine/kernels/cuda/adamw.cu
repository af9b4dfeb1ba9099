// CUDA twin of engine/kernels/cpu/adamw.cpp: one AdamW update, exactly as torch.optim.AdamW
// (non-amsgrad): p *= 1 - lr wd; m = lerp(m, g, 1-b1); v = b2 v + (1-b2) g^2;
// p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps). The scalars are formed on the host, as on the CPU.
#include <cmath>

#include "engine/kernels/cuda/common.cuh"
#include "engine/kernels/kernels.h"

namespace ms::cuda {

namespace {

__global__ void adamw_kernel(float* p, const float* g, float* m, float* v, int64_t n, float lr, float beta1,
                             float beta2, float eps, float weight_decay, float step_size, float bc2_sqrt) {
  CUDA_FOR(i, n) {
    float pi = p[i] * (1.f - lr * weight_decay);
    const float gi = g[i];
    const float mi = m[i] + (1.f - beta1) * (gi - m[i]);
    const float vi = v[i] * beta2 + (1.f - beta2) * gi * gi;
    const float denom = sqrtf(vi) / bc2_sqrt + eps;
    pi -= step_size * mi / denom;
    p[i] = pi;
    m[i] = mi;
    v[i] = vi;
  }
}

}  // namespace

void adamw_step(float* p, const float* g, float* m, float* v, int64_t n, float lr, float beta1, float beta2, float eps,
                float weight_decay, float bc1, float bc2) {
  if (n <= 0) return;
  const float step_size = lr / bc1;
  const float bc2_sqrt = std::sqrt(bc2);
  adamw_kernel<<<grid_for(n), kBlock>>>(p, g, m, v, n, lr, beta1, beta2, eps, weight_decay, step_size, bc2_sqrt);
  cudaCheckLaunch();
}

}  // namespace ms::cuda
