// Evaluation-only shortcuts against the ops they replace, bit for bit: the decoder's first
// self-attention computed once for queries shared by every image (Decoder::forward with
// [Q,1,d]), and the ResNet's BatchNorms applied inside the convolutions (conv2d_bn_act, taken
// under NoGrad; with gradients wanted the model runs the separate ops).
#include <doctest/doctest.h>

#include <cstring>
#include <memory>
#include <stdexcept>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/rng.h"
#include "model/decoder.h"
#include "model/medslip.h"
#include "train/reference_problem.h"

using namespace ms;

namespace {

Tensor normal(const Shape& s, uint64_t seed) {
  Tensor t = Tensor::empty(s);
  Rng r(seed, kStreamInit);
  r.fill_normal(t.data(), t.numel());
  return t;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), size_t(a.numel()) * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("model: decoder queries shared by the batch give the broadcast queries' bits, eval and training") {
  Rng init(3, kStreamInit);
  auto norm = std::make_shared<nn::LayerNorm>(32);
  Decoder dec(32, 4, 64, 0.1f, 3, norm, init);
  const int64_t Q = 7, B = 5, P = 12;
  Tensor q = normal({Q, 1, 32}, 11), mem = normal({P, B, 32}, 12);
  for (bool training : {false, true}) {
    if (training) dec.train();
    else dec.eval();
    dec.set_rng(std::make_shared<Rng>(9, kStreamDropout));
    auto shared = dec.forward(q, mem);
    dec.set_rng(std::make_shared<Rng>(9, kStreamDropout));
    auto broadcast = dec.forward(expand(q, {Q, B, 32}), mem);
    CAPTURE(training);
    CHECK(same_bits(shared.tokens, broadcast.tokens));
    REQUIRE(shared.attn.size() == 3);
    for (size_t l = 0; l < 3; ++l) CHECK(same_bits(shared.attn[l], broadcast.attn[l]));
    // and the images really differ (the memory differs per image)
    CHECK(std::memcmp(shared.tokens.data(), shared.tokens.data() + 32, 32 * sizeof(float)) != 0);
  }
  CHECK_THROWS_WITH_AS(dec.forward(normal({Q, 2, 32}, 13), mem), doctest::Contains("expected batch 5 or 1"),
                       std::invalid_argument);
}

TEST_CASE("model: MeDSLIP evaluation forward is the same with and without the fused convolutions") {
  MedslipConfig cfg;
  cfg.res_base_model = "resnet18";
  cfg.image_res = 64;
  const int64_t T = 48;
  Medslip model(cfg, T, 5);
  model.set_books(normal({kNumPathologies, T}, 21), normal({kNumAnatomies, T}, 22));
  model.eval();
  MedslipBatch batch = reference_batch(3, 64, 5);
  MedslipOutput fused;
  {
    NoGradGuard ng;  // conv2d_bn_act takes the fused kernel
    fused = model.forward(batch.image);
  }
  MedslipOutput separate = model.forward(batch.image);  // parameters want gradients: the separate ops
  CHECK(same_bits(fused.logits_pathology, separate.logits_pathology.detach()));
  CHECK(same_bits(fused.logits_anatomy, separate.logits_anatomy.detach()));
  CHECK(same_bits(fused.feat_pathology, separate.feat_pathology.detach()));
  for (size_t l = 0; l < fused.attn_pathology.size(); ++l)
    CHECK(same_bits(fused.attn_pathology[l], separate.attn_pathology[l].detach()));
}
