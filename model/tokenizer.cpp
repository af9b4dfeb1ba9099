// See tokenizer.h for the pipeline. Line references are to transformers 4.57
// (models/bert/tokenization_bert.py, tokenization_utils.py).
#include "model/tokenizer.h"

#include <fstream>
#include <iterator>
#include <stdexcept>

#include <unicode/locid.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

namespace ms {
namespace {

// ---------------------------------------------------------------- UTF-8 <-> code points

// Strict decoder (no overlongs, surrogates or > U+10FFFF). A bad byte becomes U+FFFD, which
// BasicTokenizer._clean_text drops, so malformed input degrades instead of throwing.
std::u32string utf8_decode(const std::string& s) {
    std::u32string out;
    out.reserve(s.size());
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const std::size_t n = s.size();
    std::size_t i = 0;
    while (i < n) {
        const unsigned char c = p[i];
        if (c < 0x80) {
            out.push_back(c);
            ++i;
            continue;
        }
        int len = 0;
        char32_t cp = 0, min = 0;
        if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; min = 0x80; }
        else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; min = 0x800; }
        else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; min = 0x10000; }
        bool ok = len > 0 && i + len <= n;
        for (int k = 1; ok && k < len; ++k) {
            if ((p[i + k] & 0xC0) != 0x80) ok = false;
            else cp = (cp << 6) | (p[i + k] & 0x3F);
        }
        if (ok && (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))) ok = false;
        if (ok) {
            out.push_back(cp);
            i += len;
        } else {
            out.push_back(0xFFFD);
            ++i;
        }
    }
    return out;
}

void utf8_append(std::string& out, char32_t cp) {
    if (cp < 0x80) {
        out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
        out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
        out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
}

std::string utf8_encode(const std::u32string& s) {
    std::string out;
    out.reserve(s.size());
    for (char32_t cp : s) utf8_append(out, cp);
    return out;
}

// ---------------------------------------------------------------- ICU glue

icu::UnicodeString to_icu(const std::u32string& s) {
    icu::UnicodeString u;
    for (char32_t cp : s) u.append(static_cast<UChar32>(cp));
    return u;
}

std::u32string from_icu(const icu::UnicodeString& u) {
    std::u32string out;
    out.reserve(static_cast<std::size_t>(u.length()));
    for (int32_t i = 0; i < u.length(); i = u.moveIndex32(i, 1)) out.push_back(u.char32At(i));
    return out;
}

bool all_ascii(const std::u32string& s) {
    for (char32_t c : s)
        if (c >= 0x80) return false;
    return true;
}

// Python str.lower(): full (SpecialCasing) mapping, locale-independent, e.g. U+0130 -> "i̇".
// ICU's root locale gives the same mapping (incl. Final_Sigma in context).
std::u32string lower(const std::u32string& s) {
    if (all_ascii(s)) {
        std::u32string out = s;
        for (char32_t& c : out)
            if (c >= 'A' && c <= 'Z') c += 'a' - 'A';
        return out;
    }
    icu::UnicodeString u = to_icu(s);
    u.toLower(icu::Locale::getRoot());
    return from_icu(u);
}

enum class Form { NFC, NFD };

std::u32string normalize(const std::u32string& s, Form form) {
    if (all_ascii(s)) return s;  // ASCII is invariant under NFC and NFD
    UErrorCode err = U_ZERO_ERROR;
    const icu::Normalizer2* norm = form == Form::NFC ? icu::Normalizer2::getNFCInstance(err)
                                                     : icu::Normalizer2::getNFDInstance(err);
    if (U_FAILURE(err)) throw std::runtime_error("tokenizer: ICU normalizer unavailable");
    icu::UnicodeString out = norm->normalize(to_icu(s), err);
    if (U_FAILURE(err)) throw std::runtime_error("tokenizer: ICU normalization failed");
    return from_icu(out);
}

// ---------------------------------------------------------------- HF character classes

// tokenization_utils._is_whitespace: \t \n \r and space, plus category Zs.
bool is_whitespace(char32_t c) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') return true;
    if (c < 0x80) return false;
    return u_charType(static_cast<UChar32>(c)) == U_SPACE_SEPARATOR;
}

