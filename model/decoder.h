// defines: the DETR pre-norm TransformerDecoderLayer and TransformerDecoder of spec A.3,
// with nn.MultiheadAttention parameter names. No positional encodings, no masks.
#pragma once
#include <memory>
#include <vector>

#include "engine/nn.h"

namespace ms {

class DecoderLayer : public nn::Module {
 public:
  DecoderLayer(int64_t d_model, int64_t heads, int64_t ffn, float dropout, Rng& init);
  struct Output {
    Tensor tokens;  // [Q,B,d]
    Tensor attn;    // [B,Q,P] cross-attention, averaged over heads
  };
  // tgt [Q,B,d], memory [P,B,d]: cross_block(self_block(tgt), memory)
  Output forward(const Tensor& tgt, const Tensor& memory);
  Tensor self_block(const Tensor& tgt);                           // t + Drop(SelfAttn(LN1 t))
  Output cross_block(const Tensor& t, const Tensor& memory);      // cross-attention, then the FFN
  std::shared_ptr<nn::MultiheadAttention> self_attn, multihead_attn;
  std::shared_ptr<nn::Linear> linear1, linear2;
  std::shared_ptr<nn::LayerNorm> norm1, norm2, norm3;
  std::shared_ptr<nn::Dropout> dropout, dropout1, dropout2, dropout3;
};

class Decoder : public nn::Module {
 public:
  // `norm` is the final LayerNorm; MeDSLIP passes ONE module to both decoders (spec A.3).
  Decoder(int64_t d_model, int64_t heads, int64_t ffn, float dropout, int layers,
          std::shared_ptr<nn::LayerNorm> norm, Rng& init);
  struct Output {
    Tensor tokens;             // [Q,B,d] after the final norm
    std::vector<Tensor> attn;  // per layer [B,Q,P]
  };
  // tgt [Q,B,d], or [Q,1,d]: the same queries for every image of memory [P,B,d] (MeDSLIP's
  // books). Then, in evaluation, the first layer's self-attention (the same in every image)
  // runs once and is broadcast; in training the queries are broadcast first, as dropout draws
  // per image. The same values either way.
  Output forward(const Tensor& tgt, const Tensor& memory);
  std::vector<std::shared_ptr<DecoderLayer>> layers;
  std::shared_ptr<nn::LayerNorm> norm;
};

}  // namespace ms
