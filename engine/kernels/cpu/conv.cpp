// CPU reference kernels: im2col / col2im for convolution, max pooling and adaptive
// average pooling on [NC, H, W] planes. Every output element is produced by one thread
// in a fixed order, so results do not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include <omp.h>

#include "engine/kernels/cpu/gemm.h"
#include "engine/kernels/cpu/bn_act.h"
#include "engine/kernels/kernels.h"
#include "engine/kernels/cpu/winograd.h"

namespace ms::cpu {

// Output columns ow whose input column iw = ow*stride - pad + j lies in [0, W): [lo, hi).
static inline void valid_range(int64_t j, int64_t W, int64_t stride, int64_t pad, int64_t OW, int64_t& lo,
                               int64_t& hi) {
  const int64_t a = pad - j;  // need ow*stride >= a
  lo = a > 0 ? (a + stride - 1) / stride : 0;
  const int64_t b = W + pad - j;  // need ow*stride < b
  hi = b > 0 ? (b - 1) / stride + 1 : 0;
  lo = std::min(lo, OW);
  hi = std::max(lo, std::min(hi, OW));
}

// col[(c*kh + i)*kw + j, (oh - oh_begin)*OW + ow] = x[c, oh*stride - pad + i, ow*stride - pad + j]
// for the output rows oh in [oh_begin, oh_end) (default: all OH), 0 outside the image.
static void im2col_rows(const float* x, float* col, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw,
                        int64_t stride, int64_t pad, int64_t OH, int64_t OW, int64_t oh_begin, int64_t oh_end) {
  const int64_t rows = C * kh * kw, L = (oh_end - oh_begin) * OW;
#pragma omp parallel for schedule(static) if (rows * L > 32768)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t c = r / (kh * kw), i = (r / kw) % kh, j = r % kw;
    int64_t lo, hi;
    valid_range(j, W, stride, pad, OW, lo, hi);
    const float* xc = x + c * H * W;
    float* cr = col + r * L;
    if (stride == 1 && OW == W && oh_begin == 0 && oh_end == OH) {
      // Same-width stride-1 rows: col[oh*W + ow] = xc[oh*W + ow + off] with one offset for the
      // whole block of rows that lie inside the image, so one copy, then the few columns that
      // fall outside (ow < lo, ow >= hi) zeroed; rows above and below the image are zero.
      const int64_t oh0 = std::clamp<int64_t>(pad - i, 0, OH), oh1 = std::clamp<int64_t>(H + pad - i, oh0, OH);
      const int64_t off = (i - pad) * W + (j - pad);
      std::fill(cr, cr + oh0 * W, 0.f);
      std::fill(cr + oh1 * W, cr + L, 0.f);
      const int64_t k0 = std::max(oh0 * W, -off), k1 = std::min(oh1 * W, H * W - off);
      if (k1 > k0) std::copy(xc + k0 + off, xc + k1 + off, cr + k0);
      for (int64_t oh = oh0; oh < oh1; ++oh) {
        for (int64_t ow = 0; ow < lo; ++ow) cr[oh * W + ow] = 0.f;
        for (int64_t ow = hi; ow < W; ++ow) cr[oh * W + ow] = 0.f;
      }
      continue;
    }
    for (int64_t oh = oh_begin; oh < oh_end; ++oh) {
      float* dst = cr + (oh - oh_begin) * OW;
      const int64_t ih = oh * stride - pad + i;
      if (ih < 0 || ih >= H) {
        std::memset(dst, 0, size_t(OW) * sizeof(float));
        continue;
      }
      const int64_t base = ih * W - pad + j;  // x[c, ih, ow*stride - pad + j] = xc[base + ow*stride]
      for (int64_t ow = 0; ow < lo; ++ow) dst[ow] = 0.f;
      if (stride == 1) {
        if (hi > lo) std::memcpy(dst + lo, xc + (base + lo), size_t(hi - lo) * sizeof(float));
      } else {
        for (int64_t ow = lo; ow < hi; ++ow) dst[ow] = xc[base + ow * stride];
      }
      for (int64_t ow = hi; ow < OW; ++ow) dst[ow] = 0.f;
    }
  }
}

void im2col(const float* x, float* col, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t stride,
            int64_t pad, int64_t OH, int64_t OW) {
  im2col_rows(x, col, C, H, W, kh, kw, stride, pad, OH, OW, 0, OH);
}

