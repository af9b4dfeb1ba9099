// defines: MeDSLIP pretraining (spec D) as a function: AdamW with the reference's two
// parameter groups, its hand-stepped warmup + cosine schedule, drop_last batches, a
// validation loss each epoch, progress lines, metrics.jsonl, atomic checkpoints with
// optimiser and RNG state (so --resume continues bit for bit), a clean stop on Ctrl-C,
// and the reproducibility record (reproducibility.json).
//
// The run itself (folder, checkpoints, resume, logs, record, loop) is train/run.h's
// run_training; this file is the MeDSLIP half: PretrainJob (books, datasets, loader, model,
// optimiser; a batch -> the five losses of spec B).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "data/datasets.h"
#include "data/loader.h"
#include "model/books.h"
#include "model/config.h"
#include "model/medslip.h"
#include "train/distributed.h"
#include "train/attention_probe.h"
#include "train/reference_problem.h"
#include "train/run.h"

namespace ms {

// The run's flags (out_dir, resume, device, stop_after_steps, max_epochs, checkpoint_every,
// skip_nonfinite, quiet, comm: train/run.h) and the config. With a communicator of several
// ranks the run is data-parallel (docs/distributed.md): only rank 0 prints and writes.
struct PretrainOptions : RunFlags {
  MedslipConfig cfg;
  std::string config_path;  // for the record; cfg is what runs
};

struct PretrainResult {
  std::vector<StepLosses> losses;  // the steps run by this call
  int64_t global_step = 0;         // steps done in the run so far
  bool finished = false;           // all epochs done
  std::string checkpoint;
  double step_seconds = 0, comm_seconds = 0;  // time in updates, of which gradient all-reduce
};

PretrainResult run_pretrain(const PretrainOptions& opt);

// The books of a run: cfg.books, else out_dir/books.safetensors when an earlier call built it,
// else built once from cfg.text_encoder + cfg.pathology_book and cached there. With several
// ranks, rank 0 obtains them (and alone writes the cache) and broadcasts them.
Books obtain_books(const MedslipConfig& cfg, const std::string& out_dir, bool quiet, Communicator* comm = nullptr);

// The loss names of pretraining, values in this order: loss, loss_ce_pathology,
// loss_ce_anatomy, loss_cl_pathology, loss_cl_anatomy, loss_ap (the reference's keys).
const LossNames& pretrain_loss_names();
LossValues loss_values(const StepLosses& s);
StepLosses to_step_losses(const LossValues& v);

// The MeDSLIP half of a pretraining run (train/run.h): built from a config in the order the
// RNG streams expect (books, datasets, loader, model init from cfg.seed, AdamW groups).
class PretrainJob : public TrainingJob {
 public:
  PretrainJob(const MedslipConfig& cfg, const std::string& out_dir, Device device, bool quiet, Communicator* comm = nullptr);

  nn::Module& model() override { return *model_; }
  AdamW& optimizer() override { return *optim_; }
  const LossNames& loss_names() const override { return pretrain_loss_names(); }
  int64_t batch_size() const override { return cfg_.batch_size; }
  int64_t steps_per_epoch() const override { return steps_per_epoch_; }
  std::string describe() const override;
  void describe_record(nlohmann::json& record) const override;
  bool validate(int epoch, LossMeter& meter) override;
  int64_t train_size() const override { return train_set_->size(); }
  int64_t valid_size() const override { return valid_set_ ? valid_set_->size() : 0; }
  void start_epoch_plan(int epoch, std::vector<std::vector<int64_t>> plan) override;
  bool forward_backward(LossValues& losses) override;
  bool validate_items(int epoch, const std::vector<std::vector<int64_t>>& batches, LossMeter& meter) override;
  // "attention/<i>_<observation>": train/attention_probe.h on the validation set (else the training set).
  std::vector<std::pair<std::string, Image>> epoch_images(int epoch) override;

  Medslip& medslip() { return *model_; }

 private:
  MedslipConfig cfg_;
  Device device_;
  Books books_;
  std::unique_ptr<MedslipDataset> train_set_, valid_set_;
  LoaderOptions loader_options_;
  std::unique_ptr<PretrainLoader> loader_;
  int64_t steps_per_epoch_ = 0;
  std::unique_ptr<Medslip> model_;
  std::unique_ptr<AdamW> optim_;
  std::unique_ptr<AttentionProbe> probe_;  // built on first use
};

}  // namespace ms
