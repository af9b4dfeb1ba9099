// medslip triplets: free-text reports (csv) -> the pretraining files of spec §C.1
// (data/report_triplets.h), optionally scored against MeSH terms (data/report_eval.h).
#include <CLI/CLI.hpp>

#include <cstdio>

#include "data/report_triplets.h"
#include "model/vocab.h"
#include "train/commands.h"
#include "train/common.h"

namespace ms {

int cmd_triplets(int argc, char** argv) {
  CLI::App app{"Turn free-text radiology reports (csv) into the pretraining matrix: landmark_observation_adj_mtx.npy "
               "[N,51,75] (1 present, 0 absent, -1 unmentioned), train/valid/test.json keyed by image with labels_id, "
               "and triplets.jsonl (each anatomy, observation, exists with its sentence and span)",
               "medslip triplets"};
  TripletsOptions o;
  std::string columns, mode = "full", explain;
  app.add_option("--explain", explain, "print the triplets of this text and exit (no csv needed)");
  app.add_option("--reports", o.reports_csv, "reports csv (header row; quoted fields may hold commas/newlines)");
  app.add_option("--text-columns", columns, "comma-separated report text columns, e.g. findings,impression");
  app.add_option("--id-column", o.id_column, "report id column (unique)");
  app.add_option("--image-column", o.image_column,
                 "column of image ids, several separated by '|' (each becomes a json key sharing its report's row); "
                 "without it the json is keyed by report id");
  app.add_option("--image-template", o.image_template,
                 "json key of an image: '{}' is replaced by the id, e.g. 'images/{}.png'")
      ->capture_default_str();
  app.add_option("--out", o.out_dir, "output folder (created)");
  app.add_option("--seed", o.seed, "seed of the train/valid/test split (by report)")->capture_default_str();
  app.add_option("--valid-frac", o.valid_frac, "share of reports in valid.json")->capture_default_str();
  app.add_option("--test-frac", o.test_frac, "share of reports in test.json")->capture_default_str();
  app.add_option("--mode", mode, "extraction: full (negation + uncertainty cues), negation-1line, keyword")
      ->check(CLI::IsMember({"full", "negation-1line", "keyword"}))
      ->capture_default_str();
  app.add_option("--mesh-table", o.mesh_table,
                 "score against MeSH terms with this table (data/report_mesh.tsv): writes eval.json, eval.md");
  app.add_option("--mesh-column", o.mesh_column, "csv column of the MeSH terms")->capture_default_str();
  app.add_option("--heldout-above", o.heldout_above,
                 "with --mesh-table: reports with numeric id > this are the held-out set (the rest: development)");
  MS_PARSE_ARGS(app, argc, argv);
  o.mode = mode == "keyword" ? NegationMode::kKeyword
           : mode == "negation-1line" ? NegationMode::kSimpleNegation
                                       : NegationMode::kFull;
  if (!explain.empty()) {
    ReportExtraction ex = extract_report({{"text", explain}}, o.mode);
    for (const auto& t : ex.triplets)
      std::printf("%-18s %-16s %2d  \"%s\"  (%s)\n", kAnatomies[size_t(t.anatomy)], kObservations[size_t(t.obs)],
                  t.exists, explain.substr(size_t(t.begin), size_t(t.end - t.begin)).c_str(), t.source);
    if (ex.triplets.empty()) std::printf("(no triplets)\n");
    return 0;
  }
  for (const char* req : {"--reports", "--text-columns", "--id-column", "--out"})
    if (app.count(req) == 0) throw UsageError(std::string(req) + " is required (or use --explain TEXT)");
  if (o.valid_frac < 0 || o.test_frac < 0 || o.valid_frac + o.test_frac >= 1)
    throw UsageError("--valid-frac + --test-frac must lie in [0, 1), got " + std::to_string(o.valid_frac) + " + " +
                     std::to_string(o.test_frac));
  std::string cur;
  for (char c : columns + ",") {
    if (c == ',') {
      if (!cur.empty()) o.text_columns.push_back(cur);
      cur.clear();
    } else if (c != ' ') {
      cur.push_back(c);
    }
  }
  TripletsSummary s = write_report_triplets(o);
  std::printf("%lld reports -> %lld images (train %lld, valid %lld, test %lld) in %s\n",
              static_cast<long long>(s.n_reports), static_cast<long long>(s.n_images),
              static_cast<long long>(s.n_train), static_cast<long long>(s.n_valid), static_cast<long long>(s.n_test),
              o.out_dir.c_str());
  std::printf("triplets: %lld (present %lld, absent %lld, uncertain %lld, left out of the matrix); "
              "reports with none: %lld; typo-corrected words: %lld\n",
              static_cast<long long>(s.n_triplets), static_cast<long long>(s.n_present),
              static_cast<long long>(s.n_absent), static_cast<long long>(s.n_uncertain),
              static_cast<long long>(s.n_empty), static_cast<long long>(s.typo_fixes));
  std::printf("extraction: %.3f s, %.0f reports/s (one core)\n", s.seconds,
              s.seconds > 0 ? double(s.n_reports) / s.seconds : 0.0);
  if (!s.eval_text.empty()) std::printf("\n%s", s.eval_text.c_str());
  return 0;
}

}  // namespace ms
