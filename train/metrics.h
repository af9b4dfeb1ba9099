// defines: evaluation metrics exactly as the MeDSLIP reference computes them — roc_auc
// (sklearn.metrics.roc_auc_score), precision_recall_curve (sklearn, 1.0.2 or >= 1.1), max_f1_metrics
// (max-F1 / threshold / ACC of spec §E.2), the grounding scores of §E.4 / §H.10 (pointing game,
// IoU, Dice, chance level) and the per-class / grounding result tables (fmt) and JSON (nlohmann).
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace ms {

// ---------------------------------------------------------------------------------------------
// Classification (§E.2, §E.3, §H.11). Scores are doubles; pass float32 model scores widened to
// double (exact), never recomputed in double, so ties and comparisons match the float32 reference.
// Labels are 0/1. Every function throws std::invalid_argument on empty input, a size mismatch,
// a non-finite score or a label other than 0/1.
// ---------------------------------------------------------------------------------------------

// Which scikit-learn precision_recall_curve to mirror. The reference pins scikit-learn==1.0.2
// (requirements.txt), whose curve stops at the first threshold reaching full recall; 1.1 keeps every
// distinct score (scikit-learn PR #23214). The max-F1 point is the same in both whenever a positive
// exists: below the full-recall threshold only negatives are added, so F1 strictly decreases.
enum class SklearnPr { v1_0, v1_1 };

// precision[i], recall[i]: the curve at score >= thresholds[i]; thresholds increasing; the arrays
// have one more element than thresholds: the final point (precision 1, recall 0).
struct PrCurve {
  std::vector<double> precision, recall, thresholds;
};

// sklearn.metrics.roc_auc_score (binary): trapezoid over the ROC curve of distinct thresholds, i.e.
// the Mann-Whitney statistic with tied (pos, neg) pairs counting 1/2, computed from integer counts.
// Throws std::invalid_argument if only one class is present (sklearn raises ValueError).
double roc_auc(const std::vector<double>& score, const std::vector<int>& label);

// sklearn.metrics.roc_curve(drop_intermediate=False): (0,0), then one point per distinct score,
// highest first: fpr/tpr of predicting positive at score >= thresholds[i] (thresholds[0] = +inf).
// The trapezoid area under it is roc_auc. Throws if only one class is present.
struct RocCurve {
  std::vector<double> fpr, tpr, thresholds;
};
RocCurve roc_curve(const std::vector<double>& score, const std::vector<int>& label);

// sklearn.metrics.precision_recall_curve. Without positives, v1_1 sets recall to 1 (sklearn warns)
// and v1_0 gives recall NaN (0/0), as those versions do.
PrCurve precision_recall_curve(const std::vector<double>& score, const std::vector<int>& label,
                               SklearnPr version = SklearnPr::v1_0);

struct ClassMetrics {
  double auc = 0, f1 = 0, acc = 0, threshold = 0;
};

// §E.2: auc = roc_auc; F1 = 2PR/(P+R) (0 where P+R == 0) over the PR curve, f1 = its max, threshold =
// thresholds[first argmax]; acc = mean((score > threshold) == label), STRICT >, so samples scoring
// exactly the threshold count as negative (§E.2). The argmax is never the final (P=1, R=0) point,
// whose F1 is 0 while the full-recall point has F1 > 0, so thresholds[argmax] is always in range.
// Throws std::invalid_argument if only one class is present (the reference crashes there in AUC).
ClassMetrics max_f1_metrics(const std::vector<double>& score, const std::vector<int>& label,
                            SklearnPr version = SklearnPr::v1_0);

// One row of the per-class table; skipped rows (one class only) do not enter the means.
struct ClassRow {
  std::string name;
  int64_t n = 0, positives = 0;
  bool skipped = false;
  std::string skip_reason;
  ClassMetrics m;
};

struct ClassificationResult {
  std::vector<ClassRow> rows;
  int64_t classes_used = 0;  // classes with both labels present
  double mean_auc = 0, mean_f1 = 0, mean_acc = 0;
};

// scores and labels are [N, C] row-major, C = names.size(); class c is column c.
ClassificationResult evaluate_classes(const std::vector<std::string>& names, const std::vector<double>& scores,
                                      const std::vector<int>& labels);
std::string format_table(const ClassificationResult& r);
nlohmann::json to_json(const ClassificationResult& r);

// ---------------------------------------------------------------------------------------------
// Zero-shot grounding (§E.4, §H.10). Heatmaps are float32 P×P patch grids (row-major; 14×14 for
// ResNet-50 at 224), GT masks are uint8 S×S (nonzero = inside a box), S a multiple of P.
// ---------------------------------------------------------------------------------------------

// Per image: divide each map by its own max (our default). Per batch: divide every map of the batch
// (positives and negatives) by the max over the whole batch, as the reference does (§E.4 step 4).
enum class HeatmapNorm { per_image, per_batch };

// Nearest upsampling by block repetition, P×P → S×S (§E.4 step 5: 14 → 224, blocks of 16).
std::vector<float> upsample_nearest(const float* grid, int64_t P, int64_t S);

// Divides maps ([B, L] row-major) in place in float32 (pred / max, as torch). Throws if a max (per
// image or per batch) is not finite and > 0: dividing by it would flip or destroy the map.
void normalise_heatmaps(std::vector<float>& maps, int64_t B, HeatmapNorm norm);

// Pointing game: hit if ANY pixel equal to the map's max lies inside the mask (score_cal).
bool pointing_game_hit(const float* pred, const uint8_t* mask, int64_t n);

// Binary prediction P = pred > threshold (float32 compare, as torch); G = mask != 0.
// iou = |P∩G| / (|G| + |P| - |P∩G|), dice = 2|P∩G| / (|G| + |P|), in double from exact counts.
// Throws if the mask is empty (both would be 0/0 in the reference when P is empty too).
struct Overlap {
  int64_t inter = 0, pred = 0, gt = 0;
  double iou = 0, dice = 0;
};
Overlap overlap(const float* pred, const uint8_t* mask, int64_t n, float threshold);

// Chance level of the pointing game for one image: the share of pixels inside the mask ("a random
// pixel lands in the box"); GroundingResult::chance is its mean over positive images.
double mask_area_fraction(const uint8_t* mask, int64_t n);

struct GroundingResult {
  int64_t positives = 0, hits = 0;
  double pointing = 0, iou = 0, dice = 0, chance = 0;  // means over positive images
  std::vector<double> iou_per_image, dice_per_image, chance_per_image;
  std::vector<uint8_t> hit_per_image;  // in the order positives were added
};

// Accumulates score_cal over batches fed in CSV order (per-batch normalisation depends on the
// batching: 64 images, last one shorter, §H.10). Negatives only enter the batch max.
class GroundingScorer {
 public:
  GroundingScorer(int64_t grid, int64_t size, float threshold, HeatmapNorm norm);
  // heatmaps [B, grid, grid], labels [B] (0/1), masks [B, size, size] (rows of negatives are ignored).
  void add_batch(std::vector<float> heatmaps, const std::vector<int>& labels, const std::vector<uint8_t>& masks);
  GroundingResult result() const;  // throws if no positive image was added

 private:
  int64_t grid_, size_;
  float threshold_;
  HeatmapNorm norm_;
  GroundingResult acc_;
};

std::string format_table(const GroundingResult& r);
nlohmann::json to_json(const GroundingResult& r);

// ---------------------------------------------------------------------------------------------
// Fine-tuning segmentation (§E.6, the reference's metric.py), over the whole test set at once.
// prob and truth are [N, P] row-major (P pixels per image): prob the sigmoid outputs, truth the
// masks in 0..1. Predicted = prob > threshold, true = truth > 0.5 (dice()).
//   dice: per image 2|P∩T| / (|P| + |T|) when T is not empty; an empty T scores 1 if P is empty,
//         else 0 (the empty-mask rule); the mean over all images (dice_pos / dice_neg: the means
//         over images with / without a mask, 0 when there are none, as np.nan_to_num).
//   miou: per image (Σ pred·truth + 1) / (Σ pred + Σ truth − Σ pred·truth + 1) with the raw
//         (not thresholded) truth values, as mIoU(eps=1); the mean over images.
// ---------------------------------------------------------------------------------------------
struct SegmentationResult {
  int64_t images = 0, num_pos = 0, num_neg = 0;
  double dice = 0, dice_pos = 0, dice_neg = 0, miou = 0;
  std::vector<double> dice_per_image, iou_per_image;
};
SegmentationResult segmentation_scores(const std::vector<float>& prob, const std::vector<float>& truth, int64_t n,
                                       float threshold = 0.5f);
// The same in two halves, for images scored in different places (data-parallel validation
// gathers the counts over ranks): per image six numbers (predicted pixels, mask pixels, their
// intersection as thresholded counts; the predicted pixels, the raw truth sum and the truth
// sum over predicted pixels for the IoU), then the scores of the images in order.
std::vector<double> segmentation_counts(const std::vector<float>& prob, const std::vector<float>& truth, int64_t n,
                                        float threshold = 0.5f);
constexpr size_t kSegmentationCounts = 6;
SegmentationResult segmentation_from_counts(const std::vector<double>& counts);
std::string format_table(const SegmentationResult& r);
nlohmann::json to_json(const SegmentationResult& r);

// Writes j (indent 2) to path; throws std::runtime_error naming the path on failure.
void save_json(const std::string& path, const nlohmann::json& j);

}  // namespace ms
