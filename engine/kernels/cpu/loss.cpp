// CPU reference kernels: the two loss functions (forward per row / element, backward
// scaled by the upstream gradient over the number of counted rows).
#include <algorithm>
#include <cmath>
#include <limits>

#include "engine/kernels/kernels.h"

namespace ms::cpu {

void cross_entropy_forward(const float* logits, const int64_t* target, const uint8_t* valid, float* row_loss, int64_t R,
                           int64_t C) {
  for (int64_t r = 0; r < R; ++r) {
    if (!valid[r]) { row_loss[r] = 0.f; continue; }
    const float* l = logits + r * C;
    float m = -std::numeric_limits<float>::infinity();
    for (int64_t c = 0; c < C; ++c) m = std::max(m, l[c]);
    double s = 0.0;
    for (int64_t c = 0; c < C; ++c) s += std::exp(double(l[c] - m));
    row_loss[r] = float(double(m) + std::log(s) - double(l[target[r]]));  // -log softmax[target]
  }
}

// d/dlogits = scale (softmax - onehot(target)) on valid rows, 0 elsewhere.
void cross_entropy_backward(const float* logits, const int64_t* target, const uint8_t* valid, float scale,
                            float* glogits, int64_t R, int64_t C) {
  for (int64_t r = 0; r < R; ++r) {
    float* g = glogits + r * C;
    if (!valid[r]) { for (int64_t c = 0; c < C; ++c) g[c] = 0.f; continue; }
    const float* l = logits + r * C;
    float m = -std::numeric_limits<float>::infinity();
    for (int64_t c = 0; c < C; ++c) m = std::max(m, l[c]);
    double s = 0.0;
    for (int64_t c = 0; c < C; ++c) s += std::exp(double(l[c] - m));
    for (int64_t c = 0; c < C; ++c) {
      float p = float(std::exp(double(l[c] - m)) / s);
      g[c] = scale * (p - (c == target[r] ? 1.f : 0.f));
    }
  }
}

// max(x,0) - x t + log(1 + exp(-|x|))
void bce_with_logits_forward(const float* x, const float* t, const uint8_t* valid, float* elem_loss, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    elem_loss[i] = valid[i] ? std::max(x[i], 0.f) - x[i] * t[i] + std::log1p(std::exp(-std::fabs(x[i]))) : 0.f;
}

// d/dx = scale (sigmoid(x) - t)
void bce_with_logits_backward(const float* x, const float* t, const uint8_t* valid, float scale, float* gx, int64_t n) {
  for (int64_t i = 0; i < n; ++i) gx[i] = valid[i] ? scale * (1.f / (1.f + std::exp(-x[i])) - t[i]) : 0.f;
}

}  // namespace ms::cpu
