// Fuzz target: a Hugging Face folder's config.json (BertConfig) and the books'
// observation-description json, both user-supplied JSON.
#include "model/bert.h"
#include "model/books.h"
#include "tests/fuzz/fuzz.h"

MS_FUZZ_TARGET(hf_config, ".json") {
  std::string p = ms::fuzz::scratch_file("config", ".json", data, size);
  try {
    ms::BertConfig c = ms::BertConfig::from_json_file(p);
    if (c.hidden_size <= 0 || c.num_attention_heads <= 0 || c.hidden_size % c.num_attention_heads)
      ms::fuzz::finding("an invalid BertConfig was accepted");
  } catch (const std::exception& e) {
    ms::fuzz::expect_named(e, p);
  }
  try {
    if (ms::read_pathology_descriptions(p).size() != 75) ms::fuzz::finding("descriptions: not 75");
  } catch (const std::exception& e) {
    ms::fuzz::expect_named(e, p);
  }
}
