// The books of spec A.1: text-encoder [CLS] embeddings of the 75 observation descriptions and
// the 51 anatomy prompts, computed once and frozen.
#include "model/books.h"

#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "model/vocab.h"
#include "engine/io.h"

namespace ms {

std::vector<std::string> read_pathology_descriptions(const std::string& json_path) {
  std::ifstream f(json_path);
  if (!f) throw std::runtime_error(json_path + ": cannot open (expected the observation-description JSON)");
  nlohmann::ordered_json j;  // keeps the file's key order, which is the observation order
  try {
    j = nlohmann::ordered_json::parse(f);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(json_path + ": not valid JSON: " + e.what());
  }
  if (!j.is_object())
    throw std::runtime_error(json_path + ": expected a JSON object {observation: description} with " +
                             std::to_string(kNumPathologies) + " entries");
  if (j.size() != size_t(kNumPathologies))
    throw std::runtime_error(json_path + ": has " + std::to_string(j.size()) + " entries, expected " +
                             std::to_string(kNumPathologies) + " (one description per observation of spec C.1)");
  std::vector<std::string> out;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!it.value().is_string())
      throw std::runtime_error(json_path + ": the value of '" + it.key() + "' must be a string (a description), got " +
                               it.value().dump());
    out.push_back(it.value().get<std::string>());
  }
  return out;
}

std::vector<std::string> anatomy_prompts() {
  std::vector<std::string> out;
  for (const char* name : kAnatomies) out.push_back(anatomy_prompt(name));
  return out;
}

Books build_books(const TextEncoder& encoder, const std::vector<std::string>& pathology_descriptions, int max_length,
                  const std::function<void(const std::string&)>& log) {
  if (pathology_descriptions.size() != size_t(kNumPathologies))
    throw std::invalid_argument("build_books: " + std::to_string(pathology_descriptions.size()) +
                                " pathology descriptions, expected " + std::to_string(kNumPathologies));
  auto say = [&](const std::string& s) { if (log) log(s); };
  Books b;
  auto run = [&](const char* what, const std::vector<std::string>& texts) {
    auto t0 = std::chrono::steady_clock::now();
    int truncated = 0;
    Tensor t = encoder.encode_cls(texts, max_length, 16, &truncated, [&](int done, int total) {
      say(std::string(what) + ": " + std::to_string(done) + "/" + std::to_string(total) + " prompts encoded");
    });
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    char line[200];
    std::snprintf(line, sizeof line, "%s [%lld,%lld] in %.2f s; %d prompt(s) cut at max_length %d", what,
                  (long long)t.size(0), (long long)t.size(1), s, truncated, max_length);
    say(line);
    return t;
  };
  b.pathology = run("pathology_book", pathology_descriptions);
  b.anatomy = run("anatomy_book", anatomy_prompts());
  b.metadata = {{"format", "medslip-books-1"},
                {"encoder", encoder.name},
                {"encoder_dir", encoder.dir},
                {"encoder_source", encoder.source},
                {"vocab", encoder.vocab_path},
                {"vocab_size", std::to_string(encoder.tokenizer->vocab_size())},
                {"do_lower_case", encoder.tokenizer->do_lower_case() ? "true" : "false"},
                {"max_length", std::to_string(max_length)},
                {"width", std::to_string(encoder.width())}};
  return b;
}

Books build_books(const TextEncoder& encoder, const std::string& pathology_json, int max_length,
                  const std::function<void(const std::string&)>& log) {
  Books b = build_books(encoder, read_pathology_descriptions(pathology_json), max_length, log);
  b.metadata["pathology_json"] = pathology_json;
  return b;
}

void save_books(const std::string& path, const Books& books) {
  save_safetensors(path, {SaveItem::f32("pathology_book", books.pathology), SaveItem::f32("anatomy_book", books.anatomy)},
                   books.metadata);
}

Books load_books_file(const std::string& path) {
  Books b;
  auto t = load_safetensors(path);
  for (const char* k : {"pathology_book", "anatomy_book"})
    if (!t.count(k))
      throw std::runtime_error(path + ": no tensor '" + k + "' (expected pathology_book [75,T] and anatomy_book [51,T])");
  b.pathology = t["pathology_book"];
  b.anatomy = t["anatomy_book"];
  if (b.pathology.dim() != 2 || b.pathology.size(0) != kNumPathologies)
    throw std::runtime_error(path + ": 'pathology_book' must be [75,T], got " + shape_str(b.pathology.shape()));
  if (b.anatomy.dim() != 2 || b.anatomy.size(0) != kNumAnatomies || b.anatomy.size(1) != b.pathology.size(1))
    throw std::runtime_error(path + ": 'anatomy_book' must be [51," + std::to_string(b.pathology.size(1)) + "], got " +
                             shape_str(b.anatomy.shape()));
  b.metadata = safetensors_metadata(path);
  return b;
}

}  // namespace ms
