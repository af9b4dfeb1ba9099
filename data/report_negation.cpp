// Negation and uncertainty cues (see report_negation.h).
#include "data/report_negation.h"

#include <algorithm>
#include <string>
#include <unordered_map>

namespace ms {
namespace {

enum class Cue { kPreNeg, kPostNeg, kPreUnc, kPostUnc, kPseudo };

struct CueEntry {
  const char* phrase;
  Cue kind;
};

// Words are compared after report_normalize_word ("findings" -> "finding").
const CueEntry kCues[] = {
    // pseudo-negations first in the table only for readability; longest match decides.
    {"no change", Cue::kPseudo}, {"no interval change", Cue::kPseudo}, {"no significant change", Cue::kPseudo},
    {"no significant interval change", Cue::kPseudo}, {"no significant interval", Cue::kPseudo},
    {"no appreciable change", Cue::kPseudo}, {"no substantial change", Cue::kPseudo},
    {"not significantly changed", Cue::kPseudo}, {"not changed", Cue::kPseudo}, {"without change", Cue::kPseudo},
    {"no increase", Cue::kPseudo}, {"no significant increase", Cue::kPseudo}, {"not only", Cue::kPseudo},
    {"no decrease", Cue::kPseudo}, {"no interval", Cue::kPseudo},
    {"age indeterminate", Cue::kPseudo}, {"of indeterminate age", Cue::kPseudo},
    // negation before the finding
    {"no", Cue::kPreNeg}, {"not", Cue::kPreNeg}, {"without", Cue::kPreNeg}, {"free of", Cue::kPreNeg},
    {"negative for", Cue::kPreNeg}, {"absence of", Cue::kPreNeg}, {"absent", Cue::kPreNeg},
    {"resolution of", Cue::kPreNeg}, {"resolved", Cue::kPreNeg}, {"clear of", Cue::kPreNeg},
    {"rather than", Cue::kPreNeg}, {"removal of", Cue::kPreNeg}, {"none", Cue::kPreNeg}, {"nor", Cue::kPreNeg},
    {"neither", Cue::kPreNeg}, {"never", Cue::kPreNeg}, {"lack of", Cue::kPreNeg}, {"ruled out", Cue::kPreNeg},
    {"negative", Cue::kPreNeg}, {"cleared", Cue::kPreNeg},
    {"cannot identify", Cue::kPreNeg},
    // negation after the finding
    {"not seen", Cue::kPostNeg}, {"not identified", Cue::kPostNeg}, {"not present", Cue::kPostNeg},
    {"not visualized", Cue::kPostNeg}, {"not visualised", Cue::kPostNeg}, {"not appreciated", Cue::kPostNeg},
    {"not demonstrated", Cue::kPostNeg}, {"not evident", Cue::kPostNeg}, {"not noted", Cue::kPostNeg},
    {"not detected", Cue::kPostNeg}, {"not apparent", Cue::kPostNeg}, {"not definitely seen", Cue::kPostNeg},
    {"not well seen", Cue::kPostNeg}, {"no longer", Cue::kPostNeg}, {"resolved", Cue::kPostNeg},
    {"has resolved", Cue::kPostNeg}, {"have resolved", Cue::kPostNeg}, {"has cleared", Cue::kPostNeg},
    {"have cleared", Cue::kPostNeg}, {"removed", Cue::kPostNeg}, {"been removed", Cue::kPostNeg},
    {"is absent", Cue::kPostNeg}, {"are absent", Cue::kPostNeg}, {"is gone", Cue::kPostNeg},
    {"not", Cue::kPostNeg}, {"within normal limits", Cue::kPostNeg}, {"within normal limit", Cue::kPostNeg},
    {"within limits of normal", Cue::kPostNeg}, {"within the limits of normal", Cue::kPostNeg},
    {"within normal range", Cue::kPostNeg},
    // uncertainty before the finding
    {"may", Cue::kPreUnc}, {"might", Cue::kPreUnc}, {"possible", Cue::kPreUnc}, {"possibly", Cue::kPreUnc},
    {"probable", Cue::kPreUnc}, {"probably", Cue::kPreUnc}, {"likely", Cue::kPreUnc}, {"questionable", Cue::kPreUnc},
    {"question of", Cue::kPreUnc}, {"suspicious for", Cue::kPreUnc}, {"suspected", Cue::kPreUnc},
    {"suspect", Cue::kPreUnc}, {"suggest", Cue::kPreUnc}, {"suggestive", Cue::kPreUnc},
    {"suggesting", Cue::kPreUnc}, {"suggestion", Cue::kPreUnc}, {"could", Cue::kPreUnc},
    {"would", Cue::kPreUnc}, {"concern for", Cue::kPreUnc}, {"concerning for", Cue::kPreUnc},
    {"worrisome for", Cue::kPreUnc}, {"cannot exclude", Cue::kPreUnc}, {"can not exclude", Cue::kPreUnc},
    {"cannot rule out", Cue::kPreUnc}, {"can not rule out", Cue::kPreUnc}, {"not rule out", Cue::kPreUnc},
    {"cannot be excluded", Cue::kPostUnc}, {"can not be excluded", Cue::kPostUnc},
    {"difficult to exclude", Cue::kPreUnc}, {"rule out", Cue::kPreUnc}, {"differential", Cue::kPreUnc},
    {"versus", Cue::kPreUnc}, {"vs", Cue::kPreUnc}, {"versus", Cue::kPostUnc}, {"vs", Cue::kPostUnc}, {"equivocal", Cue::kPreUnc},
    {"indeterminate", Cue::kPreUnc}, {"presumed", Cue::kPreUnc}, {"presumably", Cue::kPreUnc},
    {"perhaps", Cue::kPreUnc}, {"uncertain", Cue::kPreUnc}, {"correlation for", Cue::kPreUnc},
    {"recommend", Cue::kPreUnc}, {"recommended", Cue::kPreUnc}, {"evaluate for", Cue::kPreUnc},
    {"evaluation for", Cue::kPreUnc}, {"assess for", Cue::kPreUnc}, {"consideration", Cue::kPreUnc},
    {"would be a consideration", Cue::kPostUnc}, {"is a consideration", Cue::kPostUnc}, {"not excluded", Cue::kPostUnc},
    {"be excluded", Cue::kPostUnc}, {"not ruled out", Cue::kPostUnc}, {"cannot be ruled out", Cue::kPostUnc},
    {"not be ruled out", Cue::kPostUnc}, {"not entirely excluded", Cue::kPostUnc},
    {"is possible", Cue::kPostUnc}, {"are possible", Cue::kPostUnc}, {"is suspected", Cue::kPostUnc},
    {"is questioned", Cue::kPostUnc}, {"not completely excluded", Cue::kPostUnc},
    {"difficult to exclude", Cue::kPostUnc}, {"is not excluded", Cue::kPostUnc},
    {"difficult to entirely exclude", Cue::kPostUnc}, {"difficult to completely exclude", Cue::kPostUnc},
};

struct CueTable {
  // first word -> (words, kind), longest first; the same phrase may be pre and post.
  std::unordered_map<std::string, std::vector<std::pair<std::vector<std::string>, Cue>>> by_first;
  CueTable() {
    for (const auto& c : kCues) {
      std::vector<std::string> w;
      std::string cur;
      for (const char* p = c.phrase;; ++p) {
        if (*p == ' ' || *p == 0) {
          if (!cur.empty()) w.push_back(report_normalize_word(cur));
          cur.clear();
          if (*p == 0) break;
        } else {
          cur.push_back(*p);
        }
      }
      by_first[w[0]].push_back({w, c.kind});
    }
    for (auto& kv : by_first)
      std::stable_sort(kv.second.begin(), kv.second.end(),
                       [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  }
};

const CueTable& cue_table() {
  static const CueTable t;
  return t;
}

bool is_breaker_word(const std::string& w) {
  return w == "but" || w == "however" || w == "although" || w == "though" || w == "except" || w == "aside" ||
         w == "apart" || w == "which" || w == "whereas" || w == "there" || w == "otherwise";
}

// A found cue: token range and kinds (a phrase like "resolved" is both pre and post).
struct FoundCue {
  int first, last;
  bool pre_neg = false, post_neg = false, pre_unc = false, post_unc = false, pseudo = false;
};

std::vector<FoundCue> find_cues(const std::vector<ReportToken>& tokens) {
  const auto& table = cue_table();
  std::vector<FoundCue> out;
  const int n = int(tokens.size());
  for (int i = 0; i < n;) {
    auto it = table.by_first.find(tokens[size_t(i)].norm);
    if (it == table.by_first.end()) {
      ++i;
      continue;
    }
    int best = 0;
    FoundCue fc{i, i};
    for (const auto& [words, kind] : it->second) {
      int L = int(words.size());
      if (L < best || i + L > n) continue;
      bool ok = true;
      for (int k = 1; k < L && ok; ++k) ok = tokens[size_t(i + k)].norm == words[size_t(k)];
      if (!ok) continue;
      if (L > best) fc = FoundCue{i, i + L};
      best = L;
      switch (kind) {
        case Cue::kPreNeg: fc.pre_neg = true; break;
        case Cue::kPostNeg: fc.post_neg = true; break;
        case Cue::kPreUnc: fc.pre_unc = true; break;
        case Cue::kPostUnc: fc.post_unc = true; break;
        case Cue::kPseudo: fc.pseudo = true; break;
      }
    }
    if (best == 0) {
      ++i;
      continue;
    }
    out.push_back(fc);
    i += best;
  }
  return out;
}

}  // namespace

bool is_clause_break(const ReportToken& t) {
  return (t.punct && (t.word == ";" || t.word == ":" || t.word == "(" || t.word == ")")) || is_breaker_word(t.norm);
}

std::vector<MentionStatus> mention_status(const std::vector<ReportToken>& tokens,
                                          const std::vector<ObservationMention>& mentions, NegationMode mode) {
  std::vector<MentionStatus> out(mentions.size(), MentionStatus::kPresent);
  if (mode == NegationMode::kKeyword) return out;
  if (mode == NegationMode::kSimpleNegation) {
    for (size_t m = 0; m < mentions.size(); ++m)
      for (int i = 0; i < mentions[m].first; ++i) {
        const auto& w = tokens[size_t(i)].norm;
        if (w == "no" || w == "not" || w == "without" || w == "negative") out[m] = MentionStatus::kAbsent;
      }
    return out;
  }
  const auto cues = find_cues(tokens);
  const int n = int(tokens.size());
  // Counts over token prefixes, so that whether a cue's scope reaches a mention is O(1): a
  // sentence of n tokens has O(n) cues and mentions, and walking every cue-to-mention span was
  // O(n^3) (triplets fuzzer, session 5: a 9 KB run-on sentence took 75 s under ASan).
  std::vector<int> breaks(size_t(n) + 1, 0), withs(size_t(n) + 1, 0), words_before(size_t(n) + 1, 0);
  std::vector<int> cue_at(size_t(n), -1);  // the last cue starting at token i, as the scan below found it
  for (int i = 0; i < n; ++i) {
    const ReportToken& t = tokens[size_t(i)];
    breaks[size_t(i) + 1] = breaks[size_t(i)] + (is_clause_break(t) ? 1 : 0);
    withs[size_t(i) + 1] = withs[size_t(i)] + (t.norm == "with" ? 1 : 0);
    words_before[size_t(i) + 1] = words_before[size_t(i)] + (t.punct ? 0 : 1);
  }
  for (size_t k = 0; k < cues.size(); ++k)
    if (cues[k].first >= 0 && cues[k].first < n) cue_at[size_t(cues[k].first)] = int(k);
  auto count = [](const std::vector<int>& prefix, int from, int to) {  // over tokens [from, to)
    return to > from ? prefix[size_t(to)] - prefix[size_t(from)] : 0;
  };
  for (size_t m = 0; m < mentions.size(); ++m) {
    const auto& mn = mentions[m];
    bool neg = false, unc = false;
    // Pre-cues: the nearest cues before the mention whose scope reaches it.
    for (const auto& c : cues) {
      if (c.last > mn.first || !(c.pre_neg || c.pre_unc || c.pseudo)) continue;
      // Scope from c.last to mn.first: no breaker, no later cue, at most kReportScopeWords words;
      // after a negation no "with" past the cue ("no X with Y").
      const bool reaches = count(breaks, c.last, mn.first) == 0 &&
                           !(c.pre_neg && count(withs, c.last + 1, mn.first) > 0) &&
                           count(words_before, c.last, mn.first) <= kReportScopeWords;
      if (!reaches) continue;
      if (c.pseudo) continue;  // "no change in X": the cue's own "no" negates nothing
      if (c.pre_unc) unc = true;
      if (c.pre_neg) neg = true;
    }
    // Post-cues: within 8 words after the mention, same clause ("infiltrates and venous
    // engorgement have resolved" reaches both findings).
    int words = 0;
    bool comma = false;
    for (int i = mn.last; i < n && words <= 8; ++i) {
      if (is_clause_break(tokens[size_t(i)])) break;
      if (tokens[size_t(i)].word == ",") comma = true;
      const FoundCue* hit = cue_at[size_t(i)] >= 0 ? &cues[size_t(cue_at[size_t(i)])] : nullptr;
      // "... within normal limits" negates only a finding just before it ("vascular engorgement
      // appear within limits of normal"), not one a sentence back.
      if (hit && hit->post_neg && tokens[size_t(i)].norm == "within" && (words > 3 || comma)) hit = nullptr;
      // Past a comma only uncertainty reaches back over a list ("crowding, infiltrates, edema
      // difficult to exclude"); a post-negation stays with its own item.
      if (hit && comma && !hit->post_unc) hit = nullptr;
      if (hit && (hit->post_neg || hit->post_unc)) {
        const std::string& w = tokens[size_t(i)].norm;
        bool one = hit->last - hit->first == 1;
        if (hit->post_unc) unc = true;
        if (hit->post_neg && !hit->pre_neg) neg = true;
        if (hit->post_neg && one && w == "resolved") neg = true;  // "the effusion resolved"
        // A bare "not" after the finding counts at the end of the clause ("effusion is not");
        // before more words it is the pre-cue of what follows ("... is not enlarged").
        if (hit->post_neg && one && w == "not" && (i + 1 >= n || tokens[size_t(i + 1)].punct)) neg = true;
        break;
      }
      if (hit && (hit->pre_neg || hit->pre_unc)) break;  // a new scope starts
      if (!tokens[size_t(i)].punct) ++words;
    }
    out[m] = unc ? MentionStatus::kUncertain : neg ? MentionStatus::kAbsent : MentionStatus::kPresent;
  }
  return out;
}

}  // namespace ms
