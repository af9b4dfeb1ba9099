#include "engine/optim.h"

#include <cmath>
#include <stdexcept>

#include "engine/autograd.h"
#include "engine/kernels/kernels.h"

namespace ms {

std::vector<ParamGroup> decay_groups(const nn::Module& m, float weight_decay) {
  ParamGroup no_decay, decay;
  decay.weight_decay = weight_decay;
  for (auto& [name, t] : m.named_parameters()) {
    bool is_bias = name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
    ParamGroup& g = (t.dim() <= 1 || is_bias) ? no_decay : decay;
    g.names.push_back(name);
    g.params.push_back(t);
  }
  return {no_decay, decay};
}

AdamW::AdamW(std::vector<ParamGroup> groups, float lr, float beta1, float beta2, float eps)
    : groups_(std::move(groups)), lr_(lr), beta1_(beta1), beta2_(beta2), eps_(eps) {
  for (auto& g : groups_) {
    if (g.names.size() != g.params.size()) throw std::invalid_argument("AdamW: names and params differ in a group");
    exp_avg_.emplace_back();
    exp_avg_sq_.emplace_back();
    for (auto& p : g.params) {
      exp_avg_.back().push_back(Tensor::zeros(p.shape(), p.device()));
      exp_avg_sq_.back().push_back(Tensor::zeros(p.shape(), p.device()));
    }
  }
}

void AdamW::step() {
  NoGradGuard ng;
  ++step_;
  const float bc1 = 1.f - std::pow(beta1_, float(step_));
  const float bc2 = 1.f - std::pow(beta2_, float(step_));
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    auto& g = groups_[gi];
    for (size_t i = 0; i < g.params.size(); ++i) {
      Tensor& p = g.params[i];
      Tensor grad = p.grad();
      if (!grad.defined()) continue;
      MS_DISPATCH(p.device(), adamw_step, p.data(), grad.data(), exp_avg_[gi][i].data(), exp_avg_sq_[gi][i].data(),
                  p.numel(), lr_, beta1_, beta2_, eps_, g.weight_decay, bc1, bc2);
    }
  }
}

void AdamW::zero_grad() {
  for (auto& g : groups_)
    for (auto& p : g.params) p.zero_grad();
}

std::map<std::string, Tensor> AdamW::state() const {
  std::map<std::string, Tensor> st;
  for (size_t gi = 0; gi < groups_.size(); ++gi)
    for (size_t i = 0; i < groups_[gi].params.size(); ++i) {
      st[groups_[gi].names[i] + ".exp_avg"] = exp_avg_[gi][i];
      st[groups_[gi].names[i] + ".exp_avg_sq"] = exp_avg_sq_[gi][i];
    }
  st["step"] = Tensor::full({}, float(step_));
  return st;
}

void AdamW::load_state(const std::map<std::string, Tensor>& st) {
  auto get = [&](const std::string& k) -> const Tensor& {
    auto it = st.find(k);
    if (it == st.end()) throw std::invalid_argument("optimizer state: missing '" + k + "'");
    return it->second;
  };
  step_ = int64_t(get("step").item());
  for (size_t gi = 0; gi < groups_.size(); ++gi)
    for (size_t i = 0; i < groups_[gi].params.size(); ++i) {
      const std::string& n = groups_[gi].names[i];
      for (auto [suffix, dst] : {std::pair<const char*, Tensor*>{".exp_avg", &exp_avg_[gi][i]},
                                 std::pair<const char*, Tensor*>{".exp_avg_sq", &exp_avg_sq_[gi][i]}}) {
        const Tensor& src = get(n + suffix);
        check_shape(src, dst->shape(), "optimizer state '" + n + suffix + "'");
        dst->copy_(src.to(dst->device()));
      }
    }
}

// timm CosineLRScheduler._get_lr with warmup_prefix=True, cycle_limit 1, decay 1:
// t < warmup_t: warmup_lr_init + t * (lr - warmup_lr_init) / warmup_t;
// else t' = t - warmup_t; lr_min + 0.5 (lr - lr_min)(1 + cos(pi t'/t_initial)) while t' < t_initial.
float LrSchedule::timm_value(int t) const {
  if (t < warmup_t) return warmup_lr_init + float(t) * (lr - warmup_lr_init) / float(warmup_t);
  int tc = t - warmup_t;
  if (tc >= t_initial) return lr_min;
  const double pi = 3.14159265358979323846;
  return float(double(lr_min) + 0.5 * double(lr - lr_min) * (1.0 + std::cos(pi * double(tc) / double(t_initial))));
}

// spec D: at construction lr = warmup_lr_init. Epoch 0: after the update of iteration i
// with i % 100 == 0 and i/100 <= warmup_t, step(i/100) — so iteration i uses
// step(floor((i-1)/100)) for i >= 1, capped at warmup_t. Epoch e >= 1 uses step(e + warmup_t).
float LrSchedule::at(int epoch, int64_t iter) const {
  if (epoch >= 1) return timm_value(epoch + warmup_t);
  if (iter == 0) return warmup_lr_init;
  int64_t t = (iter - 1) / iters_per_warmup_step;
  if (t > warmup_t) t = warmup_t;
  return timm_value(int(t));
}

}  // namespace ms
