// defines: MedslipBatch, the one pretraining batch: what the data loader builds
// (data/loader.h), `medslip step` reads from safetensors, the reference problem draws, and
// Medslip::losses trains on (spec C.3). A leaf beside model/vocab.h: it names no network, so
// data/ may fill it (docs/architecture.md, "Folder dependencies").
//
// Dimension names: B batch, S image side, Qp = 75 pathologies, Qa = 51 anatomies,
// K = 8 ProtoCL candidates (model/vocab.h).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "model/vocab.h"

namespace ms {

struct MedslipBatch {
  Tensor image;                          // [B,3,S,S] normalised
  std::vector<float> matrix;             // [B,Qa,Qp] in {-1,0,1}: unmentioned / absent / present
  std::vector<int64_t> label_pathology;  // [B,Qp] in {-1,0,1}
  std::vector<int64_t> label_anatomy;    // [B,Qa]
  std::vector<int64_t> index_pathology;  // [B,Qp,K] anatomy ids, -1 = prototype slot
  std::vector<int64_t> index_anatomy;    // [B,Qa,K] pathology ids
  // Where a loaded batch came from (empty for batches from files or the reference problem).
  int64_t epoch = 0, index = 0;          // batch `index` of `epoch`
  std::vector<std::string> paths;        // B image paths
  std::vector<int64_t> items;            // B dataset indices

  int64_t batch_size() const { return image.defined() ? image.size(0) : 0; }
  void validate() const;                 // shapes and value ranges; throws naming the field
};

}  // namespace ms
