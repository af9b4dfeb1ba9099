#include "model/decoder.h"

#include <stdexcept>
#include <string>

namespace ms {

DecoderLayer::DecoderLayer(int64_t d, int64_t heads, int64_t ffn, float p, Rng& init) {
  self_attn = register_module("self_attn", std::make_shared<nn::MultiheadAttention>(d, heads, p, init));
  multihead_attn = register_module("multihead_attn", std::make_shared<nn::MultiheadAttention>(d, heads, p, init));
  linear1 = register_module("linear1", std::make_shared<nn::Linear>(d, ffn, true, init));
  linear2 = register_module("linear2", std::make_shared<nn::Linear>(ffn, d, true, init));
  norm1 = register_module("norm1", std::make_shared<nn::LayerNorm>(d));
  norm2 = register_module("norm2", std::make_shared<nn::LayerNorm>(d));
  norm3 = register_module("norm3", std::make_shared<nn::LayerNorm>(d));
  dropout = register_module("dropout", std::make_shared<nn::Dropout>(p));
  dropout1 = register_module("dropout1", std::make_shared<nn::Dropout>(p));
  dropout2 = register_module("dropout2", std::make_shared<nn::Dropout>(p));
  dropout3 = register_module("dropout3", std::make_shared<nn::Dropout>(p));
}

// forward_pre of DETR's TransformerDecoderLayer (normalize_before=True).
DecoderLayer::Output DecoderLayer::forward(const Tensor& tgt, const Tensor& memory) {
  return cross_block(self_block(tgt), memory);
}

Tensor DecoderLayer::self_block(const Tensor& tgt) {
  Tensor t2 = norm1->forward(tgt);
  return add(tgt, dropout1->forward(self_attn->forward(t2, t2, t2, {}, false).out));  // t += Drop(SelfAttn(LN1 t))
}

DecoderLayer::Output DecoderLayer::cross_block(const Tensor& tgt, const Tensor& memory) {
  Tensor t = tgt;
  Tensor t2 = norm2->forward(t);
  auto cross = multihead_attn->forward(t2, memory, memory);
  t = add(t, dropout2->forward(cross.out));                                       // t += Drop(CrossAttn(LN2 t, m))
  t2 = norm3->forward(t);
  t2 = linear2->forward(dropout->forward(linear1->forward_relu(t2)));
  t = add(t, dropout3->forward(t2));                                              // t += Drop(FFN(LN3 t))
  return {t, cross.attn_weights};
}

Decoder::Decoder(int64_t d, int64_t heads, int64_t ffn, float p, int n, std::shared_ptr<nn::LayerNorm> norm_, Rng& init)
    : norm(std::move(norm_)) {
  auto list = std::make_shared<nn::Module>();  // nn.ModuleList "layers"
  for (int i = 0; i < n; ++i)
    layers.push_back(list->register_module(std::to_string(i), std::make_shared<DecoderLayer>(d, heads, ffn, p, init)));
  register_module("layers", list);
  register_module("norm", norm);
}

Decoder::Output Decoder::forward(const Tensor& tgt, const Tensor& memory) {
  if (tgt.dim() != 3 || memory.dim() != 3)
    throw std::invalid_argument("Decoder: tgt must be [Q,B,d] or [Q,1,d] and memory [P,B,d], got " +
                                shape_str(tgt.shape()) + " and " + shape_str(memory.shape()));
  const int64_t Q = tgt.size(0), B = memory.size(1), d = tgt.size(2);
  Output out;
  Tensor t = tgt;
  size_t first = 0;
  if (t.size(1) != B) {
    if (t.size(1) != 1)
      throw std::invalid_argument("Decoder: tgt " + shape_str(tgt.shape()) + " for memory " +
                                  shape_str(memory.shape()) + ": expected batch " + std::to_string(B) + " or 1");
    // Every image's queries are the same: in evaluation (no dropout) so is the first layer's
    // self-attention block, computed here once (a GEMM row does not depend on the other rows).
    if (!is_training() && !layers.empty()) {
      auto o = layers[0]->cross_block(expand(layers[0]->self_block(t), {Q, B, d}), memory);
      t = o.tokens;
      out.attn.push_back(o.attn);
      first = 1;
    } else {
      t = expand(t, {Q, B, d});
    }
  }
  for (size_t i = first; i < layers.size(); ++i) {
    auto o = layers[i]->forward(t, memory);
    t = o.tokens;
    out.attn.push_back(o.attn);
  }
  out.tokens = norm->forward(t);
  return out;
}

}  // namespace ms