// The adjoint of im2col: x[c, ih, iw] += col[...]. One thread owns a channel and adds its
// kh*kw rows in order, so overlapping windows sum the same way on any thread count.
void col2im(const float* col, float* x, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t stride,
            int64_t pad, int64_t OH, int64_t OW) {
  const int64_t L = OH * OW;
#pragma omp parallel for schedule(static) if (C * kh * kw * L > 32768)
  for (int64_t c = 0; c < C; ++c) {
    float* xc = x + c * H * W;
    for (int64_t i = 0; i < kh; ++i)
      for (int64_t j = 0; j < kw; ++j) {
        int64_t lo, hi;
        valid_range(j, W, stride, pad, OW, lo, hi);
        const float* cr = col + ((c * kh + i) * kw + j) * L;
        for (int64_t oh = 0; oh < OH; ++oh) {
          const int64_t ih = oh * stride - pad + i;
          if (ih < 0 || ih >= H) continue;
          const int64_t base = ih * W - pad + j;
          const float* src = cr + oh * OW;
          for (int64_t ow = lo; ow < hi; ++ow) xc[base + ow * stride] += src[ow];
        }
      }
  }
}

// Window clipped to the image (padded cells act as -inf). Ties keep the first maximum in
// row-major scan order and NaN propagates, as PyTorch's CPU kernel. arg = h*W + w within
// the plane (-1 for an empty window, which the op's padding check rules out).
static void max_pool2d_values(const float* x, float* y, int64_t NC, int64_t H, int64_t W, int64_t k, int64_t stride,
                              int64_t pad, int64_t OH, int64_t OW);

void max_pool2d_forward(const float* x, float* y, int64_t* arg, int64_t NC, int64_t H, int64_t W, int64_t k,
                        int64_t stride, int64_t pad, int64_t OH, int64_t OW) {
  if (!arg) {  // no backward follows: the values alone, vectorised
    max_pool2d_values(x, y, NC, H, W, k, stride, pad, OH, OW);
    return;
  }
  // The values first (vectorised), then each window's argmax by a search for its value, which
  // gives what the scan "v > best or v is NaN" gives: the first cell equal to the maximum
  // (-0 == +0, so the first zero, whose own sign y then takes), or with a NaN the last NaN.
  max_pool2d_values(x, y, NC, H, W, k, stride, pad, OH, OW);
#pragma omp parallel for collapse(2) schedule(static) if (NC * OH * OW * k * k > 32768)
  for (int64_t p = 0; p < NC; ++p)
    for (int64_t oh = 0; oh < OH; ++oh) {
      const float* xp = x + p * H * W;
      const int64_t h0 = std::max<int64_t>(oh * stride - pad, 0), h1 = std::min(oh * stride - pad + k, H);
      for (int64_t ow = 0; ow < OW; ++ow) {
        const int64_t o = (p * OH + oh) * OW + ow;
        const int64_t w0 = std::max<int64_t>(ow * stride - pad, 0), w1 = std::min(ow * stride - pad + k, W);
        int64_t bi = -1;
        if (h0 < h1 && w0 < w1) {
          const float m = y[o];
          if (m != m) {  // NaN: the last NaN in scan order
            for (int64_t h = h0; h < h1; ++h)
              for (int64_t w = w0; w < w1; ++w)
                if (std::isnan(xp[h * W + w])) bi = h * W + w;
          } else {
            for (int64_t h = h0; h < h1 && bi < 0; ++h)
              for (int64_t w = w0; w < w1; ++w)
                if (xp[h * W + w] == m) {
                  bi = h * W + w;
                  break;
                }
          }
          y[o] = xp[bi];
        } else {
          y[o] = -std::numeric_limits<float>::infinity();
        }
        arg[o] = bi;
      }
    }
}

// gx = 0, then gx[arg] += gy per plane in output order (gx is written, not accumulated).
void max_pool2d_backward(const float* gy, const int64_t* arg, float* gx, int64_t NC, int64_t H, int64_t W, int64_t OH,
                         int64_t OW) {
#pragma omp parallel for schedule(static) if (NC * H * W > 32768)
  for (int64_t p = 0; p < NC; ++p) {
    float* gp = gx + p * H * W;
    std::memset(gp, 0, size_t(H * W) * sizeof(float));
    const float* gyp = gy + p * OH * OW;
    const int64_t* ap = arg + p * OH * OW;
    for (int64_t o = 0; o < OH * OW; ++o)
      if (ap[o] >= 0) gp[ap[o]] += gyp[o];
  }
}

