// defines: the MeDSLIP model (spec A): ResNet trunk -> mask split into a pathology and an
// anatomy stream -> stream MLPs -> two DETR decoders whose queries are projected text
// "books" -> existence heads and ProtoCL projections (the batch it trains on: model/batch.h).
//
// Dimension names: B batch, P patches (14x14 = 196 at 224 px), C trunk channels
// (1024 ResNet-50, 256 ResNet-18), d decoder width (256), Qp = 75 pathology queries,
// Qa = 51 anatomy queries, T text width (768 for BERT-base), K = 8 ProtoCL candidates.
#pragma once
#include <functional>
#include <memory>
#include <vector>

#include "engine/nn.h"
#include "model/batch.h"
#include "model/config.h"
#include "model/decoder.h"
#include "model/vocab.h"
#include "model/resnet.h"

namespace ms {

struct MedslipOutput {
  Tensor logits_pathology, logits_anatomy;           // [B,Qp,2], [B,Qa,2]
  std::vector<Tensor> attn_pathology, attn_anatomy;  // per decoder layer [B,Q,P]
  Tensor feat_pathology, feat_anatomy;               // h: [Q,B,d] after the final norm
  Tensor drop_pathology, drop_anatomy;               // h~ = dropout(h), [Q,B,d]
};

struct MedslipLosses {
  Tensor total;                      // CE_p + CE_a + alpha (CL_p + CL_a) + beta ICL
  Tensor ce_pathology, ce_anatomy;   // eq. L_Exist per stream (spec B.1)
  Tensor cl_pathology, cl_anatomy;   // ProtoCL (spec B.2, B.3)
  Tensor icl;                        // loss_ap (spec B.4)
};

enum class Streams { Both, Pathology, Anatomy };

class Medslip : public nn::Module {
 public:
  // text_width: width T of the books (768 for BERT-base). seed: weight init (spec A.5).
  Medslip(const MedslipConfig& cfg, int64_t text_width, uint64_t seed);

  // The frozen books: pathology [Qp,T], anatomy [Qa,T] (spec A.1). Not parameters.
  void set_books(const Tensor& pathology_book, const Tensor& anatomy_book);
  const Tensor& pathology_book() const { return pathology_book_; }
  const Tensor& anatomy_book() const { return anatomy_book_; }

  // Image side (spec A.2): [B,3,S,S] -> memory for each stream, [P,B,d].
  std::pair<Tensor, Tensor> image_encoder(const Tensor& image);
  MedslipOutput forward(const Tensor& image, Streams streams = Streams::Both);
  MedslipLosses losses(const MedslipOutput& out, const MedslipBatch& batch) const;

  const MedslipConfig& config() const { return cfg_; }

  // When set, forward calls it after each of its parts: "trunk" (ResNet), "patch_mlps" (mask
  // split and stream MLPs), "decoders" (both decoders and heads). `medslip bench` times phases
  // with it; it sees no tensor, so it cannot change a number.
  std::function<void(const char* phase)> on_phase;

  std::shared_ptr<ResNet> res_features;
  std::shared_ptr<nn::Linear> mask_generator;
  std::shared_ptr<nn::Linear> res_l1_pathology, res_l2_pathology, res_l1_anatomy, res_l2_anatomy;
  std::shared_ptr<nn::Linear> pathology_embedding_layer;  // projects BOTH books (spec A.3)
  std::shared_ptr<nn::LayerNorm> decoder_norm;            // one module, two names (spec A.3)
  std::shared_ptr<Decoder> decoder_pathology, decoder_anatomy;
  std::shared_ptr<nn::Dropout> dropout_feas_pathology, dropout_feas_anatomy;
  std::shared_ptr<nn::Linear> classifier_pathology, classifier_anatomy;
  std::shared_ptr<nn::Linear> cl_fc_pathology, cl_fc_anatomy;

 private:
  MedslipConfig cfg_;
  int64_t text_width_;
  Tensor pathology_book_, anatomy_book_;
};

// ---- losses (model/losses.cpp), each citing its equation in spec B ----------------------

// B.1: mean cross-entropy over (b,q) with label in {0,1}. logits [B,Q,2], labels [B*Q].
Tensor loss_existence(const Tensor& logits, const std::vector<int64_t>& labels);

// B.2/B.3: ProtoCL for one stream. z_feat = h~ [Q,B,d]; cl_fc maps d -> T; own labels
// [B*Q]; partner book [Qo,T] (anatomy book for the pathology stream); pos[b] = M[b]==1
// oriented [Q,Qo] per image; index [B,Q,K] into the partner book (-1 = prototype slot).
Tensor loss_protocl(const Tensor& z_feat, const nn::Linear& cl_fc, const std::vector<int64_t>& labels,
                    const Tensor& partner_book, const std::vector<uint8_t>& pos, const std::vector<int64_t>& index,
                    int64_t B, int64_t Q, int64_t Qo);

// B.4: BCE-with-logits of <h^a, h^p> against M over mentioned pairs (M >= 0).
// feat_p [Qp,B,d], feat_a [Qa,B,d], matrix [B,Qa,Qp].
Tensor loss_icl(const Tensor& feat_pathology, const Tensor& feat_anatomy, const std::vector<float>& matrix);

}  // namespace ms
