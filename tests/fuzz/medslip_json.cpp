// Fuzz target: the MeDSLIP pretraining json (image path -> labels_id) against a small
// valid [4,51,75] label matrix; every item's matrix row is read.
#include "data/datasets.h"
#include "tests/fuzz/fuzz.h"

MS_FUZZ_TARGET(medslip_json, ".json") {
  static const std::string npy = [] {
    std::vector<double> v(size_t(4 * ms::kMatrixSize));
    for (size_t i = 0; i < v.size(); ++i) v[i] = double(int(i % 3) - 1);
    std::string p = ms::fuzz::scratch_file("labels", ".npy", nullptr, 0);
    ms::write_npy(p, {4, 51, 75}, v.data());
    return p;
  }();
  std::string p = ms::fuzz::scratch_file("medslip", ".json", data, size);
  try {
    ms::MedslipDataset ds(p, npy);
    for (int64_t i = 0; i < ds.size(); ++i)
      if (ds.matrix(i).size() != size_t(ms::kMatrixSize)) ms::fuzz::finding("matrix row of the wrong size");
  } catch (const std::exception& e) {
    ms::fuzz::expect_named(e, p);
  }
}
