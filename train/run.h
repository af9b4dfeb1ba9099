// defines: what every training job shares — pretraining today, fine-tuning and data-parallel
// training next. The model-specific half (a batch -> its losses, one optimiser update) is a
// TrainingJob; run_training() drives one through the epochs and owns the rest:
//
//   run folder      config.yaml, metrics.jsonl, reproducibility.json, checkpoint_last.safetensors
//   checkpoints     save_checkpoint / load_checkpoint: model (official names) + optimiser +
//                   dropout-RNG offset + position, written so a kill at any moment leaves a
//                   consistent pair; --resume (resolve_resume) continues bit for bit
//   Ctrl-C          SigintStop: the loop saves a checkpoint at the next step and returns
//   logging         MetricsLog (one JSON line per step and per epoch), progress lines with
//                   images/s and ETA (format_losses, fmt_duration), TensorBoard event files
//                   (train/tensorboard.h: every loss, lr, images/s per step; epoch means,
//                   validation and the job's epoch_metrics / epoch_images; the config as text)
//   validation      each epoch in eval mode under no-grad, mean losses (LossMeter)
//   record          reproducibility.json: build and platform (record_build_and_config), the
//                   job's data hashes (TrainingJob::describe_record), per-epoch weight hashes
//
// Numbers: a job's losses are float32 and summed in float32 in step order, as the reference's
// meters; nothing here draws randomness, so wrapping a job changes no loss.
#pragma once
#include <cstdint>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "data/sampler.h"
#include "data/image.h"
#include "engine/nn.h"
#include "engine/optim.h"
#include "train/distributed.h"
#include "train/run_record.h"

namespace CLI {
class App;
}

namespace ms {

struct TrainingRecipe;  // model/config.h

constexpr const char* kCheckpointLast = "checkpoint_last.safetensors";
constexpr const char* kMetricsFile = "metrics.jsonl";

// ---- losses -------------------------------------------------------------------------------

// The losses a job reports for one step, float32; values[0] is the total that is minimised.
using LossValues = std::vector<float>;

// Their names: keys[i] names values[i] in metrics.jsonl and the record ("loss" first);
// short_names[i] labels values[i] on progress lines (short_names[0] is unused).
struct LossNames {
  std::vector<std::string> keys;
  std::vector<std::string> short_names;
};

nlohmann::json losses_json(const LossNames& names, const LossValues& values);
// "loss 1.2345 (ce_p 0.693 ce_a 0.693 ...)": the total to 4 decimals, the parts to 3.
std::string format_losses(const LossNames& names, const LossValues& values);

// Mean of loss vectors: float32 sums in the order added, divided by the count.
class LossMeter {
 public:
  void add(const LossValues& v);
  // The float32 sums and the count (data-parallel validation adds them over ranks).
  const LossValues& sum() const { return sum_; }
  void set(const LossValues& sum, int64_t n) { sum_ = sum; n_ = n; }
  int64_t count() const { return n_; }
  LossValues mean() const;

