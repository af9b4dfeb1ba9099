#include "model/finetune_unet.h"

#include <cmath>

namespace ms {

// ---- ModelResUNet_ft (spec E.6) --------------------------------------------------------------

ConvBlock::ConvBlock(int64_t in, int64_t out, Rng& init) {
  conv = register_module("conv", std::make_shared<nn::Conv2d>(in, out, 3, 1, 1, true, init));
  bn = register_module("bn", std::make_shared<nn::BatchNorm2d>(out));
}

Tensor ConvBlock::forward(const Tensor& x) {
  if (!probe) return relu(bn->forward(conv->forward(x)));
  Tensor c = conv->forward(x);
  return probe(0, relu(bn->forward(c)), [&] { return bn->forward(c); });
}

UpBlock::UpBlock(int64_t in, int64_t out, int64_t up_in, int64_t up_out, Rng& init) {
  upsample = register_module("upsample", std::make_shared<nn::ConvTranspose2d>(up_in, up_out, 2, 2, 0, true, init));
  conv_block_1 = register_module("conv_block_1", std::make_shared<ConvBlock>(in, out, init));
  conv_block_2 = register_module("conv_block_2", std::make_shared<ConvBlock>(out, out, init));
}

Tensor UpBlock::forward(const Tensor& up_x, const Tensor& down_x) {
  Tensor x = concat({upsample->forward(up_x), down_x}, 1);  // [B,up_out+skip,2h,2w]
  return conv_block_2->forward(conv_block_1->forward(x));
}

FinetuneUNet::FinetuneUNet(const FinetuneModelConfig& cfg, uint64_t seed) : FinetuneModel(cfg) {
  Rng init(seed, kStreamInit);
  res_features = register_module("res_features", std::make_shared<ResStages>(cfg.arch, 3, init));
  const auto& w = res_features->widths;  // layer1, layer2, layer3 outputs
  const int64_t input = 3, conv1 = 64, conv2 = w[0], conv3 = w[1], conv4 = w[2];
  const int64_t bridge = conv4, up1 = conv3, up2 = conv2, up3 = up2 / 2, up4 = up3 / 2;
  auto br = std::make_shared<nn::Module>();  // Bridge.bridge = nn.Sequential(ConvBlock, ConvBlock)
  auto seq = std::make_shared<nn::Module>();
  bridge0 = seq->register_module("0", std::make_shared<ConvBlock>(conv4, bridge, init));
  bridge1 = seq->register_module("1", std::make_shared<ConvBlock>(bridge, bridge, init));
  br->register_module("bridge", seq);
  register_module("bridge", br);
  auto ups = std::make_shared<nn::Module>();  // nn.ModuleList
  const int64_t spec[4][4] = {{up1 + conv3, up1, bridge, up1},
                              {up2 + conv2, up2, up1, up2},
                              {up3 + conv1, up3, up2, up3},
                              {up4 + input, up4, up3, up4}};
  for (int i = 0; i < 4; ++i)
    up_blocks.push_back(ups->register_module(std::to_string(i),
                                             std::make_shared<UpBlock>(spec[i][0], spec[i][1], spec[i][2], spec[i][3], init)));
  register_module("up_blocks", ups);
  dropout = register_module("dropout", std::make_shared<nn::Dropout>(0.2f));
  seg_classifier = register_module("seg_classifier", std::make_shared<nn::Conv1d>(up4, 1, 1, 1, true, init));
  set_rng(std::make_shared<Rng>(seed, kStreamDropout));
}

Tensor FinetuneUNet::forward(const Tensor& image) {
  check_finetune_input(image, "ModelResUNet_ft");
  std::vector<Tensor> down = {image};                         // [B,3,H,W]
  Tensor x = res_features->stem(image);                       // [B,64,H/2,W/2]
  down.push_back(x);
  x = res_features->pool(x);                                  // [B,64,H/4,W/4]
  x = res_features->layers[0]->forward(x);                    // [B,conv2,H/4,W/4]
  down.push_back(x);
  x = res_features->layers[1]->forward(x);                    // [B,conv3,H/8,W/8]
  down.push_back(x);
  x = res_features->layers[2]->forward(x);                    // [B,conv4,H/16,W/16]
  Tensor o = bridge1->forward(bridge0->forward(x));           // [B,bridge,H/16,W/16]
  for (size_t i = 0; i < up_blocks.size(); ++i) o = up_blocks[i]->forward(o, down[down.size() - 1 - i]);
  o = dropout->forward(o);                                    // [B,up4,H,W]
  const int64_t B = o.size(0), C = o.size(1), H = o.size(2), W = o.size(3);
  Tensor y = seg_classifier->forward(o.reshape({B, C, H * W}));  // [B,1,H*W]
  return y.reshape({B, 1, H, W});                               // [B,1,H,W]
}

}  // namespace ms
