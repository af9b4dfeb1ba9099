// defines: the dataset readers — CSV parsing (RFC 4180 quoting, CRLF), the MeDSLIP
// pretraining set (§C.1: json keyed by image path -> labels_id row of a [N,51,75] npy),
// the ChestX-ray14 zero-shot csv (§C.6: label columns 3-16) and the RSNA pneumonia csv
// with its box -> segmentation-map rule (§C.7).
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/npy.h"
#include "model/vocab.h"

namespace ms {

// ---- CSV ---------------------------------------------------------------------------------

struct CsvTable {
  std::string path;                           // for error messages
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;  // every row has header.size() fields
  // Column index by header name; throws naming the file and the column when absent.
  int column(const std::string& name) const;
};

// Parses CSV text: fields separated by ',', "quoted fields" may hold commas, newlines and
// doubled quotes (""), lines end in LF or CRLF, a UTF-8 BOM is skipped, empty lines are
// skipped. The first record is the header. A row with a different field count throws,
// naming `path_for_errors` and the line.
CsvTable parse_csv_text(const std::string& text, const std::string& path_for_errors);
CsvTable read_csv(const std::string& path);
// Quotes a field when it holds ',', '"', CR or LF (for writers).
std::string csv_field(const std::string& s);

// Joins a relative path to `root`; absolute paths and an empty root return `path` unchanged.
std::string resolve_path(const std::string& root, const std::string& path);
// The folder holding `file` ("." for a bare file name).
std::string parent_dir(const std::string& file);

// ---- MeDSLIP pretraining (§C.1) ----------------------------------------------------------

constexpr int64_t kMatrixSize = int64_t(kNumAnatomies) * kNumPathologies;  // 51*75 = 3825

struct MedslipItem {
  std::string key;    // the json key, as written
  std::string path;   // resolved image path
  int64_t row = 0;    // labels_id: row of the [N,51,75] matrix
};

class MedslipDataset {
 public:
  // `json_path`: object keyed by image path, each value holding an integer `labels_id`.
  // `npy_path`: float64 or float32 [N,51,75]. Relative keys are resolved against
  // `image_root`, which defaults to the json's folder. Rows are read from the npy on
  // demand (the real matrix is several GB), so the dataset is cheap to open.
  MedslipDataset(const std::string& json_path, const std::string& npy_path, const std::string& image_root = "");

  int64_t size() const { return int64_t(items_.size()); }
  const MedslipItem& item(int64_t i) const;
  // The [51,75] matrix of item i, row-major (anatomy-major), values -1/0/1. Thread-safe.
  std::vector<float> matrix(int64_t i) const;
  const std::string& json_path() const { return json_path_; }

 private:
  std::string json_path_;
  std::vector<MedslipItem> items_;  // json order
  std::shared_ptr<NpyFile> npy_;
};

// ---- ChestX-ray14 zero-shot (§C.6) -------------------------------------------------------

struct Cxr14Item {
  std::string path;                        // resolved image path (column 0)
  std::string image_index;                 // column 1
  std::string finding;                     // column 2 ("Finding Label")
  std::array<float, kNumCxr14Classes> labels{};  // columns 3..16, 0/1
};

class Cxr14Dataset {
 public:
  // `image_root` defaults to the csv's folder. Label columns are 3..16 (not the original's
  // off-by-one iloc[:,2:]); each must read 0 or 1.
  explicit Cxr14Dataset(const std::string& csv_path, const std::string& image_root = "");
  int64_t size() const { return int64_t(items_.size()); }
  const Cxr14Item& item(int64_t i) const;
  const std::vector<std::string>& class_names() const { return class_names_; }  // csv header 3..16

 private:
  std::string csv_path_;
  std::vector<std::string> class_names_;
  std::vector<Cxr14Item> items_;
};

// ---- RSNA pneumonia (§C.7) ---------------------------------------------------------------

struct Box {
  double x = 0, y = 0, w = 0, h = 0;  // in the source canvas (1024x1024 for RSNA)
};

// Parses "x;y;w;h|x;y;w;h..."; "nan", "NaN" and "" are no boxes. Throws naming `where`.
std::vector<Box> parse_boxes(const std::string& s, const std::string& where);
std::string format_boxes(const std::vector<Box>& boxes);  // inverse, one decimal

// §C.7 seg map: a canvas x canvas zero map where each box sets
// [int(y):int(y)+int(h), int(x):int(x)+int(w)] = 1 (each value truncated on its own,
// slice ends clipped to the canvas as numpy does), then nearest resize to out x out with
// src = min(floor(dst * (canvas/out)), canvas-1) computed in float32 as torch does.
// Returns out*out floats, row-major.
std::vector<float> rsna_seg_map(const std::vector<Box>& boxes, int canvas = 1024, int out = 224);

struct RsnaItem {
  std::string id;    // column 0
  std::string path;  // resolved image path (column 1)
  std::vector<Box> boxes;  // column 2
  float label = 0;   // column 3 ("classes"), 0/1
};

class RsnaDataset {
 public:
  // Columns by position as dataset_RSNA.py: 1 path, 2 boxes, 3 label. `image_root`
  // defaults to the csv's folder.
  explicit RsnaDataset(const std::string& csv_path, const std::string& image_root = "");
  int64_t size() const { return int64_t(items_.size()); }
  const RsnaItem& item(int64_t i) const;
  int64_t num_positive() const;

 private:
  std::string csv_path_;
  std::vector<RsnaItem> items_;
};

}  // namespace ms
