// defines: MeDSLIP pretraining (spec D) as a function: AdamW with the reference's two
// parameter groups, its hand-stepped warmup + cosine schedule, drop_last batches, a
// validation loss each epoch, progress lines, metrics.jsonl, atomic checkpoints with
// optimiser and RNG state (so --resume continues bit for bit), a clean stop on Ctrl-C,
// and the reproducibility record (reproducibility.json).
#pragma once
#include <string>
#include <vector>

#include "model/config.h"
#include "train/reference_problem.h"

namespace ms {

struct PretrainOptions {
  MedslipConfig cfg;
  std::string config_path;  // for the record; cfg is what runs
  std::string out_dir;
  std::string resume;       // a run folder or its checkpoint_last.safetensors
  Device device = Device::CPU;
  int64_t stop_after_steps = -1;  // stop (saving a checkpoint) after this many steps in this call: tests, --max-steps
  int max_epochs = -1;            // stop after this many epochs (the schedule still assumes cfg.epochs)
  bool quiet = false;
};

struct PretrainResult {
  std::vector<StepLosses> losses;  // the steps run by this call
  int64_t global_step = 0;         // steps done in the run so far
  bool finished = false;           // all epochs done
  std::string checkpoint;
};

PretrainResult run_pretrain(const PretrainOptions& opt);

// Checkpoint file names inside a run folder.
constexpr const char* kCheckpointLast = "checkpoint_last.safetensors";
constexpr const char* kRecordFile = "reproducibility.json";

}  // namespace ms
