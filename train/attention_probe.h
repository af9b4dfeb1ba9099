// defines: AttentionProbe — a few fixed validation images, each with one observation its labels
// mark present, whose layer-averaged pathology attention `pretrain` draws after every epoch
// (TensorBoard images "attention/<i>_<observation>" and RUN/attention/epoch<E>_<i>_<observation>.png,
// which `medslip report` shows as a table epochs x images).
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "data/datasets.h"
#include "data/image.h"
#include "model/medslip.h"

namespace ms {

class AttentionProbe {
 public:
  // Up to `n` images from the first 256 of `ds` (json order), chosen so that each shows a different
  // clinical finding (the CXR14 classes' queries and pneumonia first, then any observation past the
  // descriptors 0-7). Images with no present finding are passed over; fewer than n is fine.
  AttentionProbe(const MedslipDataset& ds, int image_res, int n = 4);
  bool empty() const { return names_.empty(); }
  const std::vector<std::string>& names() const { return names_; }  // "<i>_<observation>"

  // One eval-mode forward of the pathology stream (no dropout draws, so training's RNG streams are
  // untouched; the module's train/eval mode is restored) -> one overlay per image, in names() order.
  std::vector<Image> overlays(Medslip& model, Device device) const;

 private:
  int S_ = 0;
  std::vector<std::string> names_;
  std::vector<int> query_;
  std::vector<float> batch_;  // [n,3,S,S], test transform
  std::vector<Image> grey_;
};

}  // namespace ms
