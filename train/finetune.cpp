#include "train/finetune.h"

#include <fmt/core.h>
#include <yaml-cpp/yaml.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <set>
#include <sstream>
#include <stdexcept>

#include "data/datasets.h"
#include "engine/autograd.h"
#include "engine/io.h"
#include "engine/optim.h"
#include "engine/threads.h"
#include "model/state.h"
#include "train/hash.h"
#include "train/metrics.h"
#include "train/platform.h"
#include "train/pretrain.h"
#include "train/run_record.h"
#include "weights/state_dict.h"

namespace fs = std::filesystem;

namespace ms {

// ---- config -----------------------------------------------------------------------------------------

namespace {

template <class T>
T get(const YAML::Node& n, const std::string& key, const std::string& origin) {
  try {
    return n.as<T>();
  } catch (const YAML::Exception&) {
    throw std::runtime_error(origin + ": key '" + key + "' has an invalid value '" + YAML::Dump(n) + "'");
  }
}

// Keys of the reference's Res_train.yaml that have no effect there either.
const std::set<std::string> kIgnored = {"temp", "mlm_probability", "queue_size", "momentum", "alpha"};

}  // namespace

FinetuneConfig FinetuneConfig::from_yaml(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error("config file '" + path + "' cannot be opened");
  std::stringstream ss;
  ss << f.rdbuf();
  return from_yaml_string(ss.str(), path);
}

FinetuneConfig FinetuneConfig::from_yaml_string(const std::string& text, const std::string& origin) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw std::runtime_error(origin + ": not valid YAML: " + e.what());
  }
  FinetuneConfig c;
  if (root.IsNull()) return c;
  if (!root.IsMap()) throw std::runtime_error(origin + ": expected a mapping of keys to values at the top level");
  const std::string base = parent_dir(origin);
  for (auto it = root.begin(); it != root.end(); ++it) {
    const std::string k = it->first.as<std::string>();
    const YAML::Node& v = it->second;
    auto S = [&] { return get<std::string>(v, k, origin); };
    auto I = [&] { return get<int>(v, k, origin); };
    auto F = [&] { return get<float>(v, k, origin); };
    auto B = [&] { return get<bool>(v, k, origin); };
    if (k == "task") c.task = S();
    else if (k == "res_base_model") c.res_base_model = S();
    else if (k == "use_base") c.use_base = B();
    else if (k == "image_res") c.image_res = I();
    else if (k == "num_classes") {
      const int n = I();
      if (n < 1) throw std::runtime_error(origin + ": key 'num_classes' must be >= 1");
    } else if (k == "train_file") c.train_file = S();
    else if (k == "valid_file") c.valid_file = S();
    else if (k == "test_file") c.test_file = S();
    else if (k == "image_root") c.image_root = S();
    else if (k == "mask_root") c.mask_root = S();
    else if (k == "image_column") c.image_column = S();
    else if (k == "label_columns") {
      if (v.IsSequence()) c.label_columns = get<std::vector<std::string>>(v, k, origin);
      else c.label_columns = {S()};
    } else if (k == "mask_column") c.mask_column = S();
    else if (k == "file_name_only") c.file_name_only = B();
    else if (k == "split_column") c.split_column = S();
    else if (k == "train_split") c.train_split = S();
    else if (k == "valid_split") c.valid_split = S();
    else if (k == "test_split") c.test_split = S();
    else if (k == "valid_fraction") c.valid_fraction = F();
    else if (k == "percentage") c.percentage = F();
    else if (k == "split_seed") c.split_seed = I();
    else if (k == "batch_size") c.batch_size = I();
    else if (k == "test_batch_size") c.test_batch_size = I();
    else if (k == "crop_scale_min") c.crop_scale_min = F();
    else if (k == "rand_augment_n") c.rand_augment_n = I();
    else if (k == "rand_augment_m") c.rand_augment_m = I();
    else if (k == "hflip") c.hflip = B();
    else if (k == "seed") c.seed = I();
    else if (k == "num_workers") c.num_workers = I();
    else if (k == "log_every") c.log_every = I();
    else if (k == "max_steps_per_epoch") c.max_steps_per_epoch = I();
    else if (k == "sample_outputs") c.sample_outputs = I();
    else if (k == "optimizer") {
      if (!v.IsMap()) throw std::runtime_error(origin + ": key 'optimizer' must be a mapping {opt, lr, weight_decay}");
      for (auto o = v.begin(); o != v.end(); ++o) {
        const std::string ok = o->first.as<std::string>();
        if (ok == "opt") c.opt = get<std::string>(o->second, "optimizer.opt", origin);
        else if (ok == "lr") c.lr = get<float>(o->second, "optimizer.lr", origin);
        else if (ok == "weight_decay") c.weight_decay = get<float>(o->second, "optimizer.weight_decay", origin);
        else c.warnings.push_back(origin + ": unknown key 'optimizer." + ok + "' ignored");
      }
    } else if (k == "schedular" || k == "scheduler") {
      if (!v.IsMap()) throw std::runtime_error(origin + ": key '" + k + "' must be a mapping");
      for (auto o = v.begin(); o != v.end(); ++o) {
        const std::string sk = o->first.as<std::string>(), full = k + "." + sk;
        if (sk == "sched") c.sched = get<std::string>(o->second, full, origin);
        else if (sk == "epochs") c.epochs = get<int>(o->second, full, origin);
        else if (sk == "min_lr") c.min_lr = get<float>(o->second, full, origin);
        else if (sk == "warmup_lr") c.warmup_lr = get<float>(o->second, full, origin);
        else if (sk == "warmup_epochs") c.warmup_epochs = get<int>(o->second, full, origin);
        else if (sk == "warmup_iters_per_step") c.warmup_iters_per_step = get<int>(o->second, full, origin);
        else if (sk == "lr" || sk == "cooldown_epochs" || sk == "decay_rate")
          c.warnings.push_back(origin + ": key '" + full + "' is unused by the reference and ignored");
        else c.warnings.push_back(origin + ": unknown key '" + full + "' ignored");
      }
    } else if (kIgnored.count(k)) {
      c.warnings.push_back(origin + ": key '" + k + "' is unused by the reference and ignored");
    } else {
      c.warnings.push_back(origin + ": unknown key '" + k + "' ignored");
    }
  }
  try {
    c.validate();
  } catch (const std::exception& e) {
    throw std::runtime_error(origin + ": " + e.what());
  }
  return c;
}

