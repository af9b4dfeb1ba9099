#include "train/run.h"

#include <fmt/core.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "engine/autograd.h"
#include "engine/io.h"
#include "engine/threads.h"
#include "engine/nn_state.h"
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

namespace {

// SHA-256 of the tensor data a save_safetensors of `files` writes (map order = file order).
std::string payload_sha256(const std::map<std::string, FileTensor>& files) {
  Sha256 h;
  for (const auto& kv : files) h.update(kv.second.bytes.data(), kv.second.bytes.size());
  return h.hex_digest();
}

}  // namespace

void verify_checkpoint_payload(const std::string& path) {
  auto meta = safetensors_metadata(path);  // also checks the header and that the data fits the file
  auto it = meta.find("payload_sha256");
  if (it == meta.end()) return;
  std::ifstream f(path, std::ios::binary);
  uint64_t n = 0;
  if (!f.read(reinterpret_cast<char*>(&n), 8)) throw std::runtime_error(path + ": cannot read");
  f.seekg(std::streamoff(8 + n));
  Sha256 h;
  std::vector<char> buf(1 << 20);
  while (f) {
    f.read(buf.data(), std::streamsize(buf.size()));
    if (f.gcount() > 0) h.update(buf.data(), size_t(f.gcount()));
  }
  const std::string got = h.hex_digest();
  if (got != it->second)
    throw std::runtime_error(path + ": corrupt checkpoint: its tensor data does not match the payload_sha256 recorded in it (" +
                             it->second.substr(0, 12) + "... recorded, " + got.substr(0, 12) + "... found)");
}

void save_checkpoint(const std::string& out_dir, const nn::Module& model, const AdamW& optim, const RunPosition& pos,
                     std::map<std::string, std::string> meta) {
  const std::string optim_name = fmt::format("optimizer_step{}.safetensors", pos.global_step);
  std::map<std::string, FileTensor> ostate;
  for (const auto& [k, t] : optim.state()) ostate[k] = FileTensor::from_float(t);
  save_safetensors(out_dir + "/" + optim_name, ostate,
                   {{"global_step", std::to_string(pos.global_step)}, {"payload_sha256", payload_sha256(ostate)}});
  meta["epoch"] = std::to_string(pos.epoch);
  meta["batch"] = std::to_string(pos.batch);
  meta["global_step"] = std::to_string(pos.global_step);
  meta["dropout_rng_offset"] = std::to_string(model.rng().offset());
  meta["optimizer"] = optim_name;
  std::map<std::string, FileTensor> files = module_state_files(model);
  meta["payload_sha256"] = payload_sha256(files);
  save_safetensors(out_dir + "/" + kCheckpointLast, files, meta);
  for (auto& e : fs::directory_iterator(out_dir)) {  // older optimiser files are no longer referenced
    auto n = e.path().filename().string();
    if (n.rfind("optimizer_step", 0) == 0 && n != optim_name && n.find(".tmp") == std::string::npos) fs::remove(e.path());
  }
}

