#include "model/finetune.h"

#include <cmath>
#include <stdexcept>

namespace ms {

void check_finetune_input(const Tensor& x, const char* model) {
  if (x.dim() != 4 || x.size(1) != 3)
    throw std::invalid_argument(std::string(model) + ": input must be [B,3,H,W], got " + shape_str(x.shape()));
  if (x.size(2) % 32 || x.size(3) % 32 || x.size(2) == 0 || x.size(3) == 0)
    throw std::invalid_argument(std::string(model) + ": image sides must be positive multiples of 32, got " +
                                shape_str(x.shape()));
}

ResStages::ResStages(const std::string& arch, int n_layers, Rng& init) {
  bool bottleneck;
  std::vector<int> counts;
  if (arch == "resnet50") { bottleneck = true; counts = {3, 4, 6, 3}; }
  else if (arch == "resnet18") { bottleneck = false; counts = {2, 2, 2, 2}; }
  else throw std::invalid_argument("fine-tuning: unknown res_base_model '" + arch + "' (expected resnet18 or resnet50)");
  conv1 = register_module("0", std::make_shared<nn::Conv2d>(3, 64, 7, 2, 3, false, init));
  // torchvision's init: kaiming_normal_(mode="fan_out", nonlinearity="relu")
  init.fill_normal(conv1->weight.data(), conv1->weight.numel(), 0.f, std::sqrt(2.0f / float(64 * 7 * 7)));
  bn1 = register_module("1", std::make_shared<nn::BatchNorm2d>(64));
  int64_t in = 64;
  const int64_t w[4] = {64, 128, 256, 512};
  for (int l = 0; l < n_layers; ++l) {
    auto layer = std::make_shared<ResLayer>(in, w[l], counts[size_t(l)], l == 0 ? 1 : 2, bottleneck, init);
    layers.push_back(register_module(std::to_string(4 + l), layer));
    widths.push_back(in);
  }
}

Tensor ResStages::stem(const Tensor& x) {
  if (!probe) return relu(bn1->forward(conv1->forward(x)));
  Tensor c = conv1->forward(x);
  return probe(0, relu(bn1->forward(c)), [&] { return bn1->forward(c); });
}

Tensor ResStages::pool(const Tensor& x) {
  Tensor y = max_pool2d(x, 3, 2, 1);
  return probe ? probe(1, y, [&] { return x; }) : y;
}

// ---- ModelRes_ft (spec E.5) ----------------------------------------------------------------

FinetuneClassifier::FinetuneClassifier(const FinetuneModelConfig& cfg, uint64_t seed) : FinetuneModel(cfg) {
  if (cfg.num_classes < 1) throw std::invalid_argument("fine-tuning: num_classes must be >= 1, got " + std::to_string(cfg.num_classes));
  Rng init(seed, kStreamInit);
  // torchvision builds the whole ResNet (fc included) before the slices are taken; the
  // parameter values differ from torch's anyway (another RNG), so only the layout matters.
  if (cfg.use_base) {
    res_features = register_module("res_features", std::make_shared<ResStages>(cfg.arch, 4, init));
  } else {
    res_features = register_module("res_features", std::make_shared<ResStages>(cfg.arch, 3, init));
    const int64_t C = res_features->widths.back();  // fc.in_features / 2
    res_l1_anatomy = register_module("res_l1_anatomy", std::make_shared<nn::Linear>(C, C, true, init));
    res_l2_anatomy = register_module("res_l2_anatomy", std::make_shared<nn::Linear>(C, 256, true, init));
    res_l1_pathology = register_module("res_l1_pathology", std::make_shared<nn::Linear>(C, C, true, init));
    res_l2_pathology = register_module("res_l2_pathology", std::make_shared<nn::Linear>(C, 256, true, init));
    mask_generator = register_module("mask_generator", std::make_shared<nn::Linear>(C, C, true, init));
    back = register_module("back", std::make_shared<nn::Linear>(256, C, true, init));
    auto last_res = std::make_shared<nn::Module>();  // nn.Sequential(layer4, avgpool)
    int64_t in = C;
    layer4 = last_res->register_module("0", std::make_shared<ResLayer>(in, 512, 2 + (cfg.arch == "resnet50" ? 1 : 0), 2,
                                                                       cfg.arch == "resnet50", init));
    register_module("last_res", last_res);
  }
  const int64_t F = cfg.arch == "resnet50" ? 2048 : 512;  // resnet.fc.in_features
  res_out = register_module("res_out", std::make_shared<nn::Linear>(F, cfg.num_classes, true, init));
  set_rng(std::make_shared<Rng>(seed, kStreamDropout));
}

Tensor FinetuneClassifier::forward(const Tensor& image) {
  check_finetune_input(image, "ModelRes_ft");
  const int64_t B = image.size(0);
  Tensor h = res_features->pool(res_features->stem(image));  // [B,64,H/4,W/4]
  for (auto& l : res_features->layers) h = l->forward(h);     // [B,2048,H/32,W/32] or [B,C,H/16,W/16]
  if (!cfg_.use_base) {
    // image_encoder: the MeDSLIP pathology stream, then back to C channels on the patch grid.
    const int64_t C = h.size(1), gh = h.size(2), gw = h.size(3), P = gh * gw;
    Tensor x = permute(h, {0, 2, 3, 1}).reshape({B * P, C});                      // [B*P,C]
    Tensor m = mask_generator->forward(x);                                        // [B*P,C], no sigmoid
    Tensor l1 = res_l1_pathology->forward(mul(m, x));
    Tensor p = res_l2_pathology->forward(probe ? probe(0, relu(l1), [&] { return l1; }) : relu(l1));  // [B*P,256]
    Tensor e = back->forward(p.reshape({B, P, 256}));                             // [B,P,C]
    h = permute(e, {0, 2, 1}).reshape({B, C, gh, gw});                            // "b (n1 n2) d -> b d n1 n2"
    h = layer4->forward(h);                                                       // [B,2048,gh/2,gw/2]
  }
  h = adaptive_avg_pool2d(h, 1, 1).flatten(1);  // [B,F]
  return res_out->forward(h);                   // [B,K]
}

}  // namespace ms
