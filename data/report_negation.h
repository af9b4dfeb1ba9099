// defines: stage 3 of report -> triplets: is a mention present, absent or uncertain? Cue
// phrases in the style of NegBio and the CheXpert labeler, without a parser:
//   pre-negation   "no", "not", "without", "free of", "negative for", "absence of",
//                  "resolution of", "resolved", "clear of", "rather than", "removal of", ...
//   post-negation  "... is not seen / identified / present", "... has resolved", "... removed"
//   pre-uncertain  "may", "possible", "probable", "likely", "questionable", "suspicious for",
//                  "suggest", "could represent", "concern for", "cannot exclude", "versus",
//                  "recommend", "correlation for", "evaluate for" (a request, not a finding), ...
//   post-uncertain "... cannot be excluded", "... is not excluded", "... not ruled out", ...
//   pseudo         "no change in", "no interval change", "not changed", "without change",
//                  "no significant change", "no increase": consumed so that their "no"/"not"
//                  negates nothing ("no change in the cardiomegaly" -> cardiomegaly present)
// A pre-cue reaches forward over at most kReportScopeWords words and stops at a scope
// breaker: ';' ':' "but" "however" "although" "though" "except" "aside" "apart" "which"
// "whereas" "there" or a new cue. A post-cue looks back over at most 6 words inside the same
// clause. Uncertainty wins over negation when both reach a mention (CheXpert's order).
// Uncertain mentions are left out of the matrix (stay -1), as the reference does with
// RadGraph's OBS-U (spec §C.1).
#pragma once
#include <vector>

#include "data/report_lexicon.h"
#include "data/report_sentences.h"

namespace ms {

enum class MentionStatus { kPresent = 1, kAbsent = 0, kUncertain = -1 };

// The stages, for the evaluation table: kKeyword marks every mention present; kSimpleNegation
// is the one-line rule "absent if 'no', 'not', 'without' or 'negative' appears earlier in the
// sentence"; kFull is the cue engine above.
enum class NegationMode { kKeyword, kSimpleNegation, kFull };

constexpr int kReportScopeWords = 20;

std::vector<MentionStatus> mention_status(const std::vector<ReportToken>& tokens,
                                          const std::vector<ObservationMention>& mentions,
                                          NegationMode mode = NegationMode::kFull);

// Token indices that end a clause (for anatomy attachment in report_triplets.cpp too).
bool is_clause_break(const ReportToken& t);

}  // namespace ms
