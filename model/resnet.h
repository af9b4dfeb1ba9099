// defines: torchvision ResNet-18 / ResNet-50 (BasicBlock / Bottleneck v1.5: stride on the
// 3x3 conv, bias-free convs, BatchNorm eps 1e-5 momentum 0.1, torchvision's init), either
// whole (conv1..layer4 + avgpool + fc, torchvision names) or as MeDSLIP's truncated trunk
// `res_features` = children()[:-3]: indices 0 conv1, 1 bn1, (2 relu, 3 maxpool), 4 layer1,
// 5 layer2, 6 layer3 — stride 16, 1024 channels (ResNet-50) or 256 (ResNet-18).
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/nn.h"

namespace ms {

// A test seam (tests/model/finetune.cpp judges gradients against a float64 run with the
// float32-ambiguous decisions taken as float64 took them): when set, a module calls it after its
// ReLU (or max-pool) number `call` with the output and a function that recomputes the input
// (unfused: BatchNorm [+ residual]), and goes on with what it returns. Unset outside that test.
using ActivationProbe = std::function<Tensor(int call, const Tensor& out, const std::function<Tensor()>& input)>;

class ResBlock : public nn::Module {
 public:
  // bottleneck: 1x1 (width) -> 3x3 (width, stride) -> 1x1 (4 width); else 3x3 -> 3x3.
  ResBlock(int64_t in, int64_t width, int64_t stride, bool bottleneck, Rng& init);
  Tensor forward(const Tensor& x);
  int64_t out_channels() const { return out_ch_; }
  // calls as torchvision's: 0 after bn1, 1 after bn2, 2 (bottleneck) / 1 (basic) after the residual add
  ActivationProbe probe;

 private:
  bool bottleneck_;
  int64_t out_ch_;
  std::shared_ptr<nn::Conv2d> conv1_, conv2_, conv3_, down_conv_;
  std::shared_ptr<nn::BatchNorm2d> bn1_, bn2_, bn3_, down_bn_;
};

class ResLayer : public nn::Module {  // nn.Sequential of blocks "0", "1", ...
 public:
  ResLayer(int64_t& in, int64_t width, int blocks, int64_t stride, bool bottleneck, Rng& init);
  Tensor forward(const Tensor& x);
  std::vector<std::shared_ptr<ResBlock>> blocks;
};

class ResNet : public nn::Module {
 public:
  enum class Naming { Torchvision, Sequential };
  // arch: "resnet18" | "resnet50". truncated: stop after layer3 (MeDSLIP's trunk).
  ResNet(const std::string& arch, bool truncated, Naming naming, Rng& init, int64_t num_classes = 1000);
  // [B,3,S,S] -> [B,C,S/16,S/16] (truncated) or logits [B,num_classes].
  Tensor forward(const Tensor& x);
  int64_t out_channels() const { return out_channels_; }

 private:
  bool truncated_;
  int64_t out_channels_;
  std::shared_ptr<nn::Conv2d> conv1_;
  std::shared_ptr<nn::BatchNorm2d> bn1_;
  std::vector<std::shared_ptr<ResLayer>> layers_;
  std::shared_ptr<nn::Linear> fc_;
};

}  // namespace ms
