#include "model/config.h"
#include "model/config_yaml.h"
#include "model/vocab.h"


#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>

namespace ms {

namespace {

// Keys of the official config that are read but have no effect (spec B.6.4), and our own.
const std::set<std::string> kIgnoredOfficial = {
    "patch_size", "num_sentences", "num_tokens", "vision_width", "fea_width", "embed_dim", "temp",
    "mlm_probability", "queue_size", "momentum", "num_queries", "shuffle_ratio", "exclude_class"};

template <class T>
T get(const YAML::Node& n, const std::string& key, const std::string& origin) {
  return config_value<T>(n, key, origin);
}

}  // namespace

std::string read_config_file(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error("config file '" + path + "' cannot be opened");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

YAML::Node load_config_map(const std::string& text, const std::string& origin) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw std::runtime_error(origin + ": not valid YAML: " + e.what());
  }
  if (!root.IsNull() && !root.IsMap())
    throw std::runtime_error(origin + ": expected a mapping of keys to values at the top level");
  return root;
}

MedslipConfig MedslipConfig::from_yaml(const std::string& path) { return from_yaml_string(read_config_file(path), path); }

MedslipConfig MedslipConfig::from_yaml_string(const std::string& text, const std::string& origin) {
  const YAML::Node root = load_config_map(text, origin);
  MedslipConfig c;
  if (root.IsNull()) return c;
  for_each_config_key(root, origin, [&](const std::string& k, const YAML::Node& v) {
    auto S = [&] { return get<std::string>(v, k, origin); };
    auto I = [&] { return get<int>(v, k, origin); };
    auto F = [&] { return get<float>(v, k, origin); };
    auto B = [&] { return get<bool>(v, k, origin); };
    if (k == "res_base_model") c.res_base_model = S();
    else if (k == "image_res") c.image_res = I();
    else if (k == "d_model") c.d_model = I();
    else if (k == "N") c.N = I();
    else if (k == "H") c.H = I();
    else if (k == "dim_feedforward") c.dim_feedforward = I();
    else if (k == "dropout") c.dropout = F();
    else if (k == "decoder_dropout") c.decoder_dropout = F();
    else if (k == "attribute_set_size") c.attribute_set_size = I();
    else if (k == "num_neg_samples") c.num_neg_samples = I();
    else if (k == "alpha_protocl" || k == "loss_alpha") c.alpha = F();
    else if (k == "beta_icl" || k == "loss_beta") c.beta = F();
    else if (k == "alpha") c.warnings.push_back(origin + ": key 'alpha' is the reference's unused ALBEF leftover and is ignored; the ProtoCL weight is 'loss_alpha'");
    else if (k == "no_cl") c.no_cl = B();
    else if (k == "text_encoder") c.text_encoder = S();
    else if (k == "books") c.books = S();
    else if (k == "pathology_book") c.pathology_book = S();
    else if (k == "text_max_length") c.text_max_length = I();
    else if (k == "train_file") c.train_file = S();
    else if (k == "valid_file") c.valid_file = S();
    else if (k == "test_file") c.test_file = S();
    else if (k == "label_file") c.label_file = S();
    else if (k == "image_root") c.image_root = S();
    else if (kIgnoredOfficial.count(k))
      c.warnings.push_back(origin + ": key '" + k + "' is unused by the reference model and ignored");
    else if (!c.read_yaml_key(k, v, origin, true, c.warnings))
      c.warnings.push_back(origin + ": unknown key '" + k + "' ignored");
  });
  validate_config(c, origin);
  return c;
}

int MedslipConfig::trunk_channels() const { return res_base_model == "resnet18" ? 256 : 1024; }

void MedslipConfig::validate() const {
  auto bad = [](const std::string& key, const std::string& why) {
    throw std::runtime_error("key '" + key + "': " + why);
  };
  if (res_base_model != "resnet18" && res_base_model != "resnet50")
    bad("res_base_model", "expected resnet18 or resnet50, got '" + res_base_model + "'");
  if (image_res < 16 || image_res % 16) bad("image_res", "must be a positive multiple of 16, got " + std::to_string(image_res));
  if (d_model <= 0) bad("d_model", "must be positive");
  if (H <= 0 || d_model % H) bad("H", "must divide d_model (" + std::to_string(d_model) + ")");
  if (N <= 0) bad("N", "must be positive");
  if (dropout < 0 || dropout >= 1) bad("dropout", "must be in [0,1)");
  if (decoder_dropout < 0 || decoder_dropout >= 1) bad("decoder_dropout", "must be in [0,1)");
  if (attribute_set_size != 2) bad("attribute_set_size", "only 2 (absent/present) is supported");
  if (num_neg_samples != kNumNegatives)
    bad("num_neg_samples", "only " + std::to_string(kNumNegatives) + " is supported (K = 8 ProtoCL candidates, spec C.3), got " +
                               std::to_string(num_neg_samples));
  validate_recipe();
  if (text_max_length < 2 || text_max_length > 512) bad("text_max_length", "must be in [2,512]");
}

