// medslip report: one self-contained HTML page of a run folder (train/report.h).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>

#include <filesystem>

#include "train/commands.h"
#include "train/common.h"
#include "train/report.h"

namespace ms {

int cmd_report(int argc, char** argv) {
  CLI::App app{"Writes one self-contained HTML report of a run folder (no network; figures are inline SVG, pictures\n"
               "data: URIs): the loss terms per step and epoch (train and validation), the learning-rate schedule\n"
               "and throughput (metrics.jsonl), attention overlays per epoch (attention/), the per-class ROC curves\n"
               "and AUROC table of the last zero-shot evaluation (zeroshot.json + zeroshot_scores.csv), the grounding\n"
               "metrics and heatmap overlays with their boxes (ground.json), the config and the reproducibility\n"
               "record. Parts whose files are absent are named in a note. Prints the path written.",
               "medslip report"};
  ReportOptions o;
  app.add_option("run", o.run_dir, "run folder (pretrain --out; zeroshot/ground --out)")->required();
  app.add_option("--out", o.out, "HTML file to write (default: RUN/report.html)");
  app.add_option("--max-overlays", o.max_overlays, "grounding overlays shown")->capture_default_str();
  app.add_option("--max-attention-epochs", o.max_attention_epochs, "epochs of attention overlays shown (evenly spaced)")
      ->capture_default_str();
  MS_PARSE_ARGS(app, argc, argv);
  if (!std::filesystem::is_directory(o.run_dir))
    throw UsageError("RUN " + o.run_dir + ": no such folder (a pretrain/zeroshot/ground --out folder)");
  if (o.max_overlays < 0 || o.max_attention_epochs < 1)
    throw UsageError("--max-overlays must be >= 0 and --max-attention-epochs >= 1");
  try {
    ReportResult r = write_report(o);
    for (const auto& n : r.notes) std::printf("note: %s\n", n.c_str());
    std::printf("report: %zu figures, %d pictures, %.0f KB -> %s\n", r.figures.size(), r.images, double(r.bytes) / 1024,
                r.path.c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "medslip report: error: %s\n", e.what());
    return 1;
  }
}

}  // namespace ms