void FinetuneConfig::validate() const {
  auto bad = [](const std::string& key, const std::string& why) { throw std::runtime_error("key '" + key + "': " + why); };
  if (task != "classify" && task != "segment") bad("task", "expected classify or segment, got '" + task + "'");
  if (res_base_model != "resnet18" && res_base_model != "resnet50")
    bad("res_base_model", "expected resnet18 or resnet50, got '" + res_base_model + "'");
  if (image_res < 32 || image_res % 32) bad("image_res", "must be a positive multiple of 32, got " + std::to_string(image_res));
  if (task == "segment" && mask_column.empty() && mask_root.empty())
    bad("mask_column", "segmentation needs a mask column (or mask_root with file_name_only, as the reference)");
  if (task == "segment" && !use_base) bad("use_base", "the U-Net has no pathology-branch variant in the reference's forward");
  if (task == "classify" && label_columns.empty() && mask_column.empty() && mask_root.empty())
    bad("label_columns", "classification needs label columns (or masks: label = mask not empty)");
  if (batch_size <= 0) bad("batch_size", "must be positive");
  if (test_batch_size <= 0) bad("test_batch_size", "must be positive");
  if (lr <= 0) bad("optimizer.lr", "must be positive");
  if (weight_decay < 0) bad("optimizer.weight_decay", "must be >= 0");
  if (epochs <= 0) bad("schedular.epochs", "must be positive");
  if (!(percentage > 0 && percentage <= 1)) bad("percentage", "must be in (0,1]");
  if (!(valid_fraction >= 0 && valid_fraction < 1)) bad("valid_fraction", "must be in [0,1)");
  if (!(crop_scale_min > 0 && crop_scale_min <= 1)) bad("crop_scale_min", "must be in (0,1]");
  if (rand_augment_n < 0 || rand_augment_n > 10) bad("rand_augment_n", "must be in [0,10]");
  if (rand_augment_m < 0 || rand_augment_m > 10) bad("rand_augment_m", "must be in [0,10]");
  if (opt != "adamW" && opt != "adamw") bad("optimizer.opt", "only adamW is supported, got '" + opt + "'");
  if (sched != "cosine") bad("schedular.sched", "only cosine is supported, got '" + sched + "'");
}

std::string FinetuneConfig::to_yaml() const {
  YAML::Emitter e;
  e << YAML::BeginMap;
  auto kv = [&](const char* k, const auto& v) { e << YAML::Key << k << YAML::Value << v; };
  kv("task", task);
  kv("res_base_model", res_base_model);
  kv("use_base", use_base);
  kv("image_res", image_res);
  kv("train_file", train_file);
  kv("valid_file", valid_file);
  kv("test_file", test_file);
  kv("image_root", image_root);
  kv("mask_root", mask_root);
  kv("image_column", image_column);
  e << YAML::Key << "label_columns" << YAML::Value << YAML::Flow << label_columns;
  kv("mask_column", mask_column);
  kv("file_name_only", file_name_only);
  kv("split_column", split_column);
  kv("train_split", train_split);
  kv("valid_split", valid_split);
  kv("test_split", test_split);
  kv("valid_fraction", valid_fraction);
  kv("percentage", percentage);
  kv("split_seed", split_seed);
  kv("batch_size", batch_size);
  kv("test_batch_size", test_batch_size);
  kv("crop_scale_min", crop_scale_min);
  kv("rand_augment_n", rand_augment_n);
  kv("rand_augment_m", rand_augment_m);
  kv("hflip", hflip);
  kv("seed", seed);
  kv("num_workers", num_workers);
  kv("log_every", log_every);
  kv("max_steps_per_epoch", max_steps_per_epoch);
  kv("sample_outputs", sample_outputs);
  e << YAML::Key << "optimizer" << YAML::Value << YAML::BeginMap << YAML::Key << "opt" << YAML::Value << opt
    << YAML::Key << "lr" << YAML::Value << lr << YAML::Key << "weight_decay" << YAML::Value << weight_decay
    << YAML::EndMap;
  e << YAML::Key << "schedular" << YAML::Value << YAML::BeginMap << YAML::Key << "sched" << YAML::Value << sched
    << YAML::Key << "epochs" << YAML::Value << epochs << YAML::Key << "min_lr" << YAML::Value << min_lr << YAML::Key
    << "warmup_lr" << YAML::Value << warmup_lr << YAML::Key << "warmup_epochs" << YAML::Value << warmup_epochs
    << YAML::Key << "warmup_iters_per_step" << YAML::Value << warmup_iters_per_step << YAML::EndMap;
  e << YAML::EndMap;
  return std::string(e.c_str()) + "\n";
}

