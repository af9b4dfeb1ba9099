// medslip step: one forward and backward pass (no optimiser step) of MeDSLIP on a given
// batch, writing every loss, output and parameter gradient — the audit entry point that
// the parity tests use (README "Auditing one step").
#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include "engine/autograd.h"
#include "engine/io.h"
#include "engine/threads.h"
#include "model/medslip.h"
#include "engine/nn_state.h"
#include "train/commands.h"
#include "train/common.h"

namespace ms {

int cmd_step(int argc, char** argv) {
  CLI::App app{"Run one MeDSLIP forward + backward pass and write losses, outputs and gradients.\n"
               "Names: weights use the official state_dict keys (a leading 'module.' is stripped); books hold\n"
               "pathology_book [75,T] and anatomy_book [51,T]; the batch holds image [B,3,S,S], matrix [B,51,75],\n"
               "label_pathology [B,75], label_anatomy [B,51], index_pathology [B,75,8], index_anatomy [B,51,8].\n"
               "Output: loss, loss_ce_pathology, loss_cl_pathology, loss_ce_anatomy, loss_cl_anatomy, loss_ap,\n"
               "logits_pathology [B,75,2], logits_anatomy [B,51,2], attn_pathology [N,B,75,P], attn_anatomy\n"
               "[N,B,51,P], feat_pathology [75,B,d], feat_anatomy [51,B,d] and grad.<name> for every parameter.",
               "medslip step"};
  std::string config, weights, books, batch_path, out, bn = "train", device = "cpu";
  bool tf32 = false;
  float dropout = -1.f;
  int seed = 0, threads = 0;
  bool non_strict = false;
  app.add_option("--config", config, "model config (YAML, official keys)")->required()->check(CLI::ExistingFile);
  app.add_option("--weights", weights, "weights (.safetensors, .pth, .bin) with official names")->required()->check(CLI::ExistingFile);
  app.add_option("--books", books, "books safetensors (pathology_book, anatomy_book)")->required()->check(CLI::ExistingFile);
  app.add_option("--batch", batch_path, "batch safetensors")->required()->check(CLI::ExistingFile);
  app.add_option("--out", out, "output safetensors")->required();
  app.add_option("--dropout", dropout, "override every dropout probability (0 for parity runs)");
  app.add_option("--bn", bn, "BatchNorm mode: train (batch statistics, as pretraining) or eval")->check(CLI::IsMember({"train", "eval"}));
  add_device_options(app, device, tf32);
  app.add_option("--seed", seed, "dropout seed");
  app.add_option("--threads", threads, "threads (default: OMP_NUM_THREADS or all cores)");
  app.add_flag("--non-strict", non_strict, "allow missing/unexpected weight names");
  MS_PARSE_ARGS(app, argc, argv);
  if (threads > 0) set_num_threads(threads);

  MedslipConfig cfg = load_config(config);
  if (dropout >= 0.f) cfg.dropout = cfg.decoder_dropout = dropout;
  const Device dev = select_device(device, tf32);

  auto [pbook, abook] = load_books(books);
  Medslip model(cfg, pbook.size(1), uint64_t(seed));
  load_weights(model, weights, !non_strict);
  model.set_books(pbook.to(dev), abook.to(dev));
  model.to(dev);
  model.train();
  if (bn == "eval") model.res_features->eval();

  MedslipBatch batch = load_batch(batch_path);
  batch.image = batch.image.to(dev);
  MedslipOutput o = model.forward(batch.image);
  MedslipLosses L = model.losses(o, batch);
  L.total.backward();

  std::vector<SaveItem> items;
  auto scalar = [&](const char* name, const Tensor& t) { items.push_back(SaveItem::f32(name, t.reshape({}))); };
  scalar("loss", L.total);
  scalar("loss_ce_pathology", L.ce_pathology);
  scalar("loss_cl_pathology", L.cl_pathology);
  scalar("loss_ce_anatomy", L.ce_anatomy);
  scalar("loss_cl_anatomy", L.cl_anatomy);
  scalar("loss_ap", L.icl);
  items.push_back(SaveItem::f32("logits_pathology", o.logits_pathology));
  items.push_back(SaveItem::f32("logits_anatomy", o.logits_anatomy));
  items.push_back(SaveItem::f32("attn_pathology", stack_layers(o.attn_pathology)));
  items.push_back(SaveItem::f32("attn_anatomy", stack_layers(o.attn_anatomy)));
  items.push_back(SaveItem::f32("feat_pathology", o.feat_pathology));
  items.push_back(SaveItem::f32("feat_anatomy", o.feat_anatomy));
  for (const auto& e : model.state_entries()) {
    if (!e.is_parameter) continue;
    Tensor g = e.tensor->grad();
    items.push_back(SaveItem::f32("grad." + e.name, g.defined() ? g : Tensor::zeros(e.tensor->shape())));
  }
  save_safetensors(out, items, {{"producer", "medslip step"}, {"bn", bn}});
  fmt::print("loss {:.6f} = ce_p {:.6f} + ce_a {:.6f} + cl_p {:.6f} + cl_a {:.6f} + icl {:.6f}\nwrote {}\n",
             L.total.item(), L.ce_pathology.item(), L.ce_anatomy.item(), L.cl_pathology.item(), L.cl_anatomy.item(),
             L.icl.item(), out);
  return 0;
}

}  // namespace ms
