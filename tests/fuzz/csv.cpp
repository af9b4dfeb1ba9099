// Fuzz target: the CSV parser, both zero-shot csv readers (ChestX-ray14 labels, RSNA
// boxes -> segmentation map) and the fine-tuning csv reader (a label column as the Kermany
// pneumonia csv, a mask column with a split filter as the JSRT one), on the same bytes.
#include "data/datasets.h"
#include "data/finetune_data.h"
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
  for (int variant = 0; variant < 2; ++variant) {
    try {
      ms::FinetuneCsvOptions o;
      if (variant == 0) {
        o.label_columns = {"pneumonia"};
      } else {
        o.mask_column = "lungs_mask";
        o.split_column = "split";
        o.splits = {"train", "valid"};
      }
      ms::FinetuneDataset ds(p, o);
      for (int64_t i = 0; i < ds.size(); ++i) {
        const ms::FinetuneItem& it = ds.item(i);
        for (float v : it.labels)
          if (v != 0 && v != 1) ms::fuzz::finding("a fine-tuning label that is not 0 or 1");
        if (variant == 1 && it.mask.empty()) ms::fuzz::finding("a fine-tuning row without its mask path");
      }
      if (ds.size() > 0 && int64_t(ms::finetune_subset(ds.size(), 1.0, 7).size()) != ds.size())
        ms::fuzz::finding("finetune_subset(n, 1.0) does not keep every row");
    } catch (const std::exception& e) {
      ms::fuzz::expect_named(e, p);
    }
  }
}
