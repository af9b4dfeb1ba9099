// defines: the DistributedSampler of data-parallel training, as torch.utils.data.
// DistributedSampler: the epoch's order (shuffled with seed + epoch, or in dataset
// order), padded by repeating its head to a multiple of the replicas (or its tail dropped
// with drop_last), then strided: replica s takes positions s, s+R, s+2R, ...
//
// A replica here is a slot: one micro-batch of a step. With W ranks and accum_steps K
// there are R = W*K slots, rank r owning slots r*K .. r*K+K-1, so N ranks with K=1 see
// the same micro-batches as one process with K=N (the equivalence docs/distributed.md
// states). Step t of an epoch consumes positions [t*B*R, (t+1)*B*R) of the padded order
// (B = batch_size) across all slots, so "samples consumed" is a global position that a
// resume with a different R continues from (`start`).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace ms {

struct SamplerOptions {
  int64_t replicas = 1;    // R = world_size * accum_steps
  uint64_t seed = 0;
  bool shuffle = true;
  bool drop_last = false;  // torch's default: pad by repeating
  // The reference never calls sampler.set_epoch(), so its order is epoch 0's every epoch
  // (set_epoch: false). true reshuffles per epoch, as the single-process loader does.
  bool set_epoch = true;
  // medslip: the Philox order of the single-process loader (epoch_order in data/loader.h);
  // torch: torch.randperm(n, generator seeded with seed + epoch), bit for bit.
  std::string permutation = "medslip";
};

class DistributedSampler {
 public:
  DistributedSampler(int64_t n, SamplerOptions opt);
  const SamplerOptions& options() const { return opt_; }
  // The epoch's order before padding and striding.
  std::vector<int64_t> order(int64_t epoch) const;
  // Slot `slot`'s dataset indices for `epoch`, after skipping the first `start` entries of
  // the order (the samples consumed before a resume).
  std::vector<int64_t> indices(int64_t epoch, int64_t slot, int64_t start = 0) const;
  // Indices per slot (torch's num_samples) for an order of n - start entries.
  int64_t num_samples(int64_t start = 0) const;

 private:
  int64_t n_;
  SamplerOptions opt_;
};

// torch.randperm(n, generator=torch.Generator().manual_seed(seed)) on the CPU: Fisher-Yates
// driven by mt19937's 32-bit words (ATen's randperm_cpu for n < 2^32/20).
std::vector<int64_t> torch_randperm(int64_t n, uint64_t seed);
// Pads or trims `order[start:]` to a multiple of `replicas` and takes every replicas-th
// entry from `slot` (torch's DistributedSampler.__iter__ after the permutation).
std::vector<int64_t> shard_order(const std::vector<int64_t>& order, int64_t start, int64_t replicas, int64_t slot,
                                 bool drop_last);
int64_t shard_size(int64_t n, int64_t replicas, bool drop_last);

}  // namespace ms