std::string MedslipConfig::to_yaml() const {
  YAML::Emitter e;
  e << YAML::BeginMap;
  e << YAML::Key << "res_base_model" << YAML::Value << res_base_model;
  e << YAML::Key << "image_res" << YAML::Value << image_res;
  e << YAML::Key << "d_model" << YAML::Value << d_model;
  e << YAML::Key << "N" << YAML::Value << N;
  e << YAML::Key << "H" << YAML::Value << H;
  e << YAML::Key << "dim_feedforward" << YAML::Value << dim_feedforward;
  e << YAML::Key << "dropout" << YAML::Value << dropout;
  e << YAML::Key << "decoder_dropout" << YAML::Value << decoder_dropout;
  e << YAML::Key << "attribute_set_size" << YAML::Value << attribute_set_size;
  e << YAML::Key << "num_neg_samples" << YAML::Value << num_neg_samples;
  e << YAML::Key << "loss_alpha" << YAML::Value << alpha;
  e << YAML::Key << "loss_beta" << YAML::Value << beta;
  e << YAML::Key << "no_cl" << YAML::Value << no_cl;
  e << YAML::Key << "text_encoder" << YAML::Value << text_encoder;
  e << YAML::Key << "books" << YAML::Value << books;
  e << YAML::Key << "pathology_book" << YAML::Value << pathology_book;
  e << YAML::Key << "text_max_length" << YAML::Value << text_max_length;
  e << YAML::Key << "train_file" << YAML::Value << train_file;
  e << YAML::Key << "valid_file" << YAML::Value << valid_file;
  e << YAML::Key << "test_file" << YAML::Value << test_file;
  e << YAML::Key << "label_file" << YAML::Value << label_file;
  e << YAML::Key << "image_root" << YAML::Value << image_root;
  write_yaml(e, true);
  e << YAML::EndMap;
  return std::string(e.c_str()) + "\n";
}

// ---- TrainingRecipe: the keys pretraining and fine-tuning share ---------------------------

bool TrainingRecipe::read_yaml_key(const std::string& k, const YAML::Node& v, const std::string& origin,
                                   bool use_decay_rate, std::vector<std::string>& warnings) {
  if (k == "batch_size") batch_size = get<int>(v, k, origin);
  else if (k == "test_batch_size") test_batch_size = get<int>(v, k, origin);
  else if (k == "seed") seed = get<int>(v, k, origin);
  else if (k == "num_workers") num_workers = get<int>(v, k, origin);
  else if (k == "log_every") log_every = get<int>(v, k, origin);
  else if (k == "max_steps_per_epoch") max_steps_per_epoch = get<int>(v, k, origin);
  else if (k == "crop_scale_min") crop_scale_min = get<float>(v, k, origin);
  else if (k == "rand_augment_n") rand_augment_n = get<int>(v, k, origin);
  else if (k == "rand_augment_m") rand_augment_m = get<int>(v, k, origin);
  else if (k == "accum_steps") accum_steps = get<int>(v, k, origin);
  else if (k == "sampler_drop_last") sampler_drop_last = get<bool>(v, k, origin);
  else if (k == "sampler_set_epoch") sampler_set_epoch = get<bool>(v, k, origin);
  else if (k == "sampler_permutation") sampler_permutation = get<std::string>(v, k, origin);
  else if (k == "optimizer") {
    if (!v.IsMap()) throw std::runtime_error(origin + ": key 'optimizer' must be a mapping {opt, lr, weight_decay}");
    for (auto o = v.begin(); o != v.end(); ++o) {
      const std::string ok = o->first.as<std::string>();
      const YAML::Node ov = o->second;  // a copy (see for_each_config_key in model/config_yaml.h)
      if (ok == "opt") opt = get<std::string>(ov, "optimizer.opt", origin);
      else if (ok == "lr") lr = get<float>(ov, "optimizer.lr", origin);
      else if (ok == "weight_decay") weight_decay = get<float>(ov, "optimizer.weight_decay", origin);
      else warnings.push_back(origin + ": unknown key 'optimizer." + ok + "' ignored");
    }
  } else if (k == "schedular" || k == "scheduler") {
    if (!v.IsMap()) throw std::runtime_error(origin + ": key '" + k + "' must be a mapping");
    for (auto o = v.begin(); o != v.end(); ++o) {
      const std::string sk = o->first.as<std::string>(), full = k + "." + sk;
      const YAML::Node ov = o->second;
      if (sk == "sched") sched = get<std::string>(ov, full, origin);
      else if (sk == "epochs") epochs = get<int>(ov, full, origin);
      else if (sk == "min_lr") min_lr = get<float>(ov, full, origin);
      else if (sk == "warmup_lr") warmup_lr = get<float>(ov, full, origin);
      else if (sk == "warmup_epochs") warmup_epochs = get<int>(ov, full, origin);
      else if (sk == "decay_rate" && use_decay_rate) decay_rate = get<float>(ov, full, origin);
      else if (sk == "warmup_iters_per_step") warmup_iters_per_step = get<int>(ov, full, origin);
      else if (sk == "lr" || sk == "cooldown_epochs" || sk == "decay_rate")
        warnings.push_back(origin + ": key '" + full + "' is unused by the reference and ignored");
      else warnings.push_back(origin + ": unknown key '" + full + "' ignored");
    }
  } else {
    return false;
  }
  return true;
}

