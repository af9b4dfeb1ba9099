// medslip ground: zero-shot grounding on an RSNA-layout csv (spec §E.4, §H.10).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>

#include "train/commands.h"
#include "train/common.h"
#include "train/eval.h"

namespace ms {

int cmd_ground(int argc, char** argv) {
  CLI::App app{
      "Zero-shot grounding (spec E.4) with the pretraining model (masked split, pathology_embedding_layer; not\n"
      "the grounding sample's variant). A_p = mean of the decoder layers' cross-attention [B,75,P]; the map is\n"
      "A_p[:,query,:] (optionally x mean_a A_a), divided by its max, reshaped to sqrt(P) x sqrt(P) and\n"
      "nearest-upsampled to the seg map; on positive images: pointing game (printed beside its chance level,\n"
      "the mean share of pixels in the boxes), IoU and Dice of map > threshold. Writes ground.json with the\n"
      "sha256 of checkpoint, csv and books.\n"
      "--normalize image (default) divides each map by its own max. The reference divides by the max over a\n"
      "batch of 64 mixed positive/negative images, so an image's IoU/Dice depend on its batch-mates;\n"
      "--normalize batch reproduces that (all rows in csv order, --batch 64). The pointing game is the same\n"
      "either way. Threshold: 0.01 with --anatomy-product, else 0, which marks every pixel (attention weights\n"
      "are positive): IoU/Dice are then degenerate, pass --threshold to compare.\n"
      "Query: 20 'pneumonia' for both datasets (the synthetic set labels pneumonia at exactly its\n"
      "consolidations, which are its RSNA positives). No randomness, so no --seed.",
      "medslip ground"};
  GroundOptions o;
  std::string norm = "image";
  bool quiet = false;
  add_model_options(app, o.model);
  app.add_option("--csv", o.csv, "RSNA-layout csv: ID,img_path,boxes (x;y;w;h|... on 1024x1024),classes")->required();
  app.add_option("--dataset", o.dataset, "rsna (DICOMs through the C.7 read path) or synthetic")
      ->check(CLI::IsMember({"rsna", "synthetic"}))
      ->capture_default_str();
  app.add_option("--query", o.query, "pathology query index 0..74 (default 20, pneumonia)");
  app.add_flag("--anatomy-product", o.anatomy_product, "multiply the map by the mean anatomy attention (E.4 step 3)");
  app.add_option("--threshold", o.threshold,
                 "IoU/Dice threshold on the normalised map (default 0.01 with the product, else 0)");
  app.add_option("--normalize", norm, "image (each map by its max) or batch (by the batch max, as the reference)")
      ->check(CLI::IsMember({"image", "batch"}))
      ->capture_default_str();
  app.add_option("--save-heatmaps", o.heatmap_dir,
                 "write ROW_ID_hit|miss.png per positive image here: the radiograph in grey, the map in jet colours\n"
                 "(its min blue .. its max dark red), the boxes white, the pointing-game maximum a magenta cross");
  app.add_option("--image-root", o.image_root, "folder that relative image paths start from (default: the csv's)");
  app.add_option("--batch", o.batch, "images per forward pass (and per normalisation batch)")->capture_default_str();
  app.add_option("--out", o.out_dir, "output folder for ground.json (default: the checkpoint's folder)");
  app.add_option("--workers", o.workers, "image-decoding threads (0 = on the main thread)")->capture_default_str();
  app.add_flag("--quiet", quiet, "no progress lines");
  MS_PARSE_ARGS(app, argc, argv);
  o.norm = norm == "batch" ? HeatmapNorm::per_batch : HeatmapNorm::per_image;
  o.progress = !quiet;
  try {
    run_ground(o);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "medslip ground: error: %s\n", e.what());
    return 1;
  }
}

}  // namespace ms
