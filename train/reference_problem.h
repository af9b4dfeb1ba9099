// defines: the reference problem — a small MeDSLIP (ResNet-18 trunk, 64 px, the real
// decoders and all five losses) with weights, books and a batch drawn from a fixed seed
// of the engine RNG. `medslip verify` runs it against constants recorded from the
// official PyTorch model on the very same tensors (exported with `verify --export`), and
// the model parity test compares one step of it with a committed reference fixture.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "model/medslip.h"

namespace ms {

struct ReferenceProblem {
  MedslipConfig cfg;
  uint64_t seed = 0;
  Tensor pathology_book, anatomy_book;  // [75,768], [51,768]
  MedslipBatch batch;
  std::unique_ptr<Medslip> model;
};

struct StepLosses {
  float total, ce_pathology, cl_pathology, ce_anatomy, cl_anatomy, icl;
};

// The batch the official reference runner draws (shared/tools/official_reference.py):
// N(0,1) images [B,3,S,S]; per image 5 cells present, 20 absent, the rest unmentioned;
// then the dataset's triplet rule (spec C.2-C.3). All from Rng(seed, kStreamData).
MedslipBatch reference_batch(int64_t batch_size, int64_t image_res, uint64_t seed);

// seed 2024, ResNet-18, 64 px, B=2, every dropout 0, BatchNorm in train mode.
ReferenceProblem make_reference_problem(uint64_t seed = 2024, const std::string& backbone = "resnet18",
                                        int image_res = 64, int batch_size = 2);

// Writes config.yaml, weights.safetensors (official names, both names of the shared
// norm), books.safetensors and batch.safetensors (the `medslip step` layout) into dir.
void export_reference_problem(const ReferenceProblem& p, const std::string& dir);

// `steps` AdamW updates (groups [no_decay, decay], weight decay 0.02, constant lr); returns
// the losses of each step's forward (before its update).
std::vector<StepLosses> run_reference_steps(ReferenceProblem& p, int steps, float lr = 1e-4f);

StepLosses step_losses(const MedslipLosses& L);

}  // namespace ms
