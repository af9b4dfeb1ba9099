// Attention overlays of fixed validation images during pretraining (train/attention_probe.h).
#include "train/attention_probe.h"

#include <fmt/core.h>

#include <algorithm>

#include "data/transforms.h"
#include "model/vocab.h"
#include "engine/autograd.h"
#include "train/eval.h"
#include "train/metrics.h"

namespace ms {

AttentionProbe::AttentionProbe(const MedslipDataset& ds, int image_res, int n) : S_(image_res) {
  std::vector<int> preferred(kCxr14QueryIndex.begin(), kCxr14QueryIndex.end());
  preferred.push_back(kPneumoniaQuery);
  for (int q = 8; q < kNumPathologies; ++q)
    if (std::find(preferred.begin(), preferred.end(), q) == preferred.end()) preferred.push_back(q);
  std::vector<int> used;
  for (int64_t i = 0; i < std::min<int64_t>(ds.size(), 256) && int(names_.size()) < n; ++i) {
    const std::vector<float> m = ds.matrix(i);  // [51,75]
    for (int q : preferred) {
      if (std::find(used.begin(), used.end(), q) != used.end()) continue;
      bool present = false;
      for (int a = 0; a < kNumAnatomies && !present; ++a) present = m[size_t(a * kNumPathologies + q)] == 1.f;
      if (!present) continue;
      const std::string& path = ds.item(i).path;
      std::vector<float> chw = load_test_image(path, S_);
      batch_.insert(batch_.end(), chw.begin(), chw.end());
      ReadOptions ro;
      ro.keep_grey = true;
      grey_.push_back(read_image(path, ro));
      query_.push_back(q);
      used.push_back(q);
      names_.push_back(fmt::format("{}_{}", names_.size(), kObservations[size_t(q)]));
      break;
    }
  }
}

std::vector<Image> AttentionProbe::overlays(Medslip& model, Device device) const {
  std::vector<Image> out;
  if (empty()) return out;
  const int64_t n = int64_t(names_.size());
  const bool was_training = model.is_training();
  model.eval();
  std::vector<float> A;  // [n,75,P]
  int64_t P = 0;
  {
    NoGradGuard ng;
    MedslipOutput o = model.forward(Tensor::from_vector(batch_, {n, 3, S_, S_}).to(device), Streams::Pathology);
    P = o.attn_pathology.at(0).size(2);
    A = mean_layer_attention(o.attn_pathology);
  }
  model.train(was_training);
  const int64_t G = patch_grid(P);
  for (int64_t i = 0; i < n; ++i) {
    std::vector<float> map(A.begin() + (i * kNumPathologies + query_[size_t(i)]) * P,
                           A.begin() + (i * kNumPathologies + query_[size_t(i)] + 1) * P);
    normalise_heatmaps(map, 1, HeatmapNorm::per_image);
    out.push_back(heatmap_overlay(grey_[size_t(i)], map, G, {}, 1024, 192));
  }
  return out;
}

}  // namespace ms
