// defines: stage 1 of report -> triplets (data/report_triplets.h): UTF-8 checking, sentence
// splitting and word tokens with character spans. Sentences end at '.', '!', '?' or a line
// break when what follows starts a new sentence (a decimal "2.5", "e.g." or "Dr." does not);
// numbered lists ("1. ... 2. ...") split at each number. Tokens are lower-cased runs of
// letters/digits plus the punctuation that bounds negation scopes (',', ';', ':', '(', ')').
// De-identification tokens ("XXXX", any run of 2+ X's) become the token "xxxx" with
// Token::anon set, so they neither match a finding nor break a scope.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace ms {

struct ReportToken {
  std::string word;   // lower-cased surface form ("opacities")
  std::string norm;   // + plural folded (report_normalize_word: "opacity")
  int begin = 0, end = 0;  // byte span [begin, end) in the text
  bool anon = false;  // an XXXX anonymisation token
  bool punct = false; // one of , ; : ( )
};

struct ReportSentence {
  int begin = 0, end = 0;           // byte span in the text (trimmed)
  std::vector<ReportToken> tokens;
};

// Byte offset of the first invalid UTF-8 sequence, or -1 when `s` is valid UTF-8.
int64_t first_invalid_utf8(const std::string& s);

// Plural folding used on both sides of the lexicon: "opacities" -> "opacity",
// "processes" -> "process", "lobes" -> "lobe"; words of <= 3 letters and endings -ss, -us,
// -is (atelectasis, bronchiectasis) are kept.
std::string report_normalize_word(const std::string& lower);

std::vector<ReportToken> tokenize_report(const std::string& text, int begin, int end);
std::vector<ReportSentence> split_report_sentences(const std::string& text);

}  // namespace ms
