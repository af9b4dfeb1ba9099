// defines: DataParallel — the pieces a training loop needs to run one model on W ranks
// with K micro-batches per rank (accum_steps), with PyTorch DDP's semantics
// (docs/distributed.md): rank 0's parameters and buffers at start, rank 0's buffers
// (BatchNorm running statistics) before every step, each micro-batch's own BatchNorm
// statistics, gradients averaged over the W*K micro-batches before one optimiser step.
//
// Bitwise equivalence: a micro-batch's gradient is taken alone (grads cleared before its
// backward); this rank's K are summed in order into one flat buffer, and the ranks' buffers
// are summed in rank order by Communicator::allreduce_sum; then scaled by 1/(W*K). With
// K = 1 on N ranks and K = N on one rank the additions happen in the same order on the
// same values, so the gradients, the AdamW step and the losses have the same bits.
// With W*K = 1 every function here is a no-op: the single-process path is unchanged.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/nn.h"
#include "train/distributed.h"

namespace ms {

class DataParallel {
 public:
  DataParallel(Communicator& comm, const nn::Module& model, int accum_steps);
  Communicator& comm() const { return comm_; }
  int world() const { return comm_.world(); }
  int accum_steps() const { return K_; }
  int64_t replicas() const { return int64_t(comm_.world()) * K_; }  // sampler slots per step
  int64_t slot(int k) const { return int64_t(comm_.rank()) * K_ + k; }
  bool active() const { return replicas() > 1; }

  // Rank 0's parameters and buffers to every rank (start, resume).
  void broadcast_state(const std::string& what);
  // Rank 0's buffers only (DDP's broadcast_buffers, before each forward pass).
  void broadcast_buffers(const std::string& what);
  // After micro-batch k's backward: adds its gradients to this step's sum and clears them.
  void add_micro_gradients(int k);
  // After the K micro-batches: sums over ranks (rank order), scales by 1/(W*K), and sets
  // every parameter's .grad to its share (undefined where no micro-batch on any rank had
  // one, so AdamW skips it as in one process). Returns the seconds spent in communication.
  double reduce_gradients(const std::string& what);
  // Per-micro-batch values (K rows of equal length on every rank) -> their mean over all
  // W*K micro-batches, summed in (rank, micro-batch) order in float.
  std::vector<float> mean_over_micro_batches(const std::vector<std::vector<float>>& rows, const std::string& what);
  // Sums of `v` over ranks, in rank order (validation sums and counts).
  std::vector<double> sum_over_ranks(const std::vector<double>& v, const std::string& what);
  bool any_rank(bool flag, const std::string& what);
  // The dropout RNG offset of micro-batch k of `global_step` (when active()): each global
  // micro-batch its own counter range, so rank r's masks equal micro-batch r's of one process.
  uint64_t dropout_offset(int64_t global_step, int k) const;
  int64_t gradient_floats() const { return total_; }

 private:
  Communicator& comm_;
  int K_;
  std::vector<Tensor> params_, buffers_;
  std::vector<int64_t> offsets_;
  std::vector<double> has_grad_;
  Tensor flat_;  // [total_] on the parameters' device
  int64_t total_ = 0;
};

}  // namespace ms
