// defines: the Philox4x32-10 block and the u32 -> unit float mapping, defined once for both
// devices: plain inline functions in C++, __host__ __device__ under nvcc. engine/rng.h builds
// the CPU streams on them and engine/kernels/cuda/dropout.cu draws its masks with them, so a
// (key, counter) gives the same numbers, and the same dropout mask, on the CPU and the GPU.
#pragma once
#include <cstdint>

#ifdef __CUDACC__
#define MS_HOST_DEVICE __host__ __device__
#else
#define MS_HOST_DEVICE
#endif

namespace ms {

struct Philox4 {
  uint32_t v[4];
};

// One Philox4x32-10 block: 4 x 32-bit outputs for a 128-bit counter and 64-bit key.
// Salmon et al., "Parallel random numbers: as easy as 1, 2, 3" (SC'11).
MS_HOST_DEVICE inline Philox4 philox_block(uint64_t counter_lo, uint64_t counter_hi, uint64_t key) {
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

// u32 -> float in [0, 1) with 24 bits of mantissa.
MS_HOST_DEVICE inline float u32_to_unit_float(uint32_t x) { return float(x >> 8) * (1.0f / 16777216.0f); }

}  // namespace ms
