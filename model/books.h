// defines: the frozen text "books" of spec A.1 — Books (pathology_book [75,T], anatomy_book
// [51,T] and where they came from), the prompt lists they are built from, build_books (one
// no-grad pass of the text encoder, [CLS] rows) and their safetensors file.
#pragma once
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "model/bert.h"

namespace ms {

struct Books {
  Tensor pathology;  // [75,T]: the descriptions of the observations, in the order of spec C.1
  Tensor anatomy;    // [51,T]: "It is located at <name>. " for the anatomies of spec C.1
  // Provenance, stored as safetensors __metadata__: format, encoder, encoder_source, vocab,
  // vocab_size, do_lower_case, max_length, pathology_json, width.
  std::map<std::string, std::string> metadata;
  int64_t width() const { return pathology.size(1); }
};

// The 75 VALUES of a JSON object in key order (the official `observation explanation.json`
// format; keys are not checked, the pretraining copy even misspells "eumonia"). Throws naming
// the file when it is not an object of 75 strings (the message gives the count found).
std::vector<std::string> read_pathology_descriptions(const std::string& json_path);

// "It is located at " + name + ". " for the 51 anatomy names in order (spec A.1, C.1).
std::vector<std::string> anatomy_prompts();

// Runs the encoder once under no-grad on both prompt lists with the MeDSLIP encoding
// ([CLS] + tokens, no [SEP]) at max_length (128 in pretraining, 64 in the official zero-shot
// scripts) and keeps the [CLS] rows. `log`, when given, receives progress lines.
Books build_books(const TextEncoder& encoder, const std::vector<std::string>& pathology_descriptions,
                  int max_length, const std::function<void(const std::string&)>& log = nullptr);
// The same, reading the descriptions from `pathology_json` (recorded in the metadata).
Books build_books(const TextEncoder& encoder, const std::string& pathology_json, int max_length,
                  const std::function<void(const std::string&)>& log = nullptr);

// safetensors: tensors "pathology_book" and "anatomy_book" (F32) plus the metadata.
void save_books(const std::string& path, const Books& books);
// Checks the shapes ([75,T] and [51,T], same T); errors name the file.
Books load_books_file(const std::string& path);

}  // namespace ms