 private:
  LossValues sum_;
  int64_t n_ = 0;
};

// ---- checkpoints --------------------------------------------------------------------------

// Where a run stands: the next update is batch `batch` of `epoch`; `global_step` updates done.
struct RunPosition {
  int epoch = 0;
  int64_t batch = 0;
  int64_t global_step = 0;
};

// The checkpoint a --resume value names: a run folder (its checkpoint_last.safetensors) or the
// file itself. Throws "--resume: no checkpoint at '<path>'" when there is none.
std::string resolve_resume(const std::string& resume);

// Each checkpoint file carries "payload_sha256" in its metadata: the SHA-256 of its tensor data.
// Throws "<path>: corrupt checkpoint ..." when a file's data no longer matches it (a bit flip,
// a half-copied file); files without the key (older checkpoints, the released .pth) pass.
void verify_checkpoint_payload(const std::string& path);

// Writes out_dir/optimizer_step<N>.safetensors (the optimiser state), then
// out_dir/checkpoint_last.safetensors: the model by official names with `metadata` plus epoch,
// batch, global_step, dropout_rng_offset (the model's RNG counter) and the optimiser file's
// name. Each file is written to .tmp and renamed, the model file last, so a kill at any moment
// leaves a consistent pair; older optimizer_step files are then removed.
void save_checkpoint(const std::string& out_dir, const nn::Module& model, const AdamW& optim, const RunPosition& pos,
                     std::map<std::string, std::string> metadata);

// Loads a save_checkpoint file into the model (strict names), the optimiser and the model's RNG
// counter; returns the position. Throws naming the file when it is not a training checkpoint,
// is cut short, or fails verify_checkpoint_payload (both files are checked before loading).
RunPosition load_checkpoint(const std::string& path, nn::Module& model, AdamW& optim);

// ---- run folder, signals, logs --------------------------------------------------------------

// While alive, SIGINT (Ctrl-C) sets a flag instead of killing the process; the previous handler
// comes back on destruction. One at a time.
class SigintStop {
 public:
  SigintStop();
  ~SigintStop();
  SigintStop(const SigintStop&) = delete;
  SigintStop& operator=(const SigintStop&) = delete;
  bool requested() const;

 private:
  void (*prev_)(int);
};

// out_dir/metrics.jsonl, one JSON object per line, flushed per line; `append` on resume.
class MetricsLog {
 public:
  MetricsLog(const std::string& out_dir, bool append);
  void write(const nlohmann::json& line);

 private:
  std::string path_;
  std::unique_ptr<std::ofstream> f_;
};

// (write_file_atomic, tmp + fsync + rename, is in engine/io.h.)
// 42s, 3m07s, 2h05m.
std::string fmt_duration(double seconds);

// The record fields every job writes: program, build_flags, platform (CPU, ISA, threads, BLAS,
// device), config (YAML), config_sha256, seed.
void record_build_and_config(nlohmann::json& record, Device device, const std::string& config_yaml, int64_t seed);

// ---- the job and the loop -------------------------------------------------------------------

// Thrown by a job's train_step when the update it is about to apply is not finite (a loss term
// or a gradient is NaN/inf); the optimiser has not stepped and the gradients are cleared.
struct NonFiniteStep : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// For a job's train_step, between backward() and the optimiser step: "" when every loss value
// and every parameter gradient of `model` is finite, else what is not, e.g. "loss term
// 'loss_ce_pathology' is nan" or "the gradient of 'res_l1.0.weight' has 12 non-finite values".
// Fault injection for tests (never set in normal use): MEDSLIP_FAULT_INJECT=nan_loss@K or
// nan_grad@K poisons update K (0-based global step) first.
std::string check_update_finite(const LossNames& names, LossValues& values, const nn::Module& model, int64_t step);

// The model-specific half of a training run.
class TrainingJob {
 public:
  virtual ~TrainingJob() = default;
  virtual nn::Module& model() = 0;  // checkpointed with its rng() counter; train()/eval() switched by the loop
  virtual AdamW& optimizer() = 0;   // its lr is set by the loop before each step
  virtual const LossNames& loss_names() const = 0;
  virtual int64_t batch_size() const = 0;       // images per update (images/s, ETA)
  virtual int64_t steps_per_epoch() const = 0;  // updates per epoch
  // The start line after "<name>: ", e.g. "40 images, 3 steps/epoch of 4 at 64 px".
  virtual std::string describe() const = 0;
  // Adds the job's own fields to reproducibility.json (data hashes, books).
  virtual void describe_record(nlohmann::json& record) const {}
  // A job without the planned hooks below (train_size() < 0) implements these two:
  // Positions the training data at batch `first_batch` of `epoch` (non-zero on resume).
  virtual void start_epoch(int epoch, int64_t first_batch) {}
  // One update on the next batch (zero_grad, forward, losses, backward, optimiser step) and its
  // losses; false, doing nothing, when the epoch has no more batches.
  virtual bool train_step(LossValues& losses) {
    throw std::logic_error("this training job has neither train_step nor the planned (data-parallel) hooks");
  }
  // Validation at the end of `epoch`: add every batch's losses to `meter`. The loop has put the
  // model in eval mode under NoGradGuard. Return false when the job has no validation set.
  virtual bool validate(int epoch, LossMeter& meter) { return false; }

