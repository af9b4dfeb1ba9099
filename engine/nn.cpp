#include "engine/nn.h"

#include <cmath>
#include <set>
#include <stdexcept>
#include <unordered_set>

#include "engine/autograd.h"

namespace ms::nn {

// ---- Module ---------------------------------------------------------------------------

Tensor& Module::register_parameter(const std::string& name, Tensor& t) {
  t.requires_grad_(true);
  own_.push_back({name, &t, true, false});
  return t;
}

Tensor& Module::register_buffer(const std::string& name, Tensor& t, bool is_int64) {
  own_.push_back({name, &t, false, is_int64});
  return t;
}

void Module::collect(const std::string& prefix, std::vector<StateEntry>& out) const {
  for (const auto& e : own_) out.push_back({prefix + e.name, e.tensor, e.is_parameter, e.is_int64});
  for (const auto& [name, child] : children_) child->collect(prefix + name + ".", out);
}

std::vector<StateEntry> Module::state_entries() const {
  std::vector<StateEntry> out;
  collect("", out);
  return out;
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters() const {
  std::vector<std::pair<std::string, Tensor>> out;
  std::unordered_set<const Tensor*> seen;
  for (const auto& e : state_entries())
    if (e.is_parameter && seen.insert(e.tensor).second) out.push_back({e.name, *e.tensor});
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [n, t] : named_parameters()) out.push_back(t);
  return out;
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (auto& [name, t] : named_parameters()) n += t.numel();
  return n;
}

std::map<std::string, Tensor> Module::state_dict() const {
  std::map<std::string, Tensor> sd;
  for (const auto& e : state_entries()) sd[e.name] = e.tensor->detach();
  return sd;
}

LoadReport Module::load_state_dict(const std::map<std::string, Tensor>& sd, bool strict) {
  LoadReport rep;
  std::set<std::string> known;
  NoGradGuard ng;
  for (const auto& e : state_entries()) {
    known.insert(e.name);
    auto it = sd.find(e.name);
    if (it == sd.end()) { rep.missing.push_back(e.name); continue; }
    const Tensor& src = it->second;
    if (src.numel() != e.tensor->numel() || (src.shape() != e.tensor->shape() && !(src.numel() == 1 && e.tensor->numel() == 1)))
      throw std::invalid_argument("load_state_dict: '" + e.name + "' has shape " + shape_str(src.shape()) +
                                  " in the file, the model expects " + shape_str(e.tensor->shape()));
    e.tensor->copy_(src.to(e.tensor->device()));
  }
  for (const auto& [k, v] : sd)
    if (!known.count(k)) rep.unexpected.push_back(k);
  if (strict && (!rep.missing.empty() || !rep.unexpected.empty())) {
    auto list = [](const std::vector<std::string>& v) {
      std::string s;
      for (size_t i = 0; i < v.size() && i < 8; ++i) s += (i ? ", " : "") + v[i];
      if (v.size() > 8) s += ", ... (" + std::to_string(v.size()) + " in all)";
      return s;
    };
    std::string msg = "load_state_dict (strict):";
    if (!rep.missing.empty()) msg += " missing keys: " + list(rep.missing) + ".";
    if (!rep.unexpected.empty()) msg += " unexpected keys: " + list(rep.unexpected) + ".";
    throw std::invalid_argument(msg);
  }
  return rep;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [n, c] : children_) c->train(on);
}

void Module::zero_grad() {
  for (auto& e : state_entries())
    if (e.is_parameter) e.tensor->zero_grad();
}

void Module::to(Device device) {
  std::unordered_set<Tensor*> done;  // a shared module's tensors move once
  for (auto& e : state_entries()) {
    if (!done.insert(e.tensor).second || e.tensor->device() == device) continue;
    Tensor moved = e.tensor->detach().to(device);
    if (e.is_parameter) moved.requires_grad_(true);
    *e.tensor = moved;
  }
}

void Module::set_rng(RngPtr rng) {
  rng_ = rng;
  for (auto& [n, c] : children_) c->set_rng(rng);
}

Rng& Module::rng() const {
  if (!rng_) throw std::logic_error("Module::rng(): no dropout RNG set (call set_rng on the root module)");
  return *rng_;
}

// ---- layers ---------------------------------------------------------------------------

