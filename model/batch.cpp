#include "model/batch.h"

#include <stdexcept>
#include <string>

namespace ms {

void MedslipBatch::validate() const {
  if (!image.defined() || image.dim() != 4 || image.size(1) != 3)
    throw std::invalid_argument("batch 'image': expected [B,3,S,S], got " + (image.defined() ? shape_str(image.shape()) : std::string("nothing")));
  const size_t B = size_t(image.size(0)), Qp = kNumPathologies, Qa = kNumAnatomies, K = kNumCandidates;
  auto need = [&](const char* name, size_t have, size_t want, const std::string& shape) {
    if (have != want)
      throw std::invalid_argument(std::string("batch '") + name + "': expected " + shape + " = " + std::to_string(want) +
                                  " values for B=" + std::to_string(B) + ", got " + std::to_string(have));
  };
  const std::string sp = std::to_string(Qp), sa = std::to_string(Qa), sk = std::to_string(K);
  need("matrix", matrix.size(), B * Qa * Qp, "[B," + sa + "," + sp + "]");
  need("label_pathology", label_pathology.size(), B * Qp, "[B," + sp + "]");
  need("label_anatomy", label_anatomy.size(), B * Qa, "[B," + sa + "]");
  need("index_pathology", index_pathology.size(), B * Qp * K, "[B," + sp + "," + sk + "]");
  need("index_anatomy", index_anatomy.size(), B * Qa * K, "[B," + sa + "," + sk + "]");
  for (float m : matrix)
    if (m != -1.f && m != 0.f && m != 1.f) throw std::invalid_argument("batch 'matrix': values must be -1, 0 or 1, found " + std::to_string(m));
  for (auto i : index_pathology)
    if (i < -1 || i >= int64_t(Qa))
      throw std::invalid_argument("batch 'index_pathology': anatomy index " + std::to_string(i) + " outside [-1," + sa + ")");
  for (auto i : index_anatomy)
    if (i < -1 || i >= int64_t(Qp))
      throw std::invalid_argument("batch 'index_anatomy': pathology index " + std::to_string(i) + " outside [-1," + sp + ")");
}

}  // namespace ms
