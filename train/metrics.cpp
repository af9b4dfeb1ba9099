// Evaluation metrics of spec §E.2-§E.4 and §H.10-§H.11, re-derived from scikit-learn's
// _binary_clf_curve / precision_recall_curve / roc_auc_score and the reference's test.py formulas.
#include "train/metrics.h"

#include "engine/io.h"

#include <fmt/core.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <numeric>
#include <stdexcept>

namespace ms {
namespace {

void check_inputs(const char* fn, const std::vector<double>& score, const std::vector<int>& label) {
  if (score.empty()) throw std::invalid_argument(fmt::format("{}: empty input (no samples)", fn));
  if (score.size() != label.size())
    throw std::invalid_argument(
        fmt::format("{}: {} scores but {} labels (expected one label per score)", fn, score.size(), label.size()));
  for (size_t i = 0; i < score.size(); ++i) {
    if (!std::isfinite(score[i]))
      throw std::invalid_argument(fmt::format("{}: score[{}] = {} is not finite", fn, i, score[i]));
    if (label[i] != 0 && label[i] != 1)
      throw std::invalid_argument(fmt::format("{}: label[{}] = {}, expected 0 or 1", fn, i, label[i]));
  }
}

// sklearn _binary_clf_curve: one point per distinct score, scores decreasing; tps/fps count the
// samples with score >= thresholds[i]; a point is only emitted after the last sample of a tie.
struct ClfCurve {
  std::vector<int64_t> fps, tps;
  std::vector<double> thresholds;
};

ClfCurve binary_clf_curve(const std::vector<double>& score, const std::vector<int>& label) {
  const size_t n = score.size();
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t(0));
  // np.argsort(kind="mergesort")[::-1]: decreasing score, ties in decreasing sample index, so a tie's
  // threshold is the score of its first sample (matters only for the sign of a zero).
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return score[a] > score[b] || (score[a] == score[b] && a > b); });
  ClfCurve c;
  int64_t tp = 0;
  for (size_t k = 0; k < n; ++k) {
    tp += label[order[k]];
    // np.where(np.diff(y_score)): a new point where the next score differs (-0.0 == 0.0 as in numpy).
    if (k + 1 == n || score[order[k + 1]] != score[order[k]]) {
      c.tps.push_back(tp);
      c.fps.push_back(int64_t(k) + 1 - tp);
      c.thresholds.push_back(score[order[k]]);
    }
  }
  return c;
}

void require_two_classes(const char* fn, const std::vector<int>& label) {
  int64_t pos = std::count(label.begin(), label.end(), 1);
  if (pos == 0 || pos == int64_t(label.size()))
    throw std::invalid_argument(fmt::format("{}: only one class present in the labels ({} of {} positive); "
                                            "ROC AUC is not defined in that case",
                                            fn, pos, label.size()));
}

}  // namespace

double roc_auc(const std::vector<double>& score, const std::vector<int>& label) {
  check_inputs("roc_auc", score, label);
  require_two_classes("roc_auc", label);
  ClfCurve c = binary_clf_curve(score, label);
  // Trapezoids between consecutive ROC points (starting at (0,0)), twice the area in integer counts:
  // exact, so it is the correctly rounded Mann-Whitney U / (P*N). sklearn's float trapz over the
  // (drop_intermediate) curve agrees to ~1e-16.
  int64_t area2 = 0, fp_prev = 0, tp_prev = 0;
  for (size_t i = 0; i < c.tps.size(); ++i) {
    area2 += (c.fps[i] - fp_prev) * (c.tps[i] + tp_prev);
    fp_prev = c.fps[i];
    tp_prev = c.tps[i];
  }
  const double P = double(c.tps.back()), N = double(c.fps.back());
  return double(area2) / (2.0 * P * N);
}

RocCurve roc_curve(const std::vector<double>& score, const std::vector<int>& label) {
  check_inputs("roc_curve", score, label);
  require_two_classes("roc_curve", label);
  ClfCurve c = binary_clf_curve(score, label);
  const double P = double(c.tps.back()), N = double(c.fps.back());
  RocCurve r;
  r.fpr.push_back(0);
  r.tpr.push_back(0);
  r.thresholds.push_back(std::numeric_limits<double>::infinity());
  for (size_t i = 0; i < c.tps.size(); ++i) {
    r.fpr.push_back(double(c.fps[i]) / N);
    r.tpr.push_back(double(c.tps[i]) / P);
    r.thresholds.push_back(c.thresholds[i]);
  }
  return r;
}

