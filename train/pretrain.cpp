#include "train/pretrain.h"

#include <fmt/core.h>

#include <atomic>
#include <cmath>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "data/datasets.h"
#include "data/loader.h"
#include "engine/autograd.h"
#include "engine/io.h"
#include "engine/optim.h"
#include "engine/threads.h"
#include "model/books.h"
#include "model/state.h"
#include "train/common.h"
#include "train/hash.h"
#include "train/platform.h"
#include "train/run_record.h"

namespace fs = std::filesystem;

namespace ms {

namespace {

std::atomic<bool> g_stop{false};
extern "C" void on_sigint(int) { g_stop = true; }

// PretrainBatch (loader layout) -> MedslipBatch (model layout).
MedslipBatch to_model_batch(const PretrainBatch& pb, Device dev) {
  MedslipBatch b;
  b.image = pb.image.to(dev);
  b.matrix = pb.matrix.to_vector();
  for (float v : pb.label_pathology.to_vector()) b.label_pathology.push_back(int64_t(v));
  for (float v : pb.label_anatomy.to_vector()) b.label_anatomy.push_back(int64_t(v));
  b.index_pathology = pb.index_pathology;
  b.index_anatomy = pb.index_anatomy;
  return b;
}

nlohmann::json losses_json(const StepLosses& l) {
  return {{"loss", l.total}, {"loss_ce_pathology", l.ce_pathology}, {"loss_cl_pathology", l.cl_pathology},
          {"loss_ce_anatomy", l.ce_anatomy}, {"loss_cl_anatomy", l.cl_anatomy}, {"loss_ap", l.icl}};
}

void write_atomic(const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary);
    f << text;
    if (!f) throw std::runtime_error("cannot write '" + tmp + "'");
  }
  fs::rename(tmp, path);
}

std::string fmt_duration(double s) {
  if (s < 60) return fmt::format("{:.0f}s", s);
  if (s < 3600) return fmt::format("{:.0f}m{:02.0f}s", std::floor(s / 60), std::fmod(s, 60));
  return fmt::format("{:.0f}h{:02.0f}m", std::floor(s / 3600), std::fmod(s / 60, 60));
}

Books obtain_books(const MedslipConfig& cfg, const std::string& out_dir, bool quiet) {
  if (!cfg.books.empty()) return load_books_file(cfg.books);
  if (cfg.text_encoder.empty() || cfg.pathology_book.empty())
    throw std::runtime_error("config needs 'books' (a books .safetensors) or 'text_encoder' (a BERT folder) and "
                             "'pathology_book' (the observation descriptions JSON)");
  const std::string cached = out_dir + "/books.safetensors";
  if (fs::exists(cached)) return load_books_file(cached);
  TextEncoder enc = TextEncoder::load(cfg.text_encoder);
  if (!quiet) fmt::print("text encoder: {}\n", enc.describe());
  Books b = build_books(enc, cfg.pathology_book, cfg.text_max_length,
                        quiet ? std::function<void(const std::string&)>() : [](const std::string& s) { fmt::print("{}\n", s); });
  save_books(cached, b);
  return b;
}

}  // namespace