FinetuneModelConfig FinetuneConfig::model_config() const {
  FinetuneModelConfig m;
  m.arch = res_base_model;
  m.use_base = use_base;
  m.num_classes = task == "segment" || label_columns.empty() ? 1 : int64_t(label_columns.size());
  return m;
}

FinetuneCsvOptions FinetuneConfig::csv_options(const std::vector<std::string>& splits) const {
  FinetuneCsvOptions o;
  o.image_root = image_root;
  o.mask_root = mask_root;
  o.image_column = image_column;
  o.label_columns = label_columns;
  o.mask_column = mask_column;
  o.file_name_only = file_name_only;
  o.split_column = split_column;
  o.splits = splits;
  return o;
}

FinetuneTransformOptions FinetuneConfig::transform_options() const {
  FinetuneTransformOptions t;
  t.task = task_kind();
  t.size = image_res;
  t.aug.crop_scale_min = crop_scale_min;
  t.aug.rand_augment_n = rand_augment_n;
  t.aug.rand_augment_m = rand_augment_m;
  t.hflip = hflip;
  return t;
}

// ---- models, loss, initialisation ----------------------------------------------------------------------

// The segmentation pieces (U-Net, DiceBCE) live in train/finetune_seg.cpp.
std::unique_ptr<FinetuneModel> make_segment_model(const FinetuneModelConfig& m, uint64_t seed);
Tensor segment_loss(const Tensor& logits, const Tensor& target);

std::unique_ptr<FinetuneModel> make_finetune_model(const FinetuneConfig& cfg, uint64_t seed) {
  if (cfg.task_kind() == FinetuneTask::kSegment) return make_segment_model(cfg.model_config(), seed);
  return std::make_unique<FinetuneClassifier>(cfg.model_config(), seed);
}

Tensor finetune_loss(FinetuneTask task, const Tensor& logits, const Tensor& target) {
  if (logits.shape() != target.shape())
    throw std::invalid_argument("fine-tuning loss: logits " + shape_str(logits.shape()) + " vs target " + shape_str(target.shape()));
  if (task == FinetuneTask::kSegment) return segment_loss(logits, target);
  return bce_with_logits(logits, target, std::vector<uint8_t>(size_t(logits.numel()), 1));  // nn.BCEWithLogitsLoss()
}

std::string summarize_keys(const std::vector<std::string>& keys) {
  std::vector<std::pair<std::string, int>> groups;
  for (const auto& k : keys) {
    size_t p = k.find('.');
    if (p != std::string::npos &&
        (k.compare(0, p, "res_features") == 0 || k.compare(0, p, "up_blocks") == 0 || k.compare(0, p, "last_res") == 0)) {
      size_t q = k.find('.', p + 1);
      p = q == std::string::npos ? p : q;
    }
    const std::string g = p == std::string::npos ? k : k.substr(0, p);
    if (groups.empty() || groups.back().first != g) groups.push_back({g, 0});
    ++groups.back().second;
  }
  std::string s;
  for (size_t i = 0; i < groups.size(); ++i)
    s += (i ? ", " : "") + groups[i].first + ".* (" + std::to_string(groups[i].second) + ")";
  return s.empty() ? "none" : s;
}

static InitReport init_by_name(nn::Module& model, const std::map<std::string, Tensor>& sd, const std::string& path) {
  InitReport r;
  std::map<std::string, Tensor> take;
  std::set<std::string> used;
  for (const auto& e : model.state_entries()) {
    auto it = sd.find(e.name);
    if (it == sd.end()) {
      r.random.push_back(e.name);
      continue;
    }
    if (it->second.shape() != e.tensor->shape())
      throw std::runtime_error(path + ": tensor '" + e.name + "' has shape " + shape_str(it->second.shape()) +
                               ", the model's is " + shape_str(e.tensor->shape()) + " (another res_base_model?)");
    take[e.name] = it->second;
    r.loaded.push_back(e.name);
    used.insert(e.name);
  }
  for (const auto& [k, v] : sd)
    if (!used.count(k)) r.ignored.push_back(k);
  if (r.loaded.empty()) {
    std::string some;
    int n = 0;
    for (const auto& [k, v] : sd) {
      if (n++ == 3) break;
      some += (n > 1 ? ", " : "") + k;
    }
    throw std::runtime_error(path + ": no tensor name matches the model (the file has " + std::to_string(sd.size()) +
                             " tensors, e.g. " + some + "; expected names like res_features.0.weight)");
  }
  load_module_state(model, take, false, path);
  return r;
}