PrCurve precision_recall_curve(const std::vector<double>& score, const std::vector<int>& label, SklearnPr version) {
  check_inputs("precision_recall_curve", score, label);
  ClfCurve c = binary_clf_curve(score, label);
  const size_t m = c.tps.size();
  const int64_t total_pos = c.tps.back();
  // v1_0 keeps points [0, last_ind] with last_ind = tps.searchsorted(tps[-1]) (first full-recall point);
  // v1_1 keeps all of them.
  size_t last = m - 1;
  if (version == SklearnPr::v1_0)
    last = size_t(std::lower_bound(c.tps.begin(), c.tps.end(), total_pos) - c.tps.begin());
  PrCurve r;
  for (size_t k = 0; k <= last; ++k) {  // reversed: thresholds increasing, recall decreasing
    size_t i = last - k;
    // tps + fps >= 1 at every point, so precision is never 0/0.
    r.precision.push_back(double(c.tps[i]) / double(c.tps[i] + c.fps[i]));
    double rec;
    if (total_pos > 0) rec = double(c.tps[i]) / double(total_pos);
    else rec = version == SklearnPr::v1_1 ? 1.0 : std::numeric_limits<double>::quiet_NaN();  // 1.0.2: 0/0
    r.recall.push_back(rec);
    r.thresholds.push_back(c.thresholds[i]);
  }
  r.precision.push_back(1.0);
  r.recall.push_back(0.0);
  return r;
}

ClassMetrics max_f1_metrics(const std::vector<double>& score, const std::vector<int>& label, SklearnPr version) {
  ClassMetrics m;
  m.auc = roc_auc(score, label);  // validates inputs and throws on a single class, like the reference
  PrCurve c = precision_recall_curve(score, label, version);
  // f1 = np.divide(2PR, P+R, where=(P+R != 0), zeros elsewhere); np.max; np.argmax (first on ties).
  size_t best = 0;
  double best_f1 = -1;
  for (size_t i = 0; i < c.precision.size(); ++i) {
    const double num = 2 * c.recall[i] * c.precision[i], den = c.recall[i] + c.precision[i];
    const double f1 = den != 0 ? num / den : 0.0;
    if (f1 > best_f1) {
      best_f1 = f1;
      best = i;
    }
  }
  // With a positive present the lowest kept threshold has recall 1 and F1 > 0 = F1 of the final
  // (1, 0) point, so best < thresholds.size(); numpy would raise IndexError otherwise.
  if (best >= c.thresholds.size())
    throw std::logic_error("max_f1_metrics: argmax F1 fell on the final (P=1, R=0) point");
  m.f1 = best_f1;
  m.threshold = c.thresholds[best];
  int64_t correct = 0;
  for (size_t i = 0; i < score.size(); ++i) correct += int((score[i] > m.threshold) == (label[i] == 1));
  m.acc = double(correct) / double(score.size());
  return m;
}

ClassificationResult evaluate_classes(const std::vector<std::string>& names, const std::vector<double>& scores,
                                      const std::vector<int>& labels) {
  const size_t C = names.size();
  if (C == 0) throw std::invalid_argument("evaluate_classes: no class names");
  if (scores.size() != labels.size() || scores.size() % C != 0)
    throw std::invalid_argument(fmt::format("evaluate_classes: scores ({}) and labels ({}) must both be [N, {}]",
                                            scores.size(), labels.size(), C));
  const size_t N = scores.size() / C;
  ClassificationResult r;
  for (size_t c = 0; c < C; ++c) {
    ClassRow row;
    row.name = names[c];
    row.n = int64_t(N);
    std::vector<double> s(N);
    std::vector<int> l(N);
    for (size_t i = 0; i < N; ++i) {
      s[i] = scores[i * C + c];
      l[i] = labels[i * C + c];
    }
    row.positives = std::count(l.begin(), l.end(), 1);
    if (N == 0 || row.positives == 0 || row.positives == int64_t(N)) {
      row.skipped = true;
      row.skip_reason = fmt::format("only one class present ({} of {} positive)", row.positives, N);
    } else {
      row.m = max_f1_metrics(s, l);  // still throws on bad labels / scores
      r.mean_auc += row.m.auc;
      r.mean_f1 += row.m.f1;
      r.mean_acc += row.m.acc;
      ++r.classes_used;
    }
    r.rows.push_back(row);
  }
  if (r.classes_used > 0) {
    r.mean_auc /= double(r.classes_used);
    r.mean_f1 /= double(r.classes_used);
    r.mean_acc /= double(r.classes_used);
  }
  return r;
}