PretrainResult run_pretrain(const PretrainOptions& opt) {
  MedslipConfig cfg = opt.cfg;
  if (cfg.train_file.empty()) throw std::runtime_error("config key 'train_file' is not set (the pretraining JSON)");
  if (cfg.label_file.empty()) throw std::runtime_error("config key 'label_file' is not set (the [N,51,75] .npy matrix)");
  if (opt.out_dir.empty()) throw std::runtime_error("pretrain needs an output folder (--out)");
  fs::create_directories(opt.out_dir);
  const std::string ckpt_path = opt.out_dir + "/" + kCheckpointLast;
  const bool resuming = !opt.resume.empty();

  Books books = obtain_books(cfg, opt.out_dir, opt.quiet);
  MedslipDataset train_set(cfg.train_file, cfg.label_file, cfg.image_root);
  std::unique_ptr<MedslipDataset> valid_set;
  if (!cfg.valid_file.empty()) valid_set = std::make_unique<MedslipDataset>(cfg.valid_file, cfg.label_file, cfg.image_root);

  LoaderOptions lo;
  lo.batch_size = cfg.batch_size;
  lo.image_size = cfg.image_res;
  lo.seed = uint64_t(cfg.seed);
  lo.num_workers = cfg.num_workers;
  PretrainLoader loader(train_set, train_image_fn(cfg.image_res, augment_options(cfg)), lo);
  if (loader.size() == 0)
    throw std::runtime_error(cfg.train_file + ": " + std::to_string(train_set.size()) + " images, fewer than batch_size " +
                             std::to_string(cfg.batch_size) + " (batches drop the remainder, as the reference)");
  const int64_t steps_per_epoch =
      cfg.max_steps_per_epoch > 0 ? std::min<int64_t>(cfg.max_steps_per_epoch, loader.size()) : loader.size();

  Medslip model(cfg, books.width(), uint64_t(cfg.seed));
  model.set_books(books.pathology.to(opt.device), books.anatomy.to(opt.device));
  model.to(opt.device);
  model.train();
  AdamW optim(decay_groups(model, cfg.weight_decay), cfg.lr);
  LrSchedule sched;
  sched.lr = cfg.lr;
  sched.lr_min = cfg.min_lr;
  sched.warmup_lr_init = cfg.warmup_lr;
  sched.t_initial = cfg.epochs;
  sched.warmup_t = cfg.warmup_epochs;
  sched.iters_per_warmup_step = cfg.warmup_iters_per_step;

  int start_epoch = 0;
  int64_t start_batch = 0, global_step = 0;
  if (resuming) {
    std::string ck = fs::is_directory(opt.resume) ? opt.resume + "/" + kCheckpointLast : opt.resume;
    if (!fs::exists(ck)) throw std::runtime_error("--resume: no checkpoint at '" + ck + "'");
    auto meta = safetensors_metadata(ck);
    for (const char* k : {"epoch", "batch", "global_step", "dropout_rng_offset", "optimizer"})
      if (!meta.count(k)) throw std::runtime_error(ck + ": not a pretraining checkpoint (metadata has no '" + k + "')");
    load_module_state(model, load_safetensors(ck), true, ck);
    const std::string optim_path = (fs::path(ck).parent_path() / meta["optimizer"]).string();
    optim.load_state(load_safetensors(optim_path));
    start_epoch = std::stoi(meta["epoch"]);
    start_batch = std::stoll(meta["batch"]);
    global_step = std::stoll(meta["global_step"]);
    model.rng().set_offset(std::stoull(meta["dropout_rng_offset"]));
    if (!opt.quiet) fmt::print("resumed from {}: epoch {}, batch {}, step {}\n", ck, start_epoch, start_batch, global_step);
  }

  // The record: written at the start, extended every epoch.
  RunRecord record(opt.out_dir, resuming && fs::exists(opt.out_dir + "/" + kRecordFile));
  {
    auto& j = record.json();
    j["program"] = build_version();
    j["build_flags"] = build_flags();
    j["platform"] = {{"cpu", cpu_model()}, {"isa", build_isa()}, {"threads", num_threads()}, {"blas", blas_info()}, {"device", device_name(opt.device)}};
    j["config"] = cfg.to_yaml();
    j["config_sha256"] = sha256_hex(cfg.to_yaml());
    j["seed"] = cfg.seed;
    std::string list;
    for (int64_t i = 0; i < train_set.size(); ++i) list += train_set.item(i).key + "\n";
    j["train_images"] = train_set.size();
    j["train_images_sha256"] = sha256_hex(list);
    j["label_matrix_sha256"] = sha256_file(cfg.label_file);
    j["books"] = books.metadata;
    if (!j.contains("epochs")) j["epochs"] = nlohmann::json::array();
    record.save();
  }
  write_atomic(opt.out_dir + "/config.yaml", cfg.to_yaml());
  std::ofstream metrics(opt.out_dir + "/metrics.jsonl", resuming ? std::ios::app : std::ios::trunc);

  // Saves model (official names + metadata) and optimiser; the model file, renamed last,
  // names the optimiser file it belongs with, so a kill at any moment leaves a
  // consistent pair.
  auto save_checkpoint = [&](int epoch, int64_t batch) {
    const std::string optim_name = fmt::format("optimizer_step{}.safetensors", global_step);
    save_safetensors(opt.out_dir + "/" + optim_name, optim.state(), {{"global_step", std::to_string(global_step)}});
    std::map<std::string, std::string> meta = {
        {"config", cfg.to_yaml()}, {"epoch", std::to_string(epoch)}, {"batch", std::to_string(batch)},
        {"global_step", std::to_string(global_step)}, {"dropout_rng_offset", std::to_string(model.rng().offset())},
        {"optimizer", optim_name}, {"producer", build_version()}};
    save_module(ckpt_path, model, meta);
    for (auto& e : fs::directory_iterator(opt.out_dir)) {  // older optimiser files are no longer referenced
      auto n = e.path().filename().string();
      if (n.rfind("optimizer_step", 0) == 0 && n != optim_name && n.find(".tmp") == std::string::npos) fs::remove(e.path());
    }
  };

  g_stop = false;
  auto prev_handler = std::signal(SIGINT, on_sigint);
  PretrainResult res;
  const auto t_start = std::chrono::steady_clock::now();
  int64_t steps_this_call = 0;
  const int last_epoch = opt.max_epochs > 0 ? std::min(cfg.epochs, start_epoch + opt.max_epochs) : cfg.epochs;
  if (!opt.quiet)
    fmt::print("pretrain: {} images, {} steps/epoch of {} at {} px, epochs {}..{}, {} params, out {}\n", train_set.size(),
               steps_per_epoch, cfg.batch_size, cfg.image_res, start_epoch, last_epoch - 1, model.num_parameters(), opt.out_dir);

  for (int epoch = start_epoch; epoch < last_epoch; ++epoch) {
    const int64_t first = epoch == start_epoch ? start_batch : 0;
    loader.start_epoch(epoch, first);
    StepLosses sum{};
    int64_t n_steps = 0;
    auto t_epoch = std::chrono::steady_clock::now();
    PretrainBatch pb;
    for (int64_t b = first; b < steps_per_epoch && loader.next(pb); ++b) {
      const float lr = sched.at(epoch, b);
      optim.set_lr(lr);
      MedslipBatch mb = to_model_batch(pb, opt.device);
      optim.zero_grad();
      MedslipOutput o = model.forward(mb.image);
      MedslipLosses L = model.losses(o, mb);
      L.total.backward();
      optim.step();
      StepLosses s = step_losses(L);
      if (!std::isfinite(s.total))
        throw std::runtime_error(fmt::format("loss is not finite at epoch {} batch {} (step {})", epoch, b, global_step));
      res.losses.push_back(s);
      ++global_step;
      ++steps_this_call;
      ++n_steps;
      for (int k = 0; k < 6; ++k) (&sum.total)[k] += (&s.total)[k];
      const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_epoch).count();
      const double ips = double(n_steps * cfg.batch_size) / std::max(el, 1e-9);
      nlohmann::json line = losses_json(s);
      line["type"] = "step";
      line["epoch"] = epoch;
      line["batch"] = b;
      line["step"] = global_step;
      line["lr"] = lr;
      line["images_per_s"] = ips;
      metrics << line.dump() << "\n" << std::flush;
      if (!opt.quiet && (b % std::max(1, cfg.log_every) == 0 || b + 1 == steps_per_epoch)) {
        const double eta = double((last_epoch - epoch) * steps_per_epoch - (b + 1)) * cfg.batch_size / std::max(ips, 1e-9);
        fmt::print("epoch {}/{} step {}/{} | loss {:.4f} (ce_p {:.3f} ce_a {:.3f} cl_p {:.3f} cl_a {:.3f} icl {:.3f}) | lr {:.2e} | "
                   "{:.1f} img/s | ETA {}\n",
                   epoch, last_epoch - 1, b + 1, steps_per_epoch, s.total, s.ce_pathology, s.ce_anatomy, s.cl_pathology,
                   s.cl_anatomy, s.icl, lr, ips, fmt_duration(eta));
        std::fflush(stdout);
      }
      const bool budget = opt.stop_after_steps >= 0 && steps_this_call >= opt.stop_after_steps;
      if (g_stop || budget) {
        save_checkpoint(epoch, b + 1);
        std::signal(SIGINT, prev_handler);
        if (!opt.quiet)
          fmt::print("{}: saved {} at epoch {} batch {} (resume with --resume {})\n", g_stop ? "interrupted" : "stopped",
                     ckpt_path, epoch, b + 1, opt.out_dir);
        res.global_step = global_step;
        res.checkpoint = ckpt_path;
        return res;
      }
    }
    // Validation (spec H.4): model.eval() (running BN statistics, no dropout) but the
    // training augmentation and drop_last, as the reference's validation loader.
    nlohmann::json ep = {{"type", "epoch"}, {"epoch", epoch}, {"step", global_step}};
    if (n_steps > 0) {
      for (int k = 0; k < 6; ++k) (&sum.total)[k] /= float(n_steps);
      ep["train"] = losses_json(sum);
    }
    if (valid_set) {
      LoaderOptions vo = lo;
      vo.shuffle = true;
      PretrainLoader vl(*valid_set, train_image_fn(cfg.image_res, augment_options(cfg)), vo);
      model.eval();
      NoGradGuard ng;
      StepLosses vs{};
      int64_t nv = 0;
      vl.start_epoch(epoch);
      PretrainBatch vb;
      while (vl.next(vb)) {
        MedslipBatch mb = to_model_batch(vb, opt.device);
        StepLosses s = step_losses(model.losses(model.forward(mb.image), mb));
        for (int k = 0; k < 6; ++k) (&vs.total)[k] += (&s.total)[k];
        ++nv;
      }
      model.train();
      if (nv > 0) {
        for (int k = 0; k < 6; ++k) (&vs.total)[k] /= float(nv);
        ep["valid"] = losses_json(vs);
        if (!opt.quiet) fmt::print("epoch {} validation ({} batches): loss {:.4f}\n", epoch, nv, vs.total);
      }
    }
    ep["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_epoch).count();
    metrics << ep.dump() << "\n" << std::flush;
    save_checkpoint(epoch + 1, 0);
    record.add_epoch(epoch, weights_sha256(model), ep);
    record.save();
  }
  std::signal(SIGINT, prev_handler);
  res.global_step = global_step;
  res.finished = last_epoch == cfg.epochs;
  res.checkpoint = ckpt_path;
  if (!opt.quiet)
    fmt::print("pretrain done: {} steps in {}, checkpoint {}\n", steps_this_call,
               fmt_duration(std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count()), ckpt_path);
  return res;
}

}  // namespace ms
