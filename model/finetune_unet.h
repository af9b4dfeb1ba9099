// defines: the segmentation fine-tuning model of the reference, models/resunet.py
// ModelResUNet_ft (spec E.6), with its state_dict names: encoder res_features (conv1..layer3,
// nn.Sequential indices 0,1,4,5,6), skips after relu / layer1 / layer2 and the input itself,
// Bridge (2x ConvBlock), four up-blocks (ConvTranspose2d k2 s2 -> concat skip -> 2x ConvBlock),
// Dropout(0.2), seg_classifier Conv1d(64 -> 1, k1) over the flattened pixels -> [B,1,H,W].
// Widths follow the trunk: bridge = layer3's, up1 = layer2's, up2 = layer1's, up3 = up2/2,
// up4 = up3/2 — ResNet-50 gives the reference's 1024/512/256/128/64, ResNet-18 256/128/64/32/16.
#pragma once
#include "model/finetune.h"

namespace ms {

// Conv -> BN -> ReLU (resunet.py ConvBlock: 3x3, padding 1, with bias).
class ConvBlock : public nn::Module {
 public:
  ConvBlock(int64_t in, int64_t out, Rng& init);
  Tensor forward(const Tensor& x);
  std::shared_ptr<nn::Conv2d> conv;
  std::shared_ptr<nn::BatchNorm2d> bn;
  ActivationProbe probe;  // call 0: the ReLU
};

// Upsample (ConvTranspose2d k2 s2) -> concat skip on channels -> two ConvBlocks.
class UpBlock : public nn::Module {
 public:
  UpBlock(int64_t in, int64_t out, int64_t up_in, int64_t up_out, Rng& init);
  Tensor forward(const Tensor& up_x, const Tensor& down_x);
  std::shared_ptr<nn::ConvTranspose2d> upsample;
  std::shared_ptr<ConvBlock> conv_block_1, conv_block_2;
};

class FinetuneUNet : public FinetuneModel {
 public:
  FinetuneUNet(const FinetuneModelConfig& cfg, uint64_t seed);
  Tensor forward(const Tensor& image) override;  // [B,3,H,W] -> mask logits [B,1,H,W]

  std::shared_ptr<ResStages> res_features;
  std::shared_ptr<ConvBlock> bridge0, bridge1;  // bridge.bridge.0 / .1
  std::vector<std::shared_ptr<UpBlock>> up_blocks;
  std::shared_ptr<nn::Dropout> dropout;
  std::shared_ptr<nn::Conv1d> seg_classifier;  // Conv1d(up4 -> 1, kernel 1) over [B,up4,H*W]
};

}  // namespace ms
