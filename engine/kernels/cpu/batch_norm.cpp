// CPU reference kernels: batch norm over [N, C, HW] with per-channel statistics. One
// thread owns a channel (or a plane) and sums in index order, in double, so results do
// not depend on the thread count.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "engine/kernels/cpu/bn_act.h"
#include "engine/kernels/cpu/lanes.h"
#include "engine/kernels/kernels.h"

namespace ms::cpu {

// Sums in double over 8 interleaved lanes (lanes.h: a fixed order, so the same on any thread
// count; the lanes let the compiler vectorise what one serial double chain cannot).
namespace {
using namespace lanes;

// sg += gy, sd += gy (x - m)
inline void plane_grad_sums(const float* x, const float* gy, int64_t n, float m, double* sg, double* sd) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      sg[l] += double(gy[i + l]);
      sd[l] += double(gy[i + l]) * double(x[i + l] - m);
    }
  for (int l = 0; i < n; ++i, ++l) {
    sg[l] += double(gy[i]);
    sd[l] += double(gy[i]) * double(x[i] - m);
  }
}

// sg += g, sd += g (x - m) with g = gy where y > 0, else 0 (relu's backward, from its output)
inline void plane_grad_sums_masked(const float* x, const float* y, const float* gy, int64_t n, float m, double* sg,
                                   double* sd);


inline void plane_grad_sums_masked(const float* x, const float* y, const float* gy, int64_t n, float m, double* sg,
                                   double* sd) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      const float g = keep_or_zero(positive(y[i + l]), gy[i + l]);
      sg[l] += double(g);
      sd[l] += double(g) * double(x[i + l] - m);
    }
  for (int l = 0; i < n; ++i, ++l) {
    const float g = keep_or_zero(positive(y[i]), gy[i]);
    sg[l] += double(g);
    sd[l] += double(g) * double(x[i] - m);
  }
}
}  // namespace

// Two passes (mean, then mean squared deviation) for accuracy; var is biased (/ N*HW).
void batch_norm_stats(const float* x, float* mean, float* var_biased, int64_t N, int64_t C, int64_t HW) {
  const double M = double(N * HW);
#pragma omp parallel for schedule(static) if (N * C * HW > 32768)
  for (int64_t c = 0; c < C; ++c) {
    double acc[kLanes] = {};
    for (int64_t n = 0; n < N; ++n) plane_sum(x + (n * C + c) * HW, HW, acc);
    const double m = lanes_total(acc) / M;
    double dev[kLanes] = {};
    for (int64_t n = 0; n < N; ++n) plane_sq_dev(x + (n * C + c) * HW, HW, m, dev);
    mean[c] = float(m);
    var_biased[c] = float(lanes_total(dev) / M);
  }
}

// y = x * a + b' with a = rstd w, b' = b - mean a (PyTorch's CPU form). w, b may be null.
void batch_norm_apply(const float* x, const float* mean, const float* rstd, const float* w, const float* b, float* y,
                      int64_t N, int64_t C, int64_t HW) {
#pragma omp parallel for schedule(static) if (N * C * HW > 32768)
  for (int64_t p = 0; p < N * C; ++p) {
    const int64_t c = p % C;
    const float a = rstd[c] * (w ? w[c] : 1.f);
    const float sh = (b ? b[c] : 0.f) - mean[c] * a;
    const float* xp = x + p * HW;
    float* yp = y + p * HW;
    for (int64_t i = 0; i < HW; ++i) yp[i] = xp[i] * a + sh;
  }
}

// With xc = x - mean, M = N*HW, sg = sum gy, sd = sum gy xc:
//   gb = sg, gw = sd rstd;
//   training: gx = w rstd (gy - sg/M - xc sd rstd^2/M)  (statistics depend on x)
//   eval:     gx = w rstd gy                           (statistics are constants)
// Any of gx, gw, gb may be null; all are written, not accumulated.
void batch_norm_backward(const float* x, const float* mean, const float* rstd, const float* w, const float* gy,
                         float* gx, float* gw, float* gb, int64_t N, int64_t C, int64_t HW, bool training) {
  // batch_norm_act_backward without relu or residual computes exactly this, in the same order.
  batch_norm_act_backward(x, nullptr, mean, rstd, w, gy, gx, gw, gb, nullptr, N, C, HW, training, false);
}

