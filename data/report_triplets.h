// defines: free-text radiology reports -> the [51,75] anatomy x observation matrix of spec
// §C.1 (1 present, 0 absent, -1 unmentioned), in-process, instead of RadGraph + AGXNet's
// scripts. The stages, one file each:
//   report_sentences  UTF-8 check, sentences, tokens with character spans, XXXX tokens
//   report_lexicon    75 observations / 51 anatomies: phrases, plurals, typos, AGXNet's rules
//   report_negation   present / absent / uncertain (NegBio / CheXpert-style cues)
//   report_triplets   anatomy attachment, the matrix, and the dataset writer (this file)
// Anatomy attachment, per clause (a sentence cut at ';' ':' "but" "however" ...): an anatomy
// phrase belongs to the observation it is joined to without another finding, "and", "or" or
// ',' between ("opacity in the right upper lobe and nodule in the left base"); otherwise to
// the nearest observation of the clause. An observation with no anatomy of its own takes the
// one of a finding joined to it by "and" or adjacent to it ("left base opacity and
// atelectasis", "calcified lingular granuloma"; not a ',' / "or" list), else
// "unspecified" — what AGXNet assigns to an observation without a located_at relation
// (radgraph_parsed.py). Matrix rule of adj_matrix.py l.636-673: present sets 1, absent sets
// max(current, 0), uncertain is left out.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/report_negation.h"

namespace ms {

struct ReportField {
  std::string name;  // column name, e.g. "findings"
  std::string text;
};

struct ReportTriplet {
  int anatomy = 0, obs = 0;
  int exists = 1;              // 1 present, 0 absent, -1 uncertain (not written to the matrix)
  int field = 0;               // index into the fields given to extract_report
  int begin = 0, end = 0;      // the observation phrase: byte span in that field's text
  int sentence_begin = 0, sentence_end = 0;
  const char* source = "";     // lexicon source tag of the observation phrase
};

struct ReportExtraction {
  std::vector<ReportTriplet> triplets;
  std::vector<float> matrix;   // [51,75] row-major (anatomy-major)
  int typo_fixes = 0;
};

ReportExtraction extract_report(const std::vector<ReportField>& fields, NegationMode mode = NegationMode::kFull);

// The matrix of one sentence-level string (tests): extract_report on one field.
std::vector<float> report_matrix(const std::string& text, NegationMode mode = NegationMode::kFull);

// A plain-words report of a matrix, one sentence per cell that is 1 or 0 ("There is effusion
// in the right pleural space." / "There is no nodule."), in row-major order; -1 cells are not
// mentioned. report_matrix(matrix_report(M)) == M for every matrix (tests: the synthetic
// phantoms' matrices, data/synth.h).
std::string matrix_report(const std::vector<float>& matrix);

// ---- the dataset writer (medslip triplets) -----------------------------------------------

struct TripletsOptions {
  std::string reports_csv;
  std::vector<std::string> text_columns;  // e.g. {"findings", "impression"}
  std::string id_column;
  std::string image_column;              // optional: "|"-separated image ids per report
  std::string image_template = "{}";     // json key of an image: "{}" replaced by the id
  std::string out_dir;
  uint64_t seed = 0;
  double valid_frac = 0.1, test_frac = 0.1;
  NegationMode mode = NegationMode::kFull;
  // Evaluation against MeSH terms (optional): table path, csv column, held-out rule.
  std::string mesh_table;
  std::string mesh_column = "mesh_major";
  int64_t heldout_above = -1;  // reports whose numeric id is > this are the held-out set
};

struct TripletsSummary {
  int64_t n_reports = 0, n_images = 0, n_train = 0, n_valid = 0, n_test = 0;  // train/valid/test: json keys
  int64_t n_empty = 0;        // reports that gave no triplet
  int64_t n_triplets = 0, n_present = 0, n_absent = 0, n_uncertain = 0, typo_fixes = 0;
  double seconds = 0;         // extraction only (no file writing)
  std::string eval_text;      // the evaluation table (when mesh_table is set)
};

// Reads the csv, extracts every report and writes into out_dir: landmark_observation_adj_mtx.npy
// (float64 [N,51,75], row i = i-th report of the csv), train.json / valid.json / test.json
// ({"<image>": {"labels_id": i, "report": "<id>"}}; reports are split, their images follow),
// triplets.jsonl (one line per report) and, with a MeSH table, eval.json + eval.md.
// Throws naming the file, row and column for: a missing column, an empty file, a non-UTF-8
// field, a duplicate or empty report id.
TripletsSummary write_report_triplets(const TripletsOptions& options);

}  // namespace ms
