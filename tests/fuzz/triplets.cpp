// Fuzz target: the report-to-triplet extractor (medslip triplets) on arbitrary report text:
// sentences, tokens, lexicon, negation/uncertainty scopes, anatomy attachment. Text that is
// not UTF-8 is refused by the csv reader before it gets here, so it is skipped.
#include "data/report_sentences.h"
#include "data/report_triplets.h"
#include "tests/fuzz/fuzz.h"

MS_FUZZ_TARGET(triplets, ".txt") {
  std::string text(reinterpret_cast<const char*>(data), size);
  if (ms::first_invalid_utf8(text) >= 0) return;
  std::vector<float> m = ms::report_matrix(text);
  if (m.size() != 51 * 75) ms::fuzz::finding("report_matrix returned " + std::to_string(m.size()) + " values");
  for (float v : m)
    if (v != -1.f && v != 0.f && v != 1.f) ms::fuzz::finding("a matrix value outside {-1, 0, 1}");
}
