// Winograd F(m x m, 3x3) convolution on the CPU (Lavin & Gray 2016), m = 2 or 4, alpha = m + 2:
// an output tile Y (m x m) of a 3x3 stride-1 conv is A^T [(G g G^T) . (B^T d B)] A, where d is
// the alpha x alpha input patch under it and g the 3x3 kernel. Per element xi of the alpha x
// alpha tile the sum over input channels is one matrix product, so a batch of tiles is
//   U[xi] (O x C) = G g G^T,  V[xi] (C x tiles) = B^T d B,  M[xi] = U[xi] V[xi]  (GEMM),
//   y = A^T M A (cropped to the output),
// with alpha^2 GEMMs of K = C instead of one of K = 9C: 16/4 = 4 (m = 2) or 36/16 = 2.25
// (m = 4) multiplications per output and channel instead of 9, and no 9x im2col copy.
//
// Determinism: every transform writes each output element from one thread in a fixed order;
// the alpha^2 products go to the threads whole (gemm_batched); images are processed in groups
// fixed by the shape alone, never by the thread count. So the bits do not depend on it.
#include "engine/kernels/cpu/winograd.h"
#include "engine/kernels/cpu/bn_act.h"
#include "engine/kernels/cpu/env_setting.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <vector>

#include <omp.h>