// PyTorch's adaptive bins: [floor(i*H/OH), ceil((i+1)*H/OH)).
static inline int64_t bin_start(int64_t i, int64_t in, int64_t out) { return (i * in) / out; }
static inline int64_t bin_end(int64_t i, int64_t in, int64_t out) { return ((i + 1) * in + out - 1) / out; }

void adaptive_avg_pool2d_forward(const float* x, float* y, int64_t NC, int64_t H, int64_t W, int64_t OH, int64_t OW) {
#pragma omp parallel for schedule(static) if (NC * H * W > 32768)
  for (int64_t p = 0; p < NC; ++p) {
    const float* xp = x + p * H * W;
    for (int64_t oh = 0; oh < OH; ++oh) {
      const int64_t h0 = bin_start(oh, H, OH), h1 = bin_end(oh, H, OH);
      for (int64_t ow = 0; ow < OW; ++ow) {
        const int64_t w0 = bin_start(ow, W, OW), w1 = bin_end(ow, W, OW);
        double s = 0.0;
        for (int64_t h = h0; h < h1; ++h)
          for (int64_t w = w0; w < w1; ++w) s += xp[h * W + w];
        y[(p * OH + oh) * OW + ow] = float(s / double((h1 - h0) * (w1 - w0)));
      }
    }
  }
}

// gx[h, w] = sum over the bins containing (h, w) of gy / bin area (gx is written).
void adaptive_avg_pool2d_backward(const float* gy, float* gx, int64_t NC, int64_t H, int64_t W, int64_t OH,
                                  int64_t OW) {
#pragma omp parallel for schedule(static) if (NC * H * W > 32768)
  for (int64_t p = 0; p < NC; ++p) {
    float* gp = gx + p * H * W;
    std::memset(gp, 0, size_t(H * W) * sizeof(float));
    for (int64_t oh = 0; oh < OH; ++oh) {
      const int64_t h0 = bin_start(oh, H, OH), h1 = bin_end(oh, H, OH);
      for (int64_t ow = 0; ow < OW; ++ow) {
        const int64_t w0 = bin_start(ow, W, OW), w1 = bin_end(ow, W, OW);
        const float g = gy[(p * OH + oh) * OW + ow] / float((h1 - h0) * (w1 - w0));
        for (int64_t h = h0; h < h1; ++h)
          for (int64_t w = w0; w < w1; ++w) gp[h * W + w] += g;
      }
    }
  }
}

}  // namespace ms::cpu

// ---- conv2d over a batch ---------------------------------------------------------------------

