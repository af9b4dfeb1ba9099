// defines: AdamW exactly as torch.optim.AdamW, parameter groups, and the learning-rate
// schedule of the MeDSLIP reference (spec section D).
#pragma once
#include <map>
#include <string>
#include <vector>

#include "engine/nn.h"
#include "engine/tensor.h"

namespace ms {

struct ParamGroup {
  std::vector<std::string> names;
  std::vector<Tensor> params;
  float weight_decay = 0.f;
};

// The reference's grouping (optim_factory.py): 1-D tensors and `.bias` get no decay.
// Groups are ordered [no_decay, decay] as in the original.
std::vector<ParamGroup> decay_groups(const nn::Module& m, float weight_decay);

class AdamW {
 public:
  AdamW(std::vector<ParamGroup> groups, float lr = 1e-4f, float beta1 = 0.9f, float beta2 = 0.999f,
        float eps = 1e-8f);
  // One update of every parameter with a gradient (parameters without one are skipped,
  // like torch). Increments the step count first, as torch does per parameter.
  void step();
  void zero_grad();
  void set_lr(float lr) { lr_ = lr; }
  float lr() const { return lr_; }
  int64_t steps() const { return step_; }
  const std::vector<ParamGroup>& groups() const { return groups_; }

  // Optimiser state as named tensors: "<param>.exp_avg", "<param>.exp_avg_sq", and
  // "step" (one element), for checkpoints.
  std::map<std::string, Tensor> state() const;
  void load_state(const std::map<std::string, Tensor>& st);

 private:
  std::vector<ParamGroup> groups_;
  std::vector<std::vector<Tensor>> exp_avg_, exp_avg_sq_;
  float lr_, beta1_, beta2_, eps_;
  int64_t step_ = 0;
};

// The reference schedule (spec D): timm CosineLRScheduler(t_initial, lr_min, warmup_t,
// warmup_lr_init, warmup_prefix) stepped by hand — in epoch 0 after iterations
// 0,100,...,warmup_t*100 with step(i/100), and at each later epoch e with step(e+warmup_t).
struct LrSchedule {
  float lr = 1e-4f, lr_min = 1e-5f, warmup_lr_init = 1e-5f;
  int t_initial = 100, warmup_t = 5;
  int iters_per_warmup_step = 100;  // the reference's "i % 100 == 0"
  // lr in force for the update of (epoch, iteration-within-epoch).
  float at(int epoch, int64_t iter) const;
  // timm's value for scheduler step t (warmup_prefix=True, one cycle).
  float timm_value(int t) const;
};

}  // namespace ms
