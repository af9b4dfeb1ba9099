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
  // tgt [Q,B,d], memory [P,B,d]
  Output forward(const Tensor& tgt, const Tensor& memory);
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
  Output forward(const Tensor& tgt, const Tensor& memory);
  std::vector<std::shared_ptr<DecoderLayer>> layers;
  std::shared_ptr<nn::LayerNorm> norm;
};

}  // namespace ms
