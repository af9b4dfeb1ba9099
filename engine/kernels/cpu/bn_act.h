// defines: the arithmetic of an evaluation-mode BatchNorm (+ residual) (+ ReLU) applied to a
// value, shared by batch_norm_act_apply (batch_norm.cpp) and the convolutions that apply it to
// their own output while it is still in cache (conv2d_bn_act_forward: conv.cpp, winograd.cpp),
// so that both give the same bits. CPU only.
#pragma once
#include <cstdint>
#include <cstring>

#include <omp.h>

namespace ms::cpu {

// relu's decision and select on the bit pattern (x > 0: sign clear, not zero, not NaN), shared
// by relu (elementwise.cpp) and the fused kernels, so that they give the unfused ops' bits.
inline bool positive(float x) {
  uint32_t b;
  std::memcpy(&b, &x, sizeof b);
  return b - 1u < 0x7f800000u;
}
inline float keep_or_zero(bool keep, float x) {  // keep ? x : +0
  uint32_t b;
  std::memcpy(&b, &x, sizeof b);
  b &= 0u - uint32_t(keep);
  float r;
  std::memcpy(&r, &b, sizeof r);
  return r;
}

// Channel c's scale and shift: y = x a + sh with a = rstd w, sh = b - mean a.
inline void bn_affine(const float* mean, const float* rstd, const float* w, const float* b, int64_t c, float& a,
                      float& sh) {
  a = rstd[c] * (w ? w[c] : 1.f);
  sh = (b ? b[c] : 0.f) - mean[c] * a;
}

// y[i] = relu?(x[i] a + sh [+ res[i]]) for i < n (res may be null; y may be x).
inline void bn_act_row(const float* x, const float* res, float* y, int64_t n, float a, float sh, bool relu) {
  if (res) {
    if (relu)
      for (int64_t i = 0; i < n; ++i) {
        const float z = x[i] * a + sh;
        const float t = z + res[i];
        y[i] = keep_or_zero(positive(t), t);
      }
    else
      for (int64_t i = 0; i < n; ++i) {
        const float z = x[i] * a + sh;
        y[i] = z + res[i];
      }
  } else if (relu) {
    for (int64_t i = 0; i < n; ++i) {
      const float z = x[i] * a + sh;
      y[i] = keep_or_zero(positive(z), z);
    }
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] * a + sh;
  }
}

// The epilogue a convolution applies to its output [N, O, L]: the statistics and affine
// parameters of the BatchNorm ([O] each; w and b may be null), an optional residual shaped as
// the output, and the ReLU.
struct BnAct {
  const float* mean;
  const float* rstd;
  const float* w;
  const float* b;
  const float* res;
  bool relu;
  // planes [n0, n1) of y ([N, O, L]) in place, the residual's matching planes
  // (over the threads when called outside a parallel region).
  void apply(float* y, int64_t n0, int64_t n1, int64_t O, int64_t L) const {
#pragma omp parallel for schedule(static) if ((n1 - n0) * O * L > 32768 && !omp_in_parallel())
    for (int64_t p = n0 * O; p < n1 * O; ++p) plane(y + p * L, p, O, L);
  }
  // plane p = n O + o of y ([N, O, L]) in place
  void plane(float* yp, int64_t p, int64_t O, int64_t L) const {
    float a, sh;
    bn_affine(mean, rstd, w, b, p % O, a, sh);
    bn_act_row(yp, res ? res + p * L : nullptr, yp, L, a, sh, relu);
  }
};

}  // namespace ms::cpu
