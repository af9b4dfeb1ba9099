// defines: the reproducibility record a pretraining run writes (reproducibility.json):
// program version and commit, build flags, platform, the resolved config and its hash,
// the seed, hashes of the training image list and of the label matrix, and per epoch a
// hash of the model weights and the loss values. `medslip verify --run DIR` re-runs the
// first epochs from it and says whether the weight hashes match.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "engine/nn.h"

namespace ms {

constexpr const char* kRecordFile = "reproducibility.json";

// SHA-256 over every state tensor's name, shape and float32 bytes, in state_dict order.
std::string weights_sha256(const nn::Module& m);

class RunRecord {
 public:
  // Starts a record (or continues the one in `dir` when resuming).
  RunRecord(const std::string& dir, bool resume);
  nlohmann::json& json() { return j_; }
  void add_epoch(int epoch, const std::string& weights_hash, const nlohmann::json& losses);
  void save() const;  // atomic (tmp + rename)
  static nlohmann::json load(const std::string& dir);

 private:
  std::string path_;
  nlohmann::json j_;
};

// medslip verify --run DIR --epochs K: returns the exit code.
int verify_run(const std::string& run_dir, int epochs);

}  // namespace ms
