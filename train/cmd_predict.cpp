// medslip predict: the 75 observation probabilities of one or more images, where the top
// findings look (the anatomy whose attention overlaps theirs most) and a heatmap overlay.
#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>
#include <vector>

#include "model/vocab.h"
#include "engine/rng.h"
#include "engine/threads.h"
#include "train/commands.h"
#include "train/common.h"
#include "train/eval.h"

namespace ms {

namespace {
// OUT.png -> OUT_2.png for the 2nd of several images.
std::string indexed_path(const std::string& path, size_t i, size_t n) {
  if (n <= 1) return path;
  std::filesystem::path p(path);
  return (p.parent_path() / (p.stem().string() + "_" + std::to_string(i + 1) + p.extension().string())).string();
}
}  // namespace

int cmd_predict(int argc, char** argv) {
  CLI::App app{"Run MeDSLIP on images: the existence probability of each of the 75 observations (both streams, most\n"
               "probable first) and, for the top K, the anatomy with the highest attention overlap\n"
               "argmax_a <A_p[q], A_a[a]> (A = decoder-layer mean of the cross-attention). --heatmap writes the\n"
               "overlay of the top finding's attention (with several images, OUT_1.png, OUT_2.png, ...). An image\n"
               "that cannot be read is reported on stderr and the others still run; the exit code is then 1.\n"
               "No randomness (test transform), so no --seed.",
               "medslip predict"};
  EvalModelOptions m;
  std::vector<std::string> images;
  std::string heatmap, dicom = "display";
  int top = 5;
  add_model_options(app, m);
  app.add_option("images", images, "image files (PNG, JPEG, BMP, DICOM)")->required();
  app.add_option("--heatmap", heatmap, "write the top finding's attention overlay to this PNG");
  app.add_option("--top", top, "findings to locate (anatomy column)")->check(CLI::Range(0, 75))->capture_default_str();
  app.add_option("--dicom", dicom, "DICOM read path: display (VOI window) or rsna (spec C.7)")
      ->check(CLI::IsMember({"display", "rsna"}))
      ->capture_default_str();
  MS_PARSE_ARGS(app, argc, argv);
  const DicomMode mode = dicom == "rsna" ? DicomMode::kRsna : DicomMode::kDisplay;

  struct RestoreThreads {  // callable from tests: leave the thread count as found
    int prev = num_threads();
    ~RestoreThreads() { set_num_threads(prev); }
  } restore_threads;
  InferenceModel im;
  Device dev = Device::CPU;
  try {
    if (m.threads < 0) throw UsageError("--threads must be >= 0");
    if (m.threads > 0) set_num_threads(m.threads);
    dev = select_device(m.device, m.tf32);
    for (const std::string* f : {&m.checkpoint, &m.books})
      if (!std::filesystem::is_regular_file(*f)) throw std::runtime_error(*f + ": no such file");
    im = load_inference_model(m.checkpoint, m.books, m.config, dev, m.strict);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "medslip predict: error: %s\n", e.what());
    return 1;
  }
  const int S = im.cfg.image_res;
  ImageFn load = test_image_fn(S, mode);
  int failed = 0;
  for (size_t i = 0; i < images.size(); ++i) {
    const std::string& path = images[i];
    try {
      Rng rng(0, 0);  // the test transform draws nothing
      Prediction p = predict_image(*im.model, load(path, rng), S, top, dev);
      fmt::print("image {}/{}: {}\n  {:>4}  {:<16} {:>10}  {}\n", i + 1, images.size(), path, "rank", "observation",
                 "p(present)", "anatomy (max attention overlap)");
      for (size_t k = 0; k < p.findings.size(); ++k) {
        const PredictFinding& f = p.findings[k];
        fmt::print("  {:>4}  {:<16} {:>10.4f}  {}\n", k + 1, kObservations[size_t(f.query)], f.probability,
                   f.anatomy >= 0 ? fmt::format("{} ({:.4f})", kAnatomies[size_t(f.anatomy)], f.overlap) : "");
      }
      if (!heatmap.empty()) {
        std::vector<float> map = p.top_map;
        normalise_heatmaps(map, 1, HeatmapNorm::per_image);
        ReadOptions ro;
        ro.keep_grey = true;
        ro.dicom = mode;
        const std::string out = indexed_path(heatmap, i, images.size());
        write_png(out, heatmap_overlay(read_image(path, ro), map, p.grid));
        fmt::print("  heatmap of '{}': {}\n", kObservations[size_t(p.findings[0].query)], out);
      }
      std::fflush(stdout);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "medslip predict: error: %s\n", e.what());
      ++failed;
    }
  }
  if (failed) std::fprintf(stderr, "medslip predict: %d of %zu images failed\n", failed, images.size());
  return failed ? 1 : 0;
}

}  // namespace ms
