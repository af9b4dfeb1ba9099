#include "train/reference_problem.h"

#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "data/triplets.h"
#include "engine/io.h"
#include "engine/optim.h"
#include "engine/nn_state.h"

namespace ms {

MedslipBatch reference_batch(int64_t B, int64_t S, uint64_t seed) {
  MedslipBatch batch;
  Rng data(seed, kStreamData);
  batch.image = Tensor::empty({B, 3, S, S});  // [B,3,S,S]
  data.fill_normal(batch.image.data(), batch.image.numel());
  const int64_t cells = int64_t(kNumAnatomies) * kNumPathologies;
  for (int64_t b = 0; b < B; ++b) {
    std::vector<int64_t> all(static_cast<size_t>(cells));
    for (int64_t i = 0; i < cells; ++i) all[size_t(i)] = i;
    auto pick = data.sample(all, 25);
    std::vector<float> m(static_cast<size_t>(cells), -1.f);  // [51,75]
    for (size_t i = 0; i < pick.size(); ++i) m[size_t(pick[i])] = i < 5 ? 1.f : 0.f;
    Triplets t = make_triplets(m, data, "reference image " + std::to_string(b));
    batch.matrix.insert(batch.matrix.end(), m.begin(), m.end());
    batch.label_pathology.insert(batch.label_pathology.end(), t.label_pathology.begin(), t.label_pathology.end());
    batch.label_anatomy.insert(batch.label_anatomy.end(), t.label_anatomy.begin(), t.label_anatomy.end());
    batch.index_pathology.insert(batch.index_pathology.end(), t.index_pathology.begin(), t.index_pathology.end());
    batch.index_anatomy.insert(batch.index_anatomy.end(), t.index_anatomy.begin(), t.index_anatomy.end());
  }
  return batch;
}

ReferenceProblem make_reference_problem(uint64_t seed, const std::string& backbone, int image_res, int batch_size) {
  ReferenceProblem p;
  p.seed = seed;
  p.cfg.res_base_model = backbone;
  p.cfg.image_res = image_res;
  p.cfg.batch_size = batch_size;
  p.cfg.dropout = 0.f;          // dropout masks cannot be matched across engines
  p.cfg.decoder_dropout = 0.f;
  const int64_t T = 768, B = batch_size;

  Rng text(seed, 11);  // books: fixed N(0,1) vectors standing in for BERT [CLS] rows
  p.pathology_book = Tensor::empty({kNumPathologies, T});
  p.anatomy_book = Tensor::empty({kNumAnatomies, T});
  text.fill_normal(p.pathology_book.data(), p.pathology_book.numel());
  text.fill_normal(p.anatomy_book.data(), p.anatomy_book.numel());

  p.batch = reference_batch(B, image_res, seed);
  p.model = std::make_unique<Medslip>(p.cfg, T, seed);
  p.model->set_books(p.pathology_book, p.anatomy_book);
  p.model->train();
  return p;
}

void export_reference_problem(const ReferenceProblem& p, const std::string& dir) {
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/config.yaml") << p.cfg.to_yaml();
  save_module(dir + "/weights.safetensors", *p.model, {{"producer", "medslip verify --export"}, {"seed", std::to_string(p.seed)}});
  save_safetensors(dir + "/books.safetensors",
                   {SaveItem::f32("pathology_book", p.pathology_book), SaveItem::f32("anatomy_book", p.anatomy_book)});
  const int64_t B = p.batch.batch_size();
  std::vector<double> m(p.batch.matrix.begin(), p.batch.matrix.end());
  save_safetensors(dir + "/batch.safetensors",
                   {SaveItem::f32("image", p.batch.image), SaveItem::f64("matrix", m, {B, 51, 75}),
                    SaveItem::i64("label_pathology", p.batch.label_pathology, {B, 75}),
                    SaveItem::i64("label_anatomy", p.batch.label_anatomy, {B, 51}),
                    SaveItem::i64("index_pathology", p.batch.index_pathology, {B, 75, 8}),
                    SaveItem::i64("index_anatomy", p.batch.index_anatomy, {B, 51, 8})});
}

StepLosses step_losses(const MedslipLosses& L) {
  return {L.total.item(), L.ce_pathology.item(), L.cl_pathology.item(), L.ce_anatomy.item(), L.cl_anatomy.item(),
          L.icl.item()};
}

std::vector<StepLosses> run_reference_steps(ReferenceProblem& p, int steps, float lr) {
  AdamW opt(decay_groups(*p.model, 0.02f), lr);
  std::vector<StepLosses> out;
  for (int s = 0; s < steps; ++s) {
    opt.zero_grad();
    MedslipOutput o = p.model->forward(p.batch.image);
    MedslipLosses L = p.model->losses(o, p.batch);
    L.total.backward();
    opt.step();
    out.push_back(step_losses(L));
  }
  return out;
}

}  // namespace ms