InitReport init_from_checkpoint(nn::Module& model, const std::string& path) {
  return init_by_name(model, load_state_dict_any(path, "", "module."), path);
}

InitReport init_encoder_from_torchvision(nn::Module& model, const std::string& path) {
  std::map<std::string, Tensor> sd = load_state_dict_any(path, "", "module.");
  std::map<std::string, Tensor> renamed;
  const std::pair<const char*, const char*> map[] = {{"conv1.", "res_features.0."}, {"bn1.", "res_features.1."},
                                                     {"layer1.", "res_features.4."}, {"layer2.", "res_features.5."},
                                                     {"layer3.", "res_features.6."}, {"layer4.", "res_features.7."}};
  for (const auto& [k, v] : sd)
    for (auto [from, to] : map)
      if (k.rfind(from, 0) == 0) renamed[to + k.substr(std::string(from).size())] = v;
  if (renamed.empty())
    throw std::runtime_error(path + ": not a torchvision ResNet state_dict (no conv1./bn1./layerN. tensors)");
  return init_by_name(model, renamed, path);
}

// ---- evaluation ----------------------------------------------------------------------------------------

namespace {

// Overlay: the image in grey with the prediction in red and the ground truth outline in green.
Image overlay(const Image& img, const std::vector<uint8_t>& pred, const Image& truth) {
  Image rgb = to_rgb(img);
  const int W = rgb.w, H = rgb.h;
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      const size_t i = size_t(y) * W + x;
      if (pred[i]) {
        rgb.at(y, x, 0) = uint8_t(std::min(255, rgb.at(y, x, 0) / 2 + 128));
        rgb.at(y, x, 1) = uint8_t(rgb.at(y, x, 1) / 2);
        rgb.at(y, x, 2) = uint8_t(rgb.at(y, x, 2) / 2);
      }
      if (!truth.px.empty() && truth.px[i]) {
        bool edge = x == 0 || y == 0 || x == W - 1 || y == H - 1 || !truth.px[i - 1] || !truth.px[i + 1] ||
                    !truth.px[i - size_t(W)] || !truth.px[i + size_t(W)];
        if (edge) { rgb.at(y, x, 0) = 0; rgb.at(y, x, 1) = 255; rgb.at(y, x, 2) = 0; }
      }
    }
  return rgb;
}

}  // namespace

double headline_metric(const nlohmann::json& m) {
  if (m.contains("dice")) return m["dice"].get<double>();
  if (m.contains("mean") && m["mean"].contains("auc")) return m["mean"]["auc"].get<double>();
  return 0;
}

