// defines: the run report behind `medslip report RUN`: one self-contained HTML file (no network,
// figures as inline SVG, pictures as data: URIs) built from what the commands leave in a run folder:
//   reproducibility.json, config.yaml   the config and the reproducibility record (pretrain)
//   metrics.jsonl                       loss terms per step and epoch (train + validation), lr, images/s
//   attention/epoch*_*.png              attention overlays on fixed validation images (pretrain)
//   zeroshot.json, zeroshot_scores.csv  AUROC table and per-class ROC curves (zeroshot)
//   ground.json (+ its overlay PNGs)    pointing game / IoU / Dice and heatmap overlays with boxes (ground)
//   valid.jsonl, test/metrics.json,     fine-tuning: validation metric per epoch, the test's AUROC table and
//   test/predictions.csv, test/masks,   ROC curves (classify) or Dice / IoU and predicted masks beside the
//   test/overlays                       truth (segment)
// A part whose files are absent becomes a short note saying which command makes it.
#pragma once
#include <string>
#include <vector>

namespace ms {

struct ReportOptions {
  std::string run_dir;
  std::string out;            // default: RUN/report.html
  int max_overlays = 8;       // grounding overlays shown (hits and misses alternately)
  int max_attention_epochs = 6;
};

struct ReportResult {
  std::string path;                 // the HTML written (empty from render_report)
  std::vector<std::string> figures;  // titles of the SVG figures, in page order
  int images = 0;                   // inlined pictures
  std::vector<std::string> notes;   // the parts left out and why
  size_t bytes = 0;
};

// The HTML text; fills `info` (figures, images, notes).
std::string render_report(const ReportOptions& opt, ReportResult* info = nullptr);
// render_report written to opt.out (default RUN/report.html).
ReportResult write_report(const ReportOptions& opt);

// Standard base64 (RFC 4648, with padding), for data: URIs.
std::string base64_encode(const std::string& bytes);

}  // namespace ms