std::string format_table(const ClassificationResult& r) {
  std::string out = fmt::format("{:<28} {:>7} {:>6} {:>7} {:>7} {:>7} {:>9}\n", "class", "n", "pos", "AUC", "F1",
                                "ACC", "thr");
  for (const auto& row : r.rows) {
    if (row.skipped)
      out += fmt::format("{:<28} {:>7} {:>6}   skipped: {}\n", row.name, row.n, row.positives, row.skip_reason);
    else
      out += fmt::format("{:<28} {:>7} {:>6} {:>7.4f} {:>7.4f} {:>7.4f} {:>9.6f}\n", row.name, row.n, row.positives,
                         row.m.auc, row.m.f1, row.m.acc, row.m.threshold);
  }
  out += fmt::format("{:<28} {:>7} {:>6} {:>7.4f} {:>7.4f} {:>7.4f}\n",
                     fmt::format("mean ({} classes)", r.classes_used), "", "", r.mean_auc, r.mean_f1, r.mean_acc);
  return out;
}

nlohmann::json to_json(const ClassificationResult& r) {
  nlohmann::json j;
  j["classes"] = nlohmann::json::array();
  for (const auto& row : r.rows) {
    nlohmann::json c = {{"name", row.name}, {"n", row.n}, {"positives", row.positives}, {"skipped", row.skipped}};
    if (row.skipped) c["skip_reason"] = row.skip_reason;
    else c.update({{"auc", row.m.auc}, {"f1", row.m.f1}, {"acc", row.m.acc}, {"threshold", row.m.threshold}});
    j["classes"].push_back(c);
  }
  j["mean"] = {{"classes_used", r.classes_used}, {"auc", r.mean_auc}, {"f1", r.mean_f1}, {"acc", r.mean_acc}};
  return j;
}

// ---------------------------------------------------------------------------------------------
// Grounding
// ---------------------------------------------------------------------------------------------

std::vector<float> upsample_nearest(const float* grid, int64_t P, int64_t S) {
  if (P <= 0 || S <= 0 || S % P != 0)
    throw std::invalid_argument(
        fmt::format("upsample_nearest: output size {} must be a positive multiple of the grid size {}", S, P));
  const int64_t f = S / P;  // block size (16 for 14 -> 224)
  std::vector<float> out(size_t(S * S));
  for (int64_t y = 0; y < S; ++y)
    for (int64_t x = 0; x < S; ++x) out[size_t(y * S + x)] = grid[(y / f) * P + x / f];
  return out;
}

void normalise_heatmaps(std::vector<float>& maps, int64_t B, HeatmapNorm norm) {
  if (B <= 0 || maps.empty() || maps.size() % size_t(B) != 0)
    throw std::invalid_argument(
        fmt::format("normalise_heatmaps: {} values do not split into {} maps", maps.size(), B));
  const size_t L = maps.size() / size_t(B);
  for (float v : maps)
    if (!std::isfinite(v)) throw std::invalid_argument("normalise_heatmaps: heatmap has a non-finite value");
  auto divide = [&](size_t begin, size_t end, const char* what) {
    float mx = *std::max_element(maps.begin() + long(begin), maps.begin() + long(end));
    if (!(mx > 0))
      throw std::invalid_argument(fmt::format("normalise_heatmaps: {} max is {} (expected > 0)", what, mx));
    for (size_t i = begin; i < end; ++i) maps[i] = maps[i] / mx;  // float32 division, as torch
  };
  if (norm == HeatmapNorm::per_batch) divide(0, maps.size(), "batch");
  else
    for (size_t b = 0; b < size_t(B); ++b) divide(b * L, (b + 1) * L, "image");
}

bool pointing_game_hit(const float* pred, const uint8_t* mask, int64_t n) {
  if (n <= 0) throw std::invalid_argument("pointing_game_hit: empty map");
  const float mx = *std::max_element(pred, pred + n);
  for (int64_t i = 0; i < n; ++i)
    if (pred[i] == mx && mask[i]) return true;
  return false;
}

