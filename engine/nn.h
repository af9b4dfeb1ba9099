// defines: nn::Module (named parameters and buffers with PyTorch state_dict keys,
// train/eval, zero_grad) and the layers MeDSLIP, BERT and the fine-tuning U-Net need: Linear,
// Conv1d, Conv2d, ConvTranspose2d, BatchNorm2d, LayerNorm, Dropout, Embedding, MultiheadAttention.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/ops.h"
#include "engine/rng.h"
#include "engine/tensor.h"

namespace ms::nn {

struct StateEntry {
  std::string name;   // dotted, as torch's state_dict
  Tensor* tensor;     // points into the owning module
  bool is_parameter;
  bool is_int64;      // stored as I64 in files (BatchNorm num_batches_tracked)
};

struct LoadReport {
  std::vector<std::string> missing, unexpected;
};

// Dropout randomness for a module tree: one shared Philox stream.
using RngPtr = std::shared_ptr<Rng>;

class Module {
 public:
  virtual ~Module() = default;
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // Every parameter and buffer under its dotted name. A module registered under two
  // names (MeDSLIP's shared decoder norm) appears under both.
  std::vector<StateEntry> state_entries() const;
  // Parameters only, each tensor once (first name wins), in registration order.
  std::vector<std::pair<std::string, Tensor>> named_parameters() const;
  std::vector<Tensor> parameters() const;
  int64_t num_parameters() const;  // unique elements

  // Copies tensors in by name. Shapes must match (error names the key and both
  // shapes). strict: missing or unexpected keys throw, listing them (like PyTorch).
  LoadReport load_state_dict(const std::map<std::string, Tensor>& sd, bool strict = true);
  std::map<std::string, Tensor> state_dict() const;  // detached views of the live tensors

  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }
  void zero_grad();
  void to(Device device);
  void set_rng(RngPtr rng);  // propagates to children
  Rng& rng() const;

 protected:
  Tensor& register_parameter(const std::string& name, Tensor& t);
  Tensor& register_buffer(const std::string& name, Tensor& t, bool is_int64 = false);
 public:
  // Adds a child under `name` (public so that plain Modules serve as containers, like
  // nn.Sequential's "0", "1", ...). Registering one child under two parents shares it.
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    children_.push_back({name, m});
    return m;
  }

 private:
  void collect(const std::string& prefix, std::vector<StateEntry>& out) const;
  std::vector<StateEntry> own_;  // names relative to this module
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
  RngPtr rng_;
};

// torch.nn.Linear. Default init as PyTorch: kaiming_uniform(a=sqrt 5) for the weight,
// i.e. U(+-1/sqrt(in)), and U(+-1/sqrt(in)) for the bias.
class Linear : public Module {
 public:
  Linear(int64_t in, int64_t out, bool bias, Rng& init);
  Tensor forward(const Tensor& x) const { return linear(x, weight, bias); }
  Tensor forward_relu(const Tensor& x) const { return linear_relu(x, weight, bias); }  // relu(forward(x))
  Tensor weight, bias;
  int64_t in_features, out_features;
};

// torch.nn.Conv2d without groups or dilation. Default init as PyTorch's
// kaiming_uniform(a=sqrt 5); ResNet re-initialises it.
class Conv2d : public Module {
 public:
  Conv2d(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding, bool bias, Rng& init);
  Tensor forward(const Tensor& x) const { return conv2d(x, weight, bias, stride, padding); }
  Tensor weight, bias;
  int64_t stride, padding;
};

// torch.nn.Conv1d without padding, groups or dilation (the U-Net head is Conv1d(64, 1, 1)):
// weight [out, in, k], bias [out], x [N, in, L] -> [N, out, (L - k) / stride + 1]. Runs as
// conv2d on [N, in, L, 1] through views. Default init as PyTorch: U(+-1/sqrt(in * k)).
class Conv1d : public Module {
 public:
  Conv1d(int64_t in, int64_t out, int64_t kernel, int64_t stride, bool bias, Rng& init);
  Tensor forward(const Tensor& x) const;
  Tensor weight, bias;
  int64_t stride;
};

// torch.nn.ConvTranspose2d without output_padding, groups or dilation: weight [in, out, k, k]
// and bias [out] under PyTorch's state_dict names. Default init as PyTorch's: kaiming_uniform
// (a=sqrt 5) whose fan_in is weight.size(1) * k * k = out * k * k for a transposed weight, so
// weight and bias both ~ U(+-1/sqrt(out * k * k)).
class ConvTranspose2d : public Module {
 public:
  ConvTranspose2d(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding, bool bias, Rng& init);
  Tensor forward(const Tensor& x) const { return conv_transpose2d(x, weight, bias, stride, padding); }
  Tensor weight, bias;
  int64_t stride, padding;
};

// torch.nn.BatchNorm2d(eps=1e-5, momentum=0.1, affine, track_running_stats).
class BatchNorm2d : public Module {
 public:
  explicit BatchNorm2d(int64_t channels, float eps = 1e-5f, float momentum = 0.1f);
  Tensor forward(const Tensor& x);
  // relu?(forward(x) + residual) in one fused op (batch_norm2d_act; residual may be undefined)
  Tensor forward_act(const Tensor& x, const Tensor& residual, bool relu);
  // forward_act(conv.forward(x), residual, relu); in evaluation one op (conv2d_bn_act) that
  // applies the BatchNorm in the convolution, the same values bit for bit
  Tensor forward_conv_act(const Conv2d& conv, const Tensor& x, const Tensor& residual, bool relu);
  Tensor weight, bias, running_mean, running_var, num_batches_tracked;
  float eps, momentum;
};

class LayerNorm : public Module {
 public:
  explicit LayerNorm(int64_t dim, float eps = 1e-5f);
  Tensor forward(const Tensor& x) const { return layer_norm(x, weight, bias, eps); }
  Tensor weight, bias;
  float eps;
};

class Dropout : public Module {
 public:
  explicit Dropout(float p) : p(p) {}
  // The RNG is only needed when something is dropped (training with p > 0).
  Tensor forward(const Tensor& x) const { return is_training() && p > 0.f ? dropout(x, p, true, rng()) : x; }
  float p;
};

class Embedding : public Module {
 public:
  Embedding(int64_t num, int64_t dim, Rng& init);  // N(0,1) as PyTorch
  Tensor forward(const std::vector<int64_t>& ids, const Shape& ids_shape) const {
    return embedding(weight, ids, ids_shape);
  }
  Tensor weight;
};

// torch.nn.MultiheadAttention (batch_first=False): inputs [L,B,E] / [S,B,E], packed
// in_proj_weight [3E,E] + in_proj_bias [3E], out_proj Linear(E,E); q scaled by
// 1/sqrt(head_dim); dropout on the attention weights in training.
class MultiheadAttention : public Module {
 public:
  MultiheadAttention(int64_t embed_dim, int64_t num_heads, float dropout, Rng& init);
  struct Output {
    Tensor out;           // [L,B,E]
    Tensor attn_weights;  // [B,L,S], averaged over heads (post-dropout in training, as torch 1.9)
  };
  // key_padding_mask: empty, or [B*S] with 1 = ignore that key (PyTorch's bool mask).
  Output forward(const Tensor& query, const Tensor& key, const Tensor& value,
                 const std::vector<uint8_t>& key_padding_mask = {}, bool need_weights = true) const;
  Tensor in_proj_weight, in_proj_bias;
  std::shared_ptr<Linear> out_proj;
  int64_t embed_dim, num_heads;
  float dropout_p;
};

}  // namespace ms::nn
