#include "train/pretrain.h"

#include <fmt/core.h>

#include <filesystem>
#include <stdexcept>

#include "engine/optim.h"
#include "train/common.h"
#include "train/data_parallel.h"
#include "train/hash.h"

namespace fs = std::filesystem;

namespace ms {

Books obtain_books(const MedslipConfig& cfg, const std::string& out_dir, bool quiet, Communicator* comm) {
  if (comm && comm->world() > 1) {
    // Rank 0's books to every rank: the shapes and provenance as JSON, then the values.
    Books b;
    std::string head;
    if (comm->is_root()) {
      b = obtain_books(cfg, out_dir, quiet, nullptr);
      head = nlohmann::json{{"width", b.width()}, {"metadata", b.metadata}}.dump();
    }
    comm->broadcast(head, "start (books)");
    if (!comm->is_root()) {
      auto j = nlohmann::json::parse(head);
      b.pathology = Tensor::zeros({kNumPathologies, j["width"].get<int64_t>()});
      b.anatomy = Tensor::zeros({kNumAnatomies, j["width"].get<int64_t>()});
      b.metadata = j["metadata"].get<std::map<std::string, std::string>>();
    }
    comm->broadcast(b.pathology, "start (books)");
    comm->broadcast(b.anatomy, "start (books)");
    return b;
  }
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

const LossNames& pretrain_loss_names() {
  static const LossNames names{
      {"loss", "loss_ce_pathology", "loss_ce_anatomy", "loss_cl_pathology", "loss_cl_anatomy", "loss_ap"},
      {"loss", "ce_p", "ce_a", "cl_p", "cl_a", "icl"}};
  return names;
}

LossValues loss_values(const StepLosses& s) {
  return {s.total, s.ce_pathology, s.ce_anatomy, s.cl_pathology, s.cl_anatomy, s.icl};
}

StepLosses to_step_losses(const LossValues& v) { return {v.at(0), v.at(1), v.at(3), v.at(2), v.at(4), v.at(5)}; }

// ---- PretrainJob ----------------------------------------------------------------------------

PretrainJob::PretrainJob(const MedslipConfig& cfg, const std::string& out_dir, Device device, bool quiet,
                         Communicator* comm)
    : cfg_(cfg), device_(device) {
  books_ = obtain_books(cfg_, out_dir, quiet, comm);
  train_set_ = std::make_unique<MedslipDataset>(cfg_.train_file, cfg_.label_file, cfg_.image_root);
  if (!cfg_.valid_file.empty())
    valid_set_ = std::make_unique<MedslipDataset>(cfg_.valid_file, cfg_.label_file, cfg_.image_root);

  loader_options_.batch_size = cfg_.batch_size;
  loader_options_.image_size = cfg_.image_res;
  loader_options_.seed = uint64_t(cfg_.seed);
  loader_options_.num_workers = cfg_.num_workers;
  loader_ = std::make_unique<PretrainLoader>(*train_set_, train_image_fn(cfg_.image_res, augment_options(cfg_)),
                                             loader_options_);
  if (loader_->size() == 0)
    throw std::runtime_error(cfg_.train_file + ": " + std::to_string(train_set_->size()) + " images, fewer than batch_size " +
                             std::to_string(cfg_.batch_size) + " (batches drop the remainder, as the reference)");
  steps_per_epoch_ = cfg_.max_steps_per_epoch > 0 ? std::min<int64_t>(cfg_.max_steps_per_epoch, loader_->size())
                                                  : loader_->size();

  model_ = std::make_unique<Medslip>(cfg_, books_.width(), uint64_t(cfg_.seed));
  model_->set_books(books_.pathology.to(device_), books_.anatomy.to(device_));
  model_->to(device_);
  model_->train();
  optim_ = std::make_unique<AdamW>(decay_groups(*model_, cfg_.weight_decay), cfg_.lr);
}

std::string PretrainJob::describe() const {
  return fmt::format("{} images, {} steps/epoch of {} at {} px", train_set_->size(), steps_per_epoch_, cfg_.batch_size,
                     cfg_.image_res);
}

void PretrainJob::describe_record(nlohmann::json& j) const {
  std::string list;
  for (int64_t i = 0; i < train_set_->size(); ++i) list += train_set_->item(i).key + "\n";
  j["train_images"] = train_set_->size();
  j["train_images_sha256"] = sha256_hex(list);
  j["label_matrix_sha256"] = sha256_file(cfg_.label_file);
  j["books"] = books_.metadata;
}

void PretrainJob::start_epoch_plan(int epoch, std::vector<std::vector<int64_t>> plan) {
  loader_->start_epoch_plan(epoch, std::move(plan));
}

bool PretrainJob::forward_backward(LossValues& losses) {
  MedslipBatch mb;
  if (!loader_->next(mb)) return false;
  mb.image = mb.image.to(device_);
  MedslipOutput o = model_->forward(mb.image);
  MedslipLosses L = model_->losses(o, mb);
  L.total.backward();
  losses = loss_values(step_losses(L));
  return true;
}

bool PretrainJob::validate_items(int epoch, const std::vector<std::vector<int64_t>>& batches, LossMeter& meter) {
  if (!valid_set_) return false;
  PretrainLoader vl(*valid_set_, train_image_fn(cfg_.image_res, augment_options(cfg_)), loader_options_);
  vl.start_epoch_plan(epoch, batches);
  MedslipBatch mb;
  while (vl.next(mb)) {
    mb.image = mb.image.to(device_);
    meter.add(loss_values(step_losses(model_->losses(model_->forward(mb.image), mb))));
  }
  return true;
}

// Spec H.4: the training augmentation and drop_last, as the reference's validation loader.
bool PretrainJob::validate(int epoch, LossMeter& meter) {
  if (!valid_set_) return false;
  LoaderOptions vo = loader_options_;
  vo.shuffle = true;
  PretrainLoader vl(*valid_set_, train_image_fn(cfg_.image_res, augment_options(cfg_)), vo);
  vl.start_epoch(epoch);
  MedslipBatch mb;
  while (vl.next(mb)) {
    mb.image = mb.image.to(device_);
    meter.add(loss_values(step_losses(model_->losses(model_->forward(mb.image), mb))));
  }
  return true;
}

std::vector<std::pair<std::string, Image>> PretrainJob::epoch_images(int epoch) {
  if (!probe_) probe_ = std::make_unique<AttentionProbe>(valid_set_ ? *valid_set_ : *train_set_, cfg_.image_res);
  std::vector<std::pair<std::string, Image>> out;
  std::vector<Image> ims = probe_->overlays(*model_, device_);
  for (size_t i = 0; i < ims.size(); ++i) out.emplace_back("attention/" + probe_->names()[i], std::move(ims[i]));
  return out;
}

// ---- run_pretrain -----------------------------------------------------------------------------

PretrainResult run_pretrain(const PretrainOptions& opt) {
  const MedslipConfig& cfg = opt.cfg;
  if (cfg.train_file.empty()) throw std::runtime_error("config key 'train_file' is not set (the pretraining JSON)");
  if (cfg.label_file.empty()) throw std::runtime_error("config key 'label_file' is not set (the [N,51,75] .npy matrix)");
  if (opt.out_dir.empty()) throw std::runtime_error("pretrain needs an output folder (--out)");
  const bool root = !opt.comm || opt.comm->is_root();
  if (root) fs::create_directories(opt.out_dir);  // obtain_books may cache the books there
  PretrainJob job(cfg, opt.out_dir, opt.device, opt.quiet || !root, opt.comm);
  TrainingResult r = run_training(job, training_options("pretrain", opt, cfg, cfg.to_yaml(), cfg.seed, cfg.log_every,
                                                       cfg.max_steps_per_epoch));

  PretrainResult res;
  for (const LossValues& v : r.losses) res.losses.push_back(to_step_losses(v));
  res.global_step = r.global_step;
  res.finished = r.finished;
  res.checkpoint = r.checkpoint;
  res.step_seconds = r.step_seconds;
  res.comm_seconds = r.comm_seconds;
  return res;
}

}  // namespace ms