// HF's categories come from Python's unicodedata: Unicode 14.0 in Python 3.11, which made the
// fixture; ICU 72 (Debian 12) is Unicode 15.0. A code point assigned after 14.0 is Cn
// (unassigned) to Python, so _clean_text drops it; we treat it the same way. Keep in step with
// WordPieceTokenizer::kPythonUnicodeVersion. (An ICU older than the Python version cannot be
// corrected this way; Debian 12's is newer.)
constexpr int kPythonUnicodeMajor = 14, kPythonUnicodeMinor = 0;

bool newer_than_python_unicode(char32_t c) {
    UVersionInfo age;
    u_charAge(static_cast<UChar32>(c), age);
    return age[0] > kPythonUnicodeMajor ||
           (age[0] == kPythonUnicodeMajor && age[1] > kPythonUnicodeMinor);
}

// tokenization_utils._is_control: any C* category (Cc Cf Cs Co Cn), except \t \n \r.
// Note Cn (unassigned) counts, so unassigned code points are dropped too.
bool is_control(char32_t c) {
    if (c == '\t' || c == '\n' || c == '\r') return false;
    if (c >= 0x80 && newer_than_python_unicode(c)) return true;
    switch (u_charType(static_cast<UChar32>(c))) {
        case U_CONTROL_CHAR:
        case U_FORMAT_CHAR:
        case U_SURROGATE:
        case U_PRIVATE_USE_CHAR:
        case U_UNASSIGNED:
            return true;
        default:
            return false;
    }
}

// tokenization_utils._is_punctuation: all non-alphanumeric printable ASCII (so ^ $ ` count
// though they are not Unicode P*), plus any P* category.
bool is_punctuation(char32_t c) {
    if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
        (c >= 123 && c <= 126))
        return true;
    if (c < 0x80) return false;
    switch (u_charType(static_cast<UChar32>(c))) {
        case U_DASH_PUNCTUATION:
        case U_START_PUNCTUATION:
        case U_END_PUNCTUATION:
        case U_CONNECTOR_PUNCTUATION:
        case U_OTHER_PUNCTUATION:
        case U_INITIAL_PUNCTUATION:
        case U_FINAL_PUNCTUATION:
            return true;
        default:
            return false;
    }
}

