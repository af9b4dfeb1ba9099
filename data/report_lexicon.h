// defines: stage 2 of report -> triplets: the lexicon. Observation phrases map to the 75
// observation columns of spec §C.1 (model/vocab.h order); anatomy phrases map to the 51
// landmark rows by AGXNet's own rule table (adj_matrix.py l.153-633, matcher l.676-710: a
// base anatomy word, level-1 and level-2 modifiers that must or must not be present, and
// special cases), applied to the set of anatomy words of one phrase ("left lower lobe" ->
// {left, lower, lobe} -> lower_left_lobe). Every observation entry names where it comes from:
//   spec        the §C.1 observation name itself (plural / verb forms folded)
//   agxnet      AGXNet's lemma normalisations (adj_matrix.py l.718-827: "opacification" ->
//               opacity, "infection" -> pneumonia, "nodular" -> nodule, "pacer" -> pacemaker...)
//               and its grouping: any other finding lemma -> tail_abnorm_obs (73), the 25
//               excluded lemmas -> excluded_obs (74)
//   description the observation explanations (PreTrain_MeDSLIP/data_file/observation
//               explanation.json, the pathology book's prompts)
//   reading     our reading of the IU reports with report_id <= 2000 (development half only)
// Words are matched after report_normalize_word (plurals folded); a word of >= 7 letters that
// is no known word and within one edit (insert, delete, substitute, swap) of a lexicon word of
// >= 7 letters is read as that word ("cardiomegally", "atelectsis").
#pragma once
#include <cstdint>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "data/report_sentences.h"

namespace ms {

struct ObservationMention {
  int obs = 0;                // column of the [51,75] matrix
  int first = 0, last = 0;    // token range [first, last)
  const char* source = "";    // the lexicon entry's source tag
};

struct AnatomyMention {
  int anatomy = 0;            // row of the [51,75] matrix (49 unspecified, 50 other)
  int first = 0, last = 0;    // token range [first, last)
};

struct LexiconEntry {
  const char* phrase;  // words, space separated, as written in reports
  const char* obs;     // observation name (§C.1)
  const char* source;  // spec | agxnet | description | reading
};

class ReportLexicon {
 public:
  // The one lexicon (built on first use from the constant tables in report_lexicon.cpp).
  static const ReportLexicon& get();

  // Longest-match observation phrases in order; `typo_fixes` counts words read through the
  // one-edit rule.
  std::vector<ObservationMention> find_observations(const std::vector<ReportToken>& tokens,
                                                    int* typo_fixes = nullptr) const;
  // Anatomy phrases: maximal runs of anatomy words / modifiers (with "the", "of", "sided"...
  // inside), each mapped by AGXNet's rules; unmatched runs holding a base anatomy word -> other.
  std::vector<AnatomyMention> find_anatomies(const std::vector<ReportToken>& tokens) const;
  // AGXNet's landmark for a set of anatomy words (lower case, as written), or -1.
  int landmark_of(const std::vector<std::string>& words) const;

  // The table, for docs and tests.
  static const std::vector<LexiconEntry>& entries();
  // A word of the lexicon (normalised form) within one edit of `norm`, or "" (see above).
  std::string typo_candidate(const std::string& norm) const;

 private:
  ReportLexicon();
  struct Phrase {
    std::vector<std::string> words;  // normalised
    int obs;
    const char* source;
  };
  std::unordered_map<std::string, std::vector<Phrase>> by_first_;  // longest first
  std::unordered_set<std::string> known_;       // every word the extractor knows
  std::vector<std::string> typo_targets_;       // lexicon words of >= 7 letters
  std::unordered_set<std::string> anatomy_words_, modifier_words_, filler_words_;
};

}  // namespace ms