// PyTorch's default for Linear and the convolutions: kaiming_uniform(a=sqrt 5) ==
// U(+-1/sqrt(fan_in)) for the weight, the bias U(+-1/sqrt(fan_in)) too, drawn in that order.
// The caller registers them.
static void init_weight_and_bias(Tensor& weight, Tensor& bias, const Shape& weight_shape, int64_t out, float bound,
                                 bool has_bias, Rng& init) {
  weight = Tensor::empty(weight_shape);
  init.fill_uniform(weight.data(), weight.numel(), -bound, bound);
  if (has_bias) {
    bias = Tensor::empty({out});
    init.fill_uniform(bias.data(), out, -bound, bound);
  }
}

Linear::Linear(int64_t in, int64_t out, bool has_bias, Rng& init) : in_features(in), out_features(out) {
  const float bound = in > 0 ? 1.0f / std::sqrt(float(in)) : 0.f;
  init_weight_and_bias(weight, bias, {out, in}, out, bound, has_bias, init);
  register_parameter("weight", weight);
  if (has_bias) register_parameter("bias", bias);
}

Conv2d::Conv2d(int64_t in, int64_t out, int64_t k, int64_t stride_, int64_t padding_, bool has_bias, Rng& init)
    : stride(stride_), padding(padding_) {
  const float bound = 1.0f / std::sqrt(float(in * k * k));
  init_weight_and_bias(weight, bias, {out, in, k, k}, out, bound, has_bias, init);
  register_parameter("weight", weight);
  if (has_bias) register_parameter("bias", bias);
}

Conv1d::Conv1d(int64_t in, int64_t out, int64_t k, int64_t stride_, bool has_bias, Rng& init) : stride(stride_) {
  const float bound = 1.0f / std::sqrt(float(in * k));
  init_weight_and_bias(weight, bias, {out, in, k}, out, bound, has_bias, init);
  register_parameter("weight", weight);
  if (has_bias) register_parameter("bias", bias);
}

Tensor Conv1d::forward(const Tensor& x) const {
  if (!x.defined() || x.dim() != 3)
    throw std::invalid_argument("Conv1d: input must be 3-D [N,C,L], got " +
                                (x.defined() ? shape_str(x.shape()) : std::string("an undefined tensor")));
  const int64_t N = x.size(0), C = x.size(1), L = x.size(2), O = weight.size(0), k = weight.size(2);
  Tensor y = conv2d(x.reshape({N, C, L, 1}), weight.reshape({O, C, k, 1}), bias, stride, 0);  // (N, O, OL, 1)
  return y.reshape({N, O, y.size(2)});                                                         // (N, O, OL)
}

ConvTranspose2d::ConvTranspose2d(int64_t in, int64_t out, int64_t k, int64_t stride_, int64_t padding_,
                                 bool has_bias, Rng& init)
    : stride(stride_), padding(padding_) {
  const float bound = 1.0f / std::sqrt(float(out * k * k));  // fan_in = weight.size(1) * k * k
  init_weight_and_bias(weight, bias, {in, out, k, k}, out, bound, has_bias, init);
  register_parameter("weight", weight);
  if (has_bias) register_parameter("bias", bias);
}

BatchNorm2d::BatchNorm2d(int64_t c, float eps_, float momentum_) : eps(eps_), momentum(momentum_) {
  weight = Tensor::ones({c});
  bias = Tensor::zeros({c});
  running_mean = Tensor::zeros({c});
  running_var = Tensor::ones({c});
  num_batches_tracked = Tensor::zeros({});
  register_parameter("weight", weight);
  register_parameter("bias", bias);
  register_buffer("running_mean", running_mean);
  register_buffer("running_var", running_var);
  register_buffer("num_batches_tracked", num_batches_tracked, true);
}

Tensor BatchNorm2d::forward(const Tensor& x) {
  if (is_training()) {
    NoGradGuard ng;
    if (num_batches_tracked.is_cuda()) num_batches_tracked.copy_(add(num_batches_tracked, 1.f));
    else num_batches_tracked.data()[0] += 1.f;
  }
  return batch_norm2d(x, weight, bias, running_mean, running_var, is_training(), momentum, eps);
}

Tensor BatchNorm2d::forward_conv_act(const Conv2d& conv, const Tensor& x, const Tensor& residual, bool relu) {
  if (is_training()) return forward_act(conv.forward(x), residual, relu);
  return conv2d_bn_act(x, conv.weight, conv.bias, conv.stride, conv.padding, weight, bias, running_mean, running_var,
                       eps, residual, relu);
}

Tensor BatchNorm2d::forward_act(const Tensor& x, const Tensor& residual, bool relu) {
  if (is_training()) {
    NoGradGuard ng;
    if (num_batches_tracked.is_cuda()) num_batches_tracked.copy_(add(num_batches_tracked, 1.f));
    else num_batches_tracked.data()[0] += 1.f;
  }
  return batch_norm2d_act(x, weight, bias, running_mean, running_var, is_training(), momentum, eps, residual, relu);
}