// BasicTokenizer._is_chinese_char: CJK Unified Ideographs blocks only (not kana/hangul).
bool is_chinese_char(char32_t cp) {
    return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
           (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
           (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
           (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

// Python str.isspace(), used by whitespace_tokenize's str.split(). Wider than _is_whitespace:
// after cleaning, U+2028/U+2029 (Zl/Zp) survive and still split words in HF.
bool py_isspace(char32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

// whitespace_tokenize(text) = text.strip().split()
std::vector<std::u32string> py_split(const std::u32string& s) {
    std::vector<std::u32string> out;
    std::size_t i = 0;
    while (i < s.size()) {
        while (i < s.size() && py_isspace(s[i])) ++i;
        std::size_t j = i;
        while (j < s.size() && !py_isspace(s[j])) ++j;
        if (j > i) out.emplace_back(s, i, j - i);
        i = j;
    }
    return out;
}

}  // namespace

// ---------------------------------------------------------------- vocab

WordPieceTokenizer WordPieceTokenizer::from_vocab_file(const std::string& path,
                                                       bool do_lower_case) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("tokenizer: cannot open vocab file '" + path + "'");
    std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (data.empty()) throw std::runtime_error("tokenizer: vocab file '" + path + "' is empty");

    WordPieceTokenizer t;
    t.do_lower_case_ = do_lower_case;
    // HF load_vocab: text-mode readlines() (universal newlines: \n, \r\n, \r), token =
    // line.rstrip("\n"), id = line index; a repeated token keeps its last index.
    int64_t index = 0;
    std::size_t i = 0;
    while (i < data.size()) {
        std::size_t j = data.find_first_of("\r\n", i);
        std::size_t next;
        if (j == std::string::npos) {
            j = data.size();
            next = j;
        } else {
            next = (data[j] == '\r' && j + 1 < data.size() && data[j + 1] == '\n') ? j + 2 : j + 1;
        }
        t.vocab_[data.substr(i, j - i)] = index++;
        i = next;
    }

    auto need = [&](const char* tok, int64_t& id) {
        auto it = t.vocab_.find(tok);
        if (it == t.vocab_.end())
            throw std::runtime_error("tokenizer: vocab file '" + path + "' has no " + tok +
                                     " token");
        id = it->second;
    };
    need("[PAD]", t.pad_id_);
    need("[UNK]", t.unk_id_);
    need("[CLS]", t.cls_id_);
    need("[SEP]", t.sep_id_);

    for (const char* s : {"[UNK]", "[SEP]", "[PAD]", "[CLS]", "[MASK]"}) {
        t.special_tokens_.push_back(utf8_decode(s));
        t.special_set_.insert(t.special_tokens_.back());
    }
    return t;
}

int64_t WordPieceTokenizer::token_id(const std::string& token) const {
    auto it = vocab_.find(token);
    return it == vocab_.end() ? unk_id_ : it->second;
}

std::vector<int64_t> WordPieceTokenizer::convert_tokens_to_ids(
    const std::vector<std::string>& tokens) const {
    std::vector<int64_t> ids;
    ids.reserve(tokens.size());
    for (const auto& t : tokens) ids.push_back(token_id(t));
    return ids;
}

// ---------------------------------------------------------------- tokenize

std::vector<std::string> WordPieceTokenizer::tokenize(const std::string& text) const {
    const std::u32string s = utf8_decode(text);
    std::vector<std::string> out;

    // PreTrainedTokenizer.tokenize: special tokens are found case-sensitively on the raw text
    // (tokens_trie.split) and emitted as-is; "[CLS]x" splits too, "[cls]" does not.
    // With do_lower_case, the `re.sub(r"(special)|(.+?)", ...)` pass first lower-cases the
    // rest ONE CHARACTER AT A TIME, so there is no Final_Sigma context: "ΣΑΣ" -> "σασ".
    // Lower-casing never yields ASCII capitals, so matches before and after that pass agree.
    std::u32string chunk;
    auto flush = [&]() {
        if (!chunk.empty()) basic_and_wordpiece(chunk, out);
        chunk.clear();
    };
    std::size_t i = 0;
    while (i < s.size()) {
        const std::u32string* hit = nullptr;
        if (s[i] == '[') {
            for (const auto& sp : special_tokens_)
                if (s.compare(i, sp.size(), sp) == 0) { hit = &sp; break; }
        }
        if (hit) {
            flush();
            out.push_back(utf8_encode(*hit));
            i += hit->size();
            continue;
        }
        if (do_lower_case_ && s[i] != '\n')  // regex '.' skips '\n' (its lower is itself anyway)
            chunk += lower(std::u32string(1, s[i]));
        else
            chunk.push_back(s[i]);
        ++i;
    }
    flush();
    return out;
}

// BertTokenizer._tokenize on one non-special chunk: BasicTokenizer.tokenize with
// never_split = all_special_tokens, then WordPiece on each basic token.
void WordPieceTokenizer::basic_and_wordpiece(const std::u32string& text,
                                             std::vector<std::string>& out) const {
    // _clean_text, then _tokenize_chinese_chars (both before NFC, as in HF).
    std::u32string t;
    t.reserve(text.size() + 8);
    for (char32_t c : text) {
        if (c == 0 || c == 0xFFFD || is_control(c)) continue;
        if (is_whitespace(c)) {
            t.push_back(' ');
        } else if (is_chinese_char(c)) {
            t.push_back(' ');
            t.push_back(c);
            t.push_back(' ');
        } else {
            t.push_back(c);
        }
    }
    // NFC "so that the same character with different code points matches" (added to HF in
    // 2023; ALBEF/MeDSLIP's older copy lacks it, but with lower-casing the NFD below makes it a
    // no-op for the result).
    t = normalize(t, Form::NFC);

    std::vector<std::u32string> pieces;
    for (std::u32string& word : py_split(t)) {
        if (special_set_.count(word)) {  // never_split: no lower-casing, no punct split
            pieces.push_back(std::move(word));
            continue;
        }
        if (do_lower_case_) {
            // token.lower() then _run_strip_accents: NFD and drop category Mn.
            std::u32string nfd = normalize(lower(word), Form::NFD);
            word.clear();
            for (char32_t c : nfd)
                if (c < 0x80 || u_charType(static_cast<UChar32>(c)) != U_NON_SPACING_MARK)
                    word.push_back(c);
        }
        // _run_split_on_punc: every punctuation char is its own piece.
        std::u32string cur;
        for (char32_t c : word) {
            if (is_punctuation(c)) {
                if (!cur.empty()) pieces.push_back(std::move(cur));
                cur.clear();
                pieces.emplace_back(1, c);
            } else {
                cur.push_back(c);
            }
        }
        if (!cur.empty()) pieces.push_back(std::move(cur));
    }
    // HF re-splits " ".join(split_tokens) on whitespace; empty pieces (fully stripped words)
    // vanish there.
    for (const auto& p : pieces)
        for (const auto& w : py_split(p)) {
            // BertTokenizer._tokenize checks basic_tokenizer.never_split (the constructor
            // argument, empty here), so even a "[CLS]" word goes through WordPiece, where the
            // vocab matches it whole.
            wordpiece(w, out);
        }
}

// WordpieceTokenizer.tokenize for one word: greedy longest-match-first over code points,
// continuation pieces prefixed "##"; the whole word becomes [UNK] if any position has no
// match or it has more than 100 code points.
void WordPieceTokenizer::wordpiece(const std::u32string& word,
                                   std::vector<std::string>& out) const {
    static const std::string kUnk = "[UNK]";
    if (word.size() > kMaxInputCharsPerWord) {
        out.push_back(kUnk);
        return;
    }
    std::vector<std::size_t> off(word.size() + 1, 0);  // byte offset of each code point
    std::string bytes;
    for (std::size_t k = 0; k < word.size(); ++k) {
        off[k] = bytes.size();
        utf8_append(bytes, word[k]);
    }
    off[word.size()] = bytes.size();

    std::vector<std::string> subs;
    std::size_t start = 0;
    std::string cand;
    while (start < word.size()) {
        std::size_t end = word.size();
        bool found = false;
        while (start < end) {
            cand.assign(start > 0 ? "##" : "");
            cand.append(bytes, off[start], off[end] - off[start]);
            if (vocab_.count(cand)) {
                found = true;
                break;
            }
            --end;
        }
        if (!found) {
            out.push_back(kUnk);
            return;
        }
        subs.push_back(cand);
        start = end;
    }
    for (auto& sub : subs) out.push_back(std::move(sub));
}

std::vector<int64_t> WordPieceTokenizer::encode_ids(const std::string& text) const {
    return convert_tokens_to_ids(tokenize(text));
}

// ---------------------------------------------------------------- encodings

WordPieceTokenizer::Encoding WordPieceTokenizer::pad_encoding(std::vector<int64_t> ids,
                                                              int max_length) const {
    Encoding e;
    e.attention_mask.assign(ids.size(), 1);
    e.input_ids = std::move(ids);
    e.input_ids.resize(static_cast<std::size_t>(max_length), pad_id_);
    e.attention_mask.resize(static_cast<std::size_t>(max_length), 0);
    return e;
}

// HF truncation (right side) keeps max_length - num_special_tokens_to_add() tokens; the
// ALBEF build_inputs_with_special_tokens adds only [CLS], so that count is 1.
WordPieceTokenizer::Encoding WordPieceTokenizer::encode_medslip(const std::string& text,
                                                                int max_length) const {
    if (max_length < 1)
        throw std::invalid_argument("encode_medslip: max_length must be >= 1");
    std::vector<int64_t> tok = encode_ids(text);
    if (tok.size() > static_cast<std::size_t>(max_length - 1)) tok.resize(max_length - 1);
    std::vector<int64_t> ids;
    ids.reserve(static_cast<std::size_t>(max_length));
    ids.push_back(cls_id_);
    ids.insert(ids.end(), tok.begin(), tok.end());
    return pad_encoding(std::move(ids), max_length);
}

// (HF, given max_length < 2, logs an error and returns an over-long sequence; we refuse.)
WordPieceTokenizer::Encoding WordPieceTokenizer::encode_bert(const std::string& text,
                                                             int max_length) const {
    if (max_length < 2) throw std::invalid_argument("encode_bert: max_length must be >= 2");
    std::vector<int64_t> tok = encode_ids(text);
    if (tok.size() > static_cast<std::size_t>(max_length - 2)) tok.resize(max_length - 2);
    std::vector<int64_t> ids;
    ids.reserve(static_cast<std::size_t>(max_length));
    ids.push_back(cls_id_);
    ids.insert(ids.end(), tok.begin(), tok.end());
    ids.push_back(sep_id_);
    return pad_encoding(std::move(ids), max_length);
}

}  // namespace ms