RunPosition load_checkpoint(const std::string& ck, nn::Module& model, AdamW& optim) {
  auto meta = safetensors_metadata(ck);
  for (const char* k : {"epoch", "batch", "global_step", "dropout_rng_offset", "optimizer"})
    if (!meta.count(k)) throw std::runtime_error(ck + ": not a training checkpoint (metadata has no '" + k + "')");
  const std::string optim_path = (fs::path(ck).parent_path() / meta["optimizer"]).string();
  if (!fs::exists(optim_path))
    throw std::runtime_error(ck + ": its optimiser state '" + optim_path + "' is missing");
  verify_checkpoint_payload(ck);
  verify_checkpoint_payload(optim_path);
  load_module_state(model, load_safetensors(ck), true, ck);
  optim.load_state(load_safetensors(optim_path));
  RunPosition pos;
  auto num = [&](const char* key) -> unsigned long long {
    const std::string& v = meta[key];
    size_t used = 0;
    unsigned long long x = 0;
    try {
      x = std::stoull(v, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (v.empty() || used != v.size() || v[0] == '-')
      throw std::runtime_error(ck + ": metadata '" + key + "' is '" + v + "', not a count");
    return x;
  };
  pos.epoch = int(num("epoch"));
  pos.batch = int64_t(num("batch"));
  pos.global_step = int64_t(num("global_step"));
  model.rng().set_offset(num("dropout_rng_offset"));
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

// ---- non-finite updates ---------------------------------------------------------------------

std::string check_update_finite(const LossNames& names, LossValues& values, const nn::Module& model, int64_t step) {
  // Fault injection for the tests: MEDSLIP_FAULT_INJECT=nan_loss@K | nan_grad@K.
  static const std::pair<std::string, int64_t> inject = [] {
    const char* e = std::getenv("MEDSLIP_FAULT_INJECT");
    if (!e || !*e) return std::pair<std::string, int64_t>{"", -1};
    std::string v = e;
    const size_t at = v.find('@');
    if (at == std::string::npos) return std::pair<std::string, int64_t>{"", -1};
    return std::pair<std::string, int64_t>{v.substr(0, at), std::atoll(v.c_str() + at + 1)};
  }();
  auto params = model.named_parameters();
  static bool injected = false;  // once per process: a skipped update keeps its step number
  if (inject.second == step && !injected) {
    injected = true;
    if (inject.first == "nan_loss" && values.size() > 1) values[1] = std::nanf("");
    if (inject.first == "nan_grad")
      for (auto& [name, p] : params)
        if (p.grad().defined()) {
          Tensor g = p.grad();
          std::vector<float> v = g.to_vector();
          v[0] = std::nanf("");
          g.copy_(Tensor::from_vector(v, g.shape()).to(g.device()));
          break;
        }
  }
  for (size_t k = 0; k < values.size(); ++k)
    if (!std::isfinite(values[k]))
      return fmt::format("loss term '{}' is {}", k < names.keys.size() ? names.keys[k] : std::to_string(k), values[k]);
  for (const auto& [name, p] : params) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    std::vector<float> v = g.to_vector();
    int64_t bad = 0;
    for (float x : v) bad += !std::isfinite(x);
    if (bad) return fmt::format("the gradient of '{}' has {} non-finite value{}", name, bad, bad == 1 ? "" : "s");
  }
  return "";
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
  int skipped = 0;           // non-finite updates skipped in this call
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
    for (auto& e : fs::directory_iterator(opt.out_dir)) {  // a write killed half-way leaves NAME.tmp
      const std::string n = e.path().filename().string();
      if (n.size() > 4 && n.compare(n.size() - 4, 4, ".tmp") == 0) fs::remove(e.path());
    }
    bool resuming = !opt.resume.empty();
    if (resuming) {
      const bool is_dir = fs::is_directory(opt.resume);
      const std::string ck0 = is_dir ? opt.resume + "/" + kCheckpointLast : opt.resume;
      std::error_code ec;
      const bool own_folder = fs::equivalent(is_dir ? fs::path(opt.resume) : fs::path(opt.resume).parent_path(), opt.out_dir, ec);
      if (!fs::exists(ck0) && own_folder) {
        // Killed (or preempted) before its first checkpoint: the same command starts it afresh.
        fmt::print("--resume {}: no checkpoint there yet (the run stopped before its first one): starting from the beginning\n",
                   opt.resume);
        std::fflush(stdout);
        resuming = false;
      } else {
        const std::string ck = resolve_resume(opt.resume);
        pos = load_checkpoint(ck, job.model(), job.optimizer());
        check_record(ck);
        truncate_metrics();
        if (!opt.quiet) fmt::print("resumed from {}: epoch {}, batch {}, step {}\n", ck, pos.epoch, pos.batch, pos.global_step);
      }
    }
    // The record: written at the start, extended every epoch.
    record = std::make_unique<RunRecord>(opt.out_dir, resuming && fs::exists(opt.out_dir + "/" + kRecordFile));
    auto& j = record->json();
    record_build_and_config(j, opt.device, opt.config_yaml, opt.seed);
    job.describe_record(j);
    if (!j.contains("epochs")) j["epochs"] = nlohmann::json::array();
    record->save();
    write_file_atomic(opt.out_dir + "/config.yaml", opt.config_yaml);
    metrics = std::make_unique<MetricsLog>(opt.out_dir, resuming);
    last_epoch = opt.max_epochs > 0 ? std::min(opt.epochs, pos.epoch + opt.max_epochs) : opt.epochs;
  }

  // A checkpoint saved at the end of epoch E must hold the weights whose hash the record
  // gives for E (where the record has one): a second check beside payload_sha256.
  void check_record(const std::string& ck) {
    const std::string rec = opt.out_dir + "/" + kRecordFile;
    if (pos.batch != 0 || pos.epoch == 0 || !fs::exists(rec)) return;
    nlohmann::json j;
    try {
      j = RunRecord::load(opt.out_dir);
    } catch (const std::exception&) {
      return;  // an unreadable record is rewritten below; the checkpoint was checked on its own
    }
    if (!j.contains("epochs") || !j["epochs"].is_array()) return;
    for (const auto& e : j["epochs"])
      if (e.is_object() && e.value("epoch", -1) == pos.epoch - 1 && e.contains("weights_sha256")) {
        const std::string want = e["weights_sha256"].is_string() ? e["weights_sha256"].get<std::string>() : "";
        const std::string got = weights_sha256(job.model());
        if (got != want)
          throw std::runtime_error(ck + ": its weights do not match " + rec + " (epoch " + std::to_string(pos.epoch - 1) +
                                   " weights_sha256 " + want.substr(0, 12) + "..., the checkpoint gives " + got.substr(0, 12) + "...)");
      }
  }

  // Lines written after the checkpoint (the updates a resume repeats) and a line torn by a kill
  // are dropped, so metrics.jsonl reads as one uninterrupted run.
  void truncate_metrics() {
    const std::string path = opt.out_dir + "/" + kMetricsFile;
    std::ifstream f(path);
    if (!f) return;
    std::string line, kept;
    while (std::getline(f, line)) {
      nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.is_object() || !j.contains("step") || !j["step"].is_number_integer()) continue;
      if (j["step"].get<int64_t>() > pos.global_step) continue;
      if (j.value("type", "") == "skipped" && j["step"].get<int64_t>() == pos.global_step) continue;
      kept += line + "\n";
    }
    write_file_atomic(path, kept);
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
      job.step_index = pos.global_step;
      try {
        if (!job.train_step(s)) break;
        if (!std::isfinite(s.at(0))) throw NonFiniteStep(fmt::format("the total loss is {}", s.at(0)));
      } catch (const NonFiniteStep& e) {
        const std::string where = fmt::format("step {} (epoch {} batch {})", pos.global_step, epoch, b);
        if (skipped < opt.skip_nonfinite) {
          ++skipped;
          metrics->write({{"type", "skipped"}, {"epoch", epoch}, {"batch", b}, {"step", pos.global_step}, {"reason", e.what()}});
          fmt::print(stderr, "{}: {}: update skipped ({} of at most {})\n", where, e.what(), skipped, opt.skip_nonfinite);
          continue;
        }
        const bool have = fs::exists(checkpoint_path());
        throw std::runtime_error(fmt::format(
            "{}: {}; training stopped, {}{}", where, e.what(),
            have ? "the last good checkpoint " + checkpoint_path() + " is kept" : "no checkpoint was written yet",
            opt.skip_nonfinite > 0 ? fmt::format(" ({} updates were already skipped)", skipped)
                                   : " (--skip-nonfinite N skips up to N such updates)"));
      }
      res.losses.push_back(s);
      ++pos.global_step;
      ++steps_this_call;
      train_meter.add(s);
      log_step(epoch, b, lr, s, double(train_meter.count() * job.batch_size()) / std::max(seconds_since(t_epoch), 1e-9));
      const bool budget = opt.stop_after_steps >= 0 && steps_this_call >= opt.stop_after_steps;
      if (!(sigint.requested() || budget) && opt.checkpoint_every > 0 && pos.global_step % opt.checkpoint_every == 0 &&
          b + 1 < job.steps_per_epoch())
        save(epoch, b + 1);  // periodic, for preemptible machines; the epoch's end saves anyway
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
  Loop loop{job, opt, {}, 0, 0, 0, nullptr, nullptr, {}};
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
