// defines: MedslipConfig — every hyper-parameter of the model and the pretraining recipe,
// read from YAML with the keys of the official Pretrain_MeDSLIP.yaml (same meaning) plus
// our own. Unknown keys warn; bad values throw naming the key.
#pragma once
#include <string>
#include <vector>

#include "engine/optim.h"
#include "model/vocab.h"

namespace YAML {
class Node;
class Emitter;
}  // namespace YAML

namespace ms {

// The keys pretraining (MedslipConfig) and fine-tuning (FinetuneConfig, train/finetune.h) share,
// read, written and checked in one place: batches, seed, workers, logging, augmentation, the
// reference's `optimizer:` {opt, lr, weight_decay} and `schedular:` (or `scheduler:`) maps, and
// data-parallel training's keys. The defaults are
// pretraining's (Pretrain_MeDSLIP.yaml); FinetuneConfig sets the reference's fine-tuning ones.
struct TrainingRecipe {
  int batch_size = 64;
  int test_batch_size = 32;
  int seed = 42;
  int num_workers = 2;
  int log_every = 10;
  int max_steps_per_epoch = 0;      // 0 = full epoch (demo/test runs cap it)
  // Training augmentation (spec C.4): RandomResizedCrop's smallest area share and ALBEF
  // RandAugment's (N ops, magnitude M). The defaults are the reference's; n = 0 turns it off.
  float crop_scale_min = 0.2f;
  int rand_augment_n = 2, rand_augment_m = 7;
  std::string opt = "adamW";
  float lr = 1e-4f, weight_decay = 0.02f;
  std::string sched = "cosine";
  int epochs = 100, warmup_epochs = 5;
  float min_lr = 1e-5f, warmup_lr = 1e-5f, decay_rate = 1.f;
  int warmup_iters_per_step = 100;  // the reference steps warmup every 100 iterations
  // Data-parallel training and gradient accumulation (docs/distributed.md). A step runs
  // accum_steps micro-batches of batch_size per rank (each with its own BatchNorm
  // statistics) and averages their gradients over all ranks before one optimiser step.
  int accum_steps = 1;
  // DistributedSampler (data/sampler.h): pad by repeating (false, torch's default) or drop
  // the ragged tail; set_epoch false = the reference's sampler, which never calls
  // set_epoch (the same order every epoch); permutation medslip | torch (torch.randperm).
  bool sampler_drop_last = false;
  bool sampler_set_epoch = true;
  std::string sampler_permutation = "medslip";

  // Reads top-level key `key` of a config when it is one of these and returns true; false for
  // any other key. Unknown keys inside the maps are warned about. `use_decay_rate` false (the
  // fine-tuning reference has no decay) warns that schedular.decay_rate is ignored.
  bool read_yaml_key(const std::string& key, const YAML::Node& value, const std::string& origin, bool use_decay_rate,
                     std::vector<std::string>& warnings);
  // Writes these keys into an open YAML map (batch_size .. rand_augment_m, accum_steps,
  // sampler_*, optimizer, schedular).
  void write_yaml(YAML::Emitter& e, bool with_decay_rate) const;
  // Throws "key '<key>': ..." for a bad value.
  void validate_recipe() const;
  // The reference's warmup + cosine over `epochs` (engine/optim.h).
  LrSchedule schedule() const;
};

struct MedslipConfig : TrainingRecipe {
  // --- model (spec A) -------------------------------------------------------------
  std::string res_base_model = "resnet50";  // resnet18 | resnet50 (trunk to layer3)
  int image_res = 224;                      // input side S; patches = (S/16)^2
  int d_model = 256;                        // decoder width d
  int N = 4;                                // decoder layers per stream
  int H = 4;                                // attention heads
  int dim_feedforward = 1024;               // FFN width (hard-coded in the reference)
  float dropout = 0.1f;                     // heads (dropout_feas_*); the reference's config key
  float decoder_dropout = 0.1f;             // decoder layers (hard-coded 0.1 in the reference)
  int attribute_set_size = 2;               // existence classes (absent, present)
  int num_neg_samples = kNumNegatives;      // ProtoCL negatives (spec C.3); only 7 is supported
  float alpha = 1.f;                        // weight of ProtoCL (paper's alpha; code uses 1)
  float beta = 1.f;                         // weight of ICL (paper's beta; code uses 1)
  bool no_cl = false;                       // drop the ProtoCL terms

  // --- text side (spec A.1) -------------------------------------------------------
  std::string text_encoder;       // Hugging Face BERT folder (config.json, vocab.txt, weights)
  std::string books;              // precomputed books (safetensors), instead of text_encoder
  std::string pathology_book;     // JSON of 75 observation descriptions (official key order)
  int text_max_length = 128;      // 128 in pretraining, 64 in the official zero-shot scripts

  // --- data -------------------------------------------------------------------------
  std::string train_file, valid_file, test_file, label_file, image_root;

  // --- recipe (spec D): batches, augmentation, optimiser, schedule, data-parallel keys: -------
  // TrainingRecipe's.

  std::vector<std::string> warnings;  // unknown or ignored keys, for the caller to print

  // Loads YAML; throws std::runtime_error naming the file and key on a bad value.
  static MedslipConfig from_yaml(const std::string& path);
  static MedslipConfig from_yaml_string(const std::string& text, const std::string& origin = "<string>");
  std::string to_yaml() const;
  int trunk_channels() const;  // 1024 for resnet50, 256 for resnet18
  int patches() const { return (image_res / 16) * (image_res / 16); }
  void validate() const;
};

}  // namespace ms
