// CPU reference kernels: layer norm over the rows of [R, C].
#include <cmath>

#include "engine/kernels/cpu/lanes.h"
#include "engine/kernels/kernels.h"

namespace ms::cpu {

// Row sums: 8 interleaved double lanes (lanes.h).
using namespace lanes;

void layer_norm_forward(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd, int64_t R,
                        int64_t C, float eps) {
#pragma omp parallel for schedule(static) if (R * C > 16384)
  for (int64_t r = 0; r < R; ++r) {
    const float* xr = x + r * C;
    double acc[kLanes] = {};
    plane_sum(xr, C, acc);
    const double m = lanes_total(acc) / double(C);
    double sq[kLanes] = {};
    plane_sq_dev(xr, C, m, sq);
    const double v = lanes_total(sq) / double(C);  // biased, as torch.nn.LayerNorm
    float rs = float(1.0 / std::sqrt(v + double(eps)));
    mean[r] = float(m);
    rstd[r] = rs;
    float* yr = y + r * C;
    for (int64_t k = 0; k < C; ++k) {
      float xh = (xr[k] - float(m)) * rs;
      yr[k] = (w ? w[k] : 1.f) * xh + (b ? b[k] : 0.f);
    }
  }
}

// xh = (x-mean) rstd; gxh = gy w; gx = rstd (gxh - mean(gxh) - xh mean(gxh xh));
// gw = sum_r gy xh; gb = sum_r gy. gw/gb are written (summed over rows in order).
void layer_norm_backward(const float* x, const float* w, const float* mean, const float* rstd, const float* gy,
                         float* gx, float* gw, float* gb, int64_t R, int64_t C) {
  if (gx) {
#pragma omp parallel for schedule(static) if (R * C > 16384)
    for (int64_t r = 0; r < R; ++r) {
      const float* xr = x + r * C;
      const float* gr = gy + r * C;
      double a1[kLanes] = {}, a2[kLanes] = {};
      int64_t c = 0;
      for (; c + kLanes <= C; c += kLanes)
        for (int l = 0; l < kLanes; ++l) {
          float xh = (xr[c + l] - mean[r]) * rstd[r];
          float g = gr[c + l] * (w ? w[c + l] : 1.f);
          a1[l] += g;
          a2[l] += double(g) * xh;
        }
      for (int l = 0; c < C; ++c, ++l) {
        float xh = (xr[c] - mean[r]) * rstd[r];
        float g = gr[c] * (w ? w[c] : 1.f);
        a1[l] += g;
        a2[l] += double(g) * xh;
      }
      float m1 = float(lanes_total(a1) / double(C)), m2 = float(lanes_total(a2) / double(C));
      for (int64_t c = 0; c < C; ++c) {
        float xh = (xr[c] - mean[r]) * rstd[r];
        float g = gr[c] * (w ? w[c] : 1.f);
        gx[r * C + c] = rstd[r] * (g - m1 - xh * m2);
      }
    }
  }
  if (gw || gb) {
#pragma omp parallel for schedule(static) if (R * C > 16384)
    for (int64_t c = 0; c < C; ++c) {
      double sw = 0.0, sb = 0.0;
      for (int64_t r = 0; r < R; ++r) {
        float xh = (x[r * C + c] - mean[r]) * rstd[r];
        sw += double(gy[r * C + c]) * xh;
        sb += gy[r * C + c];
      }
      if (gw) gw[c] = float(sw);
      if (gb) gb[c] = float(sb);
    }
  }
}

}  // namespace ms::cpu
