// Sentence splitting and tokens of free-text radiology reports (see report_sentences.h).
#include "data/report_sentences.h"

#include <cctype>

namespace ms {

int64_t first_invalid_utf8(const std::string& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size(), i = 0;
  while (i < n) {
    unsigned c = p[i];
    int len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (len == 0 || i + size_t(len) > n) return int64_t(i);
    if (len == 2 && c < 0xC2) return int64_t(i);  // overlong
    for (int k = 1; k < len; ++k)
      if ((p[i + size_t(k)] & 0xC0) != 0x80) return int64_t(i);
    if (len == 3) {
      unsigned c1 = p[i + 1];
      if ((c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 >= 0xA0)) return int64_t(i);  // overlong, surrogate
    }
    if (len == 4) {
      unsigned c1 = p[i + 1];
      if ((c == 0xF0 && c1 < 0x90) || c > 0xF4 || (c == 0xF4 && c1 >= 0x90)) return int64_t(i);
    }
    i += size_t(len);
  }
  return -1;
}

static bool ends_with(const std::string& s, const char* suf) {
  size_t n = std::char_traits<char>::length(suf);
  return s.size() >= n && s.compare(s.size() - n, n, suf) == 0;
}

std::string report_normalize_word(const std::string& w) {
  if (w.size() <= 3 || !std::isalpha(static_cast<unsigned char>(w.back()))) return w;
  if (ends_with(w, "ies") && w.size() > 4) return w.substr(0, w.size() - 3) + "y";   // opacities
  if (ends_with(w, "sses")) return w.substr(0, w.size() - 2);                         // processes
  if (ends_with(w, "xes") || ends_with(w, "ches") || ends_with(w, "shes")) return w.substr(0, w.size() - 2);
  if (ends_with(w, "ss") || ends_with(w, "us") || ends_with(w, "is") || ends_with(w, "ys")) return w;
  if (w.back() == 's') return w.substr(0, w.size() - 1);  // lobes, effusions
  return w;
}

static bool is_alnum(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; }

std::vector<ReportToken> tokenize_report(const std::string& text, int begin, int end) {
  std::vector<ReportToken> out;
  int i = begin;
  while (i < end) {
    char c = text[size_t(i)];
    if (is_alnum(c) || (static_cast<unsigned char>(c) >= 0x80)) {
      int j = i;
      // A word: letters/digits (non-ASCII bytes travel with the word they touch).
      while (j < end && (is_alnum(text[size_t(j)]) || static_cast<unsigned char>(text[size_t(j)]) >= 0x80)) ++j;
      ReportToken t;
      t.begin = i;
      t.end = j;
      t.word.reserve(size_t(j - i));
      bool all_x = j - i >= 2;
      for (int k = i; k < j; ++k) {
        char ch = text[size_t(k)];
        t.word.push_back(char(std::tolower(static_cast<unsigned char>(ch))));
        all_x = all_x && (ch == 'X');
      }
      if (all_x) {
        t.anon = true;
        t.word = "xxxx";
      }
      // Irregular plurals by hand; the general rule handles the rest.
      if (t.word == "pneumothoraces") t.norm = "pneumothorax";
      else if (t.word == "apices") t.norm = "apex";
      else if (t.word == "vertebrae") t.norm = "vertebra";
      else if (t.word == "bullae") t.norm = "bulla";
      else if (t.word == "hila") t.norm = "hila";
      else t.norm = report_normalize_word(t.word);
      out.push_back(std::move(t));
      i = j;
    } else {
      if (c == ',' || c == ';' || c == ':' || c == '(' || c == ')') {
        ReportToken t;
        t.begin = i;
        t.end = i + 1;
        t.word = t.norm = std::string(1, c);
        t.punct = true;
        out.push_back(std::move(t));
      }
      ++i;
    }
  }
  return out;
}

// Words after which a '.' does not end a sentence.
static bool is_abbreviation(const std::string& w) {
  static const char* const kAbbr[] = {"dr", "mr", "mrs", "ms", "vs", "approx", "e", "g", "i", "eg", "ie", "etc",
                                      "st", "no", "fig", "cf", "al", "resp"};
  for (const char* a : kAbbr)
    if (w == a) return true;
  return false;
}

std::vector<ReportSentence> split_report_sentences(const std::string& text) {
  std::vector<ReportSentence> out;
  const int n = int(text.size());
  auto emit = [&](int b, int e) {
    while (b < e && std::isspace(static_cast<unsigned char>(text[size_t(b)]))) ++b;
    // A leading list number "1." / "2)" belongs to no sentence.
    int k = b;
    while (k < e && std::isdigit(static_cast<unsigned char>(text[size_t(k)]))) ++k;
    if (k > b && k < e && (text[size_t(k)] == '.' || text[size_t(k)] == ')')) {
      b = k + 1;
      while (b < e && std::isspace(static_cast<unsigned char>(text[size_t(b)]))) ++b;
    }
    while (e > b && (std::isspace(static_cast<unsigned char>(text[size_t(e - 1)])))) --e;
    if (e <= b) return;
    ReportSentence s;
    s.begin = b;
    s.end = e;
    s.tokens = tokenize_report(text, b, e);
    if (!s.tokens.empty()) out.push_back(std::move(s));
  };
  int start = 0;
  for (int i = 0; i < n; ++i) {
    char c = text[size_t(i)];
    bool boundary = false;
    if (c == '\n' || c == '\r') {
      boundary = true;
    } else if (c == '.' || c == '!' || c == '?') {
      char next = i + 1 < n ? text[size_t(i + 1)] : ' ';
      char prev = i > 0 ? text[size_t(i - 1)] : ' ';
      if (c == '.' && std::isdigit(static_cast<unsigned char>(prev)) && std::isdigit(static_cast<unsigned char>(next)))
        continue;  // 2.5 cm
      if (!(std::isspace(static_cast<unsigned char>(next)) || std::isupper(static_cast<unsigned char>(next)) ||
            next == '"' || i + 1 == n))
        continue;  // "x-ray.jpg", "a.m."
      // The word before the '.'.
      int w = i;
      while (w > start && std::isalpha(static_cast<unsigned char>(text[size_t(w - 1)]))) --w;
      std::string word;
      for (int k = w; k < i; ++k) word.push_back(char(std::tolower(static_cast<unsigned char>(text[size_t(k)]))));
      if (c == '.' && !word.empty() && is_abbreviation(word) && std::islower(static_cast<unsigned char>(
                                                                     i + 2 < n ? text[size_t(i + 2)] : 'A')))
        continue;  // "e.g. the", "vs. atelectasis"
      // "1." at the start of a sentence is a list number, not an end.
      int d = i;
      while (d > start && std::isdigit(static_cast<unsigned char>(text[size_t(d - 1)]))) --d;
      if (d < i) {
        int b = start;
        while (b < d && std::isspace(static_cast<unsigned char>(text[size_t(b)]))) ++b;
        if (b == d) continue;
      }
      boundary = true;
    }
    if (boundary) {
      emit(start, c == '\n' || c == '\r' ? i : i + 1);
      start = i + 1;
    }
  }
  emit(start, n);
  return out;
}

}  // namespace ms