nlohmann::json evaluate_finetune(FinetuneModel& model, const FinetuneDataset& ds, const FinetuneTransformOptions& topt,
                                 const FinetuneEvalOptions& eo) {
  const bool seg = topt.task == FinetuneTask::kSegment;
  LoaderOptions lo;
  lo.batch_size = eo.batch_size;
  lo.num_workers = eo.num_workers;
  FinetuneLoader loader(ds, topt, lo, false);
  const bool was_training = model.is_training();
  model.eval();
  NoGradGuard ng;
  std::vector<double> scores;
  std::vector<int> labels;
  std::vector<float> prob, truth;
  double loss_sum = 0;
  int64_t loss_n = 0, K = 0;
  loader.start_epoch(0);
  FinetuneBatch b;
  const auto t0 = std::chrono::steady_clock::now();
  while (loader.next(b)) {
    Tensor logits = model.forward(b.image.to(eo.device));
    Tensor target = b.target.to(logits.device());
    loss_sum += double(finetune_loss(topt.task, logits, target).item()) * double(b.size());
    loss_n += b.size();
    auto p = sigmoid(logits).to_vector();
    auto t = b.target.to_vector();
    if (seg) {
      prob.insert(prob.end(), p.begin(), p.end());
      truth.insert(truth.end(), t.begin(), t.end());
    } else {
      K = logits.size(1);
      for (float v : p) scores.push_back(double(v));
      for (float v : t) labels.push_back(int(v));
    }
    if (!eo.quiet && loader.size() > 4 && (b.index % 10 == 9))
      fmt::print("  evaluated {}/{} batches\n", b.index + 1, loader.size());
  }
  if (was_training) model.train();
  nlohmann::json out;
  out["images"] = ds.size();
  out["csv"] = ds.csv_path();
  out["loss"] = loss_n ? loss_sum / double(loss_n) : 0.0;
  out["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::vector<std::string> names = ds.label_names();
  if (names.empty()) names = {"mask_not_empty"};
  SegmentationResult sr;
  if (seg) {
    sr = segmentation_scores(prob, truth, ds.size());
    out.update(to_json(sr));
    if (!eo.quiet) fmt::print("{}", format_table(sr));
  } else {
    ClassificationResult cr = evaluate_classes(names, scores, labels);
    out.update(to_json(cr));
    if (!eo.quiet) fmt::print("{}", format_table(cr));
  }
  if (eo.out_dir.empty()) return out;
  fs::create_directories(eo.out_dir);
  save_json(eo.out_dir + "/metrics.json", out);
  std::ofstream csv(eo.out_dir + "/predictions.csv");
  const int64_t S = topt.size;
  if (seg) {
    csv << "image_path,dice,iou,predicted_pixels,mask_pixels\n";
    const int64_t P = S * S;
    int written = 0;
    for (int64_t i = 0; i < ds.size(); ++i) {
      int64_t np = 0, nt = 0;
      for (int64_t k = 0; k < P; ++k) {
        np += prob[size_t(i * P + k)] > 0.5f;
        nt += truth[size_t(i * P + k)] > 0.5f;
      }
      csv << csv_field(ds.item(i).image) << "," << fmt::format("{:.6f},{:.6f},{},{}\n", sr.dice_per_image[size_t(i)],
                                                              sr.iou_per_image[size_t(i)], np, nt);
      if (written < eo.sample_outputs) {
        fs::create_directories(eo.out_dir + "/masks");
        fs::create_directories(eo.out_dir + "/overlays");
        Image pm{int(S), int(S), 1}, tm{int(S), int(S), 1};
        std::vector<uint8_t> bin(static_cast<size_t>(P));
        for (int64_t k = 0; k < P; ++k) {
          bin[size_t(k)] = prob[size_t(i * P + k)] > 0.5f;
          pm.px[size_t(k)] = bin[size_t(k)] ? 255 : 0;
          tm.px[size_t(k)] = truth[size_t(i * P + k)] > 0.5f ? 255 : 0;
        }
        const std::string stem = fmt::format("{:04d}_{}", i, fs::path(ds.item(i).image).stem().string());
        write_png(eo.out_dir + "/masks/" + stem + ".png", pm);
        ReadOptions ro;
        ro.keep_grey = true;
        Image shown = cv_resize(read_image(ds.item(i).image, ro), int(S), int(S), CvInterp::kLinear);
        write_png(eo.out_dir + "/overlays/" + stem + ".png", overlay(shown, bin, tm));
        ++written;
      }
    }
  } else {
    csv << "image_path";
    for (const auto& n : names) csv << "," << csv_field(n) << "," << csv_field("score_" + n);
    csv << "\n";
    for (int64_t i = 0; i < ds.size(); ++i) {
      csv << csv_field(ds.item(i).image);
      for (int64_t k = 0; k < K; ++k)
        csv << "," << labels[size_t(i * K + k)] << "," << fmt::format("{:.8g}", scores[size_t(i * K + k)]);
      csv << "\n";
    }
  }
  if (!csv) throw std::runtime_error(eo.out_dir + "/predictions.csv: write failed");
  return out;
}

// ---- the job -----------------------------------------------------------------------------------------------

namespace {

std::atomic<bool> g_stop{false};
extern "C" void on_sigint_ft(int) { g_stop = true; }

std::string fmt_duration(double s) {
  if (s < 60) return fmt::format("{:.0f}s", s);
  if (s < 3600) return fmt::format("{:.0f}m{:02.0f}s", std::floor(s / 60), std::fmod(s, 60));
  return fmt::format("{:.0f}h{:02.0f}m", std::floor(s / 3600), std::fmod(s / 60, 60));
}

std::string list_hash(const FinetuneDataset& ds) {
  std::string s;
  for (int64_t i = 0; i < ds.size(); ++i) s += ds.item(i).image + "\n";
  return sha256_hex(s);
}

}  // namespace

FinetuneResult run_finetune(const FinetuneOptions& opt) {
  const FinetuneConfig& cfg = opt.cfg;
  cfg.validate();
  if (cfg.train_file.empty()) throw std::runtime_error("config key 'train_file' is not set (the training csv)");
  if (opt.out_dir.empty()) throw std::runtime_error("finetune needs an output folder (--out)");
  fs::create_directories(opt.out_dir);
  const std::string ckpt_path = opt.out_dir + "/" + kCheckpointLast;
  const std::string best_path = opt.out_dir + "/" + kFinetuneBest;
  const bool resuming = !opt.resume.empty();
  const FinetuneTask task = cfg.task_kind();
  const FinetuneTransformOptions topt = cfg.transform_options();

  // Data: the training rows (split), a validation set (its own csv, its own split rows, or a
  // seeded carve-out of the training rows), the percentage subset, the test set.
  const bool split = !cfg.split_column.empty();
  FinetuneDataset train_all(cfg.train_file, cfg.csv_options({cfg.train_split}));
  std::unique_ptr<FinetuneDataset> valid_set, train_set, test_set;
  std::vector<int64_t> train_idx;
  if (!cfg.valid_file.empty()) {
    valid_set = std::make_unique<FinetuneDataset>(cfg.valid_file, cfg.csv_options({cfg.valid_split}));
  } else if (split) {  // validation rows of the training csv, when it has any
    try {
      valid_set = std::make_unique<FinetuneDataset>(cfg.train_file, cfg.csv_options({cfg.valid_split}));
    } catch (const std::exception&) {
      valid_set.reset();
    }
  }
  if (valid_set) {
    train_idx.resize(size_t(train_all.size()));
    std::iota(train_idx.begin(), train_idx.end(), int64_t(0));
  } else if (cfg.valid_fraction > 0) {
    auto [t, v] = holdout_split(train_all.size(), cfg.valid_fraction, uint64_t(cfg.split_seed));
    train_idx = t;
    valid_set = std::make_unique<FinetuneDataset>(train_all, v);
  } else {
    train_idx.resize(size_t(train_all.size()));
    std::iota(train_idx.begin(), train_idx.end(), int64_t(0));
  }
  {
    std::vector<int64_t> keep;
    for (int64_t i : finetune_subset(int64_t(train_idx.size()), cfg.percentage, uint64_t(cfg.split_seed)))
      keep.push_back(train_idx[size_t(i)]);
    train_set = std::make_unique<FinetuneDataset>(train_all, keep);
  }
  const std::string test_csv = cfg.test_file.empty() && split ? cfg.train_file : cfg.test_file;
  if (!test_csv.empty()) test_set = std::make_unique<FinetuneDataset>(test_csv, cfg.csv_options({cfg.test_split}));
  train_set->check_files();
  if (valid_set) valid_set->check_files();
  if (test_set) test_set->check_files();

  LoaderOptions lo;
  lo.batch_size = cfg.batch_size;
  lo.seed = uint64_t(cfg.seed);
  lo.num_workers = cfg.num_workers;
  FinetuneLoader loader(*train_set, topt, lo, true);
  if (loader.size() == 0)
    throw std::runtime_error(cfg.train_file + ": " + std::to_string(train_set->size()) + " training images, fewer than batch_size " +
                             std::to_string(cfg.batch_size) + " (batches drop the remainder, as the reference)");
  const int64_t steps_per_epoch =
      cfg.max_steps_per_epoch > 0 ? std::min<int64_t>(cfg.max_steps_per_epoch, loader.size()) : loader.size();

  std::unique_ptr<FinetuneModel> model = make_finetune_model(cfg, uint64_t(cfg.seed));
  nlohmann::json init_info;
  if (!resuming) {
    if (!opt.init_encoder.empty()) {
      InitReport r = init_encoder_from_torchvision(*model, opt.init_encoder);
      if (!opt.quiet) fmt::print("init-encoder {}: {} tensors loaded: {}\n", opt.init_encoder, r.loaded.size(), summarize_keys(r.loaded));
      init_info["encoder"] = {{"file", opt.init_encoder}, {"sha256", sha256_file(opt.init_encoder)}, {"loaded", r.loaded.size()}};
    }
    if (!opt.init.empty()) {
      InitReport r = init_from_checkpoint(*model, opt.init);
      if (!opt.quiet) {
        fmt::print("init {}: {} tensors from the checkpoint: {}\n", opt.init, r.loaded.size(), summarize_keys(r.loaded));
        fmt::print("  {} stay as initialised: {}\n", r.random.size(), summarize_keys(r.random));
        fmt::print("  {} checkpoint tensors unused: {}\n", r.ignored.size(), summarize_keys(r.ignored));
      }
      init_info["checkpoint"] = {{"file", opt.init}, {"sha256", sha256_file(opt.init)}, {"loaded", r.loaded},
                                 {"random", r.random}, {"unused", r.ignored.size()}};
    } else if (!opt.quiet) {
      fmt::print("init: no --init checkpoint, every tensor{} is random\n", opt.init_encoder.empty() ? "" : " outside the encoder");
    }
  }
  if (!opt.export_init.empty()) {
    save_module(opt.export_init, *model, {{"finetune_config", cfg.to_yaml()}, {"task", cfg.task}, {"producer", build_version()}});
    if (!opt.quiet) fmt::print("wrote the initial weights to {}\n", opt.export_init);
    return {};
  }
  model->to(opt.device);
  model->train();
  AdamW optim(decay_groups(*model, cfg.weight_decay), cfg.lr);
  LrSchedule sched;
  sched.lr = cfg.lr;
  sched.lr_min = cfg.min_lr;
  sched.warmup_lr_init = cfg.warmup_lr;
  sched.t_initial = cfg.epochs;
  sched.warmup_t = cfg.warmup_epochs;
  sched.iters_per_warmup_step = cfg.warmup_iters_per_step;

  int start_epoch = 0, best_epoch = -1;
  int64_t start_batch = 0, global_step = 0;
  double best_value = -1;
  if (resuming) {
    std::string ck = fs::is_directory(opt.resume) ? opt.resume + "/" + kCheckpointLast : opt.resume;
    if (!fs::exists(ck)) throw std::runtime_error("--resume: no checkpoint at '" + ck + "'");
    auto meta = safetensors_metadata(ck);
    for (const char* k : {"epoch", "batch", "global_step", "dropout_rng_offset", "optimizer", "best_value", "best_epoch"})
      if (!meta.count(k)) throw std::runtime_error(ck + ": not a fine-tuning checkpoint (metadata has no '" + k + "')");
    load_module_state(*model, load_safetensors(ck), true, ck);
    optim.load_state(load_safetensors((fs::path(ck).parent_path() / meta["optimizer"]).string()));
    start_epoch = std::stoi(meta["epoch"]);
    start_batch = std::stoll(meta["batch"]);
    global_step = std::stoll(meta["global_step"]);
    best_value = std::stod(meta["best_value"]);
    best_epoch = std::stoi(meta["best_epoch"]);
    model->rng().set_offset(std::stoull(meta["dropout_rng_offset"]));
    if (!opt.quiet) fmt::print("resumed from {}: epoch {}, batch {}, step {}\n", ck, start_epoch, start_batch, global_step);
  }

  RunRecord record(opt.out_dir, resuming && fs::exists(opt.out_dir + "/" + kRecordFile));
  {
    auto& j = record.json();
    j["program"] = build_version();
    j["job"] = "finetune";
    j["build_flags"] = build_flags();
    j["platform"] = {{"cpu", cpu_model()}, {"isa", build_isa()}, {"threads", num_threads()}, {"device", device_name(opt.device)}};
    j["config"] = cfg.to_yaml();
    j["config_sha256"] = sha256_hex(cfg.to_yaml());
    j["seed"] = cfg.seed;
    j["split_seed"] = cfg.split_seed;
    j["train_images"] = train_set->size();
    j["train_images_sha256"] = list_hash(*train_set);
    j["valid_images"] = valid_set ? valid_set->size() : 0;
    if (valid_set) j["valid_images_sha256"] = list_hash(*valid_set);
    j["test_images"] = test_set ? test_set->size() : 0;
    j["train_csv_sha256"] = sha256_file(cfg.train_file);
    if (!init_info.is_null()) j["init"] = init_info;
    if (!j.contains("epochs")) j["epochs"] = nlohmann::json::array();
    record.save();
  }
  {
    std::ofstream f(opt.out_dir + "/config.yaml");
    f << cfg.to_yaml();
  }
  std::ofstream metrics(opt.out_dir + "/metrics.jsonl", resuming ? std::ios::app : std::ios::trunc);

  auto model_meta = [&](int epoch, int64_t batch) -> std::map<std::string, std::string> {
    return {{"finetune_config", cfg.to_yaml()}, {"task", cfg.task}, {"image_res", std::to_string(cfg.image_res)},
            {"res_base_model", cfg.res_base_model}, {"epoch", std::to_string(epoch)}, {"batch", std::to_string(batch)},
            {"global_step", std::to_string(global_step)}, {"producer", build_version()},
            {"best_value", fmt::format("{:.17g}", best_value)}, {"best_epoch", std::to_string(best_epoch)},
            {"dropout_rng_offset", std::to_string(model->rng().offset())}};
  };
  // Model file renamed last names its optimiser file: a kill at any moment leaves a consistent pair.
  auto save_checkpoint = [&](int epoch, int64_t batch) {
    const std::string optim_name = fmt::format("optimizer_step{}.safetensors", global_step);
    save_safetensors(opt.out_dir + "/" + optim_name, optim.state(), {{"global_step", std::to_string(global_step)}});
    auto meta = model_meta(epoch, batch);
    meta["optimizer"] = optim_name;
    save_module(ckpt_path, *model, meta);
    for (auto& e : fs::directory_iterator(opt.out_dir)) {
      auto n = e.path().filename().string();
      if (n.rfind("optimizer_step", 0) == 0 && n != optim_name && n.find(".tmp") == std::string::npos) fs::remove(e.path());
    }
  };

  g_stop = false;
  auto prev_handler = std::signal(SIGINT, on_sigint_ft);
  FinetuneResult res;
  const auto t_start = std::chrono::steady_clock::now();
  int64_t steps_this_call = 0;
  const int last_epoch = opt.max_epochs > 0 ? std::min(cfg.epochs, start_epoch + opt.max_epochs) : cfg.epochs;
  if (!opt.quiet)
    fmt::print("finetune ({}, {}{}): {} train / {} valid / {} test images, {} steps/epoch of {} at {} px, epochs {}..{}, "
               "{} params, out {}\n",
               cfg.task, cfg.res_base_model, cfg.use_base ? "" : ", pathology branch", train_set->size(),
               valid_set ? valid_set->size() : 0, test_set ? test_set->size() : 0, steps_per_epoch, cfg.batch_size,
               cfg.image_res, start_epoch, last_epoch - 1, model->num_parameters(), opt.out_dir);
  FinetuneEvalOptions veo;
  veo.batch_size = cfg.test_batch_size;
  veo.num_workers = cfg.num_workers;
  veo.device = opt.device;
  veo.quiet = true;

  for (int epoch = start_epoch; epoch < last_epoch; ++epoch) {
    const int64_t first = epoch == start_epoch ? start_batch : 0;
    loader.start_epoch(epoch, first);
    double sum = 0;
    int64_t n_steps = 0;
    auto t_epoch = std::chrono::steady_clock::now();
    FinetuneBatch fb;
    for (int64_t b = first; b < steps_per_epoch && loader.next(fb); ++b) {
      const float lr = sched.at(epoch, b);
      optim.set_lr(lr);
      optim.zero_grad();
      Tensor logits = model->forward(fb.image.to(opt.device));
      Tensor loss = finetune_loss(task, logits, fb.target.to(opt.device));
      loss.backward();
      optim.step();
      const float l = loss.item();
      if (!std::isfinite(l))
        throw std::runtime_error(fmt::format("loss is not finite at epoch {} batch {} (step {})", epoch, b, global_step));
      res.losses.push_back(l);
      ++global_step;
      ++steps_this_call;
      ++n_steps;
      sum += l;
      const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_epoch).count();
      const double ips = double(n_steps * cfg.batch_size) / std::max(el, 1e-9);
      nlohmann::json line = {{"type", "step"}, {"epoch", epoch}, {"batch", b}, {"step", global_step},
                             {"loss", l},      {"lr", lr},       {"images_per_s", ips}};
      metrics << line.dump() << "\n" << std::flush;
      if (!opt.quiet && (b % std::max(1, cfg.log_every) == 0 || b + 1 == steps_per_epoch)) {
        const double eta = double((last_epoch - epoch) * steps_per_epoch - (b + 1)) * cfg.batch_size / std::max(ips, 1e-9);
        fmt::print("epoch {}/{} step {}/{} | loss {:.4f} | lr {:.2e} | {:.1f} img/s | ETA {}\n", epoch, last_epoch - 1, b + 1,
                   steps_per_epoch, l, lr, ips, fmt_duration(eta));
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
        res.checkpoint_last = ckpt_path;
        res.best_valid = best_value;
        res.best_epoch = best_epoch;
        return res;
      }
    }
    nlohmann::json ep = {{"type", "epoch"}, {"epoch", epoch}, {"step", global_step}};
    if (n_steps > 0) ep["train_loss"] = sum / double(n_steps);
    // Validation (the test transform, every image): the best checkpoint is chosen here — the
    // reference chooses it on the test set.
    if (valid_set) {
      nlohmann::json v = evaluate_finetune(*model, *valid_set, topt, veo);
      const double h = headline_metric(v);
      ep["valid"] = {{"loss", v["loss"]}, {task == FinetuneTask::kSegment ? "dice" : "mean_auc", h}};
      if (task == FinetuneTask::kSegment) ep["valid"]["miou"] = v["miou"];
      const bool better = h > best_value;
      if (better) {
        best_value = h;
        best_epoch = epoch;
      }
      if (!opt.quiet)
        fmt::print("epoch {} validation ({} images): loss {:.4f}, {} {:.4f}{}\n", epoch, valid_set->size(), v["loss"].get<double>(),
                   task == FinetuneTask::kSegment ? "Dice" : "mean AUROC", h, better ? " (best so far)" : "");
      if (better) save_module(best_path, *model, model_meta(epoch + 1, 0));
    } else {
      best_epoch = epoch;  // no validation: the last epoch is the one kept
      save_module(best_path, *model, model_meta(epoch + 1, 0));
    }
    ep["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_epoch).count();
    metrics << ep.dump() << "\n" << std::flush;
    save_checkpoint(epoch + 1, 0);
    record.add_epoch(epoch, weights_sha256(*model), ep);
    record.save();
  }
  std::signal(SIGINT, prev_handler);
  res.global_step = global_step;
  res.finished = last_epoch == cfg.epochs;
  res.checkpoint_last = ckpt_path;
  res.checkpoint_best = best_path;
  res.best_valid = best_value;
  res.best_epoch = best_epoch;
  // Test once, with the best checkpoint.
  if (test_set && fs::exists(best_path) && last_epoch > start_epoch) {
    auto best = make_finetune_model(cfg, uint64_t(cfg.seed));
    load_module_state(*best, load_safetensors(best_path), true, best_path);
    best->to(opt.device);
    FinetuneEvalOptions teo = veo;
    teo.quiet = opt.quiet;
    teo.out_dir = opt.out_dir + "/test";
    teo.sample_outputs = cfg.sample_outputs;
    if (!opt.quiet) fmt::print("test ({} images) with the best checkpoint (epoch {}):\n", test_set->size(), best_epoch);
    res.test = evaluate_finetune(*best, *test_set, topt, teo);
    res.test["best_epoch"] = best_epoch;
    metrics << nlohmann::json({{"type", "test"}, {"best_epoch", best_epoch}, {"loss", res.test["loss"]},
                               {task == FinetuneTask::kSegment ? "dice" : "mean_auc", headline_metric(res.test)}})
                   .dump()
            << "\n";
    record.json()["test"] = {{"best_epoch", best_epoch}, {"metrics_sha256", sha256_file(teo.out_dir + "/metrics.json")},
                             {"headline", headline_metric(res.test)}};
    record.save();
  }
  if (!opt.quiet)
    fmt::print("finetune done: {} steps in {}, best {} (epoch {}), checkpoints {} and {}\n", steps_this_call,
               fmt_duration(std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count()), best_path,
               best_epoch, ckpt_path, best_path);
  return res;
}

// Without train/finetune_seg.cpp (the U-Net needs conv_transpose2d and dice_bce_loss from the
// engine) segmentation reports what is missing.
__attribute__((weak)) std::unique_ptr<FinetuneModel> make_segment_model(const FinetuneModelConfig&, uint64_t) {
  throw std::runtime_error("task 'segment': this build has no segmentation model (train/finetune_seg.cpp missing)");
}
__attribute__((weak)) Tensor segment_loss(const Tensor&, const Tensor&) {
  throw std::runtime_error("task 'segment': this build has no DiceBCE loss (train/finetune_seg.cpp missing)");
}

}  // namespace ms
