// CPU reference kernels: inverted dropout.
#include <climits>

#ifdef __AVX2__
#include <immintrin.h>
#endif

#include "engine/kernels/kernels.h"
#include "engine/rng.h"

namespace ms::cpu {

#ifdef __AVX2__
// The 32 random words of the 8 Philox blocks counter0 .. counter0 + 7 (philox4x32(c, 0, key)),
// in element order (block b's words at 4b .. 4b+3): the 10 rounds on 8 lanes of 32 bits
// (vpmuludq on the even and the odd lanes for the 32x32 -> 64-bit products), then a 4 x 8
// transpose. The same numbers as the scalar philox_block.
static inline void philox8(uint64_t counter0, uint64_t key, __m256i (&out)[4]) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  // counter0 + l: the low words add; the high word gains 1 in the lanes whose low word wrapped.
  const __m256i lo0 = _mm256_set1_epi32(int(uint32_t(counter0)));
  __m256i c0 = _mm256_add_epi32(lo0, lane);
  const __m256i bias = _mm256_set1_epi32(INT32_MIN);  // unsigned compare via signed
  const __m256i wrapped = _mm256_cmpgt_epi32(_mm256_xor_si256(lo0, bias), _mm256_xor_si256(c0, bias));
  __m256i c1 = _mm256_sub_epi32(_mm256_set1_epi32(int(uint32_t(counter0 >> 32))), wrapped);
  __m256i c2 = _mm256_setzero_si256(), c3 = _mm256_setzero_si256();
  const __m256i m0 = _mm256_set1_epi64x(0xD2511F53u), m1 = _mm256_set1_epi64x(0xCD9E8D57u);
  uint32_t k0 = uint32_t(key), k1 = uint32_t(key >> 32);
  auto mul_lohi = [](__m256i a, __m256i m, __m256i& lo, __m256i& hi) {  // a * m per 32-bit lane
    const __m256i pe = _mm256_mul_epu32(a, m), po = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
    lo = _mm256_blend_epi32(pe, _mm256_slli_epi64(po, 32), 0xAA);
    hi = _mm256_blend_epi32(_mm256_srli_epi64(pe, 32), po, 0xAA);
  };
  for (int round = 0; round < 10; ++round) {
    __m256i lo0, hi0, lo1, hi1;
    mul_lohi(c0, m0, lo0, hi0);
    mul_lohi(c2, m1, lo1, hi1);
    c0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), _mm256_set1_epi32(int(k0)));
    c2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), _mm256_set1_epi32(int(k1)));
    c1 = lo1;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  const __m256i t0 = _mm256_unpacklo_epi32(c0, c1), t1 = _mm256_unpackhi_epi32(c0, c1);
  const __m256i t2 = _mm256_unpacklo_epi32(c2, c3), t3 = _mm256_unpackhi_epi32(c2, c3);
  const __m256i s0 = _mm256_unpacklo_epi64(t0, t2), s1 = _mm256_unpackhi_epi64(t0, t2);  // blocks 0|4, 1|5
  const __m256i s2 = _mm256_unpacklo_epi64(t1, t3), s3 = _mm256_unpackhi_epi64(t1, t3);  // blocks 2|6, 3|7
  out[0] = _mm256_permute2x128_si256(s0, s1, 0x20);
  out[1] = _mm256_permute2x128_si256(s2, s3, 0x20);
  out[2] = _mm256_permute2x128_si256(s0, s1, 0x31);
  out[3] = _mm256_permute2x128_si256(s2, s3, 0x31);
}
#endif

// Element i keeps iff unit(philox(counter0 + i/4, key)[i%4]) >= p (philox_keep, shared with
// CUDA). With AVX2, 32 elements (8 blocks) at a time through philox8; the rest block by block.
void dropout_forward(const float* x, float* y, uint8_t* keep, int64_t n, float p, uint64_t key, uint64_t counter0) {
  const float scale = 1.f / (1.f - p);
  int64_t done = 0;
#ifdef __AVX2__
  const int64_t groups = n / 32;
  done = groups * 32;
#pragma omp parallel for schedule(static) if (n > 32768)
  for (int64_t gi = 0; gi < groups; ++gi) {
    __m256i r[4];
    philox8(counter0 + uint64_t(gi) * 8, key, r);
    const __m256 pv = _mm256_set1_ps(p), sv = _mm256_set1_ps(scale), unit = _mm256_set1_ps(1.0f / 16777216.0f);
    for (int v = 0; v < 4; ++v) {
      const int64_t i = gi * 32 + v * 8;
      // u32_to_unit_float: (w >> 8) / 2^24, exact in float (24 bits)
      const __m256 u = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(r[v], 8)), unit);
      const __m256 k = _mm256_cmp_ps(u, pv, _CMP_GE_OQ);
      _mm256_storeu_ps(y + i, _mm256_and_ps(k, _mm256_mul_ps(_mm256_loadu_ps(x + i), sv)));
      const int bits = _mm256_movemask_ps(k);
      for (int b = 0; b < 8; ++b) keep[i + b] = uint8_t((bits >> b) & 1);
    }
  }
#endif
  for (int64_t b = done / 4; b < (n + 3) / 4; ++b) {
    auto r = philox4x32(counter0 + uint64_t(b), 0, key);
    for (int j = 0; j < 4 && b * 4 + j < n; ++j) {
      const int64_t i = b * 4 + j;
      keep[i] = u32_to_unit_float(r[j]) >= p;  // same rule as philox_keep
      y[i] = keep[i] ? x[i] * scale : 0.f;
    }
  }
}

void dropout_backward(const float* gy, const uint8_t* keep, float* gx, int64_t n, float p) {
  const float scale = 1.f / (1.f - p);
#pragma omp parallel for simd schedule(static) if (n > 32768)
  for (int64_t i = 0; i < n; ++i) gx[i] = keep[i] ? gy[i] * scale : 0.f;
}

}  // namespace ms::cpu
