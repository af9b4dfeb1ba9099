// BERT encoder and books: parity with Hugging Face BertModel (transformers 4.30.2, torch 1.13) on
// the tiny random checkpoint in tests/fixtures/bert_tiny/ (tests/make_fixtures_bert.py), loader
// name mapping and errors, books files; and, when weights/install_text_encoder.sh has run, the
// real all-MiniLM-L6-v2 against HF.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/io.h"
#include "model/bert.h"
#include "model/books.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace ms;

namespace {

// Forward outputs: rel-L2 <= 1e-4 (ARCHITECTURE.md). Measured ~1e-7 (float32 summation order).
constexpr double kTolForward = 1e-4;

nlohmann::json read_json(const fs::path& p) {
  std::ifstream f(p);
  REQUIRE_MESSAGE(f.good(), "missing fixture " << p.string() << " (run tests/make_fixtures_bert.py)");
  return nlohmann::json::parse(f);
}

void write_text(const fs::path& p, const std::string& s) { std::ofstream(p, std::ios::binary) << s; }

// A copy of the tiny folder without some of its files.
fs::path tiny_copy(const std::string& name, const std::vector<std::string>& skip) {
  fs::path dir = test::scratch_dir(name);
  for (const auto& e : fs::directory_iterator(test::fixture("bert_tiny"))) {
    std::string f = e.path().filename().string();
    if (std::find(skip.begin(), skip.end(), f) == skip.end()) fs::copy_file(e.path(), dir / f);
  }
  return dir;
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("model: bert config.json is read with named errors") {
  BertConfig c = BertConfig::from_json_file(test::fixture("bert_tiny/config.json").string());
  CHECK(c.num_hidden_layers == 2);
  CHECK(c.hidden_size == 32);
  CHECK(c.num_attention_heads == 4);
  CHECK(c.intermediate_size == 64);
  CHECK(c.max_position_embeddings == 128);
  CHECK(c.layer_norm_eps == doctest::Approx(1e-12));

  fs::path dir = test::scratch_dir("bert_config");
  auto cfg = read_json(test::fixture("bert_tiny/config.json"));
  auto bad = [&](const std::string& what, auto edit) {
    nlohmann::json j = cfg;
    edit(j);
    fs::path p = dir / (what + ".json");
    write_text(p, j.dump());
    std::string msg = error_of([&] { BertConfig::from_json_file(p.string()); });
    MESSAGE(what << ": " << msg);
    CHECK(msg.find(p.string()) != std::string::npos);
    return msg;
  };
  CHECK(bad("missing", [](auto& j) { j.erase("hidden_size"); }).find("'hidden_size'") != std::string::npos);
  CHECK(bad("type", [](auto& j) { j["num_hidden_layers"] = "two"; }).find("'num_hidden_layers'") != std::string::npos);
  CHECK(bad("act", [](auto& j) { j["hidden_act"] = "gelu_new"; }).find("'hidden_act'") != std::string::npos);
  CHECK(bad("roberta", [](auto& j) { j["model_type"] = "roberta"; }).find("'model_type'") != std::string::npos);
  CHECK(bad("heads", [](auto& j) { j["num_attention_heads"] = 5; }).find("multiple") != std::string::npos);
  // Optional keys take HF's defaults (old configs such as Bio_ClinicalBERT's lack some).
  nlohmann::json j = cfg;
  j.erase("layer_norm_eps");
  j.erase("type_vocab_size");
  write_text(dir / "defaults.json", j.dump());
  BertConfig d = BertConfig::from_json_file((dir / "defaults.json").string());
  CHECK(d.layer_norm_eps == doctest::Approx(1e-12));
  CHECK(d.type_vocab_size == 2);
}

TEST_CASE("model: bert token ids match HF (tiny vocab, lower-casing by default)") {
  TextEncoder enc = TextEncoder::load(test::fixture("bert_tiny").string());
  CHECK(enc.tokenizer->do_lower_case());  // no tokenizer_config.json: spec A.1 default
  auto cases = read_json(test::fixture("bert_cases.json"));
  const int L = cases["max_length"];
  for (size_t i = 0; i < cases["sentences"].size(); ++i) {
    auto e = enc.tokenizer->encode_medslip(cases["sentences"][i].get<std::string>(), L);
    CHECK_MESSAGE(e.input_ids == cases["input_ids"][i].get<std::vector<int64_t>>(), "sentence " << i);
    CHECK(e.attention_mask == cases["attention_mask"][i].get<std::vector<int64_t>>());
  }
}

TEST_CASE("model: bert last_hidden_state matches HF BertModel (model.safetensors, padded batch)") {
  TextEncoder enc = TextEncoder::load(test::fixture("bert_tiny").string());
  CHECK(enc.weights_path.find("model.safetensors") != std::string::npos);
  fs::path exp = test::fixture("bert_expected.safetensors");
  auto ids = load_safetensors_i64(exp.string(), "input_ids");
  auto mask = load_safetensors_i64(exp.string(), "attention_mask");
  Tensor ref = load_safetensors_tensor(exp.string(), "last_hidden_state");  // [N,L,32]
  const int64_t N = ref.size(0), L = ref.size(1);
  Tensor out = enc.model->forward(ids, mask, N, L);
  test::compare("last_hidden_state", out, ref, kTolForward);
  CHECK_FALSE(out.requires_grad());  // inference only
  // The mask matters: without it the padded rows change the real ones.
  std::vector<int64_t> ones(mask.size(), 1);
  Tensor unmasked = enc.model->forward(ids, ones, N, L);
  CHECK(test::compare_values(unmasked.to_vector(), ref.to_vector()).rel_l2 > 1e-2);
  // Errors: bad ids, bad mask values, too long.
  std::vector<int64_t> bad_ids = ids;
  bad_ids[3] = enc.config.vocab_size;
  CHECK_THROWS_AS(enc.model->forward(bad_ids, mask, N, L), std::invalid_argument);
  std::vector<int64_t> bad_mask = mask;
  bad_mask[0] = 2;
  CHECK_THROWS_AS(enc.model->forward(ids, bad_mask, N, L), std::invalid_argument);
  std::vector<int64_t> long_ids(129, 101), long_mask(129, 1);
  CHECK_THROWS_WITH_AS(enc.model->forward(long_ids, long_mask, 1, 129), doctest::Contains("max_position_embeddings"),
                       std::invalid_argument);
}

TEST_CASE("model: bert loads pytorch_model.bin (bert. prefix, gamma/beta, cls.* and position_ids ignored)") {
  fs::path dir = tiny_copy("bert_bin_only", {"model.safetensors"});
  TextEncoder enc = TextEncoder::load(dir.string());
  CHECK(enc.weights_path.find("pytorch_model.bin") != std::string::npos);
  fs::path exp = test::fixture("bert_expected.safetensors");
  auto ids = load_safetensors_i64(exp.string(), "input_ids");
  auto mask = load_safetensors_i64(exp.string(), "attention_mask");
  Tensor ref = load_safetensors_tensor(exp.string(), "last_hidden_state");
  test::compare("last_hidden_state (.bin)", enc.model->forward(ids, mask, ref.size(0), ref.size(1)), ref, kTolForward);

  CHECK(bert_canonical_name("bert.encoder.layer.3.output.LayerNorm.gamma") == "encoder.layer.3.output.LayerNorm.weight");
  CHECK(bert_canonical_name("bert.embeddings.LayerNorm.beta") == "embeddings.LayerNorm.bias");
  CHECK(bert_canonical_name("pooler.dense.weight").empty());
  CHECK(bert_canonical_name("cls.predictions.decoder.weight").empty());
  CHECK(bert_canonical_name("embeddings.position_ids").empty());
  CHECK(bert_canonical_name("encoder.layer.0.attention.self.query.weight") ==
        "encoder.layer.0.attention.self.query.weight");
}

TEST_CASE("model: bert checkpoint folder and weight-name errors") {
  std::string msg = error_of([] { TextEncoder::load("/nonexistent/bert"); });
  CHECK(msg.find("/nonexistent/bert") != std::string::npos);
  fs::path no_w = tiny_copy("bert_no_weights", {"model.safetensors", "pytorch_model.bin"});
  CHECK_THROWS_WITH(TextEncoder::load(no_w.string()), doctest::Contains("model.safetensors or pytorch_model.bin"));
  fs::path no_v = tiny_copy("bert_no_vocab", {"vocab.txt"});
  CHECK_THROWS_WITH(TextEncoder::load(no_v.string()), doctest::Contains("vocab.txt"));

  // A missing layer, an unknown head and a wrong shape each fail naming the file and the key.
  auto sd = load_safetensors_raw(test::fixture("bert_tiny/model.safetensors").string());
  auto try_with = [&](const std::string& what, std::map<std::string, FileTensor> m, const std::string& key) {
    fs::path dir = tiny_copy("bert_bad_" + what, {"model.safetensors", "pytorch_model.bin"});
    save_safetensors((dir / "model.safetensors").string(), m);
    std::string e = error_of([&] { TextEncoder::load(dir.string()); });
    MESSAGE(what << ": " << e);
    CHECK(e.find("model.safetensors") != std::string::npos);
    CHECK(e.find(key) != std::string::npos);
  };
  auto m1 = sd;
  m1.erase("encoder.layer.1.output.dense.bias");
  try_with("missing", m1, "encoder.layer.1.output.dense.bias");
  auto m2 = sd;
  m2["classifier.weight"] = FileTensor::from_float(std::vector<float>(4, 0.f), {2, 2});
  try_with("unexpected", m2, "classifier.weight");
  auto m3 = sd;
  m3["encoder.layer.0.intermediate.dense.weight"] = FileTensor::from_float(std::vector<float>(32 * 63, 0.f), {63, 32});
  try_with("shape", m3, "encoder.layer.0.intermediate.dense.weight");
  auto m4 = sd;
  m4["bert.embeddings.LayerNorm.weight"] = sd.at("embeddings.LayerNorm.weight");
  try_with("duplicate", m4, "embeddings.LayerNorm.weight");
}

TEST_CASE("model: bert books match HF at max_length 64 and 128; books file round trip") {
  TextEncoder enc = TextEncoder::load(test::fixture("bert_tiny").string());
  fs::path json = test::fixture("bert_descriptions.json");
  fs::path exp = test::fixture("bert_expected.safetensors");
  for (int L : {64, 128}) {
    Books b = build_books(enc, json.string(), L);
    test::compare("pathology_book_" + std::to_string(L), b.pathology,
                  load_safetensors_tensor(exp.string(), "pathology_book_" + std::to_string(L)), kTolForward);
    test::compare("anatomy_book_" + std::to_string(L), b.anatomy,
                  load_safetensors_tensor(exp.string(), "anatomy_book_" + std::to_string(L)), kTolForward);
    CHECK(b.metadata.at("max_length") == std::to_string(L));
  }
  // The long "tube" description is cut at 64, so the two books differ there only by truncation.
  int truncated = -1;
  enc.encode_cls(read_pathology_descriptions(json.string()), 64, 16, &truncated);
  auto cases = read_json(test::fixture("bert_cases.json"));
  CHECK(truncated == cases["descriptions_truncated_at_64"].get<int>());

  Books b = build_books(enc, json.string(), 64);
  fs::path out = test::scratch_dir("bert_books") / "books.safetensors";
  save_books(out.string(), b);
  Books r = load_books_file(out.string());
  CHECK(r.pathology.to_vector() == b.pathology.to_vector());
  CHECK(r.anatomy.to_vector() == b.anatomy.to_vector());
  CHECK(r.metadata.at("encoder") == enc.name);
  CHECK(r.metadata.at("vocab") == enc.vocab_path);
  CHECK(r.metadata.at("max_length") == "64");
  CHECK(r.metadata.at("pathology_json") == json.string());
  CHECK(r.width() == 32);
  CHECK(anatomy_prompts().at(1) == "It is located at left_hilar. ");
  CHECK_THROWS_WITH(enc.encode_cls({"x"}, 129), doctest::Contains("max_position_embeddings"));
}

TEST_CASE("model: books errors name the file and what was expected") {
  fs::path dir = test::scratch_dir("bert_books_err");
  auto desc = read_json(test::fixture("bert_descriptions.json"));
  nlohmann::ordered_json j = nlohmann::ordered_json::parse(desc.dump());
  j.erase("chf");
  write_text(dir / "74.json", j.dump());
  std::string msg = error_of([&] { read_pathology_descriptions((dir / "74.json").string()); });
  MESSAGE(msg);
  CHECK(msg.find("74.json") != std::string::npos);
  CHECK(msg.find("has 74 entries, expected 75") != std::string::npos);
  j["chf"] = 3;
  write_text(dir / "int.json", j.dump());
  CHECK_THROWS_WITH(read_pathology_descriptions((dir / "int.json").string()), doctest::Contains("'chf'"));
  write_text(dir / "list.json", "[\"a\", \"b\"]");
  CHECK_THROWS_WITH(read_pathology_descriptions((dir / "list.json").string()), doctest::Contains("list.json"));
  write_text(dir / "broken.json", "{\"a\": ");
  CHECK_THROWS_WITH(read_pathology_descriptions((dir / "broken.json").string()), doctest::Contains("not valid JSON"));
  // Key order is kept (ordered_json): the values come back in file order.
  auto v = read_pathology_descriptions(test::fixture("bert_descriptions.json").string());
  REQUIRE(v.size() == 75);
  CHECK(v[0] == desc["normal"].get<std::string>());
  CHECK(v[70] == desc["chf"].get<std::string>());
  // Books files with the wrong shapes.
  save_safetensors((dir / "b.safetensors").string(),
                   {SaveItem::f32("pathology_book", Tensor::zeros({74, 8})), SaveItem::f32("anatomy_book", Tensor::zeros({51, 8}))});
  CHECK_THROWS_WITH(load_books_file((dir / "b.safetensors").string()), doctest::Contains("[75,T]"));
}

TEST_CASE("model: bert real text encoder weights/text_encoder matches HF (all-MiniLM-L6-v2)") {
  fs::path dir = fs::current_path() / "weights" / "text_encoder";
  fs::path ref_path = test::fixture("bert_minilm_cls.safetensors");
  if (!fs::exists(dir / "config.json") || !fs::exists(ref_path)) {
    MESSAGE("skipping: weights/text_encoder not installed (run weights/install_text_encoder.sh)");
    return;
  }
  auto meta = safetensors_metadata(ref_path.string());
  if (fs::exists(dir / "medslip_source.json")) {
    auto src = read_json(dir / "medslip_source.json");
    if (src.value("weights_sha256", std::string()) != meta.at("weights_sha256")) {
      MESSAGE("skipping: weights/text_encoder holds another encoder (" << src.value("name", std::string("?")) << ")");
      return;
    }
  }
  TextEncoder enc = TextEncoder::load(dir.string());
  MESSAGE("text encoder: " << enc.describe());
  CHECK(enc.width() == 384);
  auto sentences = nlohmann::json::parse(meta.at("sentences")).get<std::vector<std::string>>();
  Tensor ours = enc.encode_cls(sentences, std::stoi(meta.at("max_length")));  // [4,384]
  test::compare("all-MiniLM-L6-v2 [CLS]", ours, load_safetensors_tensor(ref_path.string(), "cls"), kTolForward);
}