void TrainingRecipe::write_yaml(YAML::Emitter& e, bool with_decay_rate) const {
  e << YAML::Key << "batch_size" << YAML::Value << batch_size;
  e << YAML::Key << "test_batch_size" << YAML::Value << test_batch_size;
  e << YAML::Key << "seed" << YAML::Value << seed;
  e << YAML::Key << "num_workers" << YAML::Value << num_workers;
  e << YAML::Key << "log_every" << YAML::Value << log_every;
  e << YAML::Key << "max_steps_per_epoch" << YAML::Value << max_steps_per_epoch;
  e << YAML::Key << "crop_scale_min" << YAML::Value << crop_scale_min;
  e << YAML::Key << "rand_augment_n" << YAML::Value << rand_augment_n;
  e << YAML::Key << "rand_augment_m" << YAML::Value << rand_augment_m;
  e << YAML::Key << "accum_steps" << YAML::Value << accum_steps;
  e << YAML::Key << "sampler_drop_last" << YAML::Value << sampler_drop_last;
  e << YAML::Key << "sampler_set_epoch" << YAML::Value << sampler_set_epoch;
  e << YAML::Key << "sampler_permutation" << YAML::Value << sampler_permutation;
  e << YAML::Key << "optimizer" << YAML::Value << YAML::BeginMap << YAML::Key << "opt" << YAML::Value << opt
    << YAML::Key << "lr" << YAML::Value << lr << YAML::Key << "weight_decay" << YAML::Value << weight_decay
    << YAML::EndMap;
  e << YAML::Key << "schedular" << YAML::Value << YAML::BeginMap << YAML::Key << "sched" << YAML::Value << sched
    << YAML::Key << "epochs" << YAML::Value << epochs << YAML::Key << "min_lr" << YAML::Value << min_lr
    << YAML::Key << "warmup_lr" << YAML::Value << warmup_lr << YAML::Key << "warmup_epochs" << YAML::Value
    << warmup_epochs;
  if (with_decay_rate) e << YAML::Key << "decay_rate" << YAML::Value << decay_rate;
  e << YAML::Key << "warmup_iters_per_step" << YAML::Value << warmup_iters_per_step << YAML::EndMap;
}

void TrainingRecipe::validate_recipe() const {
  auto bad = [](const std::string& key, const std::string& why) {
    throw std::runtime_error("key '" + key + "': " + why);
  };
  if (batch_size <= 0) bad("batch_size", "must be positive");
  if (test_batch_size <= 0) bad("test_batch_size", "must be positive");
  if (!(crop_scale_min > 0 && crop_scale_min <= 1)) bad("crop_scale_min", "must be in (0,1]");
  if (rand_augment_n < 0 || rand_augment_n > 10) bad("rand_augment_n", "must be in [0,10]");
  if (rand_augment_m < 0 || rand_augment_m > 10) bad("rand_augment_m", "must be in [0,10]");
  if (lr <= 0) bad("optimizer.lr", "must be positive");
  if (weight_decay < 0) bad("optimizer.weight_decay", "must be >= 0");
  if (epochs <= 0) bad("schedular.epochs", "must be positive");
  if (opt != "adamW" && opt != "adamw") bad("optimizer.opt", "only adamW is supported, got '" + opt + "'");
  if (sched != "cosine") bad("schedular.sched", "only cosine is supported, got '" + sched + "'");
  if (accum_steps <= 0) bad("accum_steps", "must be positive, got " + std::to_string(accum_steps));
  if (sampler_permutation != "medslip" && sampler_permutation != "torch")
    bad("sampler_permutation", "expected medslip or torch, got '" + sampler_permutation + "'");
}

LrSchedule TrainingRecipe::schedule() const {
  LrSchedule s;
  s.lr = lr;
  s.lr_min = min_lr;
  s.warmup_lr_init = warmup_lr;
  s.t_initial = epochs;
  s.warmup_t = warmup_epochs;
  s.iters_per_warmup_step = warmup_iters_per_step;
  return s;
}

}  // namespace ms
