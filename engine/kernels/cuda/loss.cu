// CUDA twins of engine/kernels/cpu/loss.cpp: per-row cross-entropy terms (one warp per row,
// softmax sums in double as on the CPU) and elementwise BCE-with-logits. `target` and `valid`
// are device arrays (the ops stage them with DeviceArray).
#include "engine/kernels/cuda/common.cuh"
#include "engine/kernels/kernels.h"

namespace ms::cuda {

namespace {

constexpr int kWarpsPerBlock = 8;

// Row max and sum(exp(l - max)) over one row, valid in every lane.
__device__ __forceinline__ void row_logsumexp(const float* l, int64_t C, int lane, float& m, double& s) {
  m = -INFINITY;
  for (int64_t c = lane; c < C; c += 32) m = fmaxf(m, l[c]);
  m = warp_max(m);
  s = 0.0;
  for (int64_t c = lane; c < C; c += 32) s += exp(double(l[c] - m));
  s = __shfl_sync(kFullMask, warp_sum(s), 0);
}

__global__ void cross_entropy_forward_kernel(const float* logits, const int64_t* target, const uint8_t* valid,
                                             float* row_loss, int64_t R, int64_t C) {
  const int lane = threadIdx.x & 31;
  const int64_t r = int64_t(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (r >= R) return;
  if (!valid[r]) {
    if (lane == 0) row_loss[r] = 0.f;
    return;
  }
  const float* l = logits + r * C;
  float m;
  double s;
  row_logsumexp(l, C, lane, m, s);
  if (lane == 0) row_loss[r] = float(double(m) + log(s) - double(l[target[r]]));  // -log softmax[target]
}

// d/dlogits = scale (softmax - onehot(target)) on valid rows, 0 elsewhere.
__global__ void cross_entropy_backward_kernel(const float* logits, const int64_t* target, const uint8_t* valid,
                                              float scale, float* glogits, int64_t R, int64_t C) {
  const int lane = threadIdx.x & 31;
  const int64_t r = int64_t(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (r >= R) return;
  float* g = glogits + r * C;
  if (!valid[r]) {
    for (int64_t c = lane; c < C; c += 32) g[c] = 0.f;
    return;
  }
  const float* l = logits + r * C;
  float m;
  double s;
  row_logsumexp(l, C, lane, m, s);
  const int64_t tr = target[r];
  for (int64_t c = lane; c < C; c += 32) {
    const float p = float(exp(double(l[c] - m)) / s);
    g[c] = scale * (p - (c == tr ? 1.f : 0.f));
  }
}

// max(x,0) - x t + log(1 + exp(-|x|)); max as std::max(x, 0.f), so a NaN x stays NaN.
__global__ void bce_forward_kernel(const float* x, const float* t, const uint8_t* valid, float* el, int64_t n) {
  CUDA_FOR(i, n) {
    const float v = x[i];
    el[i] = valid[i] ? (v < 0.f ? 0.f : v) - v * t[i] + log1pf(expf(-fabsf(v))) : 0.f;
  }
}

// d/dx = scale (sigmoid(x) - t)
__global__ void bce_backward_kernel(const float* x, const float* t, const uint8_t* valid, float scale, float* gx,
                                    int64_t n) {
  CUDA_FOR(i, n) gx[i] = valid[i] ? scale * (1.f / (1.f + expf(-x[i])) - t[i]) : 0.f;
}

}  // namespace

void cross_entropy_forward(const float* logits, const int64_t* target, const uint8_t* valid, float* row_loss, int64_t R,
                           int64_t C) {
  if (R <= 0) return;
  cross_entropy_forward_kernel<<<grid_for(R, kWarpsPerBlock), 32 * kWarpsPerBlock>>>(logits, target, valid, row_loss, R,
                                                                                     C);
  cudaCheckLaunch();
}

void cross_entropy_backward(const float* logits, const int64_t* target, const uint8_t* valid, float scale,
                            float* glogits, int64_t R, int64_t C) {
  if (R <= 0) return;
  cross_entropy_backward_kernel<<<grid_for(R, kWarpsPerBlock), 32 * kWarpsPerBlock>>>(logits, target, valid, scale,
                                                                                      glogits, R, C);
  cudaCheckLaunch();
}

void bce_with_logits_forward(const float* x, const float* t, const uint8_t* valid, float* elem_loss, int64_t n) {
  if (n <= 0) return;
  bce_forward_kernel<<<grid_for(n), kBlock>>>(x, t, valid, elem_loss, n);
  cudaCheckLaunch();
}

void bce_with_logits_backward(const float* x, const float* t, const uint8_t* valid, float scale, float* gx, int64_t n) {
  if (n <= 0) return;
  bce_backward_kernel<<<grid_for(n), kBlock>>>(x, t, valid, scale, gx, n);
  cudaCheckLaunch();
}

}  // namespace ms::cuda
