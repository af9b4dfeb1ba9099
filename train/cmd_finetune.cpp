// medslip finetune / finetune-eval: fine-tuning the MeDSLIP trunk on a labelled set (spec E.5,
// E.6) and evaluating a fine-tuned checkpoint on any csv of that layout.
#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <cstdio>
#include <filesystem>
#include <sstream>

#include "engine/io.h"
#include "engine/threads.h"
#include "engine/nn_state.h"
#include "train/commands.h"
#include "train/common.h"
#include "train/finetune.h"
#include "train/hash.h"
#include "train/metrics.h"
#include "weights/state_dict.h"

namespace ms {

static std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string t;
  while (std::getline(ss, t, ','))
    if (!t.empty()) out.push_back(t);
  return out;
}

int cmd_finetune(int argc, char** argv) {
  CLI::App app{"Fine-tune the MeDSLIP trunk on a labelled set (spec E.5/E.6): task classify (ModelRes_ft, BCE) or\n"
               "segment (ModelResUNet_ft, DiceBCE), AdamW with the reference's (constant 1e-5) schedule, validation each\n"
               "epoch (the best checkpoint is chosen on the validation split), one test at the end. Writes to --out:\n"
               "config.yaml, metrics.jsonl, checkpoint_last.safetensors (+ optimizer_step*.safetensors),\n"
               "checkpoint_best.safetensors, reproducibility.json, test/ (metrics.json, predictions.csv, PNGs).\n"
               "Ctrl-C saves a checkpoint and stops; --resume continues with bit-identical losses.",
               "medslip finetune"};
  RunCli f;
  add_run_flags(app, f, "config YAML (task, data, recipe; see README)");
  std::string init, init_encoder, export_init;
  app.add_option("--init", init, "MeDSLIP checkpoint to start from (.safetensors, .pth, .bin): tensors with equal names load");
  app.add_option("--init-encoder", init_encoder, "a torchvision ResNet state_dict for the encoder (the reference's ImageNet base)");
  app.add_option("--export-init", export_init, "write the initialised weights (after --init) to this file and stop");
  MS_PARSE_ARGS(app, argc, argv);
  if (!f.resume.empty() && (!init.empty() || !init_encoder.empty()))
    throw UsageError("--resume continues a run: --init / --init-encoder apply only to a new one");
  FinetuneOptions o;
  std::unique_ptr<Communicator> comm = start_run(f, o);
  o.config_path = f.config;
  o.cfg = FinetuneConfig::from_yaml(f.config);
  if (o.comm->is_root())
    for (const auto& w : o.cfg.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
  if (f.seed >= 0) o.cfg.seed = f.seed;
  o.init = init;
  o.init_encoder = init_encoder;
  o.export_init = export_init;
  run_finetune(o);
  return 0;
}

int cmd_finetune_eval(int argc, char** argv) {
  CLI::App app{"Evaluate a fine-tuned checkpoint on a csv: classification AUROC / max-F1 / ACC per label column (spec\n"
               "E.2), segmentation Dice (empty-mask rule) and mIoU (+1 smoothing) as the reference's metric.py. Task,\n"
               "backbone and input size come from the checkpoint's metadata (ours), or from --task/--arch/--image-res\n"
               "(an official fine-tuned checkpoint). Images of any size are resized by the test transform (masks\n"
               "nearest). Writes --out/metrics.json, predictions.csv and, for segmentation, masks/ and overlays/.",
               "medslip finetune-eval"};
  std::string checkpoint, csv, image_root, label_columns, mask_column, out, task, arch, device = "cpu";
  std::string split_column, split;
  bool tf32 = false, file_name_only = false;
  int threads = 0, image_res = 0, batch_size = 32, samples = 8, num_classes = 0;
  app.add_option("--checkpoint", checkpoint, "fine-tuned weights (ours: .safetensors with metadata; or an official .pth)")
      ->required()->check(CLI::ExistingFile);
  app.add_option("--csv", csv, "csv with image_path and label columns or a mask column")->required()->check(CLI::ExistingFile);
  app.add_option("--image-root", image_root, "folder relative image (and mask) paths start from (default: the csv's folder)");
  app.add_option("--label-columns", label_columns, "comma-separated 0/1 label columns (classification; default: the checkpoint's)");
  app.add_option("--mask-column", mask_column, "mask column (segmentation; default: the checkpoint's)");
  app.add_option("--split-column", split_column, "keep only rows whose column has the value --split");
  app.add_option("--split", split, "the value of --split-column to keep");
  app.add_flag("--file-name-only", file_name_only, "join only the file name of each path to the roots (the reference's layout)");
  app.add_option("--out", out, "folder for metrics.json and the per-image outputs");
  app.add_option("--task", task, "classify | segment (checkpoints without our metadata)");
  app.add_option("--arch", arch, "resnet50 | resnet18 (checkpoints without our metadata)");
  app.add_option("--image-res", image_res, "input size (default: the checkpoint's, else 224)");
  app.add_option("--num-classes", num_classes, "classification outputs (checkpoints without our metadata; default 1)");
  app.add_option("--batch-size", batch_size, "evaluation batch size");
  app.add_option("--samples", samples, "segmentation: mask PNGs + overlays for this many images");
  add_device_options(app, device, tf32);
  app.add_option("--threads", threads, "threads");
  MS_PARSE_ARGS(app, argc, argv);
  if (threads > 0) set_num_threads(threads);
  if (!label_columns.empty() && !mask_column.empty())
    throw UsageError("give --label-columns or --mask-column, not both");

  FinetuneConfig cfg;
  std::map<std::string, std::string> meta;
  if (checkpoint.size() > 12 && checkpoint.substr(checkpoint.size() - 12) == ".safetensors") meta = safetensors_metadata(checkpoint);
  if (meta.count("finetune_config")) {
    cfg = FinetuneConfig::from_yaml_string(meta["finetune_config"], checkpoint + " (metadata)");
  } else {
    if (task.empty()) throw std::runtime_error(checkpoint + ": no fine-tuning metadata; give --task classify|segment");
    cfg.task = task;
    cfg.res_base_model = arch.empty() ? "resnet50" : arch;
    cfg.label_columns.clear();
    if (num_classes > 1)
      for (int k = 0; k < num_classes; ++k) cfg.label_columns.push_back("class" + std::to_string(k));
  }
  if (!task.empty() && task != cfg.task)
    throw std::runtime_error(checkpoint + ": the checkpoint is a '" + cfg.task + "' model, not '" + task + "'");
  if (!arch.empty()) cfg.res_base_model = arch;
  if (image_res > 0) cfg.image_res = image_res;
  const int64_t K = cfg.model_config().num_classes;
  if (!label_columns.empty()) cfg.label_columns = split_commas(label_columns);
  if (!mask_column.empty()) {
    cfg.mask_column = mask_column;
    if (label_columns.empty() && cfg.task == "classify") cfg.label_columns.clear();  // labels from masks
  }
  if (cfg.task == "classify" && cfg.model_config().num_classes != K)
    throw std::runtime_error(fmt::format("{}: the model has {} outputs, --label-columns names {}", checkpoint, K,
                                         cfg.label_columns.size()));
  cfg.image_root = image_root;
  cfg.mask_root = "";
  cfg.file_name_only = file_name_only;
  cfg.split_column = split_column;
  cfg.validate();
  auto model = make_finetune_model(cfg, 0);
  load_weights(*model, checkpoint, true);
  const Device dev = select_device(device, tf32);
  model->to(dev);
  FinetuneDataset ds(csv, cfg.csv_options({split}));
  ds.check_files();
  FinetuneEvalOptions eo;
  eo.batch_size = batch_size;
  eo.device = dev;
  eo.out_dir = out;
  eo.sample_outputs = samples;
  fmt::print("finetune-eval: {} ({}, {}, {} px) on {} ({} images)\n", checkpoint, cfg.task, cfg.res_base_model, cfg.image_res,
             csv, ds.size());
  nlohmann::json m = evaluate_finetune(*model, ds, cfg.transform_options(), eo);
  if (!out.empty()) {
    m["checkpoint"] = checkpoint;
    m["checkpoint_sha256"] = sha256_file(checkpoint);
    m["csv_sha256"] = sha256_file(csv);
    save_json(out + "/metrics.json", m);
    fmt::print("wrote {}/metrics.json and {}/predictions.csv\n", out, out);
  }
  return 0;
}

}  // namespace ms
