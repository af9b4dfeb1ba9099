// CPU reference kernels: (log-)softmax over the middle axis of [outer, n, inner].
#include <cmath>
#include <limits>

#ifdef __AVX2__
#include <immintrin.h>
#endif

#include "engine/kernels/kernels.h"

namespace ms::cpu {

#ifdef __AVX2__
// exp on 8 floats (Cephes' expf: n = round(x log2 e), r = x - n ln 2 in two parts, a degree-6
// polynomial, times 2^n), within 2 ulp of libm's expf; 0 below -87.3 (where expf is subnormal
// or 0), NaN in gives NaN. For softmax's exp(x - max) on x - max <= 0.
static inline __m256 exp8(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.3365447f);
  const __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  __m256 v = _mm256_max_ps(lo, x);  // NaN stays NaN (max_ps returns its second operand)
  v = _mm256_min_ps(_mm256_set1_ps(88.3762626f), v);
  const __m256 n = _mm256_floor_ps(_mm256_fmadd_ps(v, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), v);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(under, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

// softmax of one contiguous row of n: the max, exp(x - max) 8 at a time (the tail through the
// same function, padded with -inf), their sum in 8 double lanes (a fixed order), then scaled.
static void softmax_row8(const float* xr, float* yr, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < n; ++j) m = std::max(m, xr[j]);
  const __m256 mv = _mm256_set1_ps(m);
  __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(xr + j), mv));
    _mm256_storeu_ps(yr + j, e);
    s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
    s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
  }
  if (j < n) {
    alignas(32) float t[8];
    for (int k = 0; k < 8; ++k) t[k] = j + k < n ? xr[j + k] : -std::numeric_limits<float>::infinity();
    const __m256 e = exp8(_mm256_sub_ps(_mm256_load_ps(t), mv));
    _mm256_store_ps(t, e);
    for (int64_t k = 0; j + k < n; ++k) yr[j + k] = t[k];
    s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
    s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
  }
  alignas(32) double l0[4], l1[4];
  _mm256_store_pd(l0, s0);
  _mm256_store_pd(l1, s1);
  const double s = ((l0[0] + l0[1]) + (l0[2] + l0[3])) + ((l1[0] + l1[1]) + (l1[2] + l1[3]));
  const __m256 inv = _mm256_set1_ps(float(1.0 / s));
  j = 0;
  for (; j + 8 <= n; j += 8) _mm256_storeu_ps(yr + j, _mm256_mul_ps(_mm256_loadu_ps(yr + j), inv));
  for (; j < n; ++j) yr[j] *= float(1.0 / s);
}
#endif

void softmax_forward(const float* x, float* y, int64_t outer, int64_t n, int64_t inner, bool log) {
#ifdef __AVX2__
  if (inner == 1 && !log) {  // rows: attention's softmax over the keys
#pragma omp parallel for schedule(static) if (outer * n > 16384)
    for (int64_t o = 0; o < outer; ++o) softmax_row8(x + o * n, y + o * n, n);
    return;
  }
#endif
#pragma omp parallel for collapse(2) schedule(static) if (outer * n * inner > 16384)
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      const float* xr = x + o * n * inner + i;
      float* yr = y + o * n * inner + i;
      float m = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < n; ++j) m = std::max(m, xr[j * inner]);
      double s = 0.0;
      if (log) {
        for (int64_t j = 0; j < n; ++j) s += std::exp(double(xr[j * inner] - m));
        float lse = m + float(std::log(s));
        for (int64_t j = 0; j < n; ++j) yr[j * inner] = xr[j * inner] - lse;
      } else {
        // One float exp per element, kept in y; the sum of those values in double.
        for (int64_t j = 0; j < n; ++j) {
          const float e = std::exp(xr[j * inner] - m);
          yr[j * inner] = e;
          s += double(e);
        }
        float inv = float(1.0 / s);
        for (int64_t j = 0; j < n; ++j) yr[j * inner] *= inv;
      }
    }
}

// softmax: gx = y (gy - sum(gy y)); log_softmax: gx = gy - exp(y) sum(gy)
void softmax_backward(const float* y, const float* gy, float* gx, int64_t outer, int64_t n, int64_t inner, bool log) {
#pragma omp parallel for collapse(2) schedule(static) if (outer * n * inner > 16384)
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      const int64_t base = o * n * inner + i;
      double s = 0.0;
      if (log) {
        for (int64_t j = 0; j < n; ++j) s += gy[base + j * inner];
        for (int64_t j = 0; j < n; ++j) gx[base + j * inner] = gy[base + j * inner] - std::exp(y[base + j * inner]) * float(s);
      } else {
        for (int64_t j = 0; j < n; ++j) s += double(gy[base + j * inner]) * y[base + j * inner];
        for (int64_t j = 0; j < n; ++j) gx[base + j * inner] = y[base + j * inner] * (gy[base + j * inner] - float(s));
      }
    }
}

}  // namespace ms::cpu