// The fused batch_norm2d_act (engine/ops/batch_norm.cpp): y = x a + b' as batch_norm_apply,
// then + res (if given), then relu (if asked), each rounded to float in that order, as the
// three unfused ops do: one pass instead of three.
void batch_norm_act_apply(const float* x, const float* mean, const float* rstd, const float* w, const float* b,
                          const float* res, float* y, int64_t N, int64_t C, int64_t HW, bool relu) {
#pragma omp parallel for schedule(static) if (N * C * HW > 32768)
  for (int64_t p = 0; p < N * C; ++p) {
    float a, sh;
    bn_affine(mean, rstd, w, b, p % C, a, sh);
    bn_act_row(x + p * HW, res ? res + p * HW : nullptr, y + p * HW, HW, a, sh, relu);
  }
}

// Backward of batch_norm_act_apply: g = gy masked by y > 0 (relu) or gy; gres = g (if
// asked); then batch_norm_backward's sums and gx from g, in the same order, without
// writing g out first (two passes over x, y, gy instead of relu's pass + the two of BN).
// gx or gres may point at gy (written over it), not both.
void batch_norm_act_backward(const float* x, const float* y, const float* mean, const float* rstd, const float* w,
                             const float* gy, float* gx, float* gw, float* gb, float* gres, int64_t N, int64_t C,
                             int64_t HW, bool training, bool relu) {
  const double M = double(N * HW);
#pragma omp parallel for schedule(static) if (N * C * HW > 32768)
  for (int64_t c = 0; c < C; ++c) {
    const float m = mean[c], rs = rstd[c], wc = w ? w[c] : 1.f;
    double sg = 0.0, sd = 0.0;
    if (gw || gb || (gx && training)) {
      double lg[kLanes] = {}, ld[kLanes] = {};
      for (int64_t n = 0; n < N; ++n) {
        const int64_t o = (n * C + c) * HW;
        if (relu) plane_grad_sums_masked(x + o, y + o, gy + o, HW, m, lg, ld);
        else plane_grad_sums(x + o, gy + o, HW, m, lg, ld);
      }
      sg = lanes_total(lg);
      sd = lanes_total(ld);
    }
    if (gb) gb[c] = float(sg);
    if (gw) gw[c] = float(sd * rs);
    if (!gx && !gres) continue;
    const float a = wc * rs;
    const float gmean = float(sg / M), proj = float(sd * double(rs) * double(rs) / M);
    // gx or gres may be gy itself (the op hands on the incoming gradient's buffer): every
    // element is read before it is written, and the in-place loops say so to the compiler
    // through one pointer (io), so they vectorise without a runtime overlap check.
    auto dx = [&](float g, float xv) { return training ? (g - gmean - (xv - m) * proj) * a : g * a; };
    for (int64_t n = 0; n < N; ++n) {
      const int64_t o = (n * C + c) * HW;
      const float* xp = x + o;
      const float* yp = relu ? y + o : nullptr;
      const float* gp = gy + o;
      float* op = gx ? gx + o : nullptr;
      float* rp = gres ? gres + o : nullptr;
      auto grad = [&](const float* src, int64_t i) { return relu ? keep_or_zero(positive(yp[i]), src[i]) : src[i]; };
      if (op && op == gp) {  // gx over gy (no gres)
        float* io = op;
        for (int64_t i = 0; i < HW; ++i) io[i] = dx(grad(io, i), xp[i]);
      } else if (rp && rp == gp) {  // gres over gy, gx (if any) its own buffer
        float* io = rp;
        if (op)
          for (int64_t i = 0; i < HW; ++i) {
            const float g = grad(io, i);
            io[i] = g;
            op[i] = dx(g, xp[i]);
          }
        else
          for (int64_t i = 0; i < HW; ++i) io[i] = grad(io, i);
      } else {
        for (int64_t i = 0; i < HW; ++i) {
          const float g = grad(gp, i);
          if (rp) rp[i] = g;
          if (op) op[i] = dx(g, xp[i]);
        }
      }
    }
  }
}

}  // namespace ms::cpu
