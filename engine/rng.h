// defines: Philox4x32-10 counter-based RNG and the Rng stream used for init, dropout
// and data sampling. A number depends only on (seed, stream, counter), never on which
// thread draws it, so a seed gives the same numbers on any thread count and device.
#pragma once
#include <array>
#include <cstdint>
#include <vector>

#include "engine/philox.h"

namespace ms {

// One Philox4x32-10 block (engine/philox.h, shared with the CUDA kernels) as an array.
inline std::array<uint32_t, 4> philox4x32(uint64_t counter_lo, uint64_t counter_hi, uint64_t key) {
  const Philox4 b = philox_block(counter_lo, counter_hi, key);
  return {b.v[0], b.v[1], b.v[2], b.v[3]};
}

// A stream of random numbers: (seed, stream) select the key, `offset` is the counter.
// Bulk fills are position-addressed (element i reads counter offset + i/4), so they
// can be split over threads or GPU blocks and still give identical results.
class Rng {
 public:
  explicit Rng(uint64_t seed = 0, uint64_t stream = 0) : seed_(seed), stream_(stream) {}

  uint64_t seed() const { return seed_; }
  uint64_t stream() const { return stream_; }
  uint64_t offset() const { return offset_; }
  void set_offset(uint64_t off) { offset_ = off; buf_pos_ = 4; }
  uint64_t key() const { return seed_ * 0x9E3779B97F4A7C15ull + stream_; }

  uint32_t next_u32();
  uint64_t next_u64() { return (uint64_t(next_u32()) << 32) | next_u32(); }
  float uniform() { return u32_to_unit_float(next_u32()); }          // [0,1)
  double uniform_double() { return (next_u64() >> 11) * (1.0 / 9007199254740992.0); }
  float uniform(float lo, float hi) { return lo + (hi - lo) * uniform(); }
  float normal();                                                     // N(0,1)
  int64_t randint(int64_t n);                                         // [0, n), unbiased

  // Bulk, position-addressed fills; each advances the counter past what it used.
  void fill_uniform(float* out, int64_t n, float lo = 0.f, float hi = 1.f);
  void fill_normal(float* out, int64_t n, float mean = 0.f, float std = 1.f);
  // keep[i] = 1 with probability 1-p (dropout). Returns the counter used for element 0.
  uint64_t fill_keep_mask(uint8_t* out, int64_t n, float p);

  // k distinct values from pool, uniformly without replacement (partial Fisher-Yates).
  template <class T>
  std::vector<T> sample(std::vector<T> pool, int64_t k) {
    for (int64_t i = 0; i < k; ++i) {
      int64_t j = i + randint(int64_t(pool.size()) - i);
      std::swap(pool[i], pool[j]);
    }
    pool.resize(k);
    return pool;
  }
  template <class T>
  void shuffle(std::vector<T>& v) {
    for (int64_t i = int64_t(v.size()) - 1; i > 0; --i) std::swap(v[i], v[randint(i + 1)]);
  }

 private:
  uint64_t seed_, stream_;
  uint64_t offset_ = 0;
  std::array<uint32_t, 4> buf_{};
  int buf_pos_ = 4;
};

// The dropout mask rule shared by CPU and CUDA: element i keeps iff
// unit(philox(counter0 + i/4, key)[i%4]) >= p.
inline bool philox_keep(uint64_t key, uint64_t counter0, int64_t i, float p) {
  auto r = philox4x32(counter0 + uint64_t(i) / 4, 0, key);
  return u32_to_unit_float(r[i % 4]) >= p;
}

// Named streams, so that e.g. changing the data pipeline never changes the init.
enum RngStream : uint64_t { kStreamInit = 1, kStreamDropout = 2, kStreamData = 3, kStreamAugment = 4 };

}  // namespace ms
