// WordPiece tokenizer: unit tests on a tiny vocab, and parity with Hugging Face BertTokenizer
// (tests/fixtures/tokenizer_ids.json, made by tests/make_fixtures_tokenizer.py) on the shared
// uncased BERT vocab and all IU X-ray reports.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/tokenizer.h"

namespace fs = std::filesystem;
using ms::WordPieceTokenizer;

namespace {

// $MEDSLIP_SHARED, else ../shared relative to the working directory (tests run from the repo
// root).
fs::path shared_root() {
    if (const char* env = std::getenv("MEDSLIP_SHARED"); env && *env) return fs::path(env);
    return fs::current_path() / ".." / "shared";
}

fs::path fixture_path() {
    fs::path p = fs::current_path() / "tests" / "fixtures" / "tokenizer_ids.json";
    if (fs::exists(p)) return p;
    return fs::path(__FILE__).parent_path() / "fixtures" / "tokenizer_ids.json";
}

fs::path write_temp(const std::string& name, const std::string& content) {
    fs::path p = fs::temp_directory_path() / name;
    std::ofstream(p, std::ios::binary) << content;
    return p;
}

WordPieceTokenizer tiny_tokenizer() {
    static const fs::path p = write_temp(
        "medslip_tiny_vocab.txt",
        "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nun\n##aff\n##able\nhello\n,\nworld\n!\na\n##a\n"
        "cafe\nx\n-\nray\n");
    return WordPieceTokenizer::from_vocab_file(p.string());
}

// Must match fnv1a64_ids in tests/make_fixtures_tokenizer.py.
std::string fnv1a64_ids(const std::vector<int64_t>& ids) {
    std::string s;
    for (std::size_t i = 0; i < ids.size(); ++i) {
        if (i) s += ',';
        s += std::to_string(ids[i]);
    }
    uint64_t h = 0xCBF29CE484222325ull;
    for (unsigned char c : s) {
        h ^= c;
        h *= 0x100000001B3ull;
    }
    return std::to_string(h);
}

// RFC 4180 CSV (quoted fields, "" escapes, CRLF), as Python's csv module reads it.
std::vector<std::vector<std::string>> read_csv(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<std::vector<std::string>> rows;
    std::vector<std::string> row;
    std::string field;
    bool quoted = false, any = false;
    for (std::size_t i = 0; i < data.size(); ++i) {
        const char c = data[i];
        if (quoted) {
            if (c == '"' && i + 1 < data.size() && data[i + 1] == '"') {
                field += '"';
                ++i;
            } else if (c == '"') {
                quoted = false;
            } else {
                field += c;
            }
        } else if (c == '"') {
            quoted = true;
            any = true;
        } else if (c == ',') {
            row.push_back(std::move(field));
            field.clear();
            any = true;
        } else if (c == '\r' || c == '\n') {
            if (c == '\r' && i + 1 < data.size() && data[i + 1] == '\n') ++i;
            if (any || !field.empty()) {
                row.push_back(std::move(field));
                rows.push_back(std::move(row));
            }
            row.clear();
            field.clear();
            any = false;
        } else {
            field += c;
            any = true;
        }
    }
    if (any || !field.empty()) {
        row.push_back(std::move(field));
        rows.push_back(std::move(row));
    }
    return rows;
}

std::vector<int64_t> ids_of(const nlohmann::json& j) { return j.get<std::vector<int64_t>>(); }

}  // namespace

TEST_CASE("tokenizer: vocab file errors name the file") {
    const std::string missing = "/nonexistent/dir/no_such_vocab.txt";
    CHECK_THROWS_WITH_AS(WordPieceTokenizer::from_vocab_file(missing),
                         doctest::Contains(missing.c_str()), std::runtime_error);

    const fs::path empty = write_temp("medslip_empty_vocab.txt", "");
    CHECK_THROWS_WITH_AS(WordPieceTokenizer::from_vocab_file(empty.string()),
                         doctest::Contains(empty.string().c_str()), std::runtime_error);

    const fs::path no_cls = write_temp("medslip_nocls_vocab.txt", "[PAD]\n[UNK]\n[SEP]\nhello\n");
    CHECK_THROWS_WITH_AS(WordPieceTokenizer::from_vocab_file(no_cls.string()),
                         doctest::Contains("[CLS]"), std::runtime_error);
    CHECK_THROWS_WITH_AS(WordPieceTokenizer::from_vocab_file(no_cls.string()),
                         doctest::Contains(no_cls.string().c_str()), std::runtime_error);
}

