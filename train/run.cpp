#include "train/run.h"

#include <fmt/core.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <stdexcept>

#include "engine/autograd.h"
#include "engine/io.h"
#include "engine/threads.h"
#include "model/state.h"
#include "train/hash.h"
#include "train/platform.h"

namespace fs = std::filesystem;

namespace ms {

// ---- losses -------------------------------------------------------------------------------

nlohmann::json losses_json(const LossNames& names, const LossValues& values) {
  nlohmann::json j = nlohmann::json::object();
  for (size_t i = 0; i < values.size(); ++i) j[names.keys.at(i)] = values[i];
  return j;
}

std::string format_losses(const LossNames& names, const LossValues& v) {
  std::string s = fmt::format("loss {:.4f}", v.at(0));
  if (v.size() == 1) return s;
  s += " (";
  for (size_t i = 1; i < v.size(); ++i) s += fmt::format("{}{} {:.3f}", i > 1 ? " " : "", names.short_names.at(i), v[i]);
  return s + ")";
}

void LossMeter::add(const LossValues& v) {
  if (sum_.empty()) sum_.assign(v.size(), 0.f);
  for (size_t k = 0; k < v.size(); ++k) sum_[k] += v[k];
  ++n_;
}

LossValues LossMeter::mean() const {
  LossValues m = sum_;
  for (float& x : m) x /= float(n_);
  return m;
}

// ---- checkpoints --------------------------------------------------------------------------

std::string resolve_resume(const std::string& resume) {
  std::string ck = fs::is_directory(resume) ? resume + "/" + kCheckpointLast : resume;
  if (!fs::exists(ck)) throw std::runtime_error("--resume: no checkpoint at '" + ck + "'");
  return ck;
}

void save_checkpoint(const std::string& out_dir, const nn::Module& model, const AdamW& optim, const RunPosition& pos,
                     std::map<std::string, std::string> meta) {
  const std::string optim_name = fmt::format("optimizer_step{}.safetensors", pos.global_step);
  save_safetensors(out_dir + "/" + optim_name, optim.state(), {{"global_step", std::to_string(pos.global_step)}});
  meta["epoch"] = std::to_string(pos.epoch);
  meta["batch"] = std::to_string(pos.batch);
  meta["global_step"] = std::to_string(pos.global_step);
  meta["dropout_rng_offset"] = std::to_string(model.rng().offset());
  meta["optimizer"] = optim_name;
  save_module(out_dir + "/" + kCheckpointLast, model, meta);
  for (auto& e : fs::directory_iterator(out_dir)) {  // older optimiser files are no longer referenced
    auto n = e.path().filename().string();
    if (n.rfind("optimizer_step", 0) == 0 && n != optim_name && n.find(".tmp") == std::string::npos) fs::remove(e.path());
  }
}

RunPosition load_checkpoint(const std::string& ck, nn::Module& model, AdamW& optim) {
  auto meta = safetensors_metadata(ck);
  for (const char* k : {"epoch", "batch", "global_step", "dropout_rng_offset", "optimizer"})
    if (!meta.count(k)) throw std::runtime_error(ck + ": not a training checkpoint (metadata has no '" + k + "')");
  load_module_state(model, load_safetensors(ck), true, ck);
  const std::string optim_path = (fs::path(ck).parent_path() / meta["optimizer"]).string();
  optim.load_state(load_safetensors(optim_path));
  RunPosition pos;
  pos.epoch = std::stoi(meta["epoch"]);
  pos.batch = std::stoll(meta["batch"]);
  pos.global_step = std::stoll(meta["global_step"]);
  model.rng().set_offset(std::stoull(meta["dropout_rng_offset"]));
  return pos;
}

// ---- run folder, signals, logs --------------------------------------------------------------

namespace {
std::atomic<bool> g_stop{false};
extern "C" void on_sigint(int) { g_stop = true; }
}  // namespace

SigintStop::SigintStop() {
  g_stop = false;
  prev_ = std::signal(SIGINT, on_sigint);
}
SigintStop::~SigintStop() { std::signal(SIGINT, prev_); }
bool SigintStop::requested() const { return g_stop; }

MetricsLog::MetricsLog(const std::string& out_dir, bool append)
    : path_(out_dir + "/" + kMetricsFile),
      f_(std::make_unique<std::ofstream>(path_, append ? std::ios::app : std::ios::trunc)) {
  if (!*f_) throw std::runtime_error("cannot open '" + path_ + "' for writing");
}

void MetricsLog::write(const nlohmann::json& line) { *f_ << line.dump() << "\n" << std::flush; }

namespace {
// Writes text to path through path.tmp + rename.
void write_text_atomic(const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary);
    f << text;
    if (!f) throw std::runtime_error("cannot write '" + tmp + "'");
  }
  fs::rename(tmp, path);
}
}  // namespace

