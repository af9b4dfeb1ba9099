#include "model/resnet.h"

#include <cmath>
#include <stdexcept>

namespace ms {

// torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu") -> N(0, 2/fan_out).
static std::shared_ptr<nn::Conv2d> conv(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t pad, Rng& init) {
  auto c = std::make_shared<nn::Conv2d>(in, out, k, stride, pad, false, init);
  const float std = std::sqrt(2.0f / float(out * k * k));
  init.fill_normal(c->weight.data(), c->weight.numel(), 0.f, std);
  return c;
}

ResBlock::ResBlock(int64_t in, int64_t width, int64_t stride, bool bottleneck, Rng& init) : bottleneck_(bottleneck) {
  out_ch_ = bottleneck ? width * 4 : width;
  if (bottleneck) {
    conv1_ = register_module("conv1", conv(in, width, 1, 1, 0, init));
    bn1_ = register_module("bn1", std::make_shared<nn::BatchNorm2d>(width));
    conv2_ = register_module("conv2", conv(width, width, 3, stride, 1, init));  // v1.5: stride here
    bn2_ = register_module("bn2", std::make_shared<nn::BatchNorm2d>(width));
    conv3_ = register_module("conv3", conv(width, out_ch_, 1, 1, 0, init));
    bn3_ = register_module("bn3", std::make_shared<nn::BatchNorm2d>(out_ch_));
  } else {
    conv1_ = register_module("conv1", conv(in, width, 3, stride, 1, init));
    bn1_ = register_module("bn1", std::make_shared<nn::BatchNorm2d>(width));
    conv2_ = register_module("conv2", conv(width, width, 3, 1, 1, init));
    bn2_ = register_module("bn2", std::make_shared<nn::BatchNorm2d>(width));
  }
  if (stride != 1 || in != out_ch_) {
    auto ds = std::make_shared<nn::Module>();  // nn.Sequential(conv1x1, BatchNorm2d)
    down_conv_ = ds->register_module("0", conv(in, out_ch_, 1, stride, 0, init));
    down_bn_ = ds->register_module("1", std::make_shared<nn::BatchNorm2d>(out_ch_));
    register_module("downsample", ds);
  }
}

// relu(bn(conv(.))) and relu(bn(conv(.)) + identity) are one fused op each
// (batch_norm2d_act: the unfused ops' values, bit for bit, with fewer passes over memory).
Tensor ResBlock::forward(const Tensor& x) {
  if (!probe) {  // conv + bn (+ identity) + relu: in evaluation one op each (forward_conv_act)
    Tensor out = bn1_->forward_conv_act(*conv1_, x, Tensor(), true);
    if (bottleneck_) out = bn2_->forward_conv_act(*conv2_, out, Tensor(), true);
    Tensor identity = !down_conv_     ? x
                      : is_training() ? down_bn_->forward(down_conv_->forward(x))
                                      : down_bn_->forward_conv_act(*down_conv_, x, Tensor(), false);
    return (bottleneck_ ? bn3_ : bn2_)->forward_conv_act(bottleneck_ ? *conv3_ : *conv2_, out, identity, true);
  }
  auto act = [&](int call, nn::BatchNorm2d& bn, const Tensor& in, const Tensor& residual) {
    Tensor out = bn.forward_act(in, residual, true);
    return probe(call, out, [&] { return residual.defined() ? add(bn.forward(in), residual) : bn.forward(in); });
  };
  Tensor out = act(0, *bn1_, conv1_->forward(x), Tensor());
  if (bottleneck_) {
    out = act(1, *bn2_, conv2_->forward(out), Tensor());
    out = conv3_->forward(out);
  } else {
    out = conv2_->forward(out);
  }
  Tensor identity = down_conv_ ? down_bn_->forward(down_conv_->forward(x)) : x;
  return act(bottleneck_ ? 2 : 1, bottleneck_ ? *bn3_ : *bn2_, out, identity);
}

ResLayer::ResLayer(int64_t& in, int64_t width, int n, int64_t stride, bool bottleneck, Rng& init) {
  for (int i = 0; i < n; ++i) {
    auto b = std::make_shared<ResBlock>(in, width, i == 0 ? stride : 1, bottleneck, init);
    in = b->out_channels();
    blocks.push_back(register_module(std::to_string(i), b));
  }
}

Tensor ResLayer::forward(const Tensor& x) {
  Tensor h = x;
  for (auto& b : blocks) h = b->forward(h);
  return h;
}

ResNet::ResNet(const std::string& arch, bool truncated, Naming naming, Rng& init, int64_t num_classes)
    : truncated_(truncated) {
  bool bottleneck;
  std::vector<int> counts;
  if (arch == "resnet50") { bottleneck = true; counts = {3, 4, 6, 3}; }
  else if (arch == "resnet18") { bottleneck = false; counts = {2, 2, 2, 2}; }
  else throw std::invalid_argument("ResNet: unknown architecture '" + arch + "' (expected resnet18 or resnet50)");
  const bool seq = naming == Naming::Sequential;
  conv1_ = register_module(seq ? "0" : "conv1", conv(3, 64, 7, 2, 3, init));
  bn1_ = register_module(seq ? "1" : "bn1", std::make_shared<nn::BatchNorm2d>(64));
  int64_t in = 64;
  const int n_layers = truncated ? 3 : 4;
  const int64_t widths[4] = {64, 128, 256, 512};
  for (int l = 0; l < n_layers; ++l) {
    auto layer = std::make_shared<ResLayer>(in, widths[l], counts[size_t(l)], l == 0 ? 1 : 2, bottleneck, init);
    layers_.push_back(register_module(seq ? std::to_string(4 + l) : "layer" + std::to_string(l + 1), layer));
  }
  out_channels_ = in;
  if (!truncated) fc_ = register_module(seq ? "9" : "fc", std::make_shared<nn::Linear>(in, num_classes, true, init));
}

Tensor ResNet::forward(const Tensor& x) {
  if (x.dim() != 4 || x.size(1) != 3)
    throw std::invalid_argument("ResNet: input must be [B,3,H,W], got " + shape_str(x.shape()));
  if (x.size(2) % 16 || x.size(3) % 16)
    throw std::invalid_argument("ResNet: image side must be divisible by 16, got " + shape_str(x.shape()));
  Tensor h = bn1_->forward_conv_act(*conv1_, x, Tensor(), true);  // relu(bn1(conv1 x)) [B,64,S/2,S/2]
  h = max_pool2d(h, 3, 2, 1);                           // [B,64,S/4,S/4]
  for (auto& l : layers_) h = l->forward(h);            // ... [B,C,S/16,S/16] after layer3
  if (truncated_) return h;
  h = adaptive_avg_pool2d(h, 1, 1).flatten(1);          // [B,2048]
  return fc_->forward(h);
}

}  // namespace ms
