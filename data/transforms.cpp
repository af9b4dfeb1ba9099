// Image transforms of spec §C.4 / §C.5 / §H.6, reproducing Pillow 9.4's resampler,
// torchvision's RandomResizedCrop and ALBEF's numpy/OpenCV RandAugment pixel by pixel.
#include "data/transforms.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <stdexcept>

// The reference arithmetic (Pillow's coefficients, numpy's float32 blends, OpenCV's matrix
// inverse) has no fused multiply-adds; GCC contracts a*b+c into FMA at -march=x86-64-v3
// even in ISO mode, which moves results by an ulp and flips roundings.
#pragma GCC optimize("fp-contract=off")

namespace ms {

namespace {

void check_image(const Image& img, const char* what) {
  if ((img.c != 1 && img.c != 3) || img.w <= 0 || img.h <= 0 || img.px.size() != size_t(img.w) * img.h * img.c)
    throw std::invalid_argument(std::string(what) + ": expected a non-empty 1- or 3-channel image, got " +
                                std::to_string(img.w) + "x" + std::to_string(img.h) + "x" + std::to_string(img.c));
}

// ---- Pillow's ImagingResample (libImaging/Resample.c), 8 bits per channel ------------

constexpr int kPrecisionBits = 32 - 8 - 2;  // 22

double bilinear_filter(double x) {
  if (x < 0.0) x = -x;
  if (x < 1.0) return 1.0 - x;
  return 0.0;
}

double bicubic_filter(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

struct Coeffs {
  int ksize = 0;
  std::vector<int> bounds;  // [out][2]: first input index, count
  std::vector<int32_t> kk;  // [out][ksize], 22-bit fixed point
};

// precompute_coeffs + normalize_coeffs_8bpc for input [in0, in1) of in_size samples.
Coeffs precompute_coeffs(int in_size, float in0, float in1, int out_size, Resample f) {
  const double fsupport = f == Resample::kBilinear ? 1.0 : 2.0;
  double (*filter)(double) = f == Resample::kBilinear ? bilinear_filter : bicubic_filter;
  double scale = double(in1 - in0) / out_size;
  double filterscale = scale < 1.0 ? 1.0 : scale;  // antialias: widen the filter when downscaling
  double support = fsupport * filterscale;
  Coeffs c;
  c.ksize = int(std::ceil(support)) * 2 + 1;
  c.bounds.resize(size_t(out_size) * 2);
  c.kk.assign(size_t(out_size) * c.ksize, 0);
  std::vector<double> k(size_t(c.ksize));
  for (int xx = 0; xx < out_size; ++xx) {
    double center = in0 + (xx + 0.5) * scale;
    double ww = 0.0, ss = 1.0 / filterscale;
    int xmin = int(center - support + 0.5);  // C cast: truncation
    if (xmin < 0) xmin = 0;
    int xmax = int(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    for (int x = 0; x < xmax; ++x) {
      double w = filter((x + xmin - center + 0.5) * ss);
      k[size_t(x)] = w;
      ww += w;
    }
    for (int x = 0; x < xmax; ++x) {
      if (ww != 0.0) k[size_t(x)] /= ww;
      double v = k[size_t(x)];
      c.kk[size_t(xx) * c.ksize + x] =
          v < 0 ? int32_t(-0.5 + v * (1 << kPrecisionBits)) : int32_t(0.5 + v * (1 << kPrecisionBits));
    }
    c.bounds[size_t(xx) * 2] = xmin;
    c.bounds[size_t(xx) * 2 + 1] = xmax;
  }
  return c;
}

inline uint8_t clip8(int in) {
  if (in >= (1 << kPrecisionBits << 8)) return 255;
  if (in <= 0) return 0;
  return uint8_t(in >> kPrecisionBits);
}

// A read-only window of an image: `stride` bytes per row.
struct View {
  const uint8_t* data;
  int w, h;
  size_t stride;
};

template <int C>
void resample_horizontal(Image& out, const View& in, int row_offset, const Coeffs& co) {
  for (int yy = 0; yy < out.h; ++yy) {
    const uint8_t* src = in.data + size_t(yy + row_offset) * in.stride;
    uint8_t* dst = out.row(yy);
    for (int xx = 0; xx < out.w; ++xx) {
      const int xmin = co.bounds[size_t(xx) * 2], xmax = co.bounds[size_t(xx) * 2 + 1];
      const int32_t* k = &co.kk[size_t(xx) * co.ksize];
      int ss[C];
      for (int ch = 0; ch < C; ++ch) ss[ch] = 1 << (kPrecisionBits - 1);
      const uint8_t* s = src + size_t(xmin) * C;
      for (int x = 0; x < xmax; ++x)
        for (int ch = 0; ch < C; ++ch) ss[ch] += int(s[x * C + ch]) * k[x];
      for (int ch = 0; ch < C; ++ch) dst[xx * C + ch] = clip8(ss[ch]);
    }
  }
}

template <int C>
void resample_vertical(Image& out, const View& in, const Coeffs& co, const std::vector<int>& bounds) {
  const int row_len = out.w * C;
  std::vector<int> ss(static_cast<size_t>(row_len));
  for (int yy = 0; yy < out.h; ++yy) {
    const int ymin = bounds[size_t(yy) * 2], ymax = bounds[size_t(yy) * 2 + 1];
    const int32_t* k = &co.kk[size_t(yy) * co.ksize];
    std::fill(ss.begin(), ss.end(), 1 << (kPrecisionBits - 1));
    for (int y = 0; y < ymax; ++y) {  // row-major accumulation: same sums, cache-friendly
      const uint8_t* s = in.data + size_t(y + ymin) * in.stride;
      const int32_t ky = k[y];
      for (int i = 0; i < row_len; ++i) ss[size_t(i)] += int(s[i]) * ky;
    }
    uint8_t* dst = out.row(yy);
    for (int i = 0; i < row_len; ++i) dst[i] = clip8(ss[size_t(i)]);
  }
}

// ImagingResampleInner for box (0, 0, in.w, in.h) of `in`.
Image resample(const View& in, int c, int out_w, int out_h, Resample f) {
  const bool need_h = out_w != in.w, need_v = out_h != in.h;
  Coeffs ch = precompute_coeffs(in.w, 0.f, float(in.w), out_w, f);
  Coeffs cv = precompute_coeffs(in.h, 0.f, float(in.h), out_h, f);
  const int ybox_first = cv.bounds[0];
  const int ybox_last = cv.bounds[size_t(out_h) * 2 - 2] + cv.bounds[size_t(out_h) * 2 - 1];
  Image tmp;
  View cur = in;
  if (need_h) {
    tmp = Image(out_w, ybox_last - ybox_first, c);
    if (c == 1)
      resample_horizontal<1>(tmp, in, ybox_first, ch);
    else
      resample_horizontal<3>(tmp, in, ybox_first, ch);
    for (int i = 0; i < out_h; ++i) cv.bounds[size_t(i) * 2] -= ybox_first;  // rows of tmp
    cur = View{tmp.px.data(), tmp.w, tmp.h, size_t(tmp.w) * c};
  }
  if (need_v) {
    Image out(cur.w, out_h, c);
    if (c == 1)
      resample_vertical<1>(out, cur, cv, cv.bounds);
    else
      resample_vertical<3>(out, cur, cv, cv.bounds);
    return out;
  }
  if (need_h) return tmp;
  Image out(in.w, in.h, c);  // neither pass: a copy
  for (int y = 0; y < in.h; ++y) std::copy_n(in.data + size_t(y) * in.stride, size_t(in.w) * c, out.row(y));
  return out;
}

// ---- OpenCV warpAffine, INTER_LINEAR + BORDER_CONSTANT (imgwarp.cpp) -----------------

constexpr int kInterBits = 5, kInterTabSize = 1 << kInterBits;  // 1/32 pixel
constexpr int kAbBits = 10, kAbScale = 1 << kAbBits;            // coordinate fixed point
constexpr int kRemapBits = 15, kRemapScale = 1 << kRemapBits;   // weight fixed point

struct BilinearTab {
  int16_t w[kInterTabSize * kInterTabSize][4];
  BilinearTab() {
    for (int fy = 0; fy < kInterTabSize; ++fy)
      for (int fx = 0; fx < kInterTabSize; ++fx) {
        int16_t* t = w[fy * kInterTabSize + fx];
        // (1-fy)(1-fx), (1-fy)fx, fy(1-fx), fy*fx in 1/32768; exact except at (0, 0) where
        // 32768 saturates to 32767 and initInterTab2D's sum fix-up adds the 1 to entry 3.
        int a = kInterTabSize - fy, b = kInterTabSize - fx;
        int32_t v[4] = {a * b * 32, a * fx * 32, fy * b * 32, fy * fx * 32};
        if (fy == 0 && fx == 0) v[0] = 32767, v[3] = 1;
        for (int i = 0; i < 4; ++i) t[i] = int16_t(v[i]);
      }
  }
};
const BilinearTab kBilinearTab;

inline int cv_round(double v) {  // saturate_cast<int>(double): round half to even
  double r = std::nearbyint(v);
  if (r >= double(INT_MAX)) return INT_MAX;
  if (r <= double(INT_MIN)) return INT_MIN;
  return int(r);
}
inline int sat_short(int v) { return v < -32768 ? -32768 : v > 32767 ? 32767 : v; }

template <int C>
void warp_affine_impl(const Image& src, Image& dst, const double* M, uint8_t fill) {
  const int W = src.w, H = src.h;
  std::vector<int> adelta(size_t(dst.w)), bdelta(size_t(dst.w));
  for (int x = 0; x < dst.w; ++x) {
    adelta[size_t(x)] = cv_round(M[0] * x * kAbScale);
    bdelta[size_t(x)] = cv_round(M[3] * x * kAbScale);
  }
  const int round_delta = kAbScale / kInterTabSize / 2;
  for (int y = 0; y < dst.h; ++y) {
    const int X0 = cv_round((M[1] * y + M[2]) * kAbScale) + round_delta;
    const int Y0 = cv_round((M[4] * y + M[5]) * kAbScale) + round_delta;
    uint8_t* d = dst.row(y);
    for (int x = 0; x < dst.w; ++x) {
      const int X = (X0 + adelta[size_t(x)]) >> (kAbBits - kInterBits);
      const int Y = (Y0 + bdelta[size_t(x)]) >> (kAbBits - kInterBits);
      const int sx = sat_short(X >> kInterBits), sy = sat_short(Y >> kInterBits);
      const int16_t* w = kBilinearTab.w[(Y & (kInterTabSize - 1)) * kInterTabSize + (X & (kInterTabSize - 1))];
      const bool x0 = sx >= 0 && sx < W, x1 = sx + 1 >= 0 && sx + 1 < W;
      const bool y0 = sy >= 0 && sy < H, y1 = sy + 1 >= 0 && sy + 1 < H;
      const uint8_t* r0 = y0 ? src.row(sy) : nullptr;
      const uint8_t* r1 = y1 ? src.row(sy + 1) : nullptr;
      for (int ch = 0; ch < C; ++ch) {
        // Neighbours outside the image read the border value (remapBilinear's cval).
        int v0 = x0 && y0 ? r0[sx * C + ch] : fill;
        int v1 = x1 && y0 ? r0[(sx + 1) * C + ch] : fill;
        int v2 = x0 && y1 ? r1[sx * C + ch] : fill;
        int v3 = x1 && y1 ? r1[(sx + 1) * C + ch] : fill;
        int s = v0 * w[0] + v1 * w[1] + v2 * w[2] + v3 * w[3];
        int o = (s + (1 << (kRemapBits - 1))) >> kRemapBits;
        d[x * C + ch] = uint8_t(o < 0 ? 0 : o > 255 ? 255 : o);
      }
    }
  }
}

}  // namespace

// ---- resize / crop / flip ---------------------------------------------------------------

Image resize(const Image& src, int out_w, int out_h, Resample filter) {
  return resized_crop(src, 0, 0, src.w, src.h, out_w, out_h, filter);
}

Image resized_crop(const Image& src, int left, int top, int w, int h, int out_w, int out_h, Resample filter) {
  check_image(src, "resize");
  if (out_w <= 0 || out_h <= 0)
    throw std::invalid_argument("resize: output size must be positive, got " + std::to_string(out_w) + "x" +
                                std::to_string(out_h));
  if (left < 0 || top < 0 || w <= 0 || h <= 0 || left + w > src.w || top + h > src.h)
    throw std::invalid_argument("resized_crop: box (" + std::to_string(left) + "," + std::to_string(top) + "," +
                                std::to_string(w) + "," + std::to_string(h) + ") outside the " + std::to_string(src.w) +
                                "x" + std::to_string(src.h) + " image");
  const size_t stride = size_t(src.w) * src.c;
  View v{src.px.data() + size_t(top) * stride + size_t(left) * src.c, w, h, stride};
  return resample(v, src.c, out_w, out_h, filter);
}

void hflip(Image& img) {
  for (int y = 0; y < img.h; ++y) {
    uint8_t* r = img.row(y);
    for (int a = 0, b = img.w - 1; a < b; ++a, --b)
      for (int ch = 0; ch < img.c; ++ch) std::swap(r[a * img.c + ch], r[b * img.c + ch]);
  }
}

// ---- ToTensor + Normalize -------------------------------------------------------------

namespace {
struct NormLut {
  float v[3][256];
  NormLut() {
    // torchvision: img.float().div(255), then tensor.sub_(mean).div_(std), all float32.
    for (int c = 0; c < 3; ++c)
      for (int i = 0; i < 256; ++i) v[c][i] = (float(i) / 255.0f - kImageNetMean[c]) / kImageNetStd[c];
  }
};
const NormLut kNormLut;
}  // namespace

void to_normalized_chw(const Image& img, float* out) {
  check_image(img, "to_normalized_chw");
  const size_t hw = size_t(img.w) * img.h;
  for (int c = 0; c < 3; ++c) {
    const float* lut = kNormLut.v[c];
    float* o = out + c * hw;
    if (img.c == 1) {
      for (size_t i = 0; i < hw; ++i) o[i] = lut[img.px[i]];
    } else {
      for (size_t i = 0; i < hw; ++i) o[i] = lut[img.px[3 * i + c]];
    }
  }
}

std::vector<float> to_normalized_chw(const Image& img) {
  std::vector<float> out(size_t(3) * img.w * img.h);
  to_normalized_chw(img, out.data());
  return out;
}

std::vector<float> test_transform(const Image& img, int size) {
  if (size <= 0) throw std::invalid_argument("test_transform: size must be positive, got " + std::to_string(size));
  return to_normalized_chw(resize(img, size, size, Resample::kBilinear));
}

// ---- RandomResizedCrop parameters -------------------------------------------------------

CropBox random_resized_crop_params(int width, int height, Rng& rng, double scale_lo, double scale_hi, double ratio_lo,
                                   double ratio_hi) {
  if (width <= 0 || height <= 0)
    throw std::invalid_argument("random_resized_crop: empty image " + std::to_string(width) + "x" +
                                std::to_string(height));
  if (!(scale_lo <= scale_hi) || !(ratio_lo <= ratio_hi) || scale_lo <= 0 || ratio_lo <= 0)
    throw std::invalid_argument("random_resized_crop: expected 0 < scale_lo <= scale_hi and 0 < ratio_lo <= ratio_hi");
  const double area = double(height) * width;
  // torchvision draws in float32: uniform_(scale), exp(uniform_(log(float32 ratio))).
  const float log_lo = std::log(float(ratio_lo)), log_hi = std::log(float(ratio_hi));
  for (int attempt = 0; attempt < 10; ++attempt) {
    double target_area = area * double(rng.uniform(float(scale_lo), float(scale_hi)));
    double aspect = double(std::exp(rng.uniform(log_lo, log_hi)));
    // Python's round(): half to even, which nearbyint gives in the default rounding mode.
    int w = int(std::nearbyint(std::sqrt(target_area * aspect)));
    int h = int(std::nearbyint(std::sqrt(target_area / aspect)));
    if (0 < w && w <= width && 0 < h && h <= height) {
      CropBox b;
      b.height = h, b.width = w;
      b.top = int(rng.randint(height - h + 1));
      b.left = int(rng.randint(width - w + 1));
      return b;
    }
  }
  // Central crop at the nearest allowed aspect ratio.
  CropBox b;
  const double in_ratio = double(width) / double(height);
  const double rmin = ratio_lo, rmax = ratio_hi;
  if (in_ratio < rmin) {
    b.width = width;
    b.height = int(std::nearbyint(b.width / rmin));
  } else if (in_ratio > rmax) {
    b.height = height;
    b.width = int(std::nearbyint(b.height * rmax));
  } else {
    b.width = width, b.height = height;
  }
  b.top = (height - b.height) / 2;
  b.left = (width - b.width) / 2;
  return b;
}

// ---- RandAugment ops ----------------------------------------------------------------------

const char* aug_op_name(AugOp op) {
  static const char* names[kNumAugOps] = {"Identity", "AutoContrast", "Equalize",   "Brightness", "Sharpness",
                                          "ShearX",   "ShearY",       "TranslateX", "TranslateY", "Rotate"};
  int i = int(op);
  return i >= 0 && i < kNumAugOps ? names[i] : "?";
}

namespace {
void apply_luts(Image& img, const uint8_t (*lut)[256]) {
  uint8_t* px = img.px.data();
  const size_t n = img.px.size();
  if (img.c == 1) {
    for (size_t i = 0; i < n; ++i) px[i] = lut[0][px[i]];
  } else {
    for (size_t i = 0; i < n; i += 3) px[i] = lut[0][px[i]], px[i + 1] = lut[1][px[i + 1]], px[i + 2] = lut[2][px[i + 2]];
  }
}
void channel_hist(const Image& img, int64_t (*hist)[256]) {
  for (int c = 0; c < img.c; ++c) std::fill(hist[c], hist[c] + 256, 0);
  const uint8_t* px = img.px.data();
  const size_t n = img.px.size();
  if (img.c == 1) {
    for (size_t i = 0; i < n; ++i) ++hist[0][px[i]];
  } else {
    for (size_t i = 0; i < n; i += 3) ++hist[0][px[i]], ++hist[1][px[i + 1]], ++hist[2][px[i + 2]];
  }
}
}  // namespace

// PIL semantics: lo/hi = darkest/brightest value present; lut[v] = int(v * 255/(hi-lo) -
// lo * 255/(hi-lo)) clamped. ALBEF's port computes `-low` on a numpy uint8 scalar, which
// wraps to 256-low, so for a channel whose minimum is not 0 the original returns an all-255
// channel; we follow PIL (the behaviour its docstring promises), not that overflow.
void autocontrast(Image& img) {
  check_image(img, "autocontrast");
  int64_t hist[3][256];
  uint8_t lut[3][256];
  channel_hist(img, hist);
  for (int c = 0; c < img.c; ++c) {
    int lo = 0, hi = 255;
    while (lo < 256 && !hist[c][lo]) ++lo;
    while (hi >= 0 && !hist[c][hi]) --hi;
    if (hi <= lo) {
      for (int v = 0; v < 256; ++v) lut[c][v] = uint8_t(v);
      continue;
    }
    const double scale = 255.0 / (hi - lo), offset = -lo * scale;
    for (int v = 0; v < 256; ++v) {
      double t = v * scale;
      t = t + offset;
      int ix = int(t);  // Python int(): truncation toward zero
      lut[c][v] = uint8_t(ix < 0 ? 0 : ix > 255 ? 255 : ix);
    }
  }
  apply_luts(img, lut);
}

// PIL ImageOps.equalize: step = (count of pixels - count of the last used value) // 255;
// lut[i] = (step // 2 + #pixels below i) // step, clipped to 255.
void equalize(Image& img) {
  check_image(img, "equalize");
  int64_t hist[3][256];
  uint8_t lut[3][256];
  channel_hist(img, hist);
  for (int c = 0; c < img.c; ++c) {
    int last = 255;
    while (last >= 0 && !hist[c][last]) --last;
    int64_t total = 0;
    for (int v = 0; v < 256; ++v) total += hist[c][v];
    const int64_t step = (total - (last >= 0 ? hist[c][last] : 0)) / 255;
    if (step == 0) {
      for (int v = 0; v < 256; ++v) lut[c][v] = uint8_t(v);
      continue;
    }
    int64_t n = step / 2;
    for (int v = 0; v < 256; ++v) {
      int64_t q = n / step;
      lut[c][v] = uint8_t(q > 255 ? 255 : q);
      n += hist[c][v];
    }
  }
  apply_luts(img, lut);
}

// ALBEF brightness_func: (np.arange(256, float32) * factor).clip(0, 255).astype(uint8).
void brightness(Image& img, float factor) {
  check_image(img, "brightness");
  uint8_t lut[256];
  for (int v = 0; v < 256; ++v) {
    float t = float(v) * factor;
    lut[v] = uint8_t(t < 0.f ? 0.f : t > 255.f ? 255.f : t);
  }
  for (auto& p : img.px) p = lut[p];
}

// ALBEF sharpness_func: degenerate = cv2.filter2D(img, -1, [[1,1,1],[1,5,1],[1,1,1]]/13)
// (uint8, rounded; its float sum never lands near .5 since n/13 is never k + 1/2, so the
// integer (2n + 13) / 26 is exact), then on the interior out = deg + factor * (img - deg)
// in float32. The original casts with astype(uint8), which wraps values outside 0..255
// (e.g. 260 -> 4, -3 -> 253, bright specks on edges); we clip instead (§H.6).
// The 1-pixel border keeps the input, except factor 0 (all degenerate, reflect-101 border).
void sharpness(Image& img, float factor) {
  check_image(img, "sharpness");
  if (factor == 1.0f) return;
  const int W = img.w, H = img.h, C = img.c;
  const Image src = img;
  auto reflect = [](int p, int n) {  // BORDER_REFLECT_101
    if (n == 1) return 0;
    while (p < 0 || p >= n) p = p < 0 ? -p : 2 * (n - 1) - p;
    return p;
  };
  const bool full = factor == 0.0f;
  for (int y = 0; y < H; ++y) {
    const bool interior_row = y > 0 && y < H - 1;
    if (!full && !interior_row) continue;
    const uint8_t* rows[3] = {src.row(reflect(y - 1, H)), src.row(y), src.row(reflect(y + 1, H))};
    uint8_t* d = img.row(y);
    for (int x = 0; x < W; ++x) {
      const bool interior = interior_row && x > 0 && x < W - 1;
      if (!full && !interior) continue;
      const int xs[3] = {reflect(x - 1, W), x, reflect(x + 1, W)};
      for (int ch = 0; ch < C; ++ch) {
        int n = 4 * rows[1][x * C + ch];  // centre weight 5 = 1 + 4
        for (int r = 0; r < 3; ++r)
          for (int k = 0; k < 3; ++k) n += rows[r][xs[k] * C + ch];
        const int deg = (2 * n + 13) / 26;
        if (full) {
          d[x * C + ch] = uint8_t(deg);
          continue;
        }
        float diff = float(int(rows[1][x * C + ch]) - deg);
        float t = factor * diff;
        float o = float(deg) + t;
        d[x * C + ch] = uint8_t(o < 0.f ? 0.f : o > 255.f ? 255.f : o);  // clip, then truncate
      }
    }
  }
}

Image warp_affine(const Image& src, const double M_in[6], uint8_t fill) {
  check_image(src, "warp_affine");
  // cv2.warpAffine without WARP_INVERSE_MAP inverts M first (same double arithmetic).
  double M[6];
  std::copy(M_in, M_in + 6, M);
  double D = M[0] * M[4] - M[1] * M[3];
  D = D != 0 ? 1. / D : 0;
  double A11 = M[4] * D, A22 = M[0] * D;
  M[0] = A11;
  M[1] *= -D;
  M[3] *= -D;
  M[4] = A22;
  double b1 = -M[0] * M[2] - M[1] * M[5];
  double b2 = -M[3] * M[2] - M[4] * M[5];
  M[2] = b1;
  M[5] = b2;
  Image dst(src.w, src.h, src.c);
  if (src.c == 1)
    warp_affine_impl<1>(src, dst, M, fill);
  else
    warp_affine_impl<3>(src, dst, M, fill);
  return dst;
}

// The matrices are np.float32 in ALBEF, hence the float arguments.
Image shear_x(const Image& src, float f, uint8_t fill) {
  const double M[6] = {1, double(f), 0, 0, 1, 0};
  return warp_affine(src, M, fill);
}
Image shear_y(const Image& src, float f, uint8_t fill) {
  const double M[6] = {1, 0, 0, double(f), 1, 0};
  return warp_affine(src, M, fill);
}
Image translate_x(const Image& src, float offset, uint8_t fill) {
  const double M[6] = {1, 0, double(-offset), 0, 1, 0};
  return warp_affine(src, M, fill);
}
Image translate_y(const Image& src, float offset, uint8_t fill) {
  const double M[6] = {1, 0, 0, 0, 1, double(-offset)};
  return warp_affine(src, M, fill);
}

Image rotate(const Image& src, double degrees, uint8_t fill) {
  check_image(src, "rotate");
  // cv2.getRotationMatrix2D((W/2, H/2), degrees, 1): centre as Point2f, matrix in double.
  const double cx = double(float(src.w / 2.0)), cy = double(float(src.h / 2.0));
  const double angle = degrees * (3.1415926535897932384626433832795 / 180);
  const double alpha = std::cos(angle), beta = std::sin(angle);
  const double M[6] = {alpha, beta, (1 - alpha) * cx - beta * cy, -beta, alpha, beta * cx + (1 - alpha) * cy};
  return warp_affine(src, M, fill);
}

Image apply_aug(const Image& img, AugOp op, int m, bool negative, double* arg) {
  const double level = double(m) / 10.0;  // ALBEF: level / MAX_LEVEL
  double a = 0;
  Image out;
  switch (op) {
    case AugOp::kIdentity:
      out = img;
      break;
    case AugOp::kAutoContrast:
      out = img, autocontrast(out);
      break;
    case AugOp::kEqualize:
      out = img, equalize(out);
      break;
    case AugOp::kBrightness:
    case AugOp::kSharpness: {
      a = level * 1.8 + 0.1;  // enhance_level_to_args (no sign)
      out = img;
      if (op == AugOp::kBrightness)
        brightness(out, float(a));
      else
        sharpness(out, float(a));
      break;
    }
    case AugOp::kShearX:
    case AugOp::kShearY:
      a = level * 0.3;
      if (negative) a = -a;
      out = op == AugOp::kShearX ? shear_x(img, float(a)) : shear_y(img, float(a));
      break;
    case AugOp::kTranslateX:
    case AugOp::kTranslateY:
      a = level * 10.0;  // translate_const = 10 pixels
      if (negative) a = -a;
      out = op == AugOp::kTranslateX ? translate_x(img, float(a)) : translate_y(img, float(a));
      break;
    case AugOp::kRotate:
      a = level * 30;
      if (negative) a = -a;
      out = rotate(img, a);
      break;
    default:
      throw std::invalid_argument("apply_aug: unknown op " + std::to_string(int(op)));
  }
  if (arg) *arg = a;
  return out;
}

Image rand_augment(const Image& img, Rng& rng, int n, int m, std::vector<AugStep>* log) {
  check_image(img, "rand_augment");
  if (n < 0 || m < 0 || m > 10)
    throw std::invalid_argument("rand_augment: expected n >= 0 and 0 <= m <= 10, got n=" + std::to_string(n) +
                                " m=" + std::to_string(m));
  // np.random.choice(augs, N): all ops first, with replacement.
  std::vector<AugOp> ops(static_cast<size_t>(n));
  for (auto& op : ops) op = AugOp(rng.randint(kNumAugOps));
  Image cur = img;
  for (AugOp op : ops) {
    AugStep step;
    step.op = op;
    if (rng.uniform_double() > 0.5) {  // `if np.random.random() > prob: continue`
      if (log) log->push_back(step);
      continue;
    }
    step.applied = true;
    bool negative = false;
    if (op == AugOp::kShearX || op == AugOp::kShearY || op == AugOp::kTranslateX || op == AugOp::kTranslateY)
      negative = rng.uniform_double() > 0.5;
    else if (op == AugOp::kRotate)
      negative = rng.uniform_double() < 0.5;
    cur = apply_aug(cur, op, m, negative, &step.arg);
    if (log) log->push_back(step);
  }
  return cur;
}

Image train_augment_u8(const Image& img, int size, Rng& rng, TrainDraw* draw, const AugmentOptions& aug) {
  check_image(img, "train_transform");
  if (size <= 0) throw std::invalid_argument("train_transform: size must be positive, got " + std::to_string(size));
  CropBox b = random_resized_crop_params(img.w, img.h, rng, aug.crop_scale_min, 1.0);
  Image x = resized_crop(img, b.left, b.top, b.width, b.height, size, size, Resample::kBicubic);
  bool flip = rng.uniform() < 0.5f;  // torch.rand(1) < p
  if (flip) hflip(x);
  std::vector<AugStep> steps;
  if (aug.rand_augment_n > 0) x = rand_augment(x, rng, aug.rand_augment_n, aug.rand_augment_m, draw ? &steps : nullptr);
  if (draw) {
    draw->crop = b;
    draw->flipped = flip;
    draw->augs = std::move(steps);
  }
  return x;
}

std::vector<float> train_transform(const Image& img, int size, Rng& rng, TrainDraw* draw, const AugmentOptions& aug) {
  return to_normalized_chw(train_augment_u8(img, size, rng, draw, aug));
}

std::vector<float> load_test_image(const std::string& path, int size, DicomMode dicom) {
  ReadOptions o;
  o.keep_grey = true;
  o.dicom = dicom;
  return test_transform(read_image(path, o), size);
}

std::vector<float> load_train_image(const std::string& path, int size, Rng& rng, DicomMode dicom,
                                    const AugmentOptions& aug) {
  ReadOptions o;
  o.keep_grey = true;
  o.dicom = dicom;
  return train_transform(read_image(path, o), size, rng, nullptr, aug);
}

}  // namespace ms
