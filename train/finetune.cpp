#include "train/finetune.h"

#include <fmt/core.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <map>
#include <set>
#include <sstream>
#include <utility>
#include <stdexcept>

#include "data/datasets.h"
#include "engine/autograd.h"
#include "engine/io.h"
#include "engine/optim.h"
#include "engine/threads.h"
#include "model/config_yaml.h"
#include "model/finetune_unet.h"
#include "engine/nn_state.h"
#include "train/hash.h"
#include "train/metrics.h"
#include "train/platform.h"
#include "train/run.h"
#include "train/run_record.h"
#include "weights/state_dict.h"

namespace fs = std::filesystem;

namespace ms {

// ---- config -----------------------------------------------------------------------------------------

namespace {

template <class T>
T get(const YAML::Node& n, const std::string& key, const std::string& origin) {
  return config_value<T>(n, key, origin);
}

// Keys of the reference's Res_train.yaml that have no effect there either.
const std::set<std::string> kIgnored = {"temp", "mlm_probability", "queue_size", "momentum", "alpha"};

}  // namespace

FinetuneConfig FinetuneConfig::from_yaml(const std::string& path) { return from_yaml_string(read_config_file(path), path); }

FinetuneConfig FinetuneConfig::from_yaml_string(const std::string& text, const std::string& origin) {
  const YAML::Node root = load_config_map(text, origin);
  FinetuneConfig c;
  if (root.IsNull()) return c;
  for_each_config_key(root, origin, [&](const std::string& k, const YAML::Node& v) {
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
    else if (k == "hflip") c.hflip = B();
    else if (k == "sample_outputs") c.sample_outputs = I();
    else if (kIgnored.count(k))
      c.warnings.push_back(origin + ": key '" + k + "' is unused by the reference and ignored");
    else if (!c.read_yaml_key(k, v, origin, false, c.warnings))
      c.warnings.push_back(origin + ": unknown key '" + k + "' ignored");
  });
  validate_config(c, origin);
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
  validate_recipe();
  if (!(percentage > 0 && percentage <= 1)) bad("percentage", "must be in (0,1]");
  if (!(valid_fraction >= 0 && valid_fraction < 1)) bad("valid_fraction", "must be in [0,1)");
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
  kv("hflip", hflip);
  kv("sample_outputs", sample_outputs);
  write_yaml(e, false);
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

std::unique_ptr<FinetuneModel> make_finetune_model(const FinetuneConfig& cfg, uint64_t seed) {
  if (cfg.task_kind() == FinetuneTask::kSegment) return std::make_unique<FinetuneUNet>(cfg.model_config(), seed);
  return std::make_unique<FinetuneClassifier>(cfg.model_config(), seed);
}

Tensor finetune_loss(FinetuneTask task, const Tensor& logits, const Tensor& target) {
  if (logits.shape() != target.shape())
    throw std::invalid_argument("fine-tuning loss: logits " + shape_str(logits.shape()) + " vs target " + shape_str(target.shape()));
  if (task == FinetuneTask::kSegment) return dice_bce_loss(logits, target, 1.f);  // utils.py DiceBCELoss
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

namespace {

// What a model predicts on batches of dataset items (the test transform), in the batches' order.
struct Predictions {
  int64_t n = 0;
  std::vector<double> scores;      // classify: [n, K] sigmoid scores
  std::vector<int> labels;         // classify: [n, K]
  std::vector<float> prob, truth;  // segment: [n, S*S]
  double loss_sum = 0;             // batch mean losses times the batch sizes
  int64_t loss_n = 0;
};

Predictions predict(FinetuneModel& model, const FinetuneDataset& ds, const FinetuneTransformOptions& topt,
                    const std::vector<std::vector<int64_t>>& batches, const FinetuneEvalOptions& eo) {
  const bool seg = topt.task == FinetuneTask::kSegment;
  LoaderOptions lo;
  lo.batch_size = eo.batch_size;
  lo.num_workers = eo.num_workers;
  FinetuneLoader loader(ds, topt, lo, false);
  const bool was_training = model.is_training();
  model.eval();
  NoGradGuard ng;
  Predictions p;
  loader.start_epoch_plan(0, batches);
  FinetuneBatch b;
  while (loader.next(b)) {
    Tensor logits = model.forward(b.image.to(eo.device));
    Tensor target = b.target.to(logits.device());
    const float bl = finetune_loss(topt.task, logits, target).item();
    if (eo.batch_losses) eo.batch_losses(bl);
    p.loss_sum += double(bl) * double(b.size());
    p.loss_n += b.size();
    p.n += b.size();
    auto prob = sigmoid(logits).to_vector();
    auto t = b.target.to_vector();
    if (seg) {
      p.prob.insert(p.prob.end(), prob.begin(), prob.end());
      p.truth.insert(p.truth.end(), t.begin(), t.end());
    } else {
      for (float v : prob) p.scores.push_back(double(v));
      for (float v : t) p.labels.push_back(int(v));
    }
    if (!eo.quiet && batches.size() > 4 && (b.index % 10 == 9))
      fmt::print("  evaluated {}/{} batches\n", b.index + 1, batches.size());
  }
  if (was_training) model.train();
  return p;
}

// Items [0, n) in order, in batches of `batch_size` (the last one short).
std::vector<std::vector<int64_t>> batches_in_order(int64_t lo, int64_t hi, int64_t batch_size) {
  std::vector<std::vector<int64_t>> out;
  for (int64_t i = lo; i < hi; i += batch_size) {
    out.emplace_back();
    for (int64_t j = i; j < std::min(hi, i + batch_size); ++j) out.back().push_back(j);
  }
  return out;
}

// Per image the numbers the metrics are made of, rows of equal length (what data-parallel
// validation gathers over ranks): classify the K scores then the K labels, segment the six
// Dice/IoU counts of segmentation_counts.
std::vector<double> image_rows(const Predictions& p, bool seg, int64_t K) {
  if (seg) return p.n ? segmentation_counts(p.prob, p.truth, p.n) : std::vector<double>{};
  std::vector<double> rows;
  for (int64_t i = 0; i < p.n; ++i) {
    rows.insert(rows.end(), p.scores.begin() + i * K, p.scores.begin() + (i + 1) * K);
    for (int64_t k = 0; k < K; ++k) rows.push_back(double(p.labels[size_t(i * K + k)]));
  }
  return rows;
}

// The metrics of image_rows (of one rank or of all): loss, classification AUROC / max-F1 / ACC
// per class or segmentation Dice / mIoU (and the per-image Dice and IoU in `sr`).
nlohmann::json metrics_of_rows(bool seg, const std::vector<std::string>& names, const std::vector<double>& rows,
                               double loss_sum, int64_t loss_n, bool print, SegmentationResult* sr) {
  nlohmann::json out;
  out["loss"] = loss_n ? loss_sum / double(loss_n) : 0.0;
  if (seg) {
    SegmentationResult r = segmentation_from_counts(rows);
    out.update(to_json(r));
    if (print) fmt::print("{}", format_table(r));
    if (sr) *sr = std::move(r);
  } else {
    const size_t K = names.size();
    std::vector<double> scores;
    std::vector<int> labels;
    for (size_t i = 0; i + 2 * K <= rows.size(); i += 2 * K)
      for (size_t k = 0; k < K; ++k) {
        scores.push_back(rows[i + k]);
        labels.push_back(int(rows[i + K + k]));
      }
    ClassificationResult cr = evaluate_classes(names, scores, labels);
    out.update(to_json(cr));
    if (print) fmt::print("{}", format_table(cr));
  }
  return out;
}

std::vector<std::string> output_names(const FinetuneDataset& ds) {
  std::vector<std::string> names = ds.label_names();
  if (names.empty()) names = {"mask_not_empty"};
  return names;
}

}  // namespace

nlohmann::json evaluate_finetune(FinetuneModel& model, const FinetuneDataset& ds, const FinetuneTransformOptions& topt,
                                 const FinetuneEvalOptions& eo) {
  const bool seg = topt.task == FinetuneTask::kSegment;
  const auto t0 = std::chrono::steady_clock::now();
  const Predictions p = predict(model, ds, topt, batches_in_order(0, ds.size(), eo.batch_size), eo);
  const std::vector<std::string> names = output_names(ds);
  const int64_t K = int64_t(names.size());
  const std::vector<float>& prob = p.prob;
  const std::vector<float>& truth = p.truth;
  const std::vector<double>& scores = p.scores;
  const std::vector<int>& labels = p.labels;
  SegmentationResult sr;
  nlohmann::json out = {{"images", ds.size()}, {"csv", ds.csv_path()}};
  out["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  out.update(metrics_of_rows(seg, names, image_rows(p, seg, K), p.loss_sum, p.loss_n, !eo.quiet, &sr));
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

std::string list_hash(const FinetuneDataset& ds) {
  std::string s;
  for (int64_t i = 0; i < ds.size(); ++i) s += ds.item(i).image + "\n";
  return sha256_hex(s);
}

const LossNames& finetune_loss_names() {
  static const LossNames n{{"loss"}, {""}};
  return n;
}

constexpr const char* kBestFile = "best.json";  // {best_value, best_epoch}: survives --resume

// The fine-tuning half of a training run (train/run.h drives it): datasets, loader, model, AdamW.
class FinetuneJob : public TrainingJob {
 public:
  FinetuneJob(const FinetuneOptions& opt) : opt_(opt), cfg_(opt.cfg), topt_(opt.cfg.transform_options()) {
    const FinetuneConfig& cfg = cfg_;
    // Data: the training rows (split), a validation set (its own csv, its own split rows, or a
    // seeded carve-out of the training rows), the percentage subset, the test set.
    const bool split = !cfg.split_column.empty();
    FinetuneDataset train_all(cfg.train_file, cfg.csv_options({cfg.train_split}));
    std::vector<int64_t> train_idx(static_cast<size_t>(train_all.size()));
    std::iota(train_idx.begin(), train_idx.end(), int64_t(0));
    if (!cfg.valid_file.empty()) {
      valid_ = std::make_unique<FinetuneDataset>(cfg.valid_file, cfg.csv_options({cfg.valid_split}));
    } else if (split) {  // validation rows of the training csv, when it has any
      try {
        valid_ = std::make_unique<FinetuneDataset>(cfg.train_file, cfg.csv_options({cfg.valid_split}));
      } catch (const std::exception&) {
        valid_.reset();
      }
    }
    if (!valid_ && cfg.valid_fraction > 0) {
      auto [t, v] = holdout_split(train_all.size(), cfg.valid_fraction, uint64_t(cfg.split_seed));
      train_idx = t;
      valid_ = std::make_unique<FinetuneDataset>(train_all, v);
    }
    std::vector<int64_t> keep;
    for (int64_t i : finetune_subset(int64_t(train_idx.size()), cfg.percentage, uint64_t(cfg.split_seed)))
      keep.push_back(train_idx[size_t(i)]);
    train_ = std::make_unique<FinetuneDataset>(train_all, keep);
    const std::string test_csv = cfg.test_file.empty() && split ? cfg.train_file : cfg.test_file;
    if (!test_csv.empty()) test_ = std::make_unique<FinetuneDataset>(test_csv, cfg.csv_options({cfg.test_split}));
    train_->check_files();
    if (valid_) valid_->check_files();
    if (test_) test_->check_files();

    LoaderOptions lo;
    lo.batch_size = cfg.batch_size;
    lo.seed = uint64_t(cfg.seed);
    lo.num_workers = cfg.num_workers;
    loader_ = std::make_unique<FinetuneLoader>(*train_, topt_, lo, true);
    if (loader_->size() == 0)
      throw std::runtime_error(cfg.train_file + ": " + std::to_string(train_->size()) + " training images, fewer than batch_size " +
                               std::to_string(cfg.batch_size) + " (batches drop the remainder, as the reference)");
    steps_per_epoch_ = cfg.max_steps_per_epoch > 0 ? std::min<int64_t>(cfg.max_steps_per_epoch, loader_->size()) : loader_->size();

    model_ = make_finetune_model(cfg, uint64_t(cfg.seed));
    if (opt.resume.empty() && root_) init_weights();  // other ranks receive rank 0's weights
    model_->to(opt.device);
    model_->train();
    optim_ = std::make_unique<AdamW>(decay_groups(*model_, cfg.weight_decay), cfg.lr);
    const std::string bf = opt.out_dir + "/" + kBestFile;
    if (!opt.resume.empty() && root_ && fs::exists(bf)) {  // only rank 0's choice of the best is written
      std::ifstream f(bf);
      nlohmann::json j = nlohmann::json::parse(f);
      best_value_ = j.at("best_value").get<double>();
      best_epoch_ = j.at("best_epoch").get<int>();
    }
  }

  nn::Module& model() override { return *model_; }
  AdamW& optimizer() override { return *optim_; }
  const LossNames& loss_names() const override { return finetune_loss_names(); }
  int64_t batch_size() const override { return cfg_.batch_size; }
  int64_t steps_per_epoch() const override { return steps_per_epoch_; }
  std::string describe() const override {
    return fmt::format("{} {}{}, {} train / {} valid / {} test images, {} steps/epoch of {} at {} px", cfg_.task,
                       cfg_.res_base_model, cfg_.use_base ? "" : " (pathology branch)", train_->size(),
                       valid_ ? valid_->size() : 0, test_ ? test_->size() : 0, steps_per_epoch_, cfg_.batch_size,
                       cfg_.image_res);
  }
  void describe_record(nlohmann::json& j) const override {
    j["job"] = "finetune";
    j["split_seed"] = cfg_.split_seed;
    j["train_images"] = train_->size();
    j["train_images_sha256"] = list_hash(*train_);
    j["valid_images"] = valid_ ? valid_->size() : 0;
    if (valid_) j["valid_images_sha256"] = list_hash(*valid_);
    j["test_images"] = test_ ? test_->size() : 0;
    if (test_) j["test_images_sha256"] = list_hash(*test_);
    j["train_csv_sha256"] = sha256_file(cfg_.train_file);
    if (!init_info_.is_null()) j["init"] = init_info_;
  }
  // Data-parallel training and accumulation (train/run.h): the loop's sampler plans the
  // micro-batches; validation scores every image once over the ranks.
  int64_t train_size() const override { return train_->size(); }
  int64_t valid_size() const override { return valid_ ? valid_->size() : 0; }
  void start_epoch_plan(int epoch, std::vector<std::vector<int64_t>> plan) override {
    loader_->start_epoch_plan(epoch, std::move(plan));
  }
  bool forward_backward(LossValues& losses) override {
    FinetuneBatch fb;
    if (!loader_->next(fb)) return false;
    Tensor logits = model_->forward(fb.image.to(opt_.device));  // [B,K] or [B,1,S,S]
    Tensor loss = finetune_loss(topt_.task, logits, fb.target.to(opt_.device));
    loss.backward();
    losses = {loss.item()};
    return true;
  }
  // With W ranks rank r scores the r-th of W contiguous chunks of the validation set (every
  // image once, no padding), so the gathered rows come in csv order.
  std::vector<std::vector<int64_t>> validation_batches(int epoch, int rank, const SamplerOptions& sampler) const override {
    const int64_t n = valid_size(), W = sampler.replicas;
    return batches_in_order(n * rank / W, n * (rank + 1) / W, cfg_.test_batch_size);
  }
  // Every validation image with the test transform; the best checkpoint is chosen on its mean
  // AUROC / Dice here (the reference chooses on the test set).
  bool validate(int epoch, LossMeter& meter) override {
    return valid_ && validate_items(epoch, batches_in_order(0, valid_->size(), cfg_.test_batch_size), meter);
  }
  // This rank's batches; the metrics are computed over the predictions of every rank (gathered
  // in rank order), never as a mean of per-rank AUROCs or Dice scores.
  bool validate_items(int epoch, const std::vector<std::vector<int64_t>>& batches, LossMeter& meter) override {
    if (!valid_) return false;
    const bool seg = topt_.task == FinetuneTask::kSegment;
    FinetuneEvalOptions eo = eval_options();
    eo.batch_losses = [&](float l) { meter.add({l}); };
    const Predictions p = predict(*model_, *valid_, topt_, batches, eo);
    const std::vector<std::string> names = output_names(*valid_);
    std::vector<double> rows = image_rows(p, seg, int64_t(names.size()));
    double loss_sum = p.loss_sum;
    int64_t loss_n = p.loss_n;
    if (opt_.comm && opt_.comm->world() > 1) {
      const std::string what = "validation at epoch " + std::to_string(epoch);
      rows = opt_.comm->allgatherv(rows, what);
      const std::vector<double> sums = opt_.comm->allgather({p.loss_sum, double(p.loss_n)}, what);
      loss_sum = 0;
      loss_n = 0;
      for (size_t r = 0; r < sums.size(); r += 2) {
        loss_sum += sums[r];
        loss_n += int64_t(sums[r + 1]);
      }
    }
    nlohmann::json v = metrics_of_rows(seg, names, rows, loss_sum, loss_n, false, nullptr);
    const double h = headline_metric(v);
    const bool better = h > best_value_;
    if (better) {
      best_value_ = h;
      best_epoch_ = epoch;
      save_best();
    }
    nlohmann::json line = {{"epoch", epoch}, {"metric", seg ? "dice" : "mean_auc"}, {"value", h}, {"best", better},
                           {"loss", v["loss"]}};
    if (v.contains("miou")) line["miou"] = v["miou"];
    if (root_) std::ofstream(opt_.out_dir + "/valid.jsonl", std::ios::app) << line.dump() << "\n";
    last_metrics_ = {{line["metric"].get<std::string>(), h}};  // TensorBoard valid/<metric>, metrics.jsonl
    if (v.contains("miou") && v["miou"].is_number()) last_metrics_["miou"] = v["miou"].get<double>();
    if (!quiet_)
      fmt::print("epoch {} validation ({} images): {} {:.4f}{}\n", epoch, valid_->size(), seg ? "Dice" : "mean AUROC", h,
                 better ? " (best so far, saved)" : "");
    return true;
  }

  // The validation metric of this epoch (mean AUROC or Dice, and mIoU): metrics.jsonl's epoch line
  // and TensorBoard's valid/<name>, through train/run.h. Without validation the last epoch is
  // the one kept.
  std::map<std::string, double> epoch_metrics(int epoch) override {
    if (!valid_) {
      best_epoch_ = epoch;
      save_best();
    }
    return std::exchange(last_metrics_, {});
  }

  FinetuneEvalOptions eval_options() const {
    FinetuneEvalOptions eo;
    eo.batch_size = cfg_.test_batch_size;
    eo.num_workers = cfg_.num_workers;
    eo.device = opt_.device;
    eo.quiet = true;
    return eo;
  }
  const FinetuneDataset* test_set() const { return test_.get(); }
  int best_epoch() const { return best_epoch_; }
  double best_value() const { return best_value_; }
  FinetuneModel& finetune_model() { return *model_; }

 private:
  std::map<std::string, double> last_metrics_;
  void init_weights() {
    if (!opt_.init_encoder.empty()) {
      InitReport r = init_encoder_from_torchvision(*model_, opt_.init_encoder);
      if (!quiet_)
        fmt::print("init-encoder {}: {} tensors loaded: {}\n", opt_.init_encoder, r.loaded.size(), summarize_keys(r.loaded));
      init_info_["encoder"] = {{"file", opt_.init_encoder}, {"sha256", sha256_file(opt_.init_encoder)}, {"loaded", r.loaded.size()}};
    }
    if (!opt_.init.empty()) {
      InitReport r = init_from_checkpoint(*model_, opt_.init);
      if (!quiet_) {
        fmt::print("init {}: {} tensors from the checkpoint: {}\n", opt_.init, r.loaded.size(), summarize_keys(r.loaded));
        fmt::print("  {} stay as initialised: {}\n", r.random.size(), summarize_keys(r.random));
        fmt::print("  {} checkpoint tensors unused: {}\n", r.ignored.size(), summarize_keys(r.ignored));
      }
      init_info_["checkpoint"] = {{"file", opt_.init}, {"sha256", sha256_file(opt_.init)}, {"loaded", r.loaded},
                                  {"random", r.random}, {"unused", r.ignored.size()}};
    } else if (!quiet_) {
      fmt::print("init: no --init checkpoint, every tensor{} is random\n", opt_.init_encoder.empty() ? "" : " outside the encoder");
    }
  }
  // checkpoint_best.safetensors (model + config), then best.json; both through tmp + rename.
  // Rank 0 alone writes.
  void save_best() {
    if (!root_) return;
    save_module(opt_.out_dir + "/" + kFinetuneBest, *model_,
                {{"finetune_config", cfg_.to_yaml()}, {"task", cfg_.task}, {"image_res", std::to_string(cfg_.image_res)},
                 {"res_base_model", cfg_.res_base_model}, {"best_epoch", std::to_string(best_epoch_)},
                 {"producer", build_version()}});
    write_file_atomic(opt_.out_dir + "/" + kBestFile,
                      nlohmann::json({{"best_value", best_value_}, {"best_epoch", best_epoch_}}).dump() + "\n");
  }

  const FinetuneOptions& opt_;
  const bool root_ = !opt_.comm || opt_.comm->is_root();  // rank 0 (or one process): writes the run folder
  const bool quiet_ = opt_.quiet || !root_;
  FinetuneConfig cfg_;
  FinetuneTransformOptions topt_;
  std::unique_ptr<FinetuneDataset> train_, valid_, test_;
  std::unique_ptr<FinetuneLoader> loader_;
  int64_t steps_per_epoch_ = 0;
  std::unique_ptr<FinetuneModel> model_;
  std::unique_ptr<AdamW> optim_;
  nlohmann::json init_info_;
  double best_value_ = -1;
  int best_epoch_ = -1;
};

}  // namespace

FinetuneResult run_finetune(const FinetuneOptions& opt) {
  const FinetuneConfig& cfg = opt.cfg;
  cfg.validate();
  if (cfg.train_file.empty()) throw std::runtime_error("config key 'train_file' is not set (the training csv)");
  if (opt.out_dir.empty()) throw std::runtime_error("finetune needs an output folder (--out)");
  const bool root = !opt.comm || opt.comm->is_root();  // rank 0 alone writes (data-parallel)
  if (root) {
    fs::create_directories(opt.out_dir);
    if (opt.resume.empty()) std::remove((opt.out_dir + "/valid.jsonl").c_str());
  }
  FinetuneJob job(opt);
  if (!opt.export_init.empty()) {
    if (!root) return {};
    save_module(opt.export_init, job.model(), {{"finetune_config", cfg.to_yaml()}, {"task", cfg.task}, {"producer", build_version()}});
    if (!opt.quiet) fmt::print("wrote the initial weights to {}\n", opt.export_init);
    return {};
  }
  TrainingResult r = run_training(job, training_options("finetune", opt, cfg, cfg.to_yaml(), cfg.seed, cfg.log_every,
                                                       cfg.max_steps_per_epoch));

  FinetuneResult res;
  for (const LossValues& v : r.losses) res.losses.push_back(v.at(0));
  res.global_step = r.global_step;
  res.finished = r.finished;
  res.checkpoint_last = r.checkpoint;
  const std::string best_path = opt.out_dir + "/" + kFinetuneBest;
  res.checkpoint_best = fs::exists(best_path) ? best_path : "";
  res.best_valid = job.best_value();
  res.best_epoch = job.best_epoch();
  if (!root) return res;  // the test at the end and its files are rank 0's
  // Test once at the end, with the best checkpoint.
  if (r.finished && job.test_set() && fs::exists(best_path)) {
    auto best = make_finetune_model(cfg, uint64_t(cfg.seed));
    load_module_state(*best, load_safetensors(best_path), true, best_path);
    best->to(opt.device);
    FinetuneEvalOptions teo = job.eval_options();
    teo.quiet = opt.quiet;
    teo.out_dir = opt.out_dir + "/test";
    teo.sample_outputs = cfg.sample_outputs;
    if (!opt.quiet)
      fmt::print("test ({} images) with the best checkpoint (epoch {}, validation {:.4f}):\n", job.test_set()->size(),
                 job.best_epoch(), job.best_value());
    res.test = evaluate_finetune(*best, *job.test_set(), cfg.transform_options(), teo);
    res.test["best_epoch"] = job.best_epoch();
    res.test["best_valid"] = job.best_value();
    save_json(teo.out_dir + "/metrics.json", res.test);
    MetricsLog(opt.out_dir, true).write({{"type", "test"}, {"best_epoch", job.best_epoch()}, {"loss", res.test["loss"]},
                                         {cfg.task_kind() == FinetuneTask::kSegment ? "dice" : "mean_auc", headline_metric(res.test)}});
    nlohmann::json rec = RunRecord::load(opt.out_dir);
    rec["test"] = {{"best_epoch", job.best_epoch()}, {"headline", headline_metric(res.test)},
                   {"metrics_sha256", sha256_file(teo.out_dir + "/metrics.json")}};
    write_file_atomic(opt.out_dir + "/" + kRecordFile, rec.dump(2) + "\n");
  }
  if (!opt.quiet && res.best_epoch >= 0)
    fmt::print("best checkpoint: {} (epoch {}, validation {:.4f})\n", best_path, res.best_epoch, res.best_valid);
  return res;
}

}  // namespace ms
