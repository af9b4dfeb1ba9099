#include "data/sampler.h"

#include <numeric>
#include <random>
#include <stdexcept>

#include "data/loader.h"

namespace ms {

std::vector<int64_t> torch_randperm(int64_t n, uint64_t seed) {
  if (n >= int64_t(0xFFFFFFFFu / 20))
    throw std::invalid_argument("torch_randperm: n = " + std::to_string(n) + " is beyond the small-n path reproduced here");
  std::mt19937 gen(uint32_t(seed & 0xFFFFFFFFu));  // torch's CPU generator seeds mt19937 with the low 32 bits
  std::vector<int64_t> r(size_t(std::max<int64_t>(n, 0)));
  std::iota(r.begin(), r.end(), int64_t(0));
  for (int64_t i = 0; i + 1 < n; ++i) {
    const int64_t z = int64_t(gen() % uint32_t(n - i));
    std::swap(r[size_t(i)], r[size_t(z + i)]);
  }
  return r;
}

int64_t shard_size(int64_t n, int64_t replicas, bool drop_last) {
  if (n <= 0) return 0;
  // torch: ceil((n - R) / R) when dropping a ragged tail, else ceil(n / R)
  if (drop_last && n % replicas != 0) return (n - replicas + replicas - 1) / replicas;
  return (n + replicas - 1) / replicas;
}

std::vector<int64_t> shard_order(const std::vector<int64_t>& order, int64_t start, int64_t replicas, int64_t slot,
                                 bool drop_last) {
  if (replicas <= 0) throw std::invalid_argument("sampler: replicas must be positive, got " + std::to_string(replicas));
  if (slot < 0 || slot >= replicas)
    throw std::invalid_argument("sampler: slot " + std::to_string(slot) + " outside [0, " + std::to_string(replicas) + ")");
  const int64_t n = int64_t(order.size());
  if (start < 0 || start > n)
    throw std::invalid_argument("sampler: start " + std::to_string(start) + " outside [0, " + std::to_string(n) + "]");
  const int64_t m = n - start, per = shard_size(m, replicas, drop_last);
  std::vector<int64_t> out;
  out.reserve(size_t(per));
  // Padded position i holds order[start + i % m]: torch's indices += indices[:padding]
  // (repeated when the padding is longer than the list).
  for (int64_t i = slot; i < per * replicas; i += replicas) out.push_back(order[size_t(start + i % m)]);
  return out;
}

DistributedSampler::DistributedSampler(int64_t n, SamplerOptions opt) : n_(n), opt_(std::move(opt)) {
  if (n_ < 0) throw std::invalid_argument("sampler: negative dataset size");
  if (opt_.replicas <= 0) throw std::invalid_argument("sampler: replicas must be positive");
  if (opt_.permutation != "medslip" && opt_.permutation != "torch")
    throw std::invalid_argument("config key 'sampler_permutation' must be medslip or torch, got '" + opt_.permutation + "'");
}

std::vector<int64_t> DistributedSampler::order(int64_t epoch) const {
  const int64_t e = opt_.set_epoch ? epoch : 0;
  if (opt_.shuffle && opt_.permutation == "torch") return torch_randperm(n_, opt_.seed + uint64_t(e));
  return epoch_order(n_, opt_.seed, e, opt_.shuffle);
}

std::vector<int64_t> DistributedSampler::indices(int64_t epoch, int64_t slot, int64_t start) const {
  return shard_order(order(epoch), start, opt_.replicas, slot, opt_.drop_last);
}

int64_t DistributedSampler::num_samples(int64_t start) const { return shard_size(n_ - start, opt_.replicas, opt_.drop_last); }

}  // namespace ms
