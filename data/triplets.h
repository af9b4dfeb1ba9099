// defines: existence labels and triplet index lists of one image (spec §C.2-C.3, §H.7):
// y^p [75] (column rule), y^a [51] (row rule), index_pathology [75,8] and
// index_anatomy [51,8] (slot 0 = -1 for a positive, then sampled partners with M != 1).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/rng.h"
#include "model/vocab.h"  // kNumNegatives, kNumCandidates

namespace ms {

struct Triplets {
  std::vector<int64_t> label_pathology;  // [75]: 1 if any M[:,p]==1, else 0 if any ==0, else -1
  std::vector<int64_t> label_anatomy;    // [51]: same rule over M[a,:]
  std::vector<int64_t> index_pathology;  // [75,8] anatomy indices
  std::vector<int64_t> index_anatomy;    // [51,8] pathology indices
};

// Existence label of one line of the matrix (§C.2): 1 overrides 0 overrides -1.
float existence_label(const float* values, int64_t n, int64_t stride);

// `matrix` is [A,P] row-major (A = 51 anatomies, P = 75 pathologies). Partners are drawn
// uniformly without replacement with rng.sample, pathologies first, then anatomies.
// Throws std::runtime_error naming `image` and the pathology/anatomy when fewer than the
// needed partners have M != 1 (the original prints "fatal error" and breaks later, §H.7).
Triplets make_triplets(const std::vector<float>& matrix, Rng& rng, const std::string& image,
                       int64_t num_anatomies = kNumAnatomies, int64_t num_pathologies = kNumPathologies);

}  // namespace ms
