// defines: sums of float rows in double over 8 interleaved lanes, added up in a fixed order at
// the end: the same on every thread count, and vectorised where one serial double chain per
// row would be latency-bound. Shared by batch norm and layer norm (CPU).
#pragma once
#include <cstdint>

namespace ms::cpu::lanes {

constexpr int kLanes = 8;

// acc[l] += x[i] for i = l (mod kLanes)
inline void plane_sum(const float* x, int64_t n, double* acc) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) acc[l] += double(x[i + l]);
  for (int l = 0; i < n; ++i, ++l) acc[l] += double(x[i]);
}

// acc[l] += (x[i] - m)^2 for i = l (mod kLanes)
inline void plane_sq_dev(const float* x, int64_t n, double m, double* acc) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      const double d = double(x[i + l]) - m;
      acc[l] += d * d;
    }
  for (int l = 0; i < n; ++i, ++l) {
    const double d = double(x[i]) - m;
    acc[l] += d * d;
  }
}

// the lanes' total, in lane order
inline double lanes_total(const double* acc) {
  double s = 0.0;
  for (int l = 0; l < kLanes; ++l) s += acc[l];
  return s;
}

}  // namespace ms::cpu::lanes