Overlap overlap(const float* pred, const uint8_t* mask, int64_t n, float threshold) {
  Overlap o;
  for (int64_t i = 0; i < n; ++i) {
    const bool p = pred[i] > threshold, g = mask[i] != 0;
    o.pred += p;
    o.gt += g;
    o.inter += p && g;
  }
  if (o.gt == 0) throw std::invalid_argument("overlap: empty ground-truth mask for a positive image");
  o.iou = double(o.inter) / double(o.gt + o.pred - o.inter);
  o.dice = 2.0 * double(o.inter) / double(o.gt + o.pred);
  return o;
}

double mask_area_fraction(const uint8_t* mask, int64_t n) {
  if (n <= 0) throw std::invalid_argument("mask_area_fraction: empty mask");
  int64_t in = 0;
  for (int64_t i = 0; i < n; ++i) in += mask[i] != 0;
  return double(in) / double(n);
}

GroundingScorer::GroundingScorer(int64_t grid, int64_t size, float threshold, HeatmapNorm norm)
    : grid_(grid), size_(size), threshold_(threshold), norm_(norm) {
  if (grid <= 0 || size <= 0 || size % grid != 0)
    throw std::invalid_argument(
        fmt::format("GroundingScorer: map size {} must be a positive multiple of the patch grid {}", size, grid));
}

void GroundingScorer::add_batch(std::vector<float> heatmaps, const std::vector<int>& labels,
                                const std::vector<uint8_t>& masks) {
  const size_t B = labels.size(), L = size_t(grid_ * grid_), S2 = size_t(size_ * size_);
  if (B == 0) throw std::invalid_argument("GroundingScorer::add_batch: empty batch");
  if (heatmaps.size() != B * L)
    throw std::invalid_argument(fmt::format("GroundingScorer::add_batch: heatmaps: {} values, expected [{}, {}, {}]",
                                            heatmaps.size(), B, grid_, grid_));
  if (masks.size() != B * S2)
    throw std::invalid_argument(fmt::format("GroundingScorer::add_batch: masks have {} values, expected [{}, {}, {}]",
                                            masks.size(), B, size_, size_));
  for (size_t b = 0; b < B; ++b)
    if (labels[b] != 0 && labels[b] != 1)
      throw std::invalid_argument(
          fmt::format("GroundingScorer::add_batch: label[{}] = {}, expected 0 or 1", b, labels[b]));
  normalise_heatmaps(heatmaps, int64_t(B), norm_);  // §E.4 step 4 (negatives enter the batch max)
  for (size_t b = 0; b < B; ++b) {
    if (labels[b] != 1) continue;
    std::vector<float> pred = upsample_nearest(heatmaps.data() + b * L, grid_, size_);
    const uint8_t* m = masks.data() + b * S2;
    const bool hit = pointing_game_hit(pred.data(), m, int64_t(S2));
    Overlap o = overlap(pred.data(), m, int64_t(S2), threshold_);
    acc_.hit_per_image.push_back(hit);
    acc_.iou_per_image.push_back(o.iou);
    acc_.dice_per_image.push_back(o.dice);
    acc_.chance_per_image.push_back(double(o.gt) / double(S2));
    acc_.hits += hit;
    ++acc_.positives;
  }
}

GroundingResult GroundingScorer::result() const {
  if (acc_.positives == 0) throw std::invalid_argument("GroundingScorer::result: no positive image was added");
  GroundingResult r = acc_;
  const double n = double(r.positives);
  r.pointing = double(r.hits) / n;
  for (size_t i = 0; i < r.iou_per_image.size(); ++i) {
    r.iou += r.iou_per_image[i];
    r.dice += r.dice_per_image[i];
    r.chance += r.chance_per_image[i];
  }
  r.iou /= n;
  r.dice /= n;
  r.chance /= n;
  return r;
}

std::string format_table(const GroundingResult& r) {
  return fmt::format("{:<22} {:>9}\n{:<22} {:>9}\n{:<22} {:>9.5f}\n{:<22} {:>9.5f}\n{:<22} {:>9.5f}\n{:<22} {:>9.5f}\n",
                     "positive images", r.positives, "pointing hits", r.hits, "pointing game", r.pointing,
                     "pointing chance level", r.chance, "IoU", r.iou, "Dice", r.dice);
}

