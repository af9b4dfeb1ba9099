// defines: fine-tuning (spec E.5, E.6) as a job shaped like pretraining (train/pretrain.h):
// FinetuneConfig (YAML, the reference's Res_train.yaml keys plus ours), the models with the
// official names (model/finetune*.h), initialisation from a MeDSLIP checkpoint by exact key
// match (and a torchvision ResNet for the encoder), AdamW with the reference's schedule,
// BCE-with-logits (classify) or DiceBCE (segment), validation each epoch choosing the best
// checkpoint, one test at the end, atomic checkpoints with optimiser and RNG state (--resume
// continues bit for bit), metrics.jsonl, reproducibility.json, progress lines, Ctrl-C.
// And the evaluation of a fine-tuned checkpoint on any csv (finetune-eval).
#pragma once
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/finetune_data.h"
#include "engine/device.h"
#include "model/config.h"
#include "model/finetune.h"
#include "train/run.h"

namespace ms {

// The optimiser, schedule and data-parallel keys (optimizer:, schedular:, accum_steps,
// sampler_*) are TrainingRecipe's (model/config.h), with the fine-tuning reference's defaults.
struct FinetuneConfig : TrainingRecipe {
  FinetuneConfig() {
    test_batch_size = 64;
    lr = 1e-5f;  // = min_lr = warmup_lr: the reference's lr is constant
    weight_decay = 0.02f;
    epochs = 200;
    warmup_epochs = 20;
    min_lr = warmup_lr = 1e-5f;
    warmup_iters_per_step = 100;
  }

  // --- task and model ------------------------------------------------------------------
  std::string task = "classify";            // classify | segment
  std::string res_base_model = "resnet50";  // resnet50 (the reference) | resnet18
  bool use_base = true;                     // classify: false = the pathology branch (spec E.5)
  int image_res = 224;                      // S, a multiple of 32
  // --- data --------------------------------------------------------------------------------
  std::string train_file, valid_file, test_file;  // csvs (valid/test may equal train_file with splits)
  std::string image_root, mask_root;              // default: each csv's folder
  std::string image_column = "image_path";
  std::vector<std::string> label_columns;  // classify; empty with a mask column: label = mask not empty
  std::string mask_column;                 // segment (or classify labels from masks)
  bool file_name_only = false;             // join only the file name of each path, as the reference
  std::string split_column;                // e.g. "split": rows are chosen by its value
  std::string train_split = "train", valid_split = "valid", test_split = "test";
  float valid_fraction = 0.1f;  // validation carved out of the training rows when none is given
  float percentage = 1.f;       // share of the training rows used (label-efficiency protocol)
  int split_seed = 0;           // seeds the subset and the carve-out (the reference's is unseeded)
  // --- recipe --------------------------------------------------------------------------------
  // (batch_size, test_batch_size = 64, seed, num_workers, log_every, max_steps_per_epoch,
  // crop_scale_min, rand_augment_n/m: TrainingRecipe's; RandAugment is classify only)
  bool hflip = true;                           // segment: HorizontalFlip(0.5)
  int sample_outputs = 8;  // segment: predicted-mask PNGs + overlays for this many test images

  std::vector<std::string> warnings;

  static FinetuneConfig from_yaml(const std::string& path);
  static FinetuneConfig from_yaml_string(const std::string& text, const std::string& origin = "<string>");
  std::string to_yaml() const;
  void validate() const;  // throws naming the key
  FinetuneTask task_kind() const { return task == "segment" ? FinetuneTask::kSegment : FinetuneTask::kClassify; }
  FinetuneModelConfig model_config() const;
  FinetuneCsvOptions csv_options(const std::vector<std::string>& splits) const;
  FinetuneTransformOptions transform_options() const;
};

// ResNet classifier or U-Net, by cfg.task.
std::unique_ptr<FinetuneModel> make_finetune_model(const FinetuneConfig& cfg, uint64_t seed);
// The job's loss: BCE-with-logits (mean over all outputs) or DiceBCE over the whole batch.
Tensor finetune_loss(FinetuneTask task, const Tensor& logits, const Tensor& target);

// Initialisation by exact key match (train_res_ft.py l.165-172), a leading "module." stripped:
// tensors whose name and shape match are copied; a name that matches with another shape is an
// error naming the key and both shapes; no match at all is an error naming the file.
struct InitReport {
  std::vector<std::string> loaded, random, ignored;  // model keys loaded / left as they were; file keys unused
};
InitReport init_from_checkpoint(nn::Module& model, const std::string& path);
// A torchvision ResNet state_dict (conv1, bn1, layer1..) into res_features.{0,1,4,..} (the
// reference's ImageNet encoder); fc and layers the model lacks are ignored.
InitReport init_encoder_from_torchvision(nn::Module& model, const std::string& path);
// "res_features.4.* (30 tensors), ..." one line per module prefix (2 levels).
std::string summarize_keys(const std::vector<std::string>& keys);

// The run's flags (out_dir, resume, device, stop_after_steps, max_epochs, checkpoint_every,
// skip_nonfinite, quiet, comm: train/run.h) and the fine-tuning ones. With a communicator of
// several ranks (mpirun) the run is data-parallel (docs/distributed.md): only rank 0 reads
// --init, writes the run folder and runs the test at the end.
struct FinetuneOptions : RunFlags {
  FinetuneConfig cfg;
  std::string config_path;
  std::string init;          // MeDSLIP checkpoint (any format convert reads)
  std::string init_encoder;  // torchvision ResNet state_dict
  std::string export_init;  // write the initialised model (after --init) here and stop (audits, parity fixtures)
};

struct FinetuneResult {
  std::vector<float> losses;  // training losses of the steps run by this call
  int64_t global_step = 0;
  bool finished = false;
  std::string checkpoint_last, checkpoint_best;
  double best_valid = 0;
  int best_epoch = -1;
  nlohmann::json test;  // test metrics of the best checkpoint (when finished and a test set exists)
};

FinetuneResult run_finetune(const FinetuneOptions& opt);

// Evaluates `model` on a dataset (test transform, csv order): classification AUROC / max-F1 /
// ACC per class (spec E.2), segmentation Dice / mIoU (metric.py). With out_dir: metrics.json,
// predictions.csv (per image) and, for segmentation, masks/ + overlays/ PNGs of the first
// `sample_outputs` images. Returns the metrics json.
struct FinetuneEvalOptions {
  int batch_size = 32;
  int num_workers = 2;
  std::string out_dir;
  int sample_outputs = 8;
  Device device = Device::CPU;
  bool quiet = false;
  std::function<void(float)> batch_losses;  // called with each batch's mean loss
};
nlohmann::json evaluate_finetune(FinetuneModel& model, const FinetuneDataset& ds, const FinetuneTransformOptions& topt,
                                 const FinetuneEvalOptions& eo);
// The number the best checkpoint is chosen on: mean AUROC (classify) or Dice (segment).
double headline_metric(const nlohmann::json& metrics);

constexpr const char* kFinetuneBest = "checkpoint_best.safetensors";

}  // namespace ms
