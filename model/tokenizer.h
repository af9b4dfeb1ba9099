// WordPiece tokenizer matching Hugging Face `BertTokenizer` (the pure-Python "slow" one,
// transformers 4.x) plus MeDSLIP's ALBEF-style variant that adds [CLS] but no trailing
// [SEP] (spec A.1).
//
// Pipeline, in HF order (PreTrainedTokenizer.tokenize -> BertTokenizer._tokenize ->
// BasicTokenizer.tokenize -> WordpieceTokenizer.tokenize):
//   1. if lower-casing: lower-case every character that is not part of a special-token
//      occurrence, one code point at a time (HF's `re.sub(... (.+?) ...)` pass);
//   2. split out special tokens ([PAD] [UNK] [CLS] [SEP] [MASK]) verbatim;
//   3. per remaining chunk: clean text, space around CJK ideographs, NFC, whitespace split,
//      lower-case + NFD accent strip per word, punctuation split, WordPiece.
// Unicode properties, case mapping and normalisation come from ICU (libicuuc).
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace ms {

class WordPieceTokenizer {
public:
    struct Encoding {
        std::vector<int64_t> input_ids;
        std::vector<int64_t> attention_mask;
    };

    // Loads a BERT vocab.txt (one token per line; id = line number, as HF `load_vocab`).
    // Throws std::runtime_error naming the file if it is missing, unreadable, empty, or lacks
    // any of [PAD], [UNK], [CLS], [SEP].
    static WordPieceTokenizer from_vocab_file(const std::string& path, bool do_lower_case = true);

    // Word-piece tokens without special tokens added (HF `tokenizer.tokenize(text)`).
    // Input is UTF-8; invalid byte sequences decode to U+FFFD, which cleaning then drops.
    std::vector<std::string> tokenize(const std::string& text) const;

    // Unknown tokens map to the [UNK] id (HF `_convert_token_to_id`).
    std::vector<int64_t> convert_tokens_to_ids(const std::vector<std::string>& tokens) const;
    int64_t token_id(const std::string& token) const;

    // convert_tokens_to_ids(tokenize(text)).
    std::vector<int64_t> encode_ids(const std::string& text) const;

    // MeDSLIP: [CLS] + tokens (no [SEP]), truncated to max_length, padded with [PAD] to
    // max_length; mask 1 on real tokens. Equals HF `tok(text, padding="max_length",
    // truncation=True, max_length=L)` with the ALBEF `build_inputs_with_special_tokens`.
    // Throws std::invalid_argument if max_length < 1.
    Encoding encode_medslip(const std::string& text, int max_length) const;

    // Standard BERT: [CLS] tokens [SEP], same truncation/padding. max_length must be >= 2.
    Encoding encode_bert(const std::string& text, int max_length) const;

    bool do_lower_case() const { return do_lower_case_; }
    std::size_t vocab_size() const { return vocab_.size(); }
    int64_t pad_id() const { return pad_id_; }
    int64_t unk_id() const { return unk_id_; }
    int64_t cls_id() const { return cls_id_; }
    int64_t sep_id() const { return sep_id_; }

    // HF WordpieceTokenizer.max_input_chars_per_word: longer words (in code points) -> [UNK].
    static constexpr std::size_t kMaxInputCharsPerWord = 100;
    // Python `unicodedata.unidata_version` whose character set we emulate (Python 3.11, which
    // made the fixture): code points ICU knows but this version does not are dropped as
    // unassigned, like HF does. Python 3.12+ (Unicode 15) would keep them.
    static constexpr const char* kPythonUnicodeVersion = "14.0.0";

private:
    WordPieceTokenizer() = default;

    void basic_and_wordpiece(const std::u32string& chunk, std::vector<std::string>& out) const;
    void wordpiece(const std::u32string& word, std::vector<std::string>& out) const;
    Encoding pad_encoding(std::vector<int64_t> ids, int max_length) const;

    std::unordered_map<std::string, int64_t> vocab_;
    // HF `all_special_tokens` (the ones BertTokenizer registers). [MASK] is split out even if
    // absent from the vocab; it then maps to [UNK] (HF would append it as a new id).
    std::vector<std::u32string> special_tokens_;
    std::unordered_set<std::u32string> special_set_;
    bool do_lower_case_ = true;
    int64_t pad_id_ = 0, unk_id_ = 100, cls_id_ = 101, sep_id_ = 102;
};

}  // namespace ms
