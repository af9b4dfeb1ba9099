#include "data/triplets.h"

#include <stdexcept>

namespace ms {

float existence_label(const float* values, int64_t n, int64_t stride) {
  float y = -1.f;
  for (int64_t k = 0; k < n; ++k) {
    float v = values[k * stride];
    if (v == 1.f) return 1.f;
    if (v == 0.f) y = 0.f;
  }
  return y;
}

// One line's index list: [-1] + 7 partners for a positive, else 8 partners (§C.3).
static void sample_line(const float* values, int64_t n, int64_t stride, int64_t label, Rng& rng, int64_t* out,
                        const std::string& image, const std::string& line_name, const std::string& partner_kind) {
  std::vector<int64_t> pool;
  pool.reserve(size_t(n));
  for (int64_t k = 0; k < n; ++k)
    if (values[k * stride] != 1.f) pool.push_back(k);
  int64_t need = label == 1 ? kNumNegatives : kNumCandidates;
  if (int64_t(pool.size()) < need)
    throw std::runtime_error(image + ": " + line_name + " has only " + std::to_string(pool.size()) + " " +
                             partner_kind + " with M != 1, needs " + std::to_string(need) + " negatives (spec §H.7)");
  std::vector<int64_t> pick = rng.sample(pool, need);
  int64_t j = 0;
  if (label == 1) out[j++] = -1;  // placeholder for the averaged positive
  for (int64_t v : pick) out[j++] = v;
}

Triplets make_triplets(const std::vector<float>& matrix, Rng& rng, const std::string& image, int64_t A, int64_t P) {
  if (int64_t(matrix.size()) != A * P)
    throw std::invalid_argument(image + ": label matrix has " + std::to_string(matrix.size()) + " values, expected " +
                                std::to_string(A) + "x" + std::to_string(P));
  for (float v : matrix)
    if (v != -1.f && v != 0.f && v != 1.f)
      throw std::invalid_argument(image + ": label matrix value " + std::to_string(v) + " is not -1, 0 or 1");
  const float* M = matrix.data();
  Triplets t;
  t.label_pathology.resize(size_t(P));
  t.label_anatomy.resize(size_t(A));
  t.index_pathology.resize(size_t(P * kNumCandidates));
  t.index_anatomy.resize(size_t(A * kNumCandidates));
  for (int64_t p = 0; p < P; ++p) t.label_pathology[size_t(p)] = int64_t(existence_label(M + p, A, P));
  for (int64_t a = 0; a < A; ++a) t.label_anatomy[size_t(a)] = int64_t(existence_label(M + a * P, P, 1));
  auto pname = [&](int64_t p) {
    std::string s = "pathology " + std::to_string(p);
    return P == kNumPathologies ? s + " (" + kObservations[size_t(p)] + ")" : s;
  };
  auto aname = [&](int64_t a) {
    std::string s = "anatomy " + std::to_string(a);
    return A == kNumAnatomies ? s + " (" + kAnatomies[size_t(a)] + ")" : s;
  };
  for (int64_t p = 0; p < P; ++p)
    sample_line(M + p, A, P, t.label_pathology[size_t(p)], rng, &t.index_pathology[size_t(p * kNumCandidates)], image,
                pname(p), "anatomies");
  for (int64_t a = 0; a < A; ++a)
    sample_line(M + a * P, P, 1, t.label_anatomy[size_t(a)], rng, &t.index_anatomy[size_t(a * kNumCandidates)], image,
                aname(a), "pathologies");
  return t;
}

}  // namespace ms
