// defines: the device copy of engine/rng.h's Philox4x32-10 block and u32 -> unit float
// mapping. Same arithmetic, bit for bit, as ms::philox4x32 (engine/rng.cpp), so a (key,
// counter) gives the same dropout mask on the CPU and the GPU; tests/engine_cuda.cpp checks
// the masks agree.
#pragma once
#include <cstdint>

namespace ms::cuda {

struct Philox4 {
  uint32_t v[4];
};

__host__ __device__ inline Philox4 philox4x32(uint64_t counter_lo, uint64_t counter_hi, uint64_t key) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
  constexpr uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  uint32_t c0 = uint32_t(counter_lo), c1 = uint32_t(counter_lo >> 32);
  uint32_t c2 = uint32_t(counter_hi), c3 = uint32_t(counter_hi >> 32);
  uint32_t k0 = uint32_t(key), k1 = uint32_t(key >> 32);
  for (int round = 0; round < 10; ++round) {
    uint64_t p0 = uint64_t(M0) * c0, p1 = uint64_t(M1) * c2;
    uint32_t hi0 = uint32_t(p0 >> 32), lo0 = uint32_t(p0);
    uint32_t hi1 = uint32_t(p1 >> 32), lo1 = uint32_t(p1);
    uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += W0; k1 += W1;
  }
  return {{c0, c1, c2, c3}};
}

// u32 -> float in [0, 1) with 24 bits of mantissa (engine/rng.h u32_to_unit_float).
__host__ __device__ inline float u32_to_unit_float(uint32_t x) { return float(x >> 8) * (1.0f / 16777216.0f); }

}  // namespace ms::cuda
