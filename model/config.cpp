#include "model/config.h"
#include "model/vocab.h"

#include <yaml-cpp/yaml.h>

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
  try {
    return n.as<T>();
  } catch (const YAML::Exception&) {
    throw std::runtime_error(origin + ": key '" + key + "' has an invalid value '" + YAML::Dump(n) + "'");
  }
}

}  // namespace

MedslipConfig MedslipConfig::from_yaml(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error("config file '" + path + "' cannot be opened");
  std::stringstream ss;
  ss << f.rdbuf();
  return from_yaml_string(ss.str(), path);
}

MedslipConfig MedslipConfig::from_yaml_string(const std::string& text, const std::string& origin) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw std::runtime_error(origin + ": not valid YAML: " + e.what());
  }
  MedslipConfig c;
  if (root.IsNull()) return c;
  if (!root.IsMap()) throw std::runtime_error(origin + ": expected a mapping of keys to values at the top level");
  for (auto it = root.begin(); it != root.end(); ++it) {
    const std::string k = it->first.as<std::string>();
    // A copy, not a reference: yaml-cpp's iterator operator-> returns a proxy by value, so a
    // reference to it->second dangles after this statement (ASan: stack-use-after-scope).
    const YAML::Node v = it->second;
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
    else if (k == "batch_size") c.batch_size = I();
    else if (k == "test_batch_size") c.test_batch_size = I();
    else if (k == "seed") c.seed = I();
    else if (k == "num_workers") c.num_workers = I();
    else if (k == "log_every") c.log_every = I();
    else if (k == "max_steps_per_epoch") c.max_steps_per_epoch = I();
    else if (k == "crop_scale_min") c.crop_scale_min = F();
    else if (k == "rand_augment_n") c.rand_augment_n = I();
    else if (k == "rand_augment_m") c.rand_augment_m = I();
    else if (k == "accum_steps") c.accum_steps = I();
    else if (k == "sampler_drop_last") c.sampler_drop_last = B();
    else if (k == "sampler_set_epoch") c.sampler_set_epoch = B();
    else if (k == "sampler_permutation") c.sampler_permutation = S();
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
        else if (sk == "decay_rate") c.decay_rate = get<float>(o->second, full, origin);
        else if (sk == "warmup_iters_per_step") c.warmup_iters_per_step = get<int>(o->second, full, origin);
        else if (sk == "lr" || sk == "cooldown_epochs")
          c.warnings.push_back(origin + ": key '" + full + "' is unused by the reference and ignored");
        else c.warnings.push_back(origin + ": unknown key '" + full + "' ignored");
      }
    } else if (kIgnoredOfficial.count(k)) {
      c.warnings.push_back(origin + ": key '" + k + "' is unused by the reference model and ignored");
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
  if (batch_size <= 0) bad("batch_size", "must be positive");
  if (lr <= 0) bad("optimizer.lr", "must be positive");
  if (weight_decay < 0) bad("optimizer.weight_decay", "must be >= 0");
  if (epochs <= 0) bad("schedular.epochs", "must be positive");
  if (!(crop_scale_min > 0 && crop_scale_min <= 1)) bad("crop_scale_min", "must be in (0,1]");
  if (rand_augment_n < 0 || rand_augment_n > 10) bad("rand_augment_n", "must be in [0,10]");
  if (rand_augment_m < 0 || rand_augment_m > 10) bad("rand_augment_m", "must be in [0,10]");
  if (opt != "adamW" && opt != "adamw") bad("optimizer.opt", "only adamW is supported, got '" + opt + "'");
  if (sched != "cosine") bad("schedular.sched", "only cosine is supported, got '" + sched + "'");
  if (text_max_length < 2 || text_max_length > 512) bad("text_max_length", "must be in [2,512]");
  if (accum_steps <= 0) bad("accum_steps", "must be positive, got " + std::to_string(accum_steps));
  if (sampler_permutation != "medslip" && sampler_permutation != "torch")
    bad("sampler_permutation", "expected medslip or torch, got '" + sampler_permutation + "'");
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
    << warmup_epochs << YAML::Key << "decay_rate" << YAML::Value << decay_rate << YAML::Key
    << "warmup_iters_per_step" << YAML::Value << warmup_iters_per_step << YAML::EndMap;
  e << YAML::EndMap;
  return std::string(e.c_str()) + "\n";
}

}  // namespace ms