std::string fmt_duration(double s) {
  if (s < 60) return fmt::format("{:.0f}s", s);
  if (s < 3600) return fmt::format("{:.0f}m{:02.0f}s", std::floor(s / 60), std::fmod(s, 60));
  return fmt::format("{:.0f}h{:02.0f}m", std::floor(s / 3600), std::fmod(s / 60, 60));
}

void record_build_and_config(nlohmann::json& j, Device device, const std::string& config_yaml, int64_t seed) {
  j["program"] = build_version();
  j["build_flags"] = build_flags();
  j["platform"] = {{"cpu", cpu_model()}, {"isa", build_isa()}, {"threads", num_threads()}, {"blas", blas_info()}, {"device", device_name(device)}};
  j["config"] = config_yaml;
  j["config_sha256"] = sha256_hex(config_yaml);
  j["seed"] = seed;
}

// ---- the loop -------------------------------------------------------------------------------

namespace {

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// The state of one run_training call.
struct Loop {
  TrainingJob& job;
  const TrainingOptions& opt;
  RunPosition pos;           // where the run is
  int last_epoch = 0;        // exclusive
  int64_t steps_this_call = 0;
  std::unique_ptr<MetricsLog> metrics;
  std::unique_ptr<RunRecord> record;
  TrainingResult res;

  std::string checkpoint_path() const { return opt.out_dir + "/" + kCheckpointLast; }

  void save(int epoch, int64_t batch) {
    save_checkpoint(opt.out_dir, job.model(), job.optimizer(), {epoch, batch, pos.global_step},
                    {{"config", opt.config_yaml}, {"producer", build_version()}});
  }

  // Fresh or resumed; then the record, config.yaml and metrics.jsonl.
  void open_run() {
    fs::create_directories(opt.out_dir);
    const bool resuming = !opt.resume.empty();
    if (resuming) {
      const std::string ck = resolve_resume(opt.resume);
      pos = load_checkpoint(ck, job.model(), job.optimizer());
      if (!opt.quiet) fmt::print("resumed from {}: epoch {}, batch {}, step {}\n", ck, pos.epoch, pos.batch, pos.global_step);
    }
    // The record: written at the start, extended every epoch.
    record = std::make_unique<RunRecord>(opt.out_dir, resuming && fs::exists(opt.out_dir + "/" + kRecordFile));
    auto& j = record->json();
    record_build_and_config(j, opt.device, opt.config_yaml, opt.seed);
    job.describe_record(j);
    if (!j.contains("epochs")) j["epochs"] = nlohmann::json::array();
    record->save();
    write_text_atomic(opt.out_dir + "/config.yaml", opt.config_yaml);
    metrics = std::make_unique<MetricsLog>(opt.out_dir, resuming);
    last_epoch = opt.max_epochs > 0 ? std::min(opt.epochs, pos.epoch + opt.max_epochs) : opt.epochs;
  }

  void log_step(int epoch, int64_t b, float lr, const LossValues& s, double ips) {
    nlohmann::json line = losses_json(job.loss_names(), s);
    line["type"] = "step";
    line["epoch"] = epoch;
    line["batch"] = b;
    line["step"] = pos.global_step;
    line["lr"] = lr;
    line["images_per_s"] = ips;
    metrics->write(line);
    const int64_t spe = job.steps_per_epoch();
    if (opt.quiet || !(b % std::max(1, opt.log_every) == 0 || b + 1 == spe)) return;
    const double eta = double((last_epoch - epoch) * spe - (b + 1)) * job.batch_size() / std::max(ips, 1e-9);
    fmt::print("epoch {}/{} step {}/{} | {} | lr {:.2e} | {:.1f} img/s | ETA {}\n", epoch, last_epoch - 1, b + 1, spe,
               format_losses(job.loss_names(), s), lr, ips, fmt_duration(eta));
    std::fflush(stdout);
  }