nlohmann::json to_json(const GroundingResult& r) {
  return {{"positives", r.positives}, {"hits", r.hits},     {"pointing", r.pointing},
          {"chance", r.chance},       {"iou", r.iou},       {"dice", r.dice},
          {"iou_per_image", r.iou_per_image}, {"dice_per_image", r.dice_per_image},
          {"hit_per_image", r.hit_per_image}};
}

std::vector<double> segmentation_counts(const std::vector<float>& prob, const std::vector<float>& truth, int64_t n,
                                        float threshold) {
  if (n <= 0) throw std::invalid_argument("segmentation_scores: no images");
  if (prob.size() != truth.size() || prob.size() % size_t(n))
    throw std::invalid_argument(fmt::format("segmentation_scores: {} predictions, {} mask values for {} images", prob.size(),
                                            truth.size(), n));
  const size_t P = prob.size() / size_t(n);
  std::vector<double> out;
  out.reserve(size_t(n) * kSegmentationCounts);
  for (int64_t i = 0; i < n; ++i) {
    const float* p = prob.data() + size_t(i) * P;
    const float* t = truth.data() + size_t(i) * P;
    int64_t np = 0, nt = 0, inter = 0;   // thresholded counts (dice)
    double sp = 0, st = 0, spt = 0;      // mIoU sums with the raw truth
    for (size_t k = 0; k < P; ++k) {
      if (!std::isfinite(p[k])) throw std::invalid_argument(fmt::format("segmentation_scores: image {} has a non-finite score", i));
      const bool pb = p[k] > threshold, tb = t[k] > 0.5f;
      np += pb;
      nt += tb;
      inter += pb && tb;
      if (pb) { sp += 1; spt += t[k]; }
      st += t[k];
    }
    out.insert(out.end(), {double(np), double(nt), double(inter), sp, st, spt});
  }
  return out;
}

SegmentationResult segmentation_from_counts(const std::vector<double>& counts) {
  const int64_t n = int64_t(counts.size() / kSegmentationCounts);
  if (n <= 0 || counts.size() % kSegmentationCounts)
    throw std::invalid_argument(fmt::format("segmentation_scores: {} counts, expected {} per image", counts.size(), kSegmentationCounts));
  SegmentationResult r;
  r.images = n;
  double sum_pos = 0, sum_neg = 0, sum_iou = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double* c = counts.data() + size_t(i) * kSegmentationCounts;
    const double np = c[0], nt = c[1], inter = c[2], sp = c[3], st = c[4], spt = c[5];
    double d;
    if (nt == 0) {
      d = np == 0 ? 1.0 : 0.0;
      ++r.num_neg;
      sum_neg += d;
    } else {
      d = 2.0 * inter / (np + nt);
      ++r.num_pos;
      sum_pos += d;
    }
    const double iou = (spt + 1.0) / (sp + st - spt + 1.0);
    r.dice_per_image.push_back(d);
    r.iou_per_image.push_back(iou);
    sum_iou += iou;
  }
  r.dice = (sum_pos + sum_neg) / double(n);
  r.dice_pos = r.num_pos ? sum_pos / double(r.num_pos) : 0.0;
  r.dice_neg = r.num_neg ? sum_neg / double(r.num_neg) : 0.0;
  r.miou = sum_iou / double(n);
  return r;
}

SegmentationResult segmentation_scores(const std::vector<float>& prob, const std::vector<float>& truth, int64_t n,
                                       float threshold) {
  return segmentation_from_counts(segmentation_counts(prob, truth, n, threshold));
}

std::string format_table(const SegmentationResult& r) {
  return fmt::format("images {} ({} with a mask, {} empty)\nDice {:.4f} (non-empty {:.4f}, empty {:.4f})\nmIoU {:.4f}\n",
                     r.images, r.num_pos, r.num_neg, r.dice, r.dice_pos, r.dice_neg, r.miou);
}

nlohmann::json to_json(const SegmentationResult& r) {
  return {{"images", r.images}, {"num_pos", r.num_pos}, {"num_neg", r.num_neg}, {"dice", r.dice},
          {"dice_pos", r.dice_pos}, {"dice_neg", r.dice_neg}, {"miou", r.miou}};
}

void save_json(const std::string& path, const nlohmann::json& j) {
  write_file_atomic(path, j.dump(2) + "\n");
}

}  // namespace ms
