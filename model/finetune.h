// defines: the two fine-tuning models of the reference (spec E.5, E.6), with its state_dict
// names so that checkpoints move both ways with strict key matching:
//   FinetuneClassifier  models/resnet.py ModelRes_ft: use_base=True: res_features
//                       (conv1..layer4 + avgpool, nn.Sequential indices 0,1,4..7) ->
//                       res_out Linear(2048 -> num_classes); use_base=False: the MeDSLIP
//                       pathology branch (mask ⊙ F -> res_l1/l2_pathology -> back Linear
//                       256 -> C -> layer4 (last_res.0) + avgpool -> res_out).
//   FinetuneUNet        models/resunet.py ModelResUNet_ft: see model/finetune_unet.h.
// Both take ResNet-50 (the reference) or ResNet-18 (the U-Net's widths follow the trunk's:
// bridge = layer3's, up1 = layer2's, up2 = layer1's, up3 = up2/2, up4 = up3/2; ResNet-50 gives
// the reference's 1024/512/256/128/64). Inputs [B,3,H,W] with H, W divisible by 32.
//
// Dimension names: B batch, C trunk channels after layer3 (1024 / 256), K classes.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "engine/nn.h"
#include "model/resnet.h"

namespace ms {

struct FinetuneModelConfig {
  std::string arch = "resnet50";  // resnet50 | resnet18
  int64_t num_classes = 1;        // classification outputs (the reference: 1)
  bool use_base = true;           // classification only: false runs the pathology branch
};

// torchvision's ResNet as nn.Sequential(*children()) up to layer3 or layer4: indices 0 conv1,
// 1 bn1, (2 relu, 3 maxpool), 4 layer1, 5 layer2, 6 layer3, 7 layer4. Exposes the stages so
// the U-Net can take its skips.
class ResStages : public nn::Module {
 public:
  ResStages(const std::string& arch, int n_layers, Rng& init);
  Tensor stem(const Tensor& x);  // conv1 + bn1 + relu: [B,64,H/2,W/2]
  Tensor pool(const Tensor& x);  // the stem's max-pool (3, stride 2, pad 1): [B,64,H/4,W/4]
  ActivationProbe probe;         // call 0: the stem's ReLU (res_features.2), 1: its max-pool (res_features.3)
  std::shared_ptr<nn::Conv2d> conv1;
  std::shared_ptr<nn::BatchNorm2d> bn1;
  std::vector<std::shared_ptr<ResLayer>> layers;  // layer1.. (widths() gives their outputs)
  std::vector<int64_t> widths;
};

// What the fine-tuning job trains: image -> logits ([B,K] for classification, [B,1,H,W] for
// segmentation).
class FinetuneModel : public nn::Module {
 public:
  virtual Tensor forward(const Tensor& image) = 0;
  const FinetuneModelConfig& config() const { return cfg_; }

 protected:
  explicit FinetuneModel(const FinetuneModelConfig& cfg) : cfg_(cfg) {}
  FinetuneModelConfig cfg_;
};

class FinetuneClassifier : public FinetuneModel {
 public:
  FinetuneClassifier(const FinetuneModelConfig& cfg, uint64_t seed);
  Tensor forward(const Tensor& image) override;  // [B,3,H,W] -> logits [B,K]

  std::shared_ptr<ResStages> res_features;
  // use_base=False only
  std::shared_ptr<nn::Linear> res_l1_anatomy, res_l2_anatomy, res_l1_pathology, res_l2_pathology;
  std::shared_ptr<nn::Linear> mask_generator, back;
  std::shared_ptr<ResLayer> layer4;  // last_res.0
  std::shared_ptr<nn::Linear> res_out;
  ActivationProbe probe;  // call 0: the pathology branch's F.relu (use_base=False)
};

// Throws naming the shape unless x is [B,3,H,W] with H, W multiples of 32.
void check_finetune_input(const Tensor& x, const char* model);

}  // namespace ms
