// defines: saving and loading any nn::Module's state with PyTorch names (beside engine/nn.h,
// which knows the modules, and engine/io.h, which knows the file) — every parameter and buffer,
// BatchNorm num_batches_tracked as I64, a module shared under two names written under both;
// loading checks that both copies of a shared tensor agree (spec A.3, H.1).
#pragma once
#include <map>
#include <string>

#include "engine/io.h"
#include "engine/nn.h"

namespace ms {

// The state as file tensors (F32, with I64 where torch has int64 buffers).
std::map<std::string, FileTensor> module_state_files(const nn::Module& m);
void save_module(const std::string& path, const nn::Module& m, const std::map<std::string, std::string>& metadata = {});

// Loads by name after stripping `strip_prefix` (e.g. "module.") from keys that have it.
// strict: missing or unexpected keys throw, listing them. Both names of a shared tensor
// must hold equal values when both are present (else a named error).
nn::LoadReport load_module_state(nn::Module& m, std::map<std::string, Tensor> sd, bool strict,
                                 const std::string& origin, const std::string& strip_prefix = "module.");

}  // namespace ms