namespace ms::cpu {

// Threads that take whole images (one image each at a time, its GEMMs then on one thread); a
// single image, or a single thread, keeps OpenBLAS's own threading inside the GEMM.
static int conv_workers(int64_t N) { return int(std::max<int64_t>(1, std::min<int64_t>(omp_get_max_threads(), N))); }

// Runs body(n, worker) for n in [0, N): on `workers` threads when there are several, each
// taking a contiguous run of images; the nested GEMMs and copies then run on one thread.
template <class F>
static void for_each_image(int64_t N, int workers, F&& body) {
  if (workers <= 1) {
    for (int64_t n = 0; n < N; ++n) body(n, 0);
    return;
  }
#pragma omp parallel for num_threads(workers) schedule(static)
  for (int64_t n = 0; n < N; ++n) body(n, omp_get_thread_num());
}

// y[i] = ((parts[0][i] + parts[1][i]) + ...) over n parts of len floats: a fixed order.
static void sum_parts(const float* parts, float* y, int64_t n, int64_t len) {
  const int64_t block = 4096;
#pragma omp parallel for schedule(static) if (n * len > 65536)
  for (int64_t b0 = 0; b0 < len; b0 += block) {
    const int64_t e = std::min(len, b0 + block);
    std::memcpy(y + b0, parts + b0, size_t(e - b0) * sizeof(float));
    for (int64_t p = 1; p < n; ++p) {
      const float* q = parts + p * len;
#pragma omp simd
      for (int64_t i = b0; i < e; ++i) y[i] += q[i];
    }
  }
}

// Columns per band: 512 KiB, half a core's L2 (this EPYC: 1 MiB).
constexpr int64_t kColBand = int64_t(128) << 10;

// Images spread over the threads, each with its own im2col scratch; a pointwise convolution
// (1x1, stride 1, no padding) is one batched GEMM on x itself; a 3x3 stride-1 one may take the
// Winograd path (winograd.cpp) where winograd_tile says it pays (MEDSLIP_CONV_ALGO=im2col: never).
// With ep (conv2d_bn_act_forward): an evaluation BatchNorm (+ residual) (+ ReLU) applied to each
// output plane right after it is computed, in cache: in the Winograd output transform, or after
// each image's GEMM (pointwise convolutions too: one image's product instead of one batched
// call, so that its output is still in cache). Same bits as conv2d_forward then
// batch_norm_act_apply (bn_act.h holds their shared arithmetic).
static void forward(const float* x, const float* w, float* y, const Conv2dShape& s, const BnAct* ep) {
  const int64_t K = s.C * s.kh * s.kw, L = s.OH * s.OW;
  if (const int m = winograd_tile(s, ConvPass::Forward)) {
    winograd_conv2d_forward(x, w, y, s, m, ep);
    return;
  }
  if (s.pointwise() && !ep) {  // y[n] = W x[n]
    gemm_batched(false, false, s.N, s.O, L, K, 1.f, w, 0, x, s.C * s.H * s.W, 0.f, y, s.O * L);
    return;
  }
  if (s.N == 0) return;
  const int workers = conv_workers(s.N);
  // An image's columns in bands of whole output rows when they would not fit in a core's L2 but
  // the weights would (the 7x7 stem: 7 MB of columns, 37 KB of weights): each band's im2col then
  // feeds its GEMM from cache instead of memory (stem, b16: 28-34 -> 24 ms). With big weights (the
  // strided 3x3s: 0.6-2.4 MB) every band would read them again: measured slower, not banded.
  // Fixed by the shape alone (the bits do not depend on the threads); a column of y = W col
  // depends on its column of col only, so the bands give the whole product's bits (test).
  const bool banded = !s.pointwise() && K * L > kColBand && s.O * K <= kColBand / 4;
  const int64_t band = banded ? std::clamp<int64_t>(kColBand / (K * s.OW), 1, s.OH) : s.OH;
  Scratch col(s.pointwise() ? 1 : workers * K * band * s.OW);
  for_each_image(s.N, workers, [&](int64_t n, int t) {
    const float* xn = x + n * s.C * s.H * s.W;
    if (s.pointwise()) {  // a pointwise convolution's x[n] is its own im2col
      gemm_batched(false, false, 1, s.O, L, K, 1.f, w, 0, xn, 0, 0.f, y + n * s.O * L, 0);  // y[n] = W x[n]
    } else {
      float* cn = col.data + int64_t(t) * K * band * s.OW;
      for (int64_t oh = 0; oh < s.OH; oh += band) {
        const int64_t oh1 = std::min(s.OH, oh + band), Lb = (oh1 - oh) * s.OW;
        im2col_rows(xn, cn, s.C, s.H, s.W, s.kh, s.kw, s.stride, s.pad, s.OH, s.OW, oh, oh1);
        gemm_ldc(s.O, Lb, K, w, cn, y + n * s.O * L + oh * s.OW, L);  // y[n][:, band] = W col_band
      }
    }
    if (ep) ep->apply(y, n, n + 1, s.O, L);
  });
}

void conv2d_forward(const float* x, const float* w, float* y, const Conv2dShape& s) { forward(x, w, y, s, nullptr); }

void conv2d_bn_act_forward(const float* x, const float* w, float* y, const Conv2dShape& s, const float* mean,
                           const float* rstd, const float* bn_w, const float* bn_b, const float* res, bool relu) {
  const BnAct ep{mean, rstd, bn_w, bn_b, res, relu};
  forward(x, w, y, s, &ep);
}

// dW = sum_n dW_n with each image's dW_n computed on its own (in parallel) and the sum taken
// in image order (sum_parts), so the bits do not depend on the thread count.
static void conv2d_backward_im2col(const float* x, const float* w, const float* g, float* gx, float* gw,
                                   const Conv2dShape& s) {
  if (!gx && !gw) return;
  const int64_t K = s.C * s.kh * s.kw, L = s.OH * s.OW;
  std::unique_ptr<Scratch> parts = gw && s.N > 1 ? std::make_unique<Scratch>(s.N * s.O * K) : nullptr;
  float* gw_parts = parts ? parts->data : gw;  // [N, O, K], or gw itself for one image
  if (s.pointwise()) {
    if (gx)  // dx[n] = W^T g[n]
      gemm_batched(true, false, s.N, s.C, L, s.O, 1.f, w, 0, g, s.O * L, 0.f, gx, s.C * L);
    if (gw)  // dW_n = g[n] x[n]^T
      gemm_batched(false, true, s.N, s.O, s.C, L, 1.f, g, s.O * L, x, s.C * L, 0.f, gw_parts, s.O * s.C);
  } else if (s.N > 0) {
    const int workers = conv_workers(s.N);
    Scratch col(workers * K * L);
    for_each_image(s.N, workers, [&](int64_t n, int t) {
      float* c = col.data + int64_t(t) * K * L;
      const float* gn = g + n * s.O * L;
      if (gw) {  // dW_n = g[n] col(x[n])^T
        im2col(x + n * s.C * s.H * s.W, c, s.C, s.H, s.W, s.kh, s.kw, s.stride, s.pad, s.OH, s.OW);
        gemm_batched(false, true, 1, s.O, K, L, 1.f, gn, 0, c, 0, 0.f, gw_parts + n * s.O * K, 0);
      }
      if (gx) {  // dx[n] = col2im(W^T g[n])
        gemm_batched(true, false, 1, K, L, s.O, 1.f, w, 0, gn, 0, 0.f, c, 0);
        float* gxn = gx + n * s.C * s.H * s.W;
        std::memset(gxn, 0, size_t(s.C * s.H * s.W) * sizeof(float));
        col2im(c, gxn, s.C, s.H, s.W, s.kh, s.kw, s.stride, s.pad, s.OH, s.OW);
      }
    });
  }
  if (parts) sum_parts(parts->data, gw, s.N, s.O * K);
  if (gw && s.N == 0) std::fill(gw, gw + s.O * K, 0.f);
}

// Each of dx and dW by Winograd where winograd_tile picks it for that pass, else by im2col.
void conv2d_backward(const float* x, const float* w, const float* g, float* gx, float* gw, const Conv2dShape& s) {
  const int mx = gx ? winograd_tile(s, ConvPass::BackwardData) : 0;
  const int mw = gw ? winograd_tile(s, ConvPass::BackwardWeight) : 0;
  if (mx) winograd_conv2d_backward_data(w, g, gx, s, mx);
  if (mw) winograd_conv2d_backward_weight(x, g, gw, s, mw);
  conv2d_backward_im2col(x, w, g, mx ? nullptr : gx, mw ? nullptr : gw, s);
}

}  // namespace ms::cpu

