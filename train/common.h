// defines: helpers shared by the subcommands: config with warnings printed, books,
// weights in any supported format, a MeDSLIP batch from safetensors, run folders.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "model/config.h"
#include "model/medslip.h"

namespace ms {

// Loads YAML and prints its warnings (unknown keys) to stderr.
MedslipConfig load_config(const std::string& path);
// {pathology_book [75,T], anatomy_book [51,T]} from a books safetensors file.
std::pair<Tensor, Tensor> load_books(const std::string& path);
// Weights by official names from .safetensors (or .pth/.bin through weights/), a leading
// "module." stripped; strict by default; prints missing/unexpected keys when non-strict.
void load_weights(nn::Module& model, const std::string& path, bool strict);
// The batch layout of `medslip step` (README): F32/F64/I64 accepted for labels and indices.
MedslipBatch load_batch(const std::string& path);
// N x [B,Q,P] -> [N,B,Q,P]
Tensor stack_layers(const std::vector<Tensor>& per_layer);

}  // namespace ms