  // Data-parallel training and gradient accumulation (train/data_parallel.h,
  // docs/distributed.md). A job that implements these runs under mpirun and with
  // accum_steps; the loop then draws the batches from a DistributedSampler and calls
  // forward_backward once per micro-batch, reducing gradients before the optimiser step.
  virtual int64_t train_size() const { return -1; }  // items in the training set; -1: not supported
  virtual int64_t valid_size() const { return 0; }   // items in the validation set (0: none)
  // The epoch's micro-batches in order: plan[j] lists the training set items of batch j.
  virtual void start_epoch_plan(int epoch, std::vector<std::vector<int64_t>> plan) {}
  // The next planned micro-batch: forward, losses, backward (grads add up; no zero_grad, no
  // optimiser step); false when the plan is exhausted.
  virtual bool forward_backward(LossValues& losses) { return false; }
  // This rank's validation batches (lists of validation set items) with several ranks;
  // `sampler` is the run's, replicas = the world size. Default: the rank's DistributedSampler
  // share, shuffled, in drop_last batches of batch_size (the reference's pretraining validation
  // loader). A job whose metrics need every item once (fine-tuning) overrides it.
  virtual std::vector<std::vector<int64_t>> validation_batches(int epoch, int rank, const SamplerOptions& sampler) const;
  // Validation on these batches of validation set items (this rank's share); the loop adds the
  // meters over ranks. Collectives inside (gathering predictions) run on every rank.
  virtual bool validate_items(int epoch, const std::vector<std::vector<int64_t>>& batches, LossMeter& meter) { return false; }
  // Numbers beyond the losses after `epoch` (fine-tuning: Dice, AUROC, ...): written to the epoch
  // line of metrics.jsonl under "metrics" and to TensorBoard as "valid/<name>".
  virtual std::map<std::string, double> epoch_metrics(int epoch) { return {}; }
  // Pictures after `epoch` (e.g. attention overlays on fixed validation images), each named
  // "<folder>/<name>": a TensorBoard image under that tag and out_dir/<folder>/epoch<E>_<name>.png
  // (`medslip report` shows attention/ as a table). The job restores the model's train/eval mode.
  virtual std::vector<std::pair<std::string, Image>> epoch_images(int epoch) { return {}; }
  // The global step of the update train_step is about to make (set by the loop; for
  // check_update_finite's messages and fault injection).
  int64_t step_index = 0;
};

struct TrainingOptions {
  std::string name = "train";  // progress prefix: "<name>: ...", "<name> done: ..."
  std::string out_dir;
  std::string resume;          // a run folder or checkpoint; empty: a fresh run
  Device device = Device::CPU; // for the record
  std::string config_yaml;     // saved as config.yaml, in the checkpoint metadata and the record
  int64_t seed = 0;            // for the record
  int epochs = 1;              // the run's length (the schedule's)
  LrSchedule schedule;         // lr of (epoch, batch)
  int max_epochs = -1;         // stop after this many epochs in this call
  int64_t stop_after_steps = -1;  // stop (saving a checkpoint) after this many updates in this call
  int log_every = 1;           // a progress line every this many batches (and the last)
  int64_t checkpoint_every = 0;   // also a checkpoint every this many updates mid-epoch (0: epoch ends only)
  int skip_nonfinite = 0;      // skip up to this many non-finite updates (NonFiniteStep); 0: stop at the first
  bool quiet = false;
  // Data-parallel / accumulation (when the job supports it: train_size() >= 0): the ranks
  // (null: one process) and micro-batches per rank and update. Only rank 0 prints and writes
  // the run folder.
  Communicator* comm = nullptr;
  int accum_steps = 1;
  SamplerOptions sampler;         // seed, drop_last, set_epoch, permutation (replicas set by the loop)
  int64_t max_steps_per_epoch = 0;  // 0: the whole epoch
};

struct TrainingResult {
  std::vector<LossValues> losses;  // the updates run by this call, in order
  int64_t global_step = 0;         // updates done in the run so far
  bool finished = false;           // all epochs done
  std::string checkpoint;
  double step_seconds = 0;         // wall time of the updates (data-parallel: incl. communication)
  double comm_seconds = 0;         // of which gradient all-reduce
};

// Creates out_dir, resumes (opt.resume), writes config.yaml and the record, then per epoch:
// updates with the scheduled lr (a metrics line each, a progress line every log_every), the
// validation step, an epoch line, a checkpoint and the epoch's weight hash in the record.
// Ctrl-C or stop_after_steps saves a checkpoint mid-epoch and returns. A non-finite update
// (NonFiniteStep) is skipped while skip_nonfinite allows, else throws naming the step, epoch,
// batch and the loss term or gradient, with the last good checkpoint left as it was.
// Resuming (opt.resume) a folder that is opt.out_dir and holds no checkpoint yet (a job killed
// before its first one) starts from the beginning with a line saying so, so a preemptible job
// reruns one command; stale *.tmp files of a killed write are removed.
TrainingResult run_training(TrainingJob& job, const TrainingOptions& opt);

// ---- what every training command shares -----------------------------------------------------

// The run's settings that come from the command line (PretrainOptions, FinetuneOptions).
struct RunFlags {
  std::string out_dir;
  std::string resume;             // a run folder or its checkpoint_last.safetensors; empty: a fresh run
  Device device = Device::CPU;
  int64_t stop_after_steps = -1;  // stop (saving a checkpoint) after this many updates in this call (--max-steps)
  int max_epochs = -1;            // stop after this many epochs (the schedule keeps the config's length)
  int64_t checkpoint_every = 0;   // --checkpoint-every: also a checkpoint every this many updates
  int skip_nonfinite = 0;         // --skip-nonfinite: skip up to this many non-finite updates
  bool quiet = false;
  Communicator* comm = nullptr;   // data-parallel (docs/distributed.md); null: one process
};

// TrainingOptions from the flags and a config's shared keys (epochs, schedule, accum_steps,
// sampler_*) plus its seed, log_every and max_steps_per_epoch.
TrainingOptions training_options(const std::string& name, const RunFlags& run, const TrainingRecipe& recipe,
                                 const std::string& config_yaml, int64_t seed, int log_every, int max_steps_per_epoch);

// The flags of `medslip pretrain` and `medslip finetune`, as parsed.
struct RunCli {
  std::string config, resume, out, device = "cpu";
  bool tf32 = false, quiet = false;
  int threads = 0, seed = -1, epochs = -1, skip_nonfinite = 0;
  int64_t max_steps = -1, checkpoint_every = 0;
  DistOptions dist;
};
// Registers --config (required; `config_help`), --resume, --out, --device, --tf32, --threads,
// --seed, --epochs, --max-steps, --checkpoint-every, --skip-nonfinite, --quiet, --dist-timeout,
// --dist-backend and the data-parallel footer.
void add_run_flags(CLI::App& app, RunCli& f, const std::string& config_help);
// After parsing: sets the threads, makes the communicator (before the device: under mpirun the
// local rank picks the GPU) and fills `run` (out_dir: --out, else --resume, else
// runs/<config name>). The communicator must outlive the run.
std::unique_ptr<Communicator> start_run(const RunCli& f, RunFlags& run);

}  // namespace ms
