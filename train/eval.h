// defines: the cores of the evaluation jobs behind `medslip zeroshot` (spec §E.1-E.3),
// `medslip ground` (§E.4, §H.10) and `medslip predict`: options and reports (callable from
// tests), the layer-averaged attention maps they read, and the PNG heatmap overlays.
//
// Dimension names: B batch, Q queries (75 pathology / 51 anatomy), P patches = G*G (G = S/16),
// S model input side, N decoder layers, C evaluated classes, D overlay side in pixels.
#pragma once
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "data/datasets.h"
#include "data/image.h"
#include "model/medslip.h"
#include "train/common.h"
#include "train/metrics.h"

namespace ms {

// What every job needs to build the model (train/common.h load_inference_model).
struct EvalModelOptions {
  std::string checkpoint, books;
  std::string config;     // empty: the checkpoint's metadata (or inferred for the released .pth)
  std::string device = "cpu";
  bool tf32 = false;      // --tf32: cuBLAS on TF32 tensor cores (CUDA only)
  bool strict = true;     // missing / unexpected weight names are an error
  int threads = 0;        // 0: keep OMP_NUM_THREADS / all cores
};
// The flags that fill EvalModelOptions, the same on zeroshot, ground and predict: --checkpoint,
// --books (both required), --config, --device, --tf32, --threads, --non-strict.
void add_model_options(CLI::App& app, EvalModelOptions& m);

// ---- zeroshot (§E.1-E.3) ----------------------------------------------------------------

struct ZeroshotOptions {
  EvalModelOptions model;
  std::string csv;
  std::string dataset = "cxr14";  // cxr14 | rsna | synthetic (the CXR14-layout csv of medslip synth)
  std::string image_root;         // default: the csv's folder
  std::string out_dir;            // default: the checkpoint's folder
  int64_t batch = 64;
  int workers = 2;                // image-decoding threads beside the model
  bool progress = true;           // batches done / total and images/s on stderr
};

struct ZeroshotReport {
  std::vector<std::string> class_names;
  std::vector<int> query_index;    // C pathology queries read (§C.6 map; RSNA: 20)
  std::vector<std::string> paths;  // N, csv order
  std::vector<float> scores;       // [N,C] p(class 1) = softmax over the 2 attributes
  std::vector<int> labels;         // [N,C]
  ClassificationResult result;
  std::string json_path, scores_path;
  std::string checkpoint_sha256, csv_sha256, books_sha256;
  double seconds = 0;
};

// Runs the pathology stream only (§E.1) over the csv in order, writes zeroshot.json and
// zeroshot_scores.csv to out_dir, prints the per-class table on stdout.
ZeroshotReport run_zeroshot(const ZeroshotOptions& o);

// ---- ground (§E.4, §H.10) -----------------------------------------------------------------

constexpr int kPneumoniaQuery = 20;  // kObservations[20] = "pneumonia"

struct GroundOptions {
  EvalModelOptions model;
  std::string csv;
  std::string dataset = "rsna";  // rsna (DICOMs through the §C.7 read path) | synthetic
  std::string image_root, out_dir;
  std::string heatmap_dir;       // non-empty: write one overlay PNG per positive image
  int query = -1;                // -1: the dataset's default (20 "pneumonia" for both, see cmd --help)
  bool anatomy_product = false;  // §E.4 step 3: pred * mean_a A_a
  double threshold = std::numeric_limits<double>::quiet_NaN();  // NaN: 0.01 with the product, else 0
  HeatmapNorm norm = HeatmapNorm::per_image;
  int64_t batch = 64;
  int workers = 2;
  bool progress = true;
};

struct GroundImage {
  int64_t row = 0;  // csv row (0-based, data rows)
  std::string id, path, heatmap;
  bool hit = false;
  double iou = 0, dice = 0, chance = 0;
};

struct GroundReport {
  GroundingResult result;
  std::vector<GroundImage> images;  // positives, csv order
  int query = 0;
  float threshold = 0;
  int64_t n_images = 0;
  std::string json_path;
  std::string checkpoint_sha256, csv_sha256, books_sha256;
  double seconds = 0;
};

GroundReport run_ground(const GroundOptions& o);

// ---- predict --------------------------------------------------------------------------------

struct PredictFinding {
  int query = 0;
  float probability = 0;
  int anatomy = -1;        // argmax_a <A_p[q], A_a[a]>; -1 beyond the top K
  float overlap = 0;       // that inner product
};

struct Prediction {
  std::vector<PredictFinding> findings;  // all 75, most probable first (ties: lower index first)
  std::vector<float> top_map;            // [P] layer-mean attention of the top finding
  int64_t grid = 0;                      // G
};

// One normalised image [3,S,S] through both streams; anatomy for the `top` most probable.
Prediction predict_image(Medslip& model, const std::vector<float>& chw, int64_t S, int top, Device device);

// ---- attention and overlays -----------------------------------------------------------------

// Mean over the N decoder layers (summed in layer order, then / N, as the reference's
// (w1+...+wN)/N) of N x [B,Q,P] cross-attention maps -> [B,Q,P] on the host.
std::vector<float> mean_layer_attention(const std::vector<Tensor>& attn);
// The side G of a P = G*G patch grid; throws if P is not a square.
int64_t patch_grid(int64_t P);

// jet colour map, t in [0,1] (clamped): dark blue -> blue -> cyan -> yellow -> red -> dark red.
void jet_colour(float t, uint8_t rgb[3]);

// An RGB overlay of a G*G heatmap on a radiograph: the image in grey resized to D x D (the test
// transform stretches it the same way, §C.5), the nearest-upsampled map (the blocks that are
// scored) in jet colours from the map's min (blue) to its max (dark red), blended with an opacity
// that grows with the value, boxes (canvas coordinates, e.g. RSNA's 1024x1024) as white
// rectangles, the map's first maximum (the pointing-game point) as a magenta cross, and a colour
// bar (max at the top) to the right of the D x D picture.
Image heatmap_overlay(const Image& radiograph, const std::vector<float>& grid_map, int64_t G,
                      const std::vector<Box>& boxes = {}, int canvas = 1024, int D = 512);

}  // namespace ms