TEST_CASE("tokenizer: vocab ids follow line numbers, CRLF tolerated") {
    const fs::path p = write_temp("medslip_crlf_vocab.txt", "[PAD]\r\n[UNK]\r\n[CLS]\r\n[SEP]\r\nok");
    const auto t = WordPieceTokenizer::from_vocab_file(p.string());
    CHECK(t.vocab_size() == 5);
    CHECK(t.pad_id() == 0);
    CHECK(t.unk_id() == 1);
    CHECK(t.cls_id() == 2);
    CHECK(t.sep_id() == 3);
    CHECK(t.token_id("ok") == 4);
}

TEST_CASE("tokenizer: wordpiece greedy longest match and [UNK]") {
    const auto t = tiny_tokenizer();
    // The HF docstring example.
    CHECK(t.tokenize("unaffable") == std::vector<std::string>{"un", "##aff", "##able"});
    CHECK(t.tokenize("Hello, WORLD!") ==
          std::vector<std::string>{"hello", ",", "world", "!"});
    CHECK(t.tokenize("Café x-ray") == std::vector<std::string>{"cafe", "x", "-", "ray"});
    // One unmatched position makes the whole word [UNK], not just that piece.
    CHECK(t.tokenize("unaffablez hello") == std::vector<std::string>{"[UNK]", "hello"});
    CHECK(t.token_id("not-in-vocab") == t.unk_id());
    CHECK(t.convert_tokens_to_ids({"hello", "zzz", "[CLS]"}) ==
          std::vector<int64_t>{8, 1, 2});

    // max_input_chars_per_word = 100: 100 chars still tokenize, 101 become [UNK].
    const auto w100 = t.tokenize(std::string(100, 'a'));
    REQUIRE(w100.size() == 100);
    CHECK(w100.front() == "a");
    CHECK(w100.back() == "##a");
    CHECK(t.tokenize(std::string(101, 'a')) == std::vector<std::string>{"[UNK]"});
    // Counted in code points (after accent stripping), not bytes.
    std::string e101;
    for (int i = 0; i < 101; ++i) e101 += "\xC3\xA9";  // é
    CHECK(t.tokenize(e101) == std::vector<std::string>{"[UNK]"});
}

TEST_CASE("tokenizer: malformed UTF-8 degrades to dropped U+FFFD") {
    const auto t = tiny_tokenizer();
    // Bad bytes decode to U+FFFD, which HF's _clean_text removes (no space is left behind).
    CHECK(t.tokenize("hello\xff\xc3 world\xe2\x80") ==
          std::vector<std::string>{"hello", "world"});
    CHECK(t.tokenize("un\xff" "aff\xc0\xaf" "able") ==
          std::vector<std::string>{"un", "##aff", "##able"});
}

TEST_CASE("tokenizer: special tokens are split out verbatim") {
    const auto t = tiny_tokenizer();
    CHECK(t.tokenize("[CLS]hello [SEP]") == std::vector<std::string>{"[CLS]", "hello", "[SEP]"});
    // Lower-case "[cls]" is not special: punctuation split, then WordPiece.
    CHECK(t.tokenize("[cls]") == std::vector<std::string>{"[UNK]", "[UNK]", "[UNK]"});
}

TEST_CASE("tokenizer: MeDSLIP and BERT encodings truncate and pad") {
    const auto t = tiny_tokenizer();
    auto e = t.encode_medslip("hello world", 5);
    CHECK(e.input_ids == std::vector<int64_t>{2, 8, 10, 0, 0});
    CHECK(e.attention_mask == std::vector<int64_t>{1, 1, 1, 0, 0});
    e = t.encode_medslip("hello world ! hello", 3);  // [CLS] + 2 tokens, no [SEP]
    CHECK(e.input_ids == std::vector<int64_t>{2, 8, 10});
    CHECK(e.attention_mask == std::vector<int64_t>{1, 1, 1});
    e = t.encode_bert("hello world ! hello", 4);
    CHECK(e.input_ids == std::vector<int64_t>{2, 8, 10, 3});
    e = t.encode_bert("", 3);
    CHECK(e.input_ids == std::vector<int64_t>{2, 3, 0});
    CHECK(e.attention_mask == std::vector<int64_t>{1, 1, 0});
    CHECK_THROWS_AS(t.encode_medslip("x", 0), std::invalid_argument);
    CHECK_THROWS_AS(t.encode_bert("x", 1), std::invalid_argument);
}

