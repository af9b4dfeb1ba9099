// defines: the synthetic chest X-ray set, medslip's embedded default data (no download).
// render_synth_image draws one radiograph-like phantom (body, lungs, heart, mediastinum,
// spine, diaphragm, costophrenic angles, clavicles, ribs, vessels) with findings at
// anatomically meaningful places and builds its [51,75] label matrix with the indices of
// spec §C.1; write_synth_dataset writes a whole set in the real formats (§C.1, §C.6,
// §C.7), so the same readers train and evaluate on it:
//
//   DIR/images/NNNNNN.png                 8-bit grey PNG, size x size
//   DIR/landmark_observation_adj_mtx.npy  float64 [N,51,75]; row i = image i
//   DIR/train.json valid.json test.json   {"images/NNNNNN.png": {"labels_id": i}, ...}
//   DIR/cxr14_test.csv                    17-column CXR14 layout over the test split
//   DIR/rsna_test.csv                     ID,img_path,boxes,classes over the test split
//   DIR/observations.json                 75 short descriptions, §C.1 key order (our words)
//   DIR/synth.json                        seed, sizes, splits, finding counts, rules below
//   DIR/preview.png                       (--preview) 4x4 contact sheet with finding boxes
//
// Rules: CXR14 column c is 1 iff the image's matrix has a 1 in pathology column
// kCxr14QueryIndex[c] (classes never drawn are all 0: emphysema is drawn, fibrosis,
// pleural thickening, hernia and infiltration are not). RSNA-positive = the image holds a
// consolidation (drawn with observations consolidation + pneumonia at its lung zone; the
// fainter "opacity" finding is not pneumonia); its boxes are the consolidations' bounding
// boxes scaled from the image to the 1024x1024 canvas of the real csv.
// The test split (the last images) is held out of train.json and valid.json.
// Every image's randomness is keyed by (seed, image index): output is identical for a
// seed on any thread count.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/datasets.h"

namespace ms {

enum class SynthFinding : int {
  kEffusion = 0,
  kPneumothorax,
  kConsolidation,
  kOpacity,
  kAtelectasis,
  kNodule,
  kMass,
  kCardiomegaly,
  kEdema,
  kDevice,
  kEmphysema,
  kCount
};
constexpr int kNumSynthFindings = int(SynthFinding::kCount);
const char* synth_finding_name(SynthFinding f);  // "effusion", "pneumothorax", ...

struct SynthDrawn {
  SynthFinding type;
  int side = 0;           // 0 = patient's right (image left), 1 = patient's left, -1 = both / central
  std::string label;      // short, for the preview: "eff R", "PTX L", "cons", ...
  std::vector<std::pair<int, int>> cells;  // (anatomy, observation) set to 1
  int x0 = 0, y0 = 0, x1 = 0, y1 = 0;     // bounding box in pixels, [x0,x1) x [y0,y1)
};

struct SynthImage {
  int size = 0;
  std::vector<uint8_t> pixels;   // size*size grey
  std::vector<float> matrix;     // [51,75]: 1 drawn, 0 stated absent, -1 not mentioned
  std::vector<SynthDrawn> findings;
  bool normal = false;
  bool rsna_positive() const;    // holds a consolidation
  std::vector<Box> rsna_boxes(int canvas = 1024) const;  // consolidation boxes on the canvas
};

// One phantom; depends only on (seed, index, size, finding_gain, finding_scale). finding_gain
// multiplies the attenuation (lighter or darker) of every drawn finding; finding_scale
// multiplies the size of the three thinnest ones (nodule radius, plate atelectasis width,
// pneumothorax rim). 1 and 1 are the default phantoms; larger values make findings more
// conspicuous; the same findings are drawn (a larger nodule may be placed elsewhere).
SynthImage render_synth_image(uint64_t seed, int64_t index, int size, double finding_gain = 1.0,
                              double finding_scale = 1.0);

struct SynthOptions {
  std::string out_dir;
  int64_t n = 2000;
  int size = 256;
  uint64_t seed = 0;
  double valid_frac = 0.1;
  double test_frac = 0.2;
  bool preview = false;
  int threads = 0;  // 0 = ms::num_threads()
  double finding_gain = 1.0;   // render_synth_image's finding_gain
  double finding_scale = 1.0;  // and finding_scale
};

struct SynthReport {
  int64_t n_train = 0, n_valid = 0, n_test = 0, n_normal = 0, n_rsna_positive = 0;
  std::vector<int64_t> finding_counts;  // images holding each SynthFinding
  double seconds = 0;
};

SynthReport write_synth_dataset(const SynthOptions& options);

// The 75 observation descriptions written to observations.json (our own words).
extern const char* const kSynthObservationText[kNumPathologies];

}  // namespace ms