namespace ms::cpu {

// Floats as int32 keys whose integer order is the float order (-0 < +0), every NaN mapped to
// the largest key so that it wins, as NaN does in max_pool2d_forward. Integer max vectorises.
static inline int32_t max_key(float v) {
  int32_t b;
  std::memcpy(&b, &v, sizeof b);
  if ((b & 0x7fffffff) > 0x7f800000) return std::numeric_limits<int32_t>::max();
  return b ^ ((b >> 31) & 0x7fffffff);
}
static inline float from_key(int32_t k) {
  if (k == std::numeric_limits<int32_t>::max()) return std::numeric_limits<float>::quiet_NaN();
  const int32_t b = k ^ ((k >> 31) & 0x7fffffff);
  float v;
  std::memcpy(&v, &b, sizeof v);
  return v;
}

// Per output row: the max over the window's input rows, column by column (contiguous), then
// over each window's columns.
static void max_pool2d_values(const float* x, float* y, int64_t NC, int64_t H, int64_t W, int64_t k, int64_t stride,
                       int64_t pad, int64_t OH, int64_t OW) {
#pragma omp parallel if (NC * OH * OW * k * k > 32768)
  {
    std::vector<int32_t> col(static_cast<size_t>(W));
#pragma omp for collapse(2) schedule(static)
    for (int64_t p = 0; p < NC; ++p)
      for (int64_t oh = 0; oh < OH; ++oh) {
        const float* xp = x + p * H * W;
        const int64_t h0 = std::max<int64_t>(oh * stride - pad, 0), h1 = std::min(oh * stride - pad + k, H);
        int32_t* c = col.data();
        for (int64_t w = 0; w < W; ++w) c[w] = max_key(xp[h0 * W + w]);
        for (int64_t h = h0 + 1; h < h1; ++h)
          for (int64_t w = 0; w < W; ++w) c[w] = std::max(c[w], max_key(xp[h * W + w]));
        float* yr = y + (p * OH + oh) * OW;
        for (int64_t ow = 0; ow < OW; ++ow) {
          const int64_t w0 = std::max<int64_t>(ow * stride - pad, 0), w1 = std::min(ow * stride - pad + k, W);
          int32_t m = c[w0];
          for (int64_t w = w0 + 1; w < w1; ++w) m = std::max(m, c[w]);
          yr[ow] = from_key(m);
        }
      }
  }
}

}  // namespace ms::cpu