LayerNorm::LayerNorm(int64_t dim, float eps_) : eps(eps_) {
  weight = Tensor::ones({dim});
  bias = Tensor::zeros({dim});
  register_parameter("weight", weight);
  register_parameter("bias", bias);
}

Embedding::Embedding(int64_t num, int64_t dim, Rng& init) {
  weight = Tensor::empty({num, dim});
  init.fill_normal(weight.data(), weight.numel());
  register_parameter("weight", weight);
}

MultiheadAttention::MultiheadAttention(int64_t E, int64_t H, float p, Rng& init)
    : embed_dim(E), num_heads(H), dropout_p(p) {
  if (E % H != 0) throw std::invalid_argument("MultiheadAttention: embed_dim " + std::to_string(E) +
                                              " is not divisible by num_heads " + std::to_string(H));
  // PyTorch: xavier_uniform_ on in_proj_weight (fan_in E, fan_out 3E), zero biases.
  const float bound = std::sqrt(6.0f / float(E + 3 * E));
  in_proj_weight = Tensor::empty({3 * E, E});
  init.fill_uniform(in_proj_weight.data(), in_proj_weight.numel(), -bound, bound);
  in_proj_bias = Tensor::zeros({3 * E});
  register_parameter("in_proj_weight", in_proj_weight);
  register_parameter("in_proj_bias", in_proj_bias);
  out_proj = register_module("out_proj", std::make_shared<Linear>(E, E, true, init));
  out_proj->bias.detach().fill_(0.f);
}

MultiheadAttention::Output MultiheadAttention::forward(const Tensor& query, const Tensor& key, const Tensor& value,
                                                       const std::vector<uint8_t>& key_padding_mask,
                                                       bool need_weights) const {
  const int64_t E = embed_dim, H = num_heads, hd = E / H;
  if (query.dim() != 3 || query.size(2) != E)
    throw std::invalid_argument("MultiheadAttention: query must be [L,B," + std::to_string(E) + "], got " + shape_str(query.shape()));
  const int64_t L = query.size(0), B = query.size(1), S = key.size(0);
  check_shape(key, {S, B, E}, "MultiheadAttention key");
  check_shape(value, {S, B, E}, "MultiheadAttention value");

  // Packed projection: rows [0,E) of in_proj are W_q, [E,2E) W_k, [2E,3E) W_v.
  auto proj = [&](const Tensor& x, int64_t part) {
    return linear(x, narrow(in_proj_weight, 0, part * E, E), narrow(in_proj_bias, 0, part * E, E));
  };
  // [T,B,E] -> [B*H, T, hd] (batch-major heads: index b*H + h, as torch).
  auto heads = [&](const Tensor& x, int64_t T) { return transpose(x.reshape({T, B * H, hd}), 0, 1); };
  Tensor q = mul(heads(proj(query, 0), L), 1.0f / std::sqrt(float(hd)));  // [B*H, L, hd]
  Tensor k = heads(proj(key, 1), S);                                      // [B*H, S, hd]
  Tensor v = heads(proj(value, 2), S);                                    // [B*H, S, hd]

  Tensor scores = matmul(q, k, false, true);  // [B*H, L, S]
  if (!key_padding_mask.empty()) {
    if (int64_t(key_padding_mask.size()) != B * S)
      throw std::invalid_argument("MultiheadAttention: key_padding_mask must have B*S = " + std::to_string(B * S) + " entries");
    std::vector<uint8_t> m(size_t(B * H * L * S));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t l = 0; l < L; ++l)
          for (int64_t s = 0; s < S; ++s) m[size_t(((b * H + h) * L + l) * S + s)] = key_padding_mask[size_t(b * S + s)];
    scores = masked_fill(scores, m, -INFINITY);
  }
  Tensor attn = softmax(scores, -1);                          // [B*H, L, S]
  if (is_training() && dropout_p > 0.f) attn = dropout(attn, dropout_p, true, rng());
  Tensor ctx = matmul(attn, v);                               // [B*H, L, hd]
  ctx = transpose(ctx, 0, 1).reshape({L, B, E});              // [L, B, E]
  Output out;
  out.out = out_proj->forward(ctx);                           // [L, B, E]
  if (need_weights) out.attn_weights = mean(attn.reshape({B, H, L, S}), 1);  // [B, L, S]
  return out;
}

}  // namespace ms::nn
