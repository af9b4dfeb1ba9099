// defines: StateDict (named tensors in file order, dtypes kept) and read_state_dict /
// load_state_dict_any — one entry point for model.safetensors, torch.save .pth/.pt files and
// Hugging Face pytorch_model.bin (spec A.6: pick checkpoint["model"], strip "module.").
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "engine/io.h"

namespace ms {

enum class WeightsFormat { Safetensors, TorchZip, TorchLegacy, Unknown };
// Decided by content, not by extension.
WeightsFormat detect_weights_format(const std::string& path);

struct StateDict {
  std::vector<std::string> names;             // file order (OrderedDict / safetensors offsets)
  std::map<std::string, FileTensor> tensors;  // exact values, original dtype
  std::string source;                         // e.g. "ckpt.pth['model']", for messages

  int64_t numel() const;  // total element (parameter) count
  std::map<std::string, Tensor> to_float() const;
  // For save_safetensors: float dtypes as F32 (our engine's type) unless keep_float_dtypes,
  // integer/bool tensors as stored (num_batches_tracked stays I64).
  std::vector<SaveItem> to_save_items(bool keep_float_dtypes = false) const;
};

struct StateDictOptions {
  // torch files: the entry of the top-level dict to use ("model"; "a/b" descends). When empty
  // and the top level is not itself a dict of tensors, "model" then "state_dict" are tried
  // and the choice is logged. safetensors files: keep only names starting with "key." (stripped).
  std::string key;
  std::string strip_prefix;            // removed from names that start with it, e.g. "module."
  bool allow_unknown_globals = false;  // see TorchLoadOptions
  bool verbose = true;                 // log the automatic key choice on stderr
};

// Throws std::runtime_error naming the file (and key) on any problem.
StateDict read_state_dict(const std::string& path, const StateDictOptions& opt = {});

// All tensors as float32 (int64 beyond 2^24 loses precision: use read_state_dict for exact ints).
std::map<std::string, Tensor> load_state_dict_any(const std::string& path, const std::string& key = "",
                                                  const std::string& strip_prefix = "");

}  // namespace ms