TEST_CASE("tokenizer: parity with HF BertTokenizer (fixture)") {
    const fs::path shared = shared_root();
    const fs::path vocab = shared / "data" / "vocab" / "bert-base-uncased-vocab.txt";
    const fs::path csv = shared / "data" / "reports" / "iu_xray_reports.csv";
    if (!fs::exists(vocab) || !fs::exists(csv)) {
        MESSAGE("skipping: shared data not found under " << shared.string()
                                                         << " (set MEDSLIP_SHARED)");
        return;
    }
    const fs::path fx = fixture_path();
    REQUIRE_MESSAGE(fs::exists(fx), "fixture missing: " << fx.string());
    std::ifstream fin(fx);
    const nlohmann::json doc = nlohmann::json::parse(fin);
    // HF's character classes come from the generating Python's unicodedata; ours emulate one
    // version (see kPythonUnicodeVersion). Regenerating with another Python needs a review.
    CHECK_MESSAGE(doc.at("unicodedata_version").get<std::string>() ==
                      WordPieceTokenizer::kPythonUnicodeVersion,
                  "fixture made with a different Python unicodedata version");
    const auto t = WordPieceTokenizer::from_vocab_file(vocab.string());
    CHECK(t.vocab_size() == 30522);
    CHECK(t.pad_id() == 0);
    CHECK(t.unk_id() == 100);
    CHECK(t.cls_id() == 101);
    CHECK(t.sep_id() == 102);

    SUBCASE("hand-written strings: ids and encodings") {
        int n = 0, enc = 0;
        for (const auto& s : doc.at("strings")) {
            const std::string text = s.at("text").get<std::string>();
            INFO("text: " << text);
            CHECK(t.tokenize(text) == s.at("tokens").get<std::vector<std::string>>());
            CHECK(t.encode_ids(text) == ids_of(s.at("ids")));
            for (int L : {64, 128}) {
                const auto& ref = s.at("medslip_" + std::to_string(L));
                const auto e = t.encode_medslip(text, L);
                CHECK(e.input_ids == ids_of(ref.at("input_ids")));
                CHECK(e.attention_mask == ids_of(ref.at("attention_mask")));
                ++enc;
            }
            const auto& ref = s.at("bert_64");
            const auto e = t.encode_bert(text, 64);
            CHECK(e.input_ids == ids_of(ref.at("input_ids")));
            CHECK(e.attention_mask == ids_of(ref.at("attention_mask")));
            ++enc;
            ++n;
        }
        CHECK(n >= 40);
        MESSAGE("compared " << n << " hand-written strings, " << enc << " encodings");
    }

    SUBCASE("all IU X-ray reports") {
        const auto& rep = doc.at("reports");
        const auto fields = rep.at("fields").get<std::vector<std::string>>();
        const auto rows = read_csv(csv);
        REQUIRE(rows.size() >= 2);
        const auto& header = rows[0];
        auto col = [&](const std::string& name) {
            for (std::size_t i = 0; i < header.size(); ++i)
                if (header[i] == name) return i;
            FAIL("column " << name << " missing from " << csv.string());
            return std::size_t(0);
        };
        const std::size_t id_col = col("report_id");
        std::vector<std::size_t> cols;
        for (const auto& f : fields) cols.push_back(col(f));

        const auto& ref_rows = doc.at("report_rows");
        REQUIRE(rows.size() - 1 == ref_rows.size());
        REQUIRE(ref_rows.size() == rep.at("count").get<std::size_t>());
        std::size_t texts = 0, full = 0, ids_total = 0, mismatches = 0;
        for (std::size_t r = 0; r < ref_rows.size(); ++r) {
            const auto& row = rows[r + 1];
            const auto& ref = ref_rows[r];
            REQUIRE(row.size() == header.size());
            REQUIRE(row[id_col] == ref.at("report_id").get<std::string>());
            for (std::size_t k = 0; k < fields.size(); ++k) {
                const std::string& text = row[cols[k]];
                const auto ids = t.encode_ids(text);
                bool ok = ids.size() == ref.at("n")[k].get<std::size_t>() &&
                          fnv1a64_ids(ids) == ref.at("h")[k].get<std::string>();
                if (ref.contains("ids")) {
                    ok = ok && ids == ids_of(ref.at("ids")[k]);
                    ++full;
                }
                if (!ok && ++mismatches <= 5)
                    FAIL_CHECK("report " << row[id_col] << " " << fields[k]
                                         << " differs from HF: " << text);
                ++texts;
                ids_total += ids.size();
            }
        }
        CHECK(mismatches == 0);
        MESSAGE("compared " << texts << " report texts (" << ref_rows.size() << " reports x "
                            << fields.size() << " fields, " << ids_total << " ids; " << full
                            << " checked id by id, the rest by length + FNV-1a hash), "
                            << mismatches << " mismatches");
    }
}