  // The epoch's updates; true when Ctrl-C or the step budget stopped the run (checkpoint saved).
  bool train_epoch(int epoch, int64_t first, const SigintStop& sigint, LossMeter& train_meter) {
    job.start_epoch(epoch, first);
    const auto t_epoch = std::chrono::steady_clock::now();
    LossValues s;
    for (int64_t b = first; b < job.steps_per_epoch(); ++b) {
      const float lr = opt.schedule.at(epoch, b);
      job.optimizer().set_lr(lr);
      if (!job.train_step(s)) break;
      if (!std::isfinite(s.at(0)))
        throw std::runtime_error(fmt::format("loss is not finite at epoch {} batch {} (step {})", epoch, b, pos.global_step));
      res.losses.push_back(s);
      ++pos.global_step;
      ++steps_this_call;
      train_meter.add(s);
      log_step(epoch, b, lr, s, double(train_meter.count() * job.batch_size()) / std::max(seconds_since(t_epoch), 1e-9));
      const bool budget = opt.stop_after_steps >= 0 && steps_this_call >= opt.stop_after_steps;
      if (sigint.requested() || budget) {
        save(epoch, b + 1);
        if (!opt.quiet)
          fmt::print("{}: saved {} at epoch {} batch {} (resume with --resume {})\n",
                     sigint.requested() ? "interrupted" : "stopped", checkpoint_path(), epoch, b + 1, opt.out_dir);
        return true;
      }
    }
    return false;
  }

  // Validation (spec H.4): eval mode (running BN statistics, no dropout), no grad.
  void validate(int epoch, nlohmann::json& ep) {
    LossMeter meter;
    job.model().eval();
    bool has;
    {
      NoGradGuard ng;
      has = job.validate(epoch, meter);
    }
    job.model().train();
    if (!has || meter.count() == 0) return;
    LossValues v = meter.mean();
    ep["valid"] = losses_json(job.loss_names(), v);
    if (!opt.quiet) fmt::print("epoch {} validation ({} batches): loss {:.4f}\n", epoch, meter.count(), v[0]);
  }

  // Returns false when the run stopped early.
  bool run() {
    SigintStop sigint;
    if (!opt.quiet)
      fmt::print("{}: {}, epochs {}..{}, {} params, out {}\n", opt.name, job.describe(), pos.epoch, last_epoch - 1,
                 job.model().num_parameters(), opt.out_dir);
    const int start_epoch = pos.epoch;
    for (int epoch = start_epoch; epoch < last_epoch; ++epoch) {
      const auto t_epoch = std::chrono::steady_clock::now();
      LossMeter train_meter;
      if (train_epoch(epoch, epoch == start_epoch ? pos.batch : 0, sigint, train_meter)) return false;
      nlohmann::json ep = {{"type", "epoch"}, {"epoch", epoch}, {"step", pos.global_step}};
      if (train_meter.count() > 0) ep["train"] = losses_json(job.loss_names(), train_meter.mean());
      validate(epoch, ep);
      ep["seconds"] = seconds_since(t_epoch);
      metrics->write(ep);
      save(epoch + 1, 0);
      record->add_epoch(epoch, weights_sha256(job.model()), ep);
      record->save();
    }
    return true;
  }
};

}  // namespace

TrainingResult run_training(TrainingJob& job, const TrainingOptions& opt) {
  if (opt.out_dir.empty()) throw std::runtime_error(opt.name + " needs an output folder (--out)");
  Loop loop{job, opt, {}, 0, 0, nullptr, nullptr, {}};
  loop.open_run();
  const auto t_start = std::chrono::steady_clock::now();
  const bool completed = loop.run();
  loop.res.global_step = loop.pos.global_step;
  loop.res.checkpoint = loop.checkpoint_path();
  loop.res.finished = completed && loop.last_epoch == opt.epochs;
  if (completed && !opt.quiet)
    fmt::print("{} done: {} steps in {}, checkpoint {}\n", opt.name, loop.steps_this_call, fmt_duration(seconds_since(t_start)),
               loop.res.checkpoint);
  return loop.res;
}

}  // namespace ms
