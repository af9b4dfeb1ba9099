#include "train/run.h"

#include <CLI/CLI.hpp>
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
#include "model/config.h"
#include "train/common.h"
#include "train/hash.h"
#include "train/data_parallel.h"
#include "train/platform.h"
#include "train/tensorboard.h"

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
  j["platform"] = {{"cpu", cpu_model()}, {"isa", build_isa()}, {"threads", num_threads()}, {"blas", blas_info()}, {"conv_algo", cpu_conv_algo()}, {"gemm", cpu_gemm()}, {"precision", cpu_precision()}, {"device", device_name(device)}};
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
  DataParallel* dp;          // over opt.comm (or one process), opt.accum_steps
  RunPosition pos;           // where the run is
  int last_epoch = 0;        // exclusive
  int64_t steps_this_call = 0;
  int skipped = 0;           // non-finite updates skipped in this call
  std::unique_ptr<MetricsLog> metrics;
  std::unique_ptr<RunRecord> record;
  std::unique_ptr<TensorBoardWriter> tb;  // events.out.tfevents.*.<name> in out_dir
  TrainingResult res;
  // Data-parallel / planned batches (train_size() >= 0): the sampler position of this
  // epoch in global samples (every slot together), the rank, who writes.
  bool planned = false;
  int64_t epoch_sample = 0;
  bool root = true;

  std::string checkpoint_path() const { return opt.out_dir + "/" + kCheckpointLast; }
  int64_t replicas() const { return dp->replicas(); }

  void save(int epoch, int64_t batch) {
    if (!root) return;  // only rank 0 writes the run folder
    std::map<std::string, std::string> meta = {{"config", opt.config_yaml}, {"producer", build_version()}};
    if (planned) {
      meta["epoch_sample"] = std::to_string(batch == 0 ? 0 : epoch_sample);
      meta["replicas"] = std::to_string(replicas());
      meta["world_size"] = std::to_string(dp->world());
      meta["accum_steps"] = std::to_string(dp->accum_steps());
    }
    save_checkpoint(opt.out_dir, job.model(), job.optimizer(), {epoch, batch, pos.global_step}, meta);
  }

  // Fresh or resumed; then the record, config.yaml and metrics.jsonl.
  void open_run() {
    planned = job.train_size() >= 0;
    if (!planned && dp->active())
      throw std::runtime_error(opt.name + ": this job runs in one process only (no data-parallel training, accum_steps 1)");
    root = dp->comm().is_root();
    const bool world = dp->world() > 1;
    if (root) {
      fs::create_directories(opt.out_dir);
      for (auto& e : fs::directory_iterator(opt.out_dir)) {  // a write killed half-way leaves NAME.tmp
        const std::string n = e.path().filename().string();
        if (n.size() > 4 && n.compare(n.size() - 4, 4, ".tmp") == 0) fs::remove(e.path());
      }
    }
    bool resuming = !opt.resume.empty() && !fresh_start(world);
    nlohmann::json resumed;  // what the checkpoint says about the run that wrote it
    if (resuming) {
      // Rank 0 reads the checkpoint; the others receive it (no rank but 0 needs the file).
      std::string info;
      if (root) {
        const std::string ck = resolve_resume(opt.resume);
        pos = load_checkpoint(ck, job.model(), job.optimizer());
        check_record(ck);
        truncate_metrics();
        auto meta = safetensors_metadata(ck);
        const int64_t r_old = meta.count("replicas") ? std::stoll(meta["replicas"]) : 1;
        resumed = {{"checkpoint", ck}, {"epoch", pos.epoch}, {"batch", pos.batch}, {"global_step", pos.global_step},
                   {"replicas", r_old},
                   {"world_size", meta.count("world_size") ? std::stoll(meta["world_size"]) : 1},
                   {"accum_steps", meta.count("accum_steps") ? std::stoll(meta["accum_steps"]) : 1},
                   // A checkpoint from before the sampler: batch * batch_size samples of one slot.
                   {"epoch_sample", meta.count("epoch_sample") ? std::stoll(meta["epoch_sample"]) : pos.batch * job.batch_size() * r_old},
                   {"dropout_rng_offset", job.model().rng().offset()}};
        info = resumed.dump();
      }
      if (world) {
        dp->comm().broadcast(info, "resume (position)");
        resumed = nlohmann::json::parse(info);
        pos = {resumed["epoch"].get<int>(), resumed["batch"].get<int64_t>(), resumed["global_step"].get<int64_t>()};
        job.model().rng().set_offset(resumed["dropout_rng_offset"].get<uint64_t>());
        dp->broadcast_state("resume (model)");
        auto st = job.optimizer().state();
        for (auto& [name, t] : st) dp->comm().broadcast(t, "resume (optimiser " + name + ")");
        job.optimizer().load_state(st);
      }
      epoch_sample = resumed["epoch_sample"].get<int64_t>();
      if (!opt.quiet && root)
        fmt::print("resumed from {}: epoch {}, batch {}, step {}\n", resumed["checkpoint"].get<std::string>(), pos.epoch,
                   pos.batch, pos.global_step);
    } else if (world) {
      dp->broadcast_state("start (rank 0's parameters and buffers)");
    }
    if (root) {
      // The record: written at the start, extended every epoch.
      record = std::make_unique<RunRecord>(opt.out_dir, resuming && fs::exists(opt.out_dir + "/" + kRecordFile));
      auto& j = record->json();
      record_build_and_config(j, opt.device, opt.config_yaml, opt.seed);
      job.describe_record(j);
      if (!j.contains("epochs")) j["epochs"] = nlohmann::json::array();
      const Communicator& c = dp->comm();
      j["distributed"] = {{"world_size", c.world()}, {"launcher", c.launcher()}, {"hosts", c.hosts()},
                          {"accum_steps", dp->accum_steps()}, {"allreduce", c.backend(opt.device)}};
      if (resuming) {
        nlohmann::json note = {{"at_step", pos.global_step}, {"epoch", pos.epoch}, {"epoch_sample", epoch_sample},
                               {"world_size_before", resumed["world_size"]}, {"accum_steps_before", resumed["accum_steps"]},
                               {"world_size", dp->world()}, {"accum_steps", dp->accum_steps()}};
        if (note["world_size_before"] != note["world_size"] || note["accum_steps_before"] != note["accum_steps"])
          note["note"] = "world size or accum_steps changed: the rest of the epoch continues from global sample " +
                         std::to_string(epoch_sample) + ", re-split over the new slots";
        if (!j.contains("resumes")) j["resumes"] = nlohmann::json::array();
        j["resumes"].push_back(note);
      }
      record->save();
      write_file_atomic(opt.out_dir + "/config.yaml", opt.config_yaml);
      metrics = std::make_unique<MetricsLog>(opt.out_dir, resuming);
      tb = std::make_unique<TensorBoardWriter>(opt.out_dir, opt.name);
      std::string yaml = "    ";  // a markdown code block: 4-space indent
      for (char c : opt.config_yaml) yaml += c == '\n' ? std::string("\n    ") : std::string(1, c);
      tb->add_text("config", fmt::format("{}: {}\n\n{}", opt.name, job.describe(), yaml), pos.global_step);
    }
    last_epoch = opt.max_epochs > 0 ? std::min(opt.epochs, pos.epoch + opt.max_epochs) : opt.epochs;
  }

  void write_metrics(const nlohmann::json& line) {
    if (metrics) metrics->write(line);
  }
  void add_scalar(const std::string& tag, double v) {  // TensorBoard, rank 0 only
    if (tb) tb->add_scalar(tag, v, pos.global_step);
  }

  // --resume on the run's own folder before its first checkpoint (killed or preempted early):
  // the same command starts afresh. Rank 0 decides; the others follow.
  bool fresh_start(bool world) {
    std::string fresh = "0";
    if (root) {
      const bool is_dir = fs::is_directory(opt.resume);
      const std::string ck0 = is_dir ? opt.resume + "/" + kCheckpointLast : opt.resume;
      std::error_code ec;
      const bool own_folder =
          fs::equivalent(is_dir ? fs::path(opt.resume) : fs::path(opt.resume).parent_path(), opt.out_dir, ec);
      if (!fs::exists(ck0) && own_folder) {
        fmt::print("--resume {}: no checkpoint there yet (the run stopped before its first one): starting from the "
                   "beginning\n",
                   opt.resume);
        std::fflush(stdout);
        fresh = "1";
      }
    }
    if (world) dp->comm().broadcast(fresh, "resume (fresh start?)");
    return fresh == "1";
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

  void log_step(int epoch, int64_t b, int64_t spe, float lr, const LossValues& s, double ips) {
    nlohmann::json line = losses_json(job.loss_names(), s);
    line["type"] = "step";
    line["epoch"] = epoch;
    line["batch"] = b;
    line["step"] = pos.global_step;
    line["lr"] = lr;
    line["images_per_s"] = ips;
    write_metrics(line);
    for (size_t i = 0; i < s.size(); ++i) add_scalar("train/" + job.loss_names().keys.at(i), s[i]);
    add_scalar("train/lr", lr);
    add_scalar("train/images_per_s", ips);
    if (opt.quiet || !root || !(b % std::max(1, opt.log_every) == 0 || b + 1 == spe)) return;
    const double eta = double((last_epoch - epoch) * spe - (b + 1)) * job.batch_size() * replicas() / std::max(ips, 1e-9);
    fmt::print("epoch {}/{} step {}/{} | {} | lr {:.2e} | {:.1f} img/s | ETA {}\n", epoch, last_epoch - 1, b + 1, spe,
               format_losses(job.loss_names(), s), lr, ips, fmt_duration(eta));
    std::fflush(stdout);
  }

  // Updates of a planned epoch (any world size, accum_steps): this rank's K slots of the
  // sampler from global sample `start`, B items per micro-batch; returns the steps planned.
  int64_t start_planned_epoch(int epoch, int64_t first, int64_t start) {
    SamplerOptions so = opt.sampler;
    so.replicas = replicas();
    DistributedSampler sampler(job.train_size(), so);
    const int64_t B = job.batch_size(), K = dp->accum_steps();
    int64_t steps = sampler.num_samples(start) / B;  // drop_last batches, as the reference's loader
    if (opt.max_steps_per_epoch > 0) steps = std::min(steps, std::max<int64_t>(0, opt.max_steps_per_epoch - first));
    std::vector<std::vector<int64_t>> slots;
    for (int64_t k = 0; k < K; ++k) slots.push_back(sampler.indices(epoch, dp->slot(int(k)), start));
    std::vector<std::vector<int64_t>> plan;
    for (int64_t t = 0; t < steps; ++t)
      for (int64_t k = 0; k < K; ++k)
        plan.emplace_back(slots[size_t(k)].begin() + t * B, slots[size_t(k)].begin() + (t + 1) * B);
    job.start_epoch_plan(epoch, std::move(plan));
    return steps;
  }

  // One update of K micro-batches on every rank; false when the plan ran out.
  bool planned_step(LossValues& s) {
    const int K = dp->accum_steps();
    const bool active = dp->active();
    if (dp->world() > 1) dp->broadcast_buffers("step " + std::to_string(pos.global_step) + " (buffers)");
    job.optimizer().zero_grad();
    std::vector<LossValues> rows;
    for (int k = 0; k < K; ++k) {
      if (active) job.model().rng().set_offset(dp->dropout_offset(pos.global_step, k));
      LossValues v;
      if (!job.forward_backward(v)) {
        if (k == 0 && !active) return false;
        throw std::logic_error("training plan ran out in the middle of a step");
      }
      dp->add_micro_gradients(k);
      rows.push_back(v);
    }
    res.comm_seconds += dp->reduce_gradients("gradient all-reduce at step " + std::to_string(pos.global_step));
    s = dp->mean_over_micro_batches(rows, "loss reduction at step " + std::to_string(pos.global_step));
    // After the reduction every rank holds the same losses and gradients, so every rank takes
    // the same decision here (stop, or skip the update under --skip-nonfinite).
    const std::string why = check_update_finite(job.loss_names(), s, job.model(), pos.global_step);
    if (!why.empty()) {
      job.optimizer().zero_grad();
      throw NonFiniteStep(why);
    }
    job.optimizer().step();
    return true;
  }

  // The epoch's updates; true when Ctrl-C or the step budget stopped the run (checkpoint saved).
  bool train_epoch(int epoch, int64_t first, const SigintStop& sigint, LossMeter& train_meter) {
    int64_t spe = job.steps_per_epoch();
    if (planned) {
      const int64_t start = first == 0 ? 0 : epoch_sample;
      epoch_sample = start;
      spe = first + start_planned_epoch(epoch, first, start);
    } else {
      job.start_epoch(epoch, first);
    }
    const auto t_epoch = std::chrono::steady_clock::now();
    LossValues s;
    for (int64_t b = first; b < spe; ++b) {
      const float lr = opt.schedule.at(epoch, b);
      job.optimizer().set_lr(lr);
      const auto t_step = std::chrono::steady_clock::now();
      job.step_index = pos.global_step;
      try {
        if (!(planned ? planned_step(s) : job.train_step(s))) break;
        if (!std::isfinite(s.at(0))) throw NonFiniteStep(fmt::format("the total loss is {}", s.at(0)));
      } catch (const NonFiniteStep& e) {
        const std::string where = fmt::format("step {} (epoch {} batch {})", pos.global_step, epoch, b);
        if (skipped < opt.skip_nonfinite) {
          ++skipped;
          write_metrics({{"type", "skipped"}, {"epoch", epoch}, {"batch", b}, {"step", pos.global_step}, {"reason", e.what()}});
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
      res.step_seconds += seconds_since(t_step);
      res.losses.push_back(s);
      ++pos.global_step;
      ++steps_this_call;
      epoch_sample += job.batch_size() * replicas();
      train_meter.add(s);
      log_step(epoch, b, spe, lr, s,
               double(train_meter.count() * job.batch_size() * replicas()) / std::max(seconds_since(t_epoch), 1e-9));
      const bool budget = opt.stop_after_steps >= 0 && steps_this_call >= opt.stop_after_steps;
      bool stop = sigint.requested() || budget;
      if (dp->world() > 1) stop = dp->any_rank(stop, "stop check at step " + std::to_string(pos.global_step));
      if (!stop && opt.checkpoint_every > 0 && pos.global_step % opt.checkpoint_every == 0 && b + 1 < spe)
        save(epoch, b + 1);  // periodic, for preemptible machines; the epoch's end saves anyway
      if (stop) {
        save(epoch, b + 1);
        if (!opt.quiet && root)
          fmt::print("{}: saved {} at epoch {} batch {} (resume with --resume {})\n",
                     sigint.requested() ? "interrupted" : "stopped", checkpoint_path(), epoch, b + 1, opt.out_dir);
        return true;
      }
    }
    return false;
  }

  // Validation (spec H.4): eval mode (running BN statistics, no dropout), no grad. With
  // several ranks each validates its DistributedSampler share (shuffled, drop_last batches,
  // as the reference's validation loader) and the sums and counts are added over ranks.
  void validate(int epoch, nlohmann::json& ep) {
    LossMeter meter;
    const bool world = dp->world() > 1;
    if (world) dp->broadcast_buffers("validation at epoch " + std::to_string(epoch) + " (buffers)");  // rank 0's running statistics
    job.model().eval();
    bool has;
    {
      NoGradGuard ng;
      if (world && planned) {
        has = job.valid_size() > 0;
        SamplerOptions so = opt.sampler;
        so.replicas = dp->world();
        const std::vector<std::vector<int64_t>> batches = job.validation_batches(epoch, dp->comm().rank(), so);
        if (has) job.validate_items(epoch, batches, meter);
        // Sums and counts over ranks, in rank order.
        std::vector<double> v(job.loss_names().keys.size() + 1, 0.0);
        for (size_t k = 0; k < meter.sum().size(); ++k) v[k] = meter.sum()[k];
        v.back() = double(meter.count());
        v = dp->sum_over_ranks(v, "validation at epoch " + std::to_string(epoch));
        LossValues sum(v.size() - 1);
        for (size_t k = 0; k < sum.size(); ++k) sum[k] = float(v[k]);
        meter.set(sum, int64_t(v.back()));
      } else {
        has = job.validate(epoch, meter);
      }
    }
    job.model().train();
    if (!has || meter.count() == 0) return;
    LossValues v = meter.mean();
    ep["valid"] = losses_json(job.loss_names(), v);
    for (size_t i = 0; i < v.size(); ++i) add_scalar("valid/" + job.loss_names().keys.at(i), v[i]);
    if (!opt.quiet && root) fmt::print("epoch {} validation ({} batches): loss {:.4f}\n", epoch, meter.count(), v[0]);
  }

  // The job's epoch_metrics and epoch_images: metrics.jsonl, TensorBoard, out_dir/<folder>/.
  void epoch_extras(int epoch, nlohmann::json& ep) {
    const auto m = job.epoch_metrics(epoch);
    for (const auto& [k, v] : m) {
      ep["metrics"][k] = v;
      add_scalar("valid/" + k, v);
    }
    if (!root) return;  // the pictures are rank 0's (it alone writes the run folder)
    for (const auto& [tag, img] : job.epoch_images(epoch)) {
      tb->add_image(tag, img, pos.global_step);
      const fs::path p(tag);
      fs::create_directories(fs::path(opt.out_dir) / p.parent_path());
      write_png((fs::path(opt.out_dir) / p.parent_path() / fmt::format("epoch{}_{}.png", epoch, p.filename().string())).string(), img);
    }
  }

  // Returns false when the run stopped early.
  bool run() {
    SigintStop sigint;
    if (!opt.quiet && root)
      fmt::print("{}: {}, epochs {}..{}, {} params, out {}{}\n", opt.name, job.describe(), pos.epoch, last_epoch - 1,
                 job.model().num_parameters(), opt.out_dir,
                 dp->active()
                     ? fmt::format("; data-parallel: {} ranks x {} micro-batches of {} = {} images per update", dp->world(),
                                   dp->accum_steps(), job.batch_size(), replicas() * job.batch_size())
                     : "");
    const int start_epoch = pos.epoch;
    for (int epoch = start_epoch; epoch < last_epoch; ++epoch) {
      const auto t_epoch = std::chrono::steady_clock::now();
      LossMeter train_meter;
      if (train_epoch(epoch, epoch == start_epoch ? pos.batch : 0, sigint, train_meter)) return false;
      nlohmann::json ep = {{"type", "epoch"}, {"epoch", epoch}, {"step", pos.global_step}};
      if (train_meter.count() > 0) {
        const LossValues m = train_meter.mean();
        ep["train"] = losses_json(job.loss_names(), m);
        for (size_t i = 0; i < m.size(); ++i)
          add_scalar("train_epoch_mean/" + job.loss_names().keys.at(i), m[i]);
      }
      validate(epoch, ep);
      epoch_extras(epoch, ep);
      ep["seconds"] = seconds_since(t_epoch);
      add_scalar("time/epoch_seconds", ep["seconds"].get<double>());
      write_metrics(ep);
      epoch_sample = 0;
      save(epoch + 1, 0);
      if (root) {
        record->add_epoch(epoch, weights_sha256(job.model()), ep);
        record->save();
      }
    }
    return true;
  }
};

}  // namespace

std::vector<std::vector<int64_t>> TrainingJob::validation_batches(int epoch, int rank, const SamplerOptions& sampler) const {
  SamplerOptions so = sampler;
  so.shuffle = true;
  const std::vector<int64_t> mine = DistributedSampler(valid_size(), so).indices(epoch, rank);
  std::vector<std::vector<int64_t>> batches;
  for (int64_t t = 0; t + batch_size() <= int64_t(mine.size()); t += batch_size())
    batches.emplace_back(mine.begin() + t, mine.begin() + t + batch_size());
  return batches;
}

TrainingResult run_training(TrainingJob& job, const TrainingOptions& opt) {
  if (opt.out_dir.empty()) throw std::runtime_error(opt.name + " needs an output folder (--out)");
  std::unique_ptr<Communicator> single;
  Communicator* comm = opt.comm;
  if (!comm) {
    single = single_process_communicator();
    comm = single.get();
  }
  DataParallel dp(*comm, job.model(), opt.accum_steps);
  Loop loop{job, opt, &dp, {}, 0, 0, 0, nullptr, nullptr, nullptr, {}, false, 0, true};
  loop.open_run();
  const auto t_start = std::chrono::steady_clock::now();
  const bool completed = loop.run();
  loop.res.global_step = loop.pos.global_step;
  loop.res.checkpoint = loop.checkpoint_path();
  loop.res.finished = completed && loop.last_epoch == opt.epochs;
  if (completed && !opt.quiet && loop.root)
    fmt::print("{} done: {} steps in {}, checkpoint {}\n", opt.name, loop.steps_this_call, fmt_duration(seconds_since(t_start)),
               loop.res.checkpoint);
  return loop.res;
}

// ---- what every training command shares -----------------------------------------------------

TrainingOptions training_options(const std::string& name, const RunFlags& run, const TrainingRecipe& recipe,
                                 const std::string& config_yaml, int64_t seed, int log_every, int max_steps_per_epoch) {
  TrainingOptions t;
  t.name = name;
  t.out_dir = run.out_dir;
  t.resume = run.resume;
  t.device = run.device;
  t.config_yaml = config_yaml;
  t.seed = seed;
  t.epochs = recipe.epochs;
  t.schedule = recipe.schedule();
  t.max_epochs = run.max_epochs;
  t.stop_after_steps = run.stop_after_steps;
  t.log_every = log_every;
  t.checkpoint_every = run.checkpoint_every;
  t.skip_nonfinite = run.skip_nonfinite;
  t.quiet = run.quiet;
  t.comm = run.comm;
  t.accum_steps = recipe.accum_steps;
  t.sampler.seed = uint64_t(seed);
  t.sampler.drop_last = recipe.sampler_drop_last;
  t.sampler.set_epoch = recipe.sampler_set_epoch;
  t.sampler.permutation = recipe.sampler_permutation;
  t.max_steps_per_epoch = max_steps_per_epoch;
  return t;
}

void add_run_flags(CLI::App& app, RunCli& f, const std::string& config_help) {
  app.add_option("--config", f.config, config_help)->required()->check(CLI::ExistingFile);
  app.add_option("--resume", f.resume,
                 "a run folder (or its checkpoint_last.safetensors) to continue; when it is the run's own folder and "
                 "holds no checkpoint yet, the run starts from the beginning (so a preemptible job reruns one command)");
  app.add_option("--out", f.out, "run folder (default runs/<config name>)");
  add_device_options(app, f.device, f.tf32);
  app.add_option("--threads", f.threads, "threads (default: OMP_NUM_THREADS or all cores)");
  app.add_option("--seed", f.seed, "override the config's seed");
  app.add_option("--epochs", f.epochs, "stop after this many epochs (the schedule keeps the config's length)");
  app.add_option("--max-steps", f.max_steps, "stop (with a checkpoint) after this many steps");
  app.add_option("--checkpoint-every", f.checkpoint_every,
                 "also save a checkpoint every N steps within an epoch (for preemptible machines; default: epoch ends)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--skip-nonfinite", f.skip_nonfinite,
                 "skip up to N updates whose loss or gradient is NaN/inf (default 0: stop with an error naming the "
                 "step and the loss term, keeping the last good checkpoint)")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--quiet", f.quiet, "no progress lines");
  app.add_option("--dist-timeout", f.dist.timeout_s,
                 "data-parallel (mpirun): seconds a rank waits for the others in one collective before it stops "
                 "the job naming the silent ranks (default 300)");
  app.add_option("--dist-backend", f.dist.backend, "data-parallel gradient all-reduce of CUDA tensors: auto | nccl | mpi (host)");
  app.footer("Data-parallel: mpirun -np N " + app.get_name() + " ... (a build with make MPI=1) trains one model on N ranks;\n"
             "accum_steps: K in the config runs K micro-batches per update. See docs/distributed.md.");
}

std::unique_ptr<Communicator> start_run(const RunCli& f, RunFlags& run) {
  if (f.threads > 0) set_num_threads(f.threads);
  std::unique_ptr<Communicator> comm = make_communicator(f.dist, parse_device(f.device));
  run.comm = comm.get();
  run.resume = f.resume;
  run.out_dir = !f.out.empty() ? f.out : !f.resume.empty() ? f.resume : "runs/" + fs::path(f.config).stem().string();
  run.device = select_device(f.device, f.tf32);
  run.max_epochs = f.epochs;
  run.stop_after_steps = f.max_steps;
  run.checkpoint_every = f.checkpoint_every;
  run.skip_nonfinite = f.skip_nonfinite;
  run.quiet = f.quiet;
  return comm;
}

}  // namespace ms
