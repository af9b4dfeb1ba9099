// Fuzz target: the WordPiece tokenizer on arbitrary bytes (invalid UTF-8 included), with
// the committed tiny BERT vocabulary; and the same bytes as a vocab.txt.
#include "model/tokenizer.h"
#include "tests/fuzz/fuzz.h"

MS_FUZZ_TARGET(tokenizer, ".txt") {
  static const ms::WordPieceTokenizer tok =
      ms::WordPieceTokenizer::from_vocab_file("tests/fixtures/bert_tiny/vocab.txt", true);
  std::string text(reinterpret_cast<const char*>(data), size);
  auto ids = tok.encode_ids(text);
  for (int64_t id : ids)
    if (id < 0 || id >= int64_t(tok.vocab_size())) ms::fuzz::finding("token id outside the vocabulary");
  auto e = tok.encode_medslip(text, 64);
  if (e.input_ids.size() != 64 || e.attention_mask.size() != 64 || e.input_ids[0] != tok.cls_id())
    ms::fuzz::finding("encode_medslip broke its shape contract");
  auto b = tok.encode_bert(text, 16);
  if (b.input_ids.size() != 16) ms::fuzz::finding("encode_bert broke its shape contract");
  std::string p = ms::fuzz::scratch_file("vocab", ".txt", data, size);
  try {
    ms::WordPieceTokenizer v = ms::WordPieceTokenizer::from_vocab_file(p, size % 2 == 0);
    v.encode_medslip("no acute cardiopulmonary process.", 8);
  } catch (const std::exception& e) {
    ms::fuzz::expect_named(e, p);
  }
}
