// Fuzz target: the CSV parser and both zero-shot csv readers (ChestX-ray14 labels, RSNA
// boxes -> segmentation map), on the same bytes.
#include "data/datasets.h"
#include "tests/fuzz/fuzz.h"

MS_FUZZ_TARGET(csv, ".csv") {
  std::string p = ms::fuzz::scratch_file("csv", ".csv", data, size);
  try {
    ms::Cxr14Dataset ds(p);
    for (int64_t i = 0; i < ds.size(); ++i)
      for (float v : ds.item(i).labels)
        if (v != 0 && v != 1) ms::fuzz::finding("a CXR14 label that is not 0 or 1");
  } catch (const std::exception& e) {
    ms::fuzz::expect_named(e, p);
  }
  try {
    ms::RsnaDataset ds(p);
    for (int64_t i = 0; i < ds.size() && i < 4; ++i) {
      std::vector<float> m = ms::rsna_seg_map(ds.item(i).boxes, 1024, 224);
      if (m.size() != 224 * 224) ms::fuzz::finding("RSNA map of the wrong size");
    }
  } catch (const std::exception& e) {
    ms::fuzz::expect_named(e, p);
  }
}
