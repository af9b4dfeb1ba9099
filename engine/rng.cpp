#include "engine/rng.h"

#include <cmath>
#include <stdexcept>

namespace ms {

uint32_t Rng::next_u32() {
  if (buf_pos_ >= 4) {
    buf_ = philox4x32(offset_++, 0, key());
    buf_pos_ = 0;
  }
  return buf_[buf_pos_++];
}

float Rng::normal() {
  // Box-Muller on two uniforms; u1 in (0,1] so log is finite.
  float u1 = 1.0f - uniform(), u2 = uniform();
  return std::sqrt(-2.0f * std::log(u1)) * std::cos(6.283185307179586f * u2);
}

int64_t Rng::randint(int64_t n) {
  if (n <= 0) throw std::invalid_argument("Rng::randint: n must be positive");
  // Lemire-style rejection on 64 bits: unbiased for any n.
  uint64_t un = uint64_t(n);
  uint64_t limit = UINT64_MAX - (UINT64_MAX % un);
  uint64_t x;
  do { x = next_u64(); } while (x >= limit);
  return int64_t(x % un);
}

void Rng::fill_uniform(float* out, int64_t n, float lo, float hi) {
  uint64_t c0 = offset_, k = key();
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < (n + 3) / 4; ++b) {
    auto r = philox4x32(c0 + uint64_t(b), 0, k);
    for (int j = 0; j < 4 && b * 4 + j < n; ++j) out[b * 4 + j] = lo + (hi - lo) * u32_to_unit_float(r[j]);
  }
  offset_ += uint64_t((n + 3) / 4);
  buf_pos_ = 4;
}

void Rng::fill_normal(float* out, int64_t n, float mean, float std) {
  uint64_t c0 = offset_, k = key();
  // Block b yields 2 normals (elements 2b, 2b+1) from its first two lanes.
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < (n + 1) / 2; ++b) {
    auto r = philox4x32(c0 + uint64_t(b), 0, k);
    double u1 = 1.0 - u32_to_unit_float(r[0]), u2 = u32_to_unit_float(r[1]);
    double rad = std::sqrt(-2.0 * std::log(u1)), th = 6.283185307179586 * u2;
    out[2 * b] = float(mean + std * rad * std::cos(th));
    if (2 * b + 1 < n) out[2 * b + 1] = float(mean + std * rad * std::sin(th));
  }
  offset_ += uint64_t((n + 1) / 2);
  buf_pos_ = 4;
}

uint64_t Rng::fill_keep_mask(uint8_t* out, int64_t n, float p) {
  uint64_t c0 = offset_, k = key();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) out[i] = philox_keep(k, c0, i, p) ? 1 : 0;
  offset_ += uint64_t((n + 3) / 4);
  buf_pos_ = 4;
  return c0;
}

}  // namespace ms
