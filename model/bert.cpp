// BERT encoder (Hugging Face BertModel, eval mode, no pooler) and the checkpoint-folder loader.
// Dimensions: B sequences, L tokens, H hidden, nh heads of dh = H/nh, I intermediate.
#include "model/bert.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>
#include <stdexcept>

#include "engine/autograd.h"
#include "weights/state_dict.h"

namespace ms {

namespace fs = std::filesystem;
using json = nlohmann::json;

// ---- config ---------------------------------------------------------------------------

static json read_json_file(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error(path + ": cannot open (expected a JSON file)");
  try {
    return json::parse(f);
  } catch (const json::exception& e) {
    throw std::runtime_error(path + ": not valid JSON: " + e.what());
  }
}

BertConfig BertConfig::from_json_file(const std::string& path) {
  json j = read_json_file(path);
  if (!j.is_object()) throw std::runtime_error(path + ": expected a JSON object (Hugging Face config.json)");
  BertConfig c;
  auto get_int = [&](const char* key, int64_t& dst, bool required) {
    if (!j.contains(key)) {
      if (required) throw std::runtime_error(path + ": missing key '" + key + "' (Hugging Face BERT config.json)");
      return;
    }
    const json& v = j[key];
    if (!v.is_number_integer() || v.get<int64_t>() <= 0)
      throw std::runtime_error(path + ": key '" + key + "' must be a positive integer, got " + v.dump());
    dst = v.get<int64_t>();
  };
  get_int("vocab_size", c.vocab_size, true);
  get_int("hidden_size", c.hidden_size, true);
  get_int("num_hidden_layers", c.num_hidden_layers, true);
  get_int("num_attention_heads", c.num_attention_heads, true);
  get_int("intermediate_size", c.intermediate_size, true);
  get_int("max_position_embeddings", c.max_position_embeddings, true);
  get_int("type_vocab_size", c.type_vocab_size, false);
  if (j.contains("layer_norm_eps")) {
    const json& v = j["layer_norm_eps"];
    if (!v.is_number() || v.get<double>() <= 0)
      throw std::runtime_error(path + ": key 'layer_norm_eps' must be a positive number, got " + v.dump());
    c.layer_norm_eps = v.get<float>();
  }
  auto expect_str = [&](const char* key, const char* want, const char* why) {
    if (!j.contains(key)) return;
    const json& v = j[key];
    if (!v.is_string() || v.get<std::string>() != want)
      throw std::runtime_error(path + ": key '" + key + "' is " + v.dump() + ", only \"" + want + "\" is supported (" +
                               why + ")");
  };
  expect_str("hidden_act", "gelu", "the erf GELU of BERT");
  expect_str("position_embedding_type", "absolute", "learned absolute positions");
  // RoBERTa-style models share these names but offset positions by padding_idx + 1.
  expect_str("model_type", "bert", "a BertModel checkpoint");
  if (j.contains("_name_or_path") && j["_name_or_path"].is_string()) c.name_or_path = j["_name_or_path"];
  c.validate(path);
  return c;
}

void BertConfig::validate(const std::string& where) const {
  for (int64_t v : {vocab_size, hidden_size, num_hidden_layers, num_attention_heads, intermediate_size,
                    max_position_embeddings, type_vocab_size})
    if (v <= 0) throw std::invalid_argument(where + ": BERT sizes must be positive");
  if (hidden_size % num_attention_heads != 0)
    throw std::invalid_argument(where + ": hidden_size " + std::to_string(hidden_size) +
                                " is not a multiple of num_attention_heads " + std::to_string(num_attention_heads));
}

// ---- layers ---------------------------------------------------------------------------

BertLayer::BertLayer(const BertConfig& cfg, Rng& init)
    : heads(cfg.num_attention_heads), head_dim(cfg.head_dim()) {
  const int64_t H = cfg.hidden_size, I = cfg.intermediate_size;
  // Plain Modules as containers give the HF names: attention.self.query, ...
  auto attention = register_module("attention", std::make_shared<nn::Module>());
  auto self = attention->register_module("self", std::make_shared<nn::Module>());
  query = self->register_module("query", std::make_shared<nn::Linear>(H, H, true, init));
  key = self->register_module("key", std::make_shared<nn::Linear>(H, H, true, init));
  value = self->register_module("value", std::make_shared<nn::Linear>(H, H, true, init));
  auto attn_out = attention->register_module("output", std::make_shared<nn::Module>());
  attention_output_dense = attn_out->register_module("dense", std::make_shared<nn::Linear>(H, H, true, init));
  attention_output_norm =
      attn_out->register_module("LayerNorm", std::make_shared<nn::LayerNorm>(H, cfg.layer_norm_eps));
  auto intermediate = register_module("intermediate", std::make_shared<nn::Module>());
  intermediate_dense = intermediate->register_module("dense", std::make_shared<nn::Linear>(H, I, true, init));
  auto output = register_module("output", std::make_shared<nn::Module>());
  output_dense = output->register_module("dense", std::make_shared<nn::Linear>(I, H, true, init));
  output_norm = output->register_module("LayerNorm", std::make_shared<nn::LayerNorm>(H, cfg.layer_norm_eps));
}

Tensor BertLayer::forward(const Tensor& x, const Tensor& mask_bias) const {
  const int64_t B = x.size(0), L = x.size(1), H = x.size(2), nh = heads, dh = head_dim;
  auto split_heads = [&](const Tensor& t) {                           // [B,L,H] ->
    return permute(t.reshape({B, L, nh, dh}), {0, 2, 1, 3}).reshape({B * nh, L, dh});  // [B*nh,L,dh]
  };
  Tensor q = split_heads(query->forward(x));                          // [B*nh,L,dh]
  Tensor k = split_heads(key->forward(x));                            // [B*nh,L,dh]
  Tensor v = split_heads(value->forward(x));                          // [B*nh,L,dh]
  Tensor scores = mul(matmul(q, k, false, true), 1.0f / std::sqrt(float(dh)));  // [B*nh,L,L]
  scores = add(scores.reshape({B, nh, L, L}), mask_bias);             // [B,nh,L,L], padded keys -> -huge
  Tensor probs = softmax(scores, -1).reshape({B * nh, L, L});         // [B*nh,L,L]
  Tensor ctx = matmul(probs, v);                                      // [B*nh,L,dh]
  ctx = permute(ctx.reshape({B, nh, L, dh}), {0, 2, 1, 3}).reshape({B, L, H});  // [B,L,H]
  Tensor a = attention_output_norm->forward(add(attention_output_dense->forward(ctx), x));  // [B,L,H]
  Tensor inter = gelu(intermediate_dense->forward(a));                // [B,L,I]
  return output_norm->forward(add(output_dense->forward(inter), a));  // [B,L,H]
}

BertModel::BertModel(const BertConfig& cfg, Rng& init) : config(cfg) {
  cfg.validate("BertModel");
  const int64_t H = cfg.hidden_size;
  auto embeddings = register_module("embeddings", std::make_shared<nn::Module>());
  word_embeddings = embeddings->register_module("word_embeddings", std::make_shared<nn::Embedding>(cfg.vocab_size, H, init));
  position_embeddings = embeddings->register_module(
      "position_embeddings", std::make_shared<nn::Embedding>(cfg.max_position_embeddings, H, init));
  token_type_embeddings = embeddings->register_module(
      "token_type_embeddings", std::make_shared<nn::Embedding>(cfg.type_vocab_size, H, init));
  embeddings_norm = embeddings->register_module("LayerNorm", std::make_shared<nn::LayerNorm>(H, cfg.layer_norm_eps));
  auto encoder = register_module("encoder", std::make_shared<nn::Module>());
  auto layer = encoder->register_module("layer", std::make_shared<nn::Module>());
  for (int64_t i = 0; i < cfg.num_hidden_layers; ++i)
    layers.push_back(layer->register_module(std::to_string(i), std::make_shared<BertLayer>(cfg, init)));
  eval();  // HF from_pretrained returns eval mode; there is no dropout here at all
}

Tensor BertModel::forward(const std::vector<int64_t>& input_ids, const std::vector<int64_t>& attention_mask,
                          int64_t B, int64_t L) const {
  if (B < 1 || L < 1) throw std::invalid_argument("BertModel: empty batch");
  if (int64_t(input_ids.size()) != B * L || int64_t(attention_mask.size()) != B * L)
    throw std::invalid_argument("BertModel: input_ids/attention_mask must hold B*L = " + std::to_string(B * L) +
                                " values, got " + std::to_string(input_ids.size()) + "/" +
                                std::to_string(attention_mask.size()));
  if (L > config.max_position_embeddings)
    throw std::invalid_argument("BertModel: sequence length " + std::to_string(L) + " exceeds max_position_embeddings " +
                                std::to_string(config.max_position_embeddings));
  for (int64_t id : input_ids)
    if (id < 0 || id >= config.vocab_size)
      throw std::invalid_argument("BertModel: token id " + std::to_string(id) + " outside the vocabulary [0," +
                                  std::to_string(config.vocab_size) + ")");
  NoGradGuard no_grad;
  // HF BertEmbeddings: (word + token_type) + position, in that order, then LayerNorm.
  Tensor x = word_embeddings->forward(input_ids, {B, L});                            // [B,L,H]
  x = add(x, narrow(token_type_embeddings->weight, 0, 0, 1));                        // token type 0: [1,H]
  x = add(x, narrow(position_embeddings->weight, 0, 0, L));                          // positions 0..L-1: [L,H]
  x = embeddings_norm->forward(x);                                                   // [B,L,H]
  // HF get_extended_attention_mask: (1 - mask) * finfo(float32).min added to the scores.
  std::vector<float> bias(size_t(B * L));
  for (size_t i = 0; i < bias.size(); ++i) {
    if (attention_mask[i] != 0 && attention_mask[i] != 1)
      throw std::invalid_argument("BertModel: attention_mask values must be 0 or 1, got " +
                                  std::to_string(attention_mask[i]));
    bias[i] = attention_mask[i] ? 0.f : std::numeric_limits<float>::lowest();
  }
  Tensor mask_bias = Tensor::from_vector(bias, {B, 1, 1, L}).to(x.device());      // [B,1,1,L]
  for (const auto& layer : layers) x = layer->forward(x, mask_bias);                 // [B,L,H]
  return x;
}

std::string bert_canonical_name(const std::string& name) {
  std::string n = name;
  if (n.rfind("bert.", 0) == 0) n = n.substr(5);
  if (n.rfind("pooler.", 0) == 0 || n.rfind("cls.", 0) == 0) return "";
  if (n == "embeddings.position_ids" || n == "embeddings.token_type_ids") return "";
  auto ends_with = [&](const std::string& s) { return n.size() >= s.size() && n.compare(n.size() - s.size(), s.size(), s) == 0; };
  // Legacy TF-converted checkpoints (HF from_pretrained renames these too).
  if (ends_with("LayerNorm.gamma")) n = n.substr(0, n.size() - 5) + "weight";
  else if (ends_with("LayerNorm.beta")) n = n.substr(0, n.size() - 4) + "bias";
  return n;
}

void BertModel::load_weights(const std::string& path) {
  StateDictOptions opt;
  opt.verbose = false;
  StateDict raw = read_state_dict(path, opt);
  std::map<std::string, Tensor> sd;
  std::map<std::string, std::string> origin;  // canonical -> file name, to report collisions
  for (const auto& name : raw.names) {
    std::string c = bert_canonical_name(name);
    if (c.empty()) continue;
    if (origin.count(c))
      throw std::runtime_error(path + ": both '" + origin[c] + "' and '" + name + "' map to BERT parameter '" + c + "'");
    origin[c] = name;
    sd[c] = raw.tensors.at(name).to_float();
  }
  try {
    load_state_dict(sd, true);
  } catch (const std::exception& e) {
    throw std::runtime_error(path + ": not a BertModel checkpoint for this config.json (" + std::to_string(config.num_hidden_layers) +
                             " layers, hidden " + std::to_string(config.hidden_size) + "): " + e.what());
  }
}

// ---- checkpoint folder ---------------------------------------------------------------------

TextEncoder TextEncoder::load(const std::string& dir_) {
  TextEncoder t;
  t.dir = dir_;
  fs::path dir(dir_);
  if (!fs::is_directory(dir))
    throw std::runtime_error(dir_ + ": not a directory (expected a Hugging Face BERT folder with config.json, "
                                    "vocab.txt and model.safetensors or pytorch_model.bin)");
  fs::path cfg = dir / "config.json", vocab = dir / "vocab.txt";
  if (!fs::exists(cfg)) throw std::runtime_error(dir_ + ": no config.json (Hugging Face BERT folder expected)");
  if (!fs::exists(vocab)) throw std::runtime_error(dir_ + ": no vocab.txt (the WordPiece vocabulary)");
  if (fs::exists(dir / "model.safetensors")) t.weights_path = (dir / "model.safetensors").string();
  else if (fs::exists(dir / "pytorch_model.bin")) t.weights_path = (dir / "pytorch_model.bin").string();
  else
    throw std::runtime_error(dir_ + ": no model.safetensors or pytorch_model.bin (sharded checkpoints are not supported)");
  t.vocab_path = vocab.string();
  t.config = BertConfig::from_json_file(cfg.string());

  bool lower = true;  // spec A.1: HF BertTokenizer's default when tokenizer_config.json is absent
  fs::path tok_cfg = dir / "tokenizer_config.json";
  if (fs::exists(tok_cfg)) {
    json j = read_json_file(tok_cfg.string());
    if (j.is_object() && j.contains("do_lower_case")) {
      if (!j["do_lower_case"].is_boolean())
        throw std::runtime_error(tok_cfg.string() + ": key 'do_lower_case' must be true or false, got " +
                                 j["do_lower_case"].dump());
      lower = j["do_lower_case"].get<bool>();
    }
  }
  t.tokenizer = std::make_shared<WordPieceTokenizer>(WordPieceTokenizer::from_vocab_file(t.vocab_path, lower));
  if (int64_t(t.tokenizer->vocab_size()) > t.config.vocab_size)
    throw std::runtime_error(t.vocab_path + ": " + std::to_string(t.tokenizer->vocab_size()) +
                             " tokens, more than vocab_size " + std::to_string(t.config.vocab_size) + " in " +
                             cfg.string());

  t.name = t.config.name_or_path.empty() ? dir.filename().string() : t.config.name_or_path;
  if (t.name.empty()) t.name = fs::absolute(dir).parent_path().filename().string();  // "dir/" has no filename
  fs::path src = dir / "medslip_source.json";
  if (fs::exists(src)) {
    json j = read_json_file(src.string());
    if (j.is_object() && j.contains("name") && j["name"].is_string()) t.name = j["name"];
    if (j.is_object() && j.contains("package") && j["package"].is_string()) t.source = j["package"];
  }

  Rng init(0);  // every parameter is overwritten by the checkpoint
  t.model = std::make_shared<BertModel>(t.config, init);
  t.model->load_weights(t.weights_path);
  return t;
}

std::string TextEncoder::describe() const {
  return name + (source.empty() ? "" : " [" + source + "]") + ": BERT " + std::to_string(config.num_hidden_layers) +
         " layers x " + std::to_string(config.hidden_size) + " (" + std::to_string(config.num_attention_heads) +
         " heads), weights " + weights_path + ", vocab " + vocab_path + " (" + std::to_string(tokenizer->vocab_size()) +
         " tokens, " + (tokenizer->do_lower_case() ? "lower-cased" : "cased") + ")";
}

Tensor TextEncoder::encode_cls(const std::vector<std::string>& texts, int max_length, int batch, int* truncated,
                               const std::function<void(int, int)>& progress) const {
  if (max_length < 1 || max_length > config.max_position_embeddings)
    throw std::invalid_argument("max_length " + std::to_string(max_length) + " must be in [1, " +
                                std::to_string(config.max_position_embeddings) + "] (max_position_embeddings of " +
                                name + ")");
  if (batch < 1) throw std::invalid_argument("encode_cls: batch must be >= 1");
  const int64_t N = int64_t(texts.size()), H = config.hidden_size;
  std::vector<WordPieceTokenizer::Encoding> enc(texts.size());
  std::vector<int64_t> len(texts.size());
  int n_trunc = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    enc[i] = tokenizer->encode_medslip(texts[i], max_length);
    len[i] = std::accumulate(enc[i].attention_mask.begin(), enc[i].attention_mask.end(), int64_t(0));
    if (int64_t(tokenizer->encode_ids(texts[i]).size()) + 1 > max_length) ++n_trunc;  // +1: [CLS]
  }
  if (truncated) *truncated = n_trunc;
  // Shortest first, so each chunk is cut to a length close to its members'.
  std::vector<size_t> order(texts.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return len[a] < len[b]; });
  Tensor out = Tensor::zeros({N, H});  // [N,H]
  for (int64_t s = 0; s < N; s += batch) {
    const int64_t b = std::min<int64_t>(batch, N - s);
    int64_t Lc = 1;
    for (int64_t i = 0; i < b; ++i) Lc = std::max(Lc, len[order[size_t(s + i)]]);
    std::vector<int64_t> ids(size_t(b * Lc)), mask(size_t(b * Lc));
    for (int64_t i = 0; i < b; ++i) {
      const auto& e = enc[order[size_t(s + i)]];
      std::copy_n(e.input_ids.begin(), Lc, ids.begin() + i * Lc);
      std::copy_n(e.attention_mask.begin(), Lc, mask.begin() + i * Lc);
    }
    Tensor y = model->forward(ids, mask, b, Lc).to(Device::CPU);  // [b,Lc,H], on the host
    for (int64_t i = 0; i < b; ++i)               // keep the [CLS] row (spec A.1)
      std::copy_n(y.data() + i * Lc * H, H, out.data() + int64_t(order[size_t(s + i)]) * H);
    if (progress) progress(int(s + b), int(N));
  }
  return out;
}

}  // namespace ms