namespace ms::cpu {

// ---- the choice ------------------------------------------------------------------------------

ConvAlgo parse_conv_algo(const std::string& name) {
  if (name == "auto") return ConvAlgo::Auto;
  if (name == "im2col") return ConvAlgo::Im2col;
  if (name == "winograd2") return ConvAlgo::Winograd2;
  if (name == "winograd4") return ConvAlgo::Winograd4;
  throw std::invalid_argument("conv algorithm '" + name + "': expected auto, im2col, winograd2 or winograd4");
}

const char* conv_algo_name(ConvAlgo a) {
  switch (a) {
    case ConvAlgo::Auto: return "auto";
    case ConvAlgo::Im2col: return "im2col";
    case ConvAlgo::Winograd2: return "winograd2";
    case ConvAlgo::Winograd4: return "winograd4";
  }
  return "?";
}

// The one setting of this file (like the CUDA side's TF32 switch): read from the environment
// on first use, changed only by set_conv_algo.
static ConvAlgo& algo_setting() {
  static ConvAlgo a = env_setting("MEDSLIP_CONV_ALGO", ConvAlgo::Auto, parse_conv_algo);
  return a;
}
ConvAlgo conv_algo() { return algo_setting(); }
void set_conv_algo(ConvAlgo a) { algo_setting() = a; }

static bool winograd_fits(const Conv2dShape& s) {
  return s.kh == 3 && s.kw == 3 && s.stride == 1 && s.pad <= 2 && s.N > 0 && s.OH > 0 && s.OW > 0 && s.C > 0 &&
         s.O > 0;
}

int winograd_tile(const Conv2dShape& s, ConvPass pass) {
  if (!winograd_fits(s)) return 0;
  switch (conv_algo()) {
    case ConvAlgo::Im2col: return 0;
    case ConvAlgo::Winograd2: return 2;
    case ConvAlgo::Winograd4: return 4;
    case ConvAlgo::Auto: break;
  }
  // Measured (docs/performance.md, "Winograd"): F(4x4) beats im2col by 1.4-2.5x in every pass
  // on the ResNet-50 shapes (64-256 channels, 56-14 px); with few channels the alpha^2 GEMMs
  // of K = C are too thin to run near the sgemm rate, and on tiny planes most of a tile is waste.
  (void)pass;
  if (s.C < 32 || s.O < 32 || s.OH < 8 || s.OW < 8) return 0;
  return 4;
}

// ---- the transforms ----------------------------------------------------------------------------

template <int m>
struct Wino;
template <>
struct Wino<2> {
  static constexpr int a = 4;
  static constexpr float BT[4][4] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}};
  static constexpr float G[4][3] = {{1, 0, 0}, {0.5f, 0.5f, 0.5f}, {0.5f, -0.5f, 0.5f}, {0, 0, 1}};
  static constexpr float AT[2][4] = {{1, 1, 1, 0}, {0, 1, -1, -1}};
};
template <>
struct Wino<4> {  // points 0, -1, 1, -2, 2 and infinity
  static constexpr int a = 6;
  static constexpr float BT[6][6] = {{4, 0, -5, 0, 1, 0},  {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
                                     {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
  static constexpr float G[6][3] = {{1.f / 4, 0, 0},
                                    {-1.f / 6, -1.f / 6, -1.f / 6},
                                    {-1.f / 6, 1.f / 6, -1.f / 6},
                                    {1.f / 24, 1.f / 12, 1.f / 6},
                                    {1.f / 24, -1.f / 12, 1.f / 6},
                                    {0, 0, 1}};
  static constexpr float AT[4][6] = {{1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}};
};

// out[i][s][t] = sum_r P[i][r] in[r][s][t] for an I x R matrix P over R x S planes of T floats
// (zero coefficients skipped; the t loop vectorises). The second half of a 2-D transform is
// the same with the planes' roles swapped (left_apply's `sstride` / `rstride` arguments).
template <int I, int R>
static inline void left_apply(const float (&P)[I][R], const float* in, int64_t in_r, int64_t in_s, float* out,
                              int64_t out_i, int64_t out_s, int S, int64_t T) {
  for (int i = 0; i < I; ++i)
    for (int s = 0; s < S; ++s) {
      float* o = out + i * out_i + s * out_s;
      bool first = true;
      for (int r = 0; r < R; ++r) {
        const float c = P[i][r];
        if (c == 0.f) continue;
        const float* p = in + r * in_r + s * in_s;
        if (first) {
#pragma omp simd
          for (int64_t t = 0; t < T; ++t) o[t] = c * p[t];
          first = false;
        } else {
#pragma omp simd
          for (int64_t t = 0; t < T; ++t) o[t] += c * p[t];
        }
      }
      if (first) std::fill(o, o + T, 0.f);
    }
}

// Tile grid of one image: tH x tW tiles of m x m outputs (the last ones cropped).
struct Grid {
  int64_t tH, tW, T;
};
static Grid grid(const Conv2dShape& s, int m) {
  Grid g{(s.OH + m - 1) / m, (s.OW + m - 1) / m, 0};
  g.T = g.tH * g.tW;
  return g;
}

// Images per group, fixed by the shape alone (never by the thread count, so the bits are the
// same on any): groups of about kGroupTiles tiles, split as evenly as the batch allows, and each
// alpha^2 x channels x tiles buffer under ~16 MiB (at least one image per group).
constexpr int64_t kGroupTiles = 64;
static int64_t group_size(const Conv2dShape& s, int a, const Grid& g) {
  const int64_t groups = std::max<int64_t>(1, (s.N * g.T) / kGroupTiles);
  int64_t n = (s.N + groups - 1) / groups;
  const int64_t per_image = int64_t(a) * a * std::max(s.C, s.O) * g.T * int64_t(sizeof(float));
  n = std::min(n, std::max<int64_t>(1, (int64_t(16) << 20) / std::max<int64_t>(per_image, 1)));
  return std::clamp<int64_t>(n, 1, s.N);
}

// Runs body(group, worker) for every group: whole groups on `workers` threads (their transforms
// and GEMMs then on one thread each: one parallel region, no barrier inside a group), or, with
// one worker, the groups in order, each transform and the alpha^2 GEMMs spread over the threads.
template <class F>
static void for_each_group(int64_t groups, int workers, F&& body) {
  if (workers <= 1) {
    for (int64_t i = 0; i < groups; ++i) body(i, 0);
    return;
  }
#pragma omp parallel for num_threads(workers) schedule(static)
  for (int64_t i = 0; i < groups; ++i) body(i, omp_get_thread_num());
}

// V[xi][c][n*T + t] = (B^T d B)[xi] for images [0, G) of x (planes of H x W), channels C.
template <int m>
static void input_transform(const float* x, float* V, int64_t G, int64_t C, int64_t H, int64_t W, int64_t pad,
                            const Grid& g) {
  using Wg = Wino<m>;
  constexpr int a = Wg::a;
  const int64_t T = g.T, NT = G * T;
#pragma omp parallel if (G * C * T > 2048)
  {
    std::vector<float> d(size_t(a * a * T)), t1(size_t(a * a * T));
#pragma omp for schedule(static)
    for (int64_t nc = 0; nc < G * C; ++nc) {
      const int64_t n = nc / C, c = nc % C;
      const float* xp = x + nc * H * W;
      // d[(r*a + q)*T + t] = x[th*m + r - pad, tw*m + q - pad], 0 outside the image
      for (int64_t th = 0; th < g.tH; ++th)
        for (int r = 0; r < a; ++r) {
          const int64_t ih = th * m + r - pad;
          float* dr = d.data() + r * a * T + th * g.tW;
          if (ih < 0 || ih >= H) {
            for (int q = 0; q < a; ++q) std::fill(dr + q * T, dr + q * T + g.tW, 0.f);
            continue;
          }
          const float* row = xp + ih * W;
          for (int64_t tw = 0; tw < g.tW; ++tw) {
            const int64_t iw0 = tw * m - pad;
            if (iw0 >= 0 && iw0 + a <= W) {
              for (int q = 0; q < a; ++q) dr[q * T + tw] = row[iw0 + q];
            } else {
              for (int q = 0; q < a; ++q) {
                const int64_t iw = iw0 + q;
                dr[q * T + tw] = (iw >= 0 && iw < W) ? row[iw] : 0.f;
              }
            }
          }
        }
      // t1[i][q] = sum_r BT[i][r] d[r][q]; V[i][j] = sum_q BT[j][q] t1[i][q]
      left_apply<a, a>(Wg::BT, d.data(), a * T, T, t1.data(), a * T, T, a, T);
      float* vout = V + c * NT + n * T;  // + (i*a + j) * C * NT
      for (int i = 0; i < a; ++i)
        left_apply<a, a>(Wg::BT, t1.data() + i * a * T, T, 0, vout + int64_t(i) * a * C * NT, C * NT, 0, 1, T);
    }
  }
}

// y[n][o][th*m + i][tw*m + j] = (A^T M A)[i][j] for images [0, G), cropped to OH x OW.
// With ep: each plane then goes through ep (its planes numbered from y's image 0, whose first
// image is image n0 of the batch: ep->res is offset by the caller).
template <int m>
static void output_transform(const float* M, float* y, int64_t G, int64_t O, int64_t OH, int64_t OW, const Grid& g,
                             const BnAct* ep) {
  using Wg = Wino<m>;
  constexpr int a = Wg::a;
  const int64_t T = g.T, NT = G * T;
#pragma omp parallel if (G * O * T > 2048)
  {
    std::vector<float> t1(size_t(m * a * T)), out(size_t(m * m * T));
#pragma omp for schedule(static)
    for (int64_t no = 0; no < G * O; ++no) {
      const int64_t n = no / O, o = no % O;
      const float* Mp = M + o * NT + n * T;  // + xi * O * NT
      // t1[i][q] = sum_r AT[i][r] M[r][q]; out[i][j] = sum_q AT[j][q] t1[i][q]
      left_apply<m, a>(Wg::AT, Mp, a * O * NT, O * NT, t1.data(), a * T, T, a, T);
      for (int i = 0; i < m; ++i)
        left_apply<m, a>(Wg::AT, t1.data() + i * a * T, T, 0, out.data() + i * m * T, T, 0, 1, T);
      float* yp = y + no * OH * OW;
      for (int64_t th = 0; th < g.tH; ++th)
        for (int i = 0; i < m; ++i) {
          const int64_t oh = th * m + i;
          if (oh >= OH) break;
          float* yr = yp + oh * OW;
          const float* src = out.data() + i * m * T + th * g.tW;
          const int64_t full = OW / m;  // tiles whose m columns all lie inside the row
          for (int64_t tw = 0; tw < full; ++tw)
            for (int j = 0; j < m; ++j) yr[tw * m + j] = src[j * T + tw];
          for (int64_t tw = full; tw < g.tW; ++tw) {
            const int64_t jn = std::min<int64_t>(m, OW - tw * m);
            for (int64_t j = 0; j < jn; ++j) yr[tw * m + j] = src[j * T + tw];
          }
        }
      if (ep) ep->plane(yp, no, O, OH * OW);
    }
  }
}

// The adjoint of output_transform: Mg[xi][o][n*T + t] = (A gy_t A^T)[xi], gy_t the m x m tile of
// gy (0 past OH x OW).
template <int m>
static void output_transform_adjoint(const float* gy, float* Mg, int64_t G, int64_t O, int64_t OH, int64_t OW,
                                     const Grid& g) {
  using Wg = Wino<m>;
  constexpr int a = Wg::a;
  // A = AT^T as an a x m matrix, for left_apply.
  static constexpr auto A = [] {
    struct { float v[Wg::a][m]; } r{};
    for (int i = 0; i < a; ++i)
      for (int j = 0; j < m; ++j) r.v[i][j] = Wg::AT[j][i];
    return r;
  }();
  const int64_t T = g.T, NT = G * T;
#pragma omp parallel if (G * O * T > 2048)
  {
    std::vector<float> d(size_t(m * m * T)), t1(size_t(a * m * T));
#pragma omp for schedule(static)
    for (int64_t no = 0; no < G * O; ++no) {
      const int64_t n = no / O, o = no % O;
      const float* gp = gy + no * OH * OW;
      for (int64_t th = 0; th < g.tH; ++th)
        for (int i = 0; i < m; ++i) {
          const int64_t oh = th * m + i;
          float* dr = d.data() + i * m * T + th * g.tW;
          if (oh >= OH) {
            for (int j = 0; j < m; ++j) std::fill(dr + j * T, dr + j * T + g.tW, 0.f);
            continue;
          }
          const float* row = gp + oh * OW;
          for (int64_t tw = 0; tw < g.tW; ++tw)
            for (int j = 0; j < m; ++j) {
              const int64_t ow = tw * m + j;
              dr[j * T + tw] = ow < OW ? row[ow] : 0.f;
            }
        }
      // t1[r][j] = sum_i A[r][i] d[i][j]; Mg[r][q] = sum_j A[q][j] t1[r][j]
      left_apply<a, m>(A.v, d.data(), m * T, T, t1.data(), m * T, T, m, T);
      float* mout = Mg + o * NT + n * T;
      for (int r = 0; r < a; ++r)
        left_apply<a, m>(A.v, t1.data() + r * m * T, T, 0, mout + int64_t(r) * a * O * NT, O * NT, 0, 1, T);
    }
  }
}

// The kernel transforms run over blocks of kOC (o, c) pairs at a time with the pair index as
// the vector lane: the 3x3 kernels are transposed to [9][pairs] first, so every pass is a
// contiguous row operation (left_apply) instead of 36 scattered writes per kernel.
constexpr int64_t kOC = 512;

// U[xi][o][c] = (G w[o][c] G^T)[xi].
template <int m>
static void weight_transform(const float* w, float* U, int64_t O, int64_t C) {
  using Wg = Wino<m>;
  constexpr int a = Wg::a;
  const int64_t OC = O * C;
#pragma omp parallel if (OC > 4 * kOC)
  {
    std::vector<float> k(size_t(9 * kOC)), t(size_t(a * 3 * kOC));
#pragma omp for schedule(static)
    for (int64_t b0 = 0; b0 < OC; b0 += kOC) {
      const int64_t n = std::min(kOC, OC - b0);
      for (int64_t i = 0; i < n; ++i)
        for (int q = 0; q < 9; ++q) k[size_t(q * n + i)] = w[(b0 + i) * 9 + q];
      // t[i][q] = sum_p G[i][p] k[p][q]; U[i][j] = sum_q G[j][q] t[i][q]
      left_apply<a, 3>(Wg::G, k.data(), 3 * n, n, t.data(), 3 * n, n, 3, n);
      for (int i = 0; i < a; ++i)
        left_apply<a, 3>(Wg::G, t.data() + i * 3 * n, n, 0, U + int64_t(i) * a * OC + b0, OC, 0, 1, n);
    }
  }
}

// gw[o][c] = G^T dU[o][c] G (3 x 3 from alpha x alpha), written.
template <int m>
static void weight_transform_adjoint(const float* dU, float* gw, int64_t O, int64_t C) {
  using Wg = Wino<m>;
  constexpr int a = Wg::a;
  static constexpr auto GT = [] {  // G^T, 3 x a
    struct { float v[3][Wg::a]; } r{};
    for (int i = 0; i < a; ++i)
      for (int p = 0; p < 3; ++p) r.v[p][i] = Wg::G[i][p];
    return r;
  }();
  const int64_t OC = O * C;
#pragma omp parallel if (OC > 4 * kOC)
  {
    std::vector<float> t(size_t(3 * a * kOC)), k(size_t(9 * kOC));
#pragma omp for schedule(static)
    for (int64_t b0 = 0; b0 < OC; b0 += kOC) {
      const int64_t n = std::min(kOC, OC - b0);
      // t[p][j] = sum_i G[i][p] dU[i][j]; k[p][q] = sum_j G[j][q] t[p][j]
      left_apply<3, a>(GT.v, dU + b0, a * OC, OC, t.data(), a * n, n, a, n);
      for (int p = 0; p < 3; ++p) left_apply<3, a>(GT.v, t.data() + p * a * n, n, 0, k.data() + p * 3 * n, n, 0, 1, n);
      for (int64_t i = 0; i < n; ++i)
        for (int q = 0; q < 9; ++q) gw[(b0 + i) * 9 + q] = k[size_t(q * n + i)];
    }
  }
}

// ---- the three products ---------------------------------------------------------------------------

template <int m>
static void forward(const float* x, const float* w, float* y, const Conv2dShape& s, const BnAct* ep) {
  constexpr int a = Wino<m>::a;
  const Grid g = grid(s, m);
  const int64_t group = group_size(s, a, g), groups = (s.N + group - 1) / group;
  const int workers = int(std::min<int64_t>(omp_get_max_threads(), groups));
  Scratch U(int64_t(a) * a * s.O * s.C);
  weight_transform<m>(w, U.data, s.O, s.C);
  const int64_t vlen = int64_t(a) * a * s.C * group * g.T, mlen = int64_t(a) * a * s.O * group * g.T;
  Scratch V(workers * vlen), M(workers * mlen);
  for_each_group(groups, workers, [&](int64_t gi, int t) {
    const int64_t n0 = gi * group, G = std::min(group, s.N - n0), NT = G * g.T;
    float* v = V.data + t * vlen;
    float* mm = M.data + t * mlen;
    input_transform<m>(x + n0 * s.C * s.H * s.W, v, G, s.C, s.H, s.W, s.pad, g);
    // M[xi] (O x NT) = U[xi] (O x C) V[xi] (C x NT)
    gemm_batched(false, false, a * a, s.O, NT, s.C, 1.f, U.data, s.O * s.C, v, s.C * NT, 0.f, mm, s.O * NT);
    BnAct gep;
    if (ep) {
      gep = *ep;
      if (gep.res) gep.res += n0 * s.O * s.OH * s.OW;
    }
    output_transform<m>(mm, y + n0 * s.O * s.OH * s.OW, G, s.O, s.OH, s.OW, g, ep ? &gep : nullptr);
  });
}

// dW = sum over the groups, in group order, of G^T [sum over the group's tiles of (A gy A^T) .
// (B^T x B)] G: whole groups on the threads as in the forward (one parallel region), each
// group's 3x3 part kept apart and the parts summed in order, so no sum depends on the threads.
template <int m>
static void backward_weight(const float* x, const float* gy, float* gw, const Conv2dShape& s) {
  constexpr int a = Wino<m>::a;
  const Grid g = grid(s, m);
  const int64_t group = group_size(s, a, g), groups = (s.N + group - 1) / group;
  const int workers = int(std::min<int64_t>(omp_get_max_threads(), groups));
  const int64_t vlen = int64_t(a) * a * s.C * group * g.T, mlen = int64_t(a) * a * s.O * group * g.T;
  const int64_t ulen = int64_t(a) * a * s.O * s.C, wlen = s.O * s.C * 9;
  Scratch V(workers * vlen), M(workers * mlen), dU(workers * ulen);
  std::unique_ptr<Scratch> parts = groups > 1 ? std::make_unique<Scratch>(groups * wlen) : nullptr;
  for_each_group(groups, workers, [&](int64_t gi, int t) {
    const int64_t n0 = gi * group, G = std::min(group, s.N - n0), NT = G * g.T;
    float* v = V.data + t * vlen;
    float* mm = M.data + t * mlen;
    float* du = dU.data + t * ulen;
    input_transform<m>(x + n0 * s.C * s.H * s.W, v, G, s.C, s.H, s.W, s.pad, g);
    output_transform_adjoint<m>(gy + n0 * s.O * s.OH * s.OW, mm, G, s.O, s.OH, s.OW, g);
    // dU[xi] (O x C) = Mg[xi] (O x NT) V[xi]^T: the group's tiles in image order
    gemm_batched(false, true, a * a, s.O, s.C, NT, 1.f, mm, s.O * NT, v, s.C * NT, 0.f, du, s.O * s.C);
    weight_transform_adjoint<m>(du, parts ? parts->data + gi * wlen : gw, s.O, s.C);
  });
  if (parts) {  // gw = ((part 0 + part 1) + ...) elementwise
    const float* p = parts->data;
#pragma omp parallel for schedule(static) if (groups * wlen > 65536)
    for (int64_t b0 = 0; b0 < wlen; b0 += 4096) {
      const int64_t e = std::min(wlen, b0 + 4096);
      std::memcpy(gw + b0, p + b0, size_t(e - b0) * sizeof(float));
      for (int64_t q = 1; q < groups; ++q)
#pragma omp simd
        for (int64_t i = b0; i < e; ++i) gw[i] += p[q * wlen + i];
    }
  }
}

void winograd_conv2d_forward(const float* x, const float* w, float* y, const Conv2dShape& s, int m, const BnAct* ep) {
  if (!winograd_fits(s)) throw std::invalid_argument("winograd_conv2d_forward: needs a 3x3 stride-1 conv, pad <= 2");
  if (m == 2) forward<2>(x, w, y, s, ep);
  else if (m == 4) forward<4>(x, w, y, s, ep);
  else throw std::invalid_argument("winograd_conv2d_forward: tile m must be 2 or 4, got " + std::to_string(m));
}

void winograd_conv2d_backward_data(const float* w, const float* gy, float* gx, const Conv2dShape& s, int m) {
  if (!winograd_fits(s))
    throw std::invalid_argument("winograd_conv2d_backward_data: needs a 3x3 stride-1 conv, pad <= 2");
  // wt[c][o][i][j] = w[o][c][2-i][2-j]: dx = conv(gy, wt) with padding 2 - pad, output H x W.
  Scratch wt(s.C * s.O * 9);
#pragma omp parallel for schedule(static) if (s.O * s.C > 4096)
  for (int64_t c = 0; c < s.C; ++c)
    for (int64_t o = 0; o < s.O; ++o)
      for (int k = 0; k < 9; ++k) wt.data[(c * s.O + o) * 9 + k] = w[(o * s.C + c) * 9 + (8 - k)];
  const Conv2dShape t{s.N, s.O, s.OH, s.OW, s.C, 3, 3, 1, 2 - s.pad, s.H, s.W};
  winograd_conv2d_forward(gy, wt.data, gx, t, m);
}

void winograd_conv2d_backward_weight(const float* x, const float* gy, float* gw, const Conv2dShape& s, int m) {
  if (!winograd_fits(s))
    throw std::invalid_argument("winograd_conv2d_backward_weight: needs a 3x3 stride-1 conv, pad <= 2");
  if (m == 2) backward_weight<2>(x, gy, gw, s);
  else if (m == 4) backward_weight<4>(x, gy, gw, s);
  else throw std::invalid_argument("winograd_conv2d_backward_weight: tile m must be 2 or 4, got " + std::to_string(m));
}

}  // namespace ms::cpu
