#include "model/medslip.h"

#include <stdexcept>
#include <string>

#include "engine/autograd.h"

namespace ms {

Medslip::Medslip(const MedslipConfig& cfg, int64_t text_width, uint64_t seed) : cfg_(cfg), text_width_(text_width) {
  cfg.validate();
  Rng init(seed, kStreamInit);
  const int64_t d = cfg.d_model;
  res_features = register_module("res_features",
                                 std::make_shared<ResNet>(cfg.res_base_model, true, ResNet::Naming::Sequential, init));
  const int64_t C = res_features->out_channels();
  // Registration order follows the reference's __init__ (so named_parameters matches).
  pathology_embedding_layer = register_module("pathology_embedding_layer", std::make_shared<nn::Linear>(text_width, d, true, init));
  cl_fc_pathology = register_module("cl_fc_pathology", std::make_shared<nn::Linear>(d, text_width, true, init));
  res_l1_pathology = register_module("res_l1_pathology", std::make_shared<nn::Linear>(C, C, true, init));
  res_l2_pathology = register_module("res_l2_pathology", std::make_shared<nn::Linear>(C, d, true, init));
  cl_fc_anatomy = register_module("cl_fc_anatomy", std::make_shared<nn::Linear>(d, text_width, true, init));
  res_l1_anatomy = register_module("res_l1_anatomy", std::make_shared<nn::Linear>(C, C, true, init));
  res_l2_anatomy = register_module("res_l2_anatomy", std::make_shared<nn::Linear>(C, d, true, init));
  mask_generator = register_module("mask_generator", std::make_shared<nn::Linear>(C, C, true, init));
  decoder_norm = std::make_shared<nn::LayerNorm>(d);
  decoder_anatomy = register_module("decoder_anatomy", std::make_shared<Decoder>(d, cfg.H, cfg.dim_feedforward,
                                                                                cfg.decoder_dropout, cfg.N, decoder_norm, init));
  decoder_pathology = register_module("decoder_pathology", std::make_shared<Decoder>(d, cfg.H, cfg.dim_feedforward,
                                                                                    cfg.decoder_dropout, cfg.N, decoder_norm, init));
  dropout_feas_anatomy = register_module("dropout_feas_anatomy", std::make_shared<nn::Dropout>(cfg.dropout));
  dropout_feas_pathology = register_module("dropout_feas_pathology", std::make_shared<nn::Dropout>(cfg.dropout));
  classifier_anatomy = register_module("classifier_anatomy", std::make_shared<nn::Linear>(d, cfg.attribute_set_size, true, init));
  classifier_pathology = register_module("classifier_pathology", std::make_shared<nn::Linear>(d, cfg.attribute_set_size, true, init));

  // spec A.5: every nn.Linear weight (MHA out_proj included) and MHA in_proj_weight ~ N(0, 0.02);
  // Linear biases keep PyTorch's default; MHA biases 0; LayerNorm 1/0; ResNet untouched.
  std::vector<nn::Linear*> linears = {pathology_embedding_layer.get(), cl_fc_pathology.get(), res_l1_pathology.get(),
                                      res_l2_pathology.get(), cl_fc_anatomy.get(), res_l1_anatomy.get(),
                                      res_l2_anatomy.get(), mask_generator.get(), classifier_anatomy.get(),
                                      classifier_pathology.get()};
  // The 8 decoder layers are deep copies of one template (spec A.5 curiosity): their
  // linear1/linear2 biases start identical; weights are re-drawn independently.
  const DecoderLayer& tmpl = *decoder_anatomy->layers[0];
  for (auto* dec : {decoder_anatomy.get(), decoder_pathology.get()})
    for (auto& layer : dec->layers) {
      for (auto* mha : {layer->self_attn.get(), layer->multihead_attn.get()}) {
        init.fill_normal(mha->in_proj_weight.data(), mha->in_proj_weight.numel(), 0.f, 0.02f);
        linears.push_back(mha->out_proj.get());
      }
      linears.push_back(layer->linear1.get());
      linears.push_back(layer->linear2.get());
      if (layer.get() != &tmpl) {
        layer->linear1->bias.copy_(tmpl.linear1->bias);
        layer->linear2->bias.copy_(tmpl.linear2->bias);
      }
    }
  for (auto* l : linears) init.fill_normal(l->weight.data(), l->weight.numel(), 0.f, 0.02f);
  set_rng(std::make_shared<Rng>(seed, kStreamDropout));
}

void Medslip::set_books(const Tensor& pb, const Tensor& ab) {
  check_shape(pb, {kNumPathologies, text_width_}, "pathology_book");
  check_shape(ab, {kNumAnatomies, text_width_}, "anatomy_book");
  pathology_book_ = pb.detach();
  anatomy_book_ = ab.detach();
}

std::pair<Tensor, Tensor> Medslip::image_encoder(const Tensor& image) {
  const int64_t B = image.size(0);
  Tensor f = res_features->forward(image);                // [B,C,h,w]
  if (on_phase) on_phase("trunk");
  const int64_t C = f.size(1), P = f.size(2) * f.size(3);
  Tensor x = permute(f, {0, 2, 3, 1}).reshape({B * P, C});  // [B*P,C], patch n = 14h + w
  Tensor m = mask_generator->forward(x);                  // [B*P,C], unbounded: no sigmoid (spec A.2.3)
  auto [x_p, x_a] = mask_split(m, x);                     // pathology stream m . F, anatomy stream (1-m) . F
  Tensor h_p = res_l2_pathology->forward(res_l1_pathology->forward_relu(x_p));  // [B*P,d]
  Tensor h_a = res_l2_anatomy->forward(res_l1_anatomy->forward_relu(x_a));      // [B*P,d]
  const int64_t d = h_p.size(1);
  std::pair<Tensor, Tensor> mem = {transpose(h_p.reshape({B, P, d}), 0, 1),  // [P,B,d]
                                   transpose(h_a.reshape({B, P, d}), 0, 1)};
  if (on_phase) on_phase("patch_mlps");
  return mem;
}

MedslipOutput Medslip::forward(const Tensor& image, Streams streams) {
  if (!pathology_book_.defined()) throw std::logic_error("Medslip::forward: books not set (call set_books)");
  if (image.dim() != 4 || image.size(1) != 3)
    throw std::invalid_argument("Medslip: image must be [B,3,S,S], got " + shape_str(image.shape()));
  const int64_t d = cfg_.d_model;
  auto [mem_p, mem_a] = image_encoder(image);
  MedslipOutput out;
  auto run = [&](const Tensor& book, Decoder& dec, nn::Dropout& drop, nn::Linear& cls, const Tensor& mem,
                 Tensor& feat, Tensor& dropped, Tensor& logits, std::vector<Tensor>& attn) {
    const int64_t Q = book.size(0);
    Tensor q = pathology_embedding_layer->forward(book);          // [Q,d] — the shared projection
    auto o = dec.forward(q.reshape({Q, 1, d}), mem);              // the same queries for every image
    feat = o.tokens;                                              // [Q,B,d]
    attn = o.attn;                                                // N x [B,Q,P]
    dropped = drop.forward(feat);
    logits = transpose(cls.forward(dropped), 0, 1);               // [B,Q,2]
  };
  if (streams != Streams::Anatomy)
    run(pathology_book_, *decoder_pathology, *dropout_feas_pathology, *classifier_pathology, mem_p,
        out.feat_pathology, out.drop_pathology, out.logits_pathology, out.attn_pathology);
  if (streams != Streams::Pathology)
    run(anatomy_book_, *decoder_anatomy, *dropout_feas_anatomy, *classifier_anatomy, mem_a, out.feat_anatomy,
        out.drop_anatomy, out.logits_anatomy, out.attn_anatomy);
  if (on_phase) on_phase("decoders");
  return out;
}

MedslipLosses Medslip::losses(const MedslipOutput& out, const MedslipBatch& batch) const {
  batch.validate();
  if (!out.feat_pathology.defined() || !out.feat_anatomy.defined())
    throw std::logic_error("Medslip::losses needs both streams (forward with Streams::Both)");
  const int64_t B = batch.batch_size(), Qp = kNumPathologies, Qa = kNumAnatomies;
  MedslipLosses L;
  L.ce_pathology = loss_existence(out.logits_pathology, batch.label_pathology);
  L.ce_anatomy = loss_existence(out.logits_anatomy, batch.label_anatomy);
  L.icl = loss_icl(out.feat_pathology, out.feat_anatomy, batch.matrix);
  if (cfg_.no_cl) {
    L.cl_pathology = Tensor::zeros({}, out.feat_pathology.device());
    L.cl_anatomy = Tensor::zeros({}, out.feat_pathology.device());
  } else {
    // Pos = [M == 1], never a mutated M (spec B.6.1). Oriented per stream: [Qp,Qa] / [Qa,Qp].
    std::vector<uint8_t> pos_p(size_t(B * Qp * Qa)), pos_a(size_t(B * Qa * Qp));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t a = 0; a < Qa; ++a)
        for (int64_t p = 0; p < Qp; ++p) {
          uint8_t v = batch.matrix[size_t((b * Qa + a) * Qp + p)] == 1.f;
          pos_p[size_t((b * Qp + p) * Qa + a)] = v;
          pos_a[size_t((b * Qa + a) * Qp + p)] = v;
        }
    L.cl_pathology = loss_protocl(out.drop_pathology, *cl_fc_pathology, batch.label_pathology, anatomy_book_, pos_p,
                                  batch.index_pathology, B, Qp, Qa);
    L.cl_anatomy = loss_protocl(out.drop_anatomy, *cl_fc_anatomy, batch.label_anatomy, pathology_book_, pos_a,
                                batch.index_anatomy, B, Qa, Qp);
  }
  // spec B.5 (code: alpha = beta = 1)
  L.total = add(add(add(L.ce_pathology, L.ce_anatomy), mul(add(L.cl_pathology, L.cl_anatomy), cfg_.alpha)),
                mul(L.icl, cfg_.beta));
  return L;
}

}  // namespace ms
