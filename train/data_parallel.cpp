#include "train/data_parallel.h"

#include <chrono>
#include <set>
#include <stdexcept>

#include "engine/autograd.h"
#include "engine/ops.h"

namespace ms {

namespace {
// A view of `n` elements of `flat` at `off`, shaped `shape` (no copy, no grad).
Tensor view_of(const Tensor& flat, int64_t off, const Shape& shape) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = flat.impl()->storage;
  impl->offset = flat.impl()->offset + off;
  impl->shape = shape;
  return Tensor(impl);
}
}  // namespace

DataParallel::DataParallel(Communicator& comm, const nn::Module& model, int accum_steps) : comm_(comm), K_(accum_steps) {
  if (K_ <= 0) throw std::invalid_argument("accum_steps must be positive, got " + std::to_string(K_));
  std::set<const TensorImpl*> seen;
  for (const auto& e : model.state_entries()) {
    if (!seen.insert(e.tensor->impl()).second) continue;  // a module shared under two names is one tensor
    (e.is_parameter ? params_ : buffers_).push_back(*e.tensor);
  }
  for (const auto& p : params_) {
    offsets_.push_back(total_);
    total_ += p.numel();
  }
  has_grad_.assign(params_.size(), 0.0);
}

void DataParallel::broadcast_state(const std::string& what) {
  if (world() == 1) return;
  for (auto& p : params_) comm_.broadcast(p, what);
  for (auto& b : buffers_) comm_.broadcast(b, what);
}

void DataParallel::broadcast_buffers(const std::string& what) {
  if (world() == 1) return;
  for (auto& b : buffers_) comm_.broadcast(b, what);
}

void DataParallel::add_micro_gradients(int k) {
  if (!active()) return;
  NoGradGuard ng;
  if (!flat_.defined() && !params_.empty()) flat_ = Tensor::zeros({total_}, params_[0].device());
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i];
    Tensor g = p.grad();
    Tensor seg = view_of(flat_, offsets_[i], {p.numel()});
    if (k == 0) {
      has_grad_[i] = 0.0;
      if (g.defined()) seg.copy_(g);
      else seg.fill_(0.f);
    } else if (g.defined()) {
      seg.copy_(add(seg, g.reshape({p.numel()})));  // (g0 + g1) + g2 ...: the order allreduce_sum uses across ranks
    }
    if (g.defined()) has_grad_[i] = 1.0;
    p.zero_grad();
  }
}

double DataParallel::reduce_gradients(const std::string& what) {
  if (!active()) return 0.0;
  NoGradGuard ng;
  const auto t0 = std::chrono::steady_clock::now();
  comm_.allreduce_sum(flat_, what);
  const std::vector<double> any = sum_over_ranks(has_grad_, what);
  const double comm_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // The mean over the W*K micro-batches; a fresh tensor, so the grads never alias the sum
  // the next step's backward passes add into.
  Tensor mean = mul(flat_, 1.f / float(replicas()));
  for (size_t i = 0; i < params_.size(); ++i) {
    if (any[i] > 0) params_[i].set_grad(view_of(mean, offsets_[i], params_[i].shape()));
    else params_[i].zero_grad();
  }
  return comm_s;
}

std::vector<float> DataParallel::mean_over_micro_batches(const std::vector<std::vector<float>>& rows, const std::string& what) {
  if (int(rows.size()) != K_) throw std::logic_error("mean_over_micro_batches: " + std::to_string(rows.size()) + " rows, expected accum_steps");
  const size_t m = rows.empty() ? 0 : rows[0].size();
  std::vector<double> mine;
  for (const auto& r : rows) {
    if (r.size() != m) throw std::logic_error("mean_over_micro_batches: rows of unequal length");
    mine.insert(mine.end(), r.begin(), r.end());  // floats, exactly representable as doubles
  }
  const std::vector<double> all = world() > 1 ? comm_.allgather(mine, what) : mine;
  std::vector<float> sum(m, 0.f);
  for (size_t row = 0; row < all.size() / std::max<size_t>(m, 1); ++row)
    for (size_t j = 0; j < m; ++j) sum[j] = row == 0 ? float(all[j]) : sum[j] + float(all[row * m + j]);
  if (replicas() > 1)
    for (auto& v : sum) v /= float(replicas());
  return sum;
}

std::vector<double> DataParallel::sum_over_ranks(const std::vector<double>& v, const std::string& what) {
  if (world() == 1) return v;
  const std::vector<double> all = comm_.allgather(v, what);
  std::vector<double> sum(v.size(), 0.0);
  for (int r = 0; r < world(); ++r)
    for (size_t j = 0; j < v.size(); ++j) sum[j] = r == 0 ? all[j] : sum[j] + all[size_t(r) * v.size() + j];
  return sum;
}

bool DataParallel::any_rank(bool flag, const std::string& what) {
  return sum_over_ranks({flag ? 1.0 : 0.0}, what)[0] > 0;
}

uint64_t DataParallel::dropout_offset(int64_t global_step, int k) const {
  return uint64_t(global_step * replicas() + slot(k)) << 36;  // 2^36 Philox blocks per forward pass
}

}  // namespace ms
