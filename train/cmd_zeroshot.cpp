// medslip zeroshot: zero-shot classification of a CXR14 / RSNA / synthetic csv (spec §E.1-E.3).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>

#include "train/commands.h"
#include "train/common.h"
#include "train/eval.h"

namespace ms {

int cmd_zeroshot(int argc, char** argv) {
  CLI::App app{"Zero-shot classification (spec E.1-E.3). Runs the pathology stream only; the score of a class is\n"
               "p(class 1) = softmax over the 2 attributes of its pathology query (CXR14: the 14 classes of spec C.6;\n"
               "RSNA: query 20 'pneumonia', DICOMs through the C.7 read path; synthetic: the CXR14-layout csv of\n"
               "`medslip synth`, same map; classes it never draws have one label value and are left out of the\n"
               "means, which the output says). Per class: AUROC (exact, ties as sklearn), max-F1 and ACC at that\n"
               "threshold (score > thr). Writes zeroshot.json (metrics, sha256 of checkpoint, csv and books) and\n"
               "zeroshot_scores.csv (per-image scores and labels, to recompute with sklearn). Evaluation has no\n"
               "randomness (the test transform is deterministic), so there is no --seed.",
               "medslip zeroshot"};
  ZeroshotOptions o;
  bool quiet = false;
  add_model_options(app, o.model);
  app.add_option("--csv", o.csv, "evaluation csv")->required();
  app.add_option("--dataset", o.dataset, "csv layout: cxr14 (17 columns), rsna (ID,img_path,boxes,classes), synthetic")
      ->check(CLI::IsMember({"cxr14", "rsna", "synthetic"}))
      ->capture_default_str();
  app.add_option("--image-root", o.image_root, "folder that relative image paths start from (default: the csv's)");
  app.add_option("--batch", o.batch, "images per forward pass")->capture_default_str();
  app.add_option("--out", o.out_dir, "output folder (default: the checkpoint's folder)");
  app.add_option("--workers", o.workers, "image-decoding threads (0 = on the main thread)")->capture_default_str();
  app.add_flag("--quiet", quiet, "no progress lines");
  MS_PARSE_ARGS(app, argc, argv);
  o.progress = !quiet;
  try {
    run_zeroshot(o);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "medslip zeroshot: error: %s\n", e.what());
    return 1;
  }
}

}  // namespace ms
