// train/metrics: AUROC, PR curve, max-F1/ACC against scikit-learn 1.2.1 (and the 1.0.2 curve the
// reference pins) and the reference's test.py formulas; grounding (pointing game, IoU, Dice) on
// hand-made maps and against the reference's score_cal. Fixtures: tests/make_fixtures_metrics.py.
#include <doctest/doctest.h>

#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/test_util.h"
#include "train/metrics.h"

using nlohmann::json;

namespace {

constexpr double kTol = 1e-12;  // every value here is a ratio of integer counts or a copied score

json load_fixture() {
  auto path = ms::test::fixture("metrics.json");
  std::ifstream f(path);
  REQUIRE_MESSAGE(f.good(), "missing " << path.string() << " (run /usr/bin/python3 tests/make_fixtures_metrics.py)");
  return json::parse(f);
}

std::vector<double> doubles(const json& a) {  // null (NaN in the reference) -> NaN
  std::vector<double> v;
  for (const auto& x : a) v.push_back(x.is_null() ? std::numeric_limits<double>::quiet_NaN() : x.get<double>());
  return v;
}

// Largest |ours - ref| with NaN matching NaN only; +inf on a size mismatch or unmatched NaN.
double max_diff(const std::vector<double>& ours, const std::vector<double>& ref) {
  if (ours.size() != ref.size()) return std::numeric_limits<double>::infinity();
  double d = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (std::isnan(ref[i]) || std::isnan(ours[i])) {
      if (std::isnan(ref[i]) != std::isnan(ours[i])) return std::numeric_limits<double>::infinity();
      continue;
    }
    d = std::max(d, std::fabs(ours[i] - ref[i]));
  }
  return d;
}

// Box masks at S×S from (x, y, w, h) boxes, as the reference's seg_map[y:y+h, x:x+w] = 1.
std::vector<uint8_t> box_mask(const json& boxes, int64_t S) {
  std::vector<uint8_t> m(size_t(S * S), 0);
  for (const auto& b : boxes) {
    int64_t x = b[0], y = b[1], w = b[2], h = b[3];
    for (int64_t r = y; r < std::min(S, y + h); ++r)
      for (int64_t c = x; c < std::min(S, x + w); ++c) m[size_t(r * S + c)] = 1;
  }
  return m;
}

}  // namespace

TEST_CASE("train: metrics sklearn fixtures (AUC, PR curve 1.2.1 and 1.0.2, max-F1/thr/ACC)") {
  json fx = load_fixture();
  MESSAGE("fixtures from scikit-learn " << fx["sklearn_version"].get<std::string>());
  double worst_auc = 0, worst_curve = 0, worst_ref = 0;
  int n_cases = 0;
  for (const auto& c : fx["classification"]) {
    const std::string name = c["name"];
    CAPTURE(name);
    std::vector<double> score = c["score"].get<std::vector<double>>();
    std::vector<int> label = c["label"].get<std::vector<int>>();
    for (auto [key, ver] : {std::pair{"v1_1", ms::SklearnPr::v1_1}, std::pair{"v1_0", ms::SklearnPr::v1_0}}) {
      CAPTURE(key);
      ms::PrCurve pr = ms::precision_recall_curve(score, label, ver);
      const json& ref = c[std::string("pr_") + key];
      double d = std::max({max_diff(pr.precision, doubles(ref["precision"])),
                           max_diff(pr.recall, doubles(ref["recall"])),
                           max_diff(pr.thresholds, doubles(ref["thresholds"]))});
      CHECK(d <= kTol);
      worst_curve = std::max(worst_curve, d);
      CHECK(pr.precision.size() == pr.thresholds.size() + 1);
      if (c["auc"].is_null()) continue;
      ms::ClassMetrics m = ms::max_f1_metrics(score, label, ver);
      const json& r = c[std::string("ref_") + key];
      double dr = std::max({std::fabs(m.f1 - r["f1"].get<double>()), std::fabs(m.acc - r["acc"].get<double>()),
                            std::fabs(m.threshold - r["threshold"].get<double>())});
      CHECK(dr <= kTol);
      worst_ref = std::max(worst_ref, dr);
    }
    if (c["auc"].is_null()) {
      CHECK_THROWS_AS(ms::roc_auc(score, label), std::invalid_argument);
      CHECK_THROWS_AS(ms::max_f1_metrics(score, label), std::invalid_argument);
    } else {
      double d = std::fabs(ms::roc_auc(score, label) - c["auc"].get<double>());
      CHECK(d <= kTol);
      worst_auc = std::max(worst_auc, d);
    }
    ++n_cases;
  }
  CHECK(n_cases >= 10);
  MESSAGE(n_cases << " cases; max |d| vs sklearn: AUC " << worst_auc << ", PR curves " << worst_curve
                  << ", reference F1/thr/ACC " << worst_ref << " (tolerance " << kTol << ")");
}

TEST_CASE("train: metrics hand-checked PR curve, AUC and ACC") {
  // The sklearn docstring example.
  std::vector<double> s = {0.1, 0.4, 0.35, 0.8};
  std::vector<int> y = {0, 0, 1, 1};
  ms::PrCurve v11 = ms::precision_recall_curve(s, y, ms::SklearnPr::v1_1);
  CHECK(max_diff(v11.precision, {0.5, 2.0 / 3.0, 0.5, 1.0, 1.0}) <= kTol);
  CHECK(max_diff(v11.recall, {1.0, 1.0, 0.5, 0.5, 0.0}) <= kTol);
  CHECK(max_diff(v11.thresholds, {0.1, 0.35, 0.4, 0.8}) == 0);
  ms::PrCurve v10 = ms::precision_recall_curve(s, y);  // default: 1.0.2, stops at full recall (0.35)
  CHECK(max_diff(v10.precision, {2.0 / 3.0, 0.5, 1.0, 1.0}) <= kTol);
  CHECK(max_diff(v10.thresholds, {0.35, 0.4, 0.8}) == 0);
  CHECK(ms::roc_auc(s, y) == doctest::Approx(0.75).epsilon(1e-15));
  // max F1 = 0.8 at thr 0.35 (P=2/3, R=1); ACC counts 0.35 itself negative: (0.4, 0.8) > 0.35 -> 2/4.
  ms::ClassMetrics m = ms::max_f1_metrics(s, y);
  CHECK(m.f1 == doctest::Approx(0.8).epsilon(1e-15));
  CHECK(m.threshold == 0.35);
  CHECK(m.acc == 0.5);

  // AUC = Mann-Whitney with ties counting 1/2, brute force over all pairs.
  std::vector<double> score;
  std::vector<int> label;
  for (int i = 0; i < 257; ++i) {
    score.push_back(double((i * 37) % 23) / 10.0);  // many ties
    label.push_back((i * 11) % 7 < 2);
  }
  double pairs = 0, wins = 0;
  for (size_t i = 0; i < score.size(); ++i)
    for (size_t j = 0; j < score.size(); ++j)
      if (label[i] == 1 && label[j] == 0) {
        pairs += 1;
        wins += score[i] > score[j] ? 1.0 : score[i] == score[j] ? 0.5 : 0.0;
      }
  CHECK(ms::roc_auc(score, label) == doctest::Approx(wins / pairs).epsilon(1e-15));
}

TEST_CASE("train: metrics bad input throws with a message") {
  auto msg = [](auto fn) {
    try {
      fn();
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("(no exception)");
  };
  CHECK(msg([] { ms::roc_auc({}, {}); }).find("empty") != std::string::npos);
  CHECK(msg([] { ms::roc_auc({0.1, 0.2}, {1}); }).find("2 scores but 1 labels") != std::string::npos);
  CHECK(msg([] { ms::roc_auc({0.1, std::nan("")}, {0, 1}); }).find("score[1]") != std::string::npos);
  CHECK(msg([] { ms::max_f1_metrics({0.1, 0.2}, {0, 2}); }).find("label[1] = 2") != std::string::npos);
  CHECK(msg([] { ms::roc_auc({0.1, 0.2}, {1, 1}); }).find("only one class") != std::string::npos);
  CHECK(msg([] { ms::precision_recall_curve({0.1}, {0, 1}); }).find("labels") != std::string::npos);
  // One class is fine for the curve itself, as in sklearn.
  CHECK(ms::precision_recall_curve({0.1, 0.2}, {0, 0}, ms::SklearnPr::v1_1).recall.front() == 1.0);
  CHECK(std::isnan(ms::precision_recall_curve({0.1, 0.2}, {0, 0}, ms::SklearnPr::v1_0).recall.front()));
}

TEST_CASE("train: metrics per-class table, means and JSON") {
  // 3 classes over 6 samples; class "empty" has no positive and is skipped.
  std::vector<std::string> names = {"pneumonia", "empty", "edema"};
  std::vector<double> scores = {0.9, 0.1, 0.2, 0.8, 0.2, 0.7, 0.3, 0.3, 0.4,
                                0.1, 0.4, 0.1, 0.6, 0.5, 0.9, 0.2, 0.6, 0.3};
  std::vector<int> labels = {1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0};
  ms::ClassificationResult r = ms::evaluate_classes(names, scores, labels);
  REQUIRE(r.rows.size() == 3);
  CHECK(r.classes_used == 2);
  CHECK(r.rows[1].skipped);
  CHECK(r.rows[1].skip_reason.find("one class") != std::string::npos);
  std::vector<double> s0 = {0.9, 0.8, 0.3, 0.1, 0.6, 0.2}, s2 = {0.2, 0.7, 0.4, 0.1, 0.9, 0.3};
  std::vector<int> l0 = {1, 1, 0, 0, 1, 0}, l2 = {0, 1, 0, 0, 1, 0};
  ms::ClassMetrics a = ms::max_f1_metrics(s0, l0), b = ms::max_f1_metrics(s2, l2);
  CHECK(r.mean_auc == doctest::Approx((a.auc + b.auc) / 2));
  CHECK(r.mean_f1 == doctest::Approx((a.f1 + b.f1) / 2));
  CHECK(r.mean_acc == doctest::Approx((a.acc + b.acc) / 2));
  std::string table = ms::format_table(r);
  MESSAGE("\n" << table);
  CHECK(table.find("skipped") != std::string::npos);
  CHECK(table.find("mean (2 classes)") != std::string::npos);
  auto dir = ms::test::scratch_dir("metrics");
  ms::save_json((dir / "cls.json").string(), ms::to_json(r));
  std::ifstream f(dir / "cls.json");
  json j = json::parse(f);
  CHECK(j["classes"].size() == 3);
  CHECK(j["classes"][1]["skipped"] == true);
  CHECK(j["mean"]["auc"].get<double>() == r.mean_auc);
  CHECK_THROWS_AS(ms::evaluate_classes(names, scores, {1, 0}), std::invalid_argument);
  CHECK_THROWS_AS(ms::save_json((dir / "no_such_dir" / "x.json").string(), j), std::runtime_error);
}

TEST_CASE("train: metrics grounding on hand-made 14x14 maps") {
  const int64_t P = 14, S = 224, n = S * S;
  // Box rows 32..63, cols 48..63 (512 px) = patches (2,3) and (3,3).
  json box = json::array({json::array({48, 32, 16, 32})});
  std::vector<uint8_t> mask = box_mask(box, S);
  CHECK(ms::mask_area_fraction(mask.data(), n) == doctest::Approx(512.0 / 50176.0).epsilon(1e-15));

  std::vector<float> grid(size_t(P * P), 0.1f);
  grid[2 * P + 3] = 1.0f;  // hot patch (2,3): a 16×16 block inside the box
  std::vector<float> up = ms::upsample_nearest(grid.data(), P, S);
  CHECK(up[size_t(32 * S + 48)] == 1.0f);
  CHECK(up[size_t(47 * S + 63)] == 1.0f);
  CHECK(up[size_t(48 * S + 63)] == 0.1f);
  CHECK(ms::pointing_game_hit(up.data(), mask.data(), n));
  ms::Overlap o = ms::overlap(up.data(), mask.data(), n, 0.5f);
  CHECK(o.inter == 256);
  CHECK(o.pred == 256);
  CHECK(o.gt == 512);
  CHECK(o.iou == 0.5);                  // 256 / (512 + 256 - 256)
  CHECK(o.dice == doctest::Approx(2.0 / 3.0).epsilon(1e-15));  // 512 / 768
  ms::Overlap all = ms::overlap(up.data(), mask.data(), n, 0.0f);  // threshold 0: whole image
  CHECK(all.iou == doctest::Approx(512.0 / 50176.0).epsilon(1e-15));

  grid[2 * P + 3] = 0.1f;
  grid[10 * P + 10] = 1.0f;  // max outside the box: miss
  up = ms::upsample_nearest(grid.data(), P, S);
  CHECK_FALSE(ms::pointing_game_hit(up.data(), mask.data(), n));
  CHECK(ms::overlap(up.data(), mask.data(), n, 0.5f).iou == 0.0);
  grid[3 * P + 3] = 1.0f;  // a tie at the max, one of them inside: hit
  up = ms::upsample_nearest(grid.data(), P, S);
  CHECK(ms::pointing_game_hit(up.data(), mask.data(), n));

  // Scorer: per-batch vs per-image normalisation. Image 0 (positive) peaks at 0.5, image 1 (negative)
  // at 1.0: per batch, image 0 tops out at 0.5 and nothing exceeds 0.6; per image it reaches 1.
  std::vector<float> heat(size_t(2 * P * P), 0.01f);
  heat[2 * P + 3] = 0.5f;
  heat[size_t(P * P + 5)] = 1.0f;
  std::vector<uint8_t> masks(size_t(2 * n), 0);
  std::copy(mask.begin(), mask.end(), masks.begin());
  ms::GroundingScorer batch(P, S, 0.6f, ms::HeatmapNorm::per_batch), image(P, S, 0.6f, ms::HeatmapNorm::per_image);
  batch.add_batch(heat, {1, 0}, masks);
  image.add_batch(heat, {1, 0}, masks);
  ms::GroundingResult rb = batch.result(), ri = image.result();
  CHECK(rb.positives == 1);
  CHECK(rb.pointing == 1.0);
  CHECK(rb.iou == 0.0);
  CHECK(ri.iou == 0.5);
  CHECK(ri.dice == doctest::Approx(2.0 / 3.0).epsilon(1e-15));
  CHECK(ri.chance == doctest::Approx(512.0 / 50176.0).epsilon(1e-15));
  MESSAGE("\n" << ms::format_table(ri));
  CHECK(ms::to_json(ri)["iou_per_image"].size() == 1);

  // Errors.
  CHECK_THROWS_AS(ms::upsample_nearest(grid.data(), 14, 200), std::invalid_argument);
  std::vector<uint8_t> empty(size_t(n), 0);
  CHECK_THROWS_AS(ms::overlap(up.data(), empty.data(), n, 0.5f), std::invalid_argument);
  std::vector<float> zeros(size_t(P * P), 0.0f);
  CHECK_THROWS_AS(ms::normalise_heatmaps(zeros, 1, ms::HeatmapNorm::per_image), std::invalid_argument);
  CHECK_THROWS_AS(image.add_batch(heat, {1}, masks), std::invalid_argument);
  CHECK_THROWS_AS(image.add_batch(heat, {1, 3}, masks), std::invalid_argument);
  ms::GroundingScorer none(P, S, 0.5f, ms::HeatmapNorm::per_image);
  CHECK_THROWS_AS(none.result(), std::invalid_argument);
}

TEST_CASE("train: metrics grounding vs the reference score_cal") {
  json fx = load_fixture();
  const int64_t P = 14, S = 224;
  double worst = 0;
  for (const auto& c : fx["grounding"]) {
    const std::string name = c["name"];
    CAPTURE(name);
    auto norm = c["norm"] == "per_batch" ? ms::HeatmapNorm::per_batch : ms::HeatmapNorm::per_image;
    ms::GroundingScorer scorer(P, S, c["threshold"].get<float>(), norm);
    for (const auto& b : fx["grounding_batches"][c["batch_set"].get<std::string>()]) {
      std::vector<float> heat;
      for (double v : b["heat"]) heat.push_back(float(v));  // float32 values stored exactly
      std::vector<int> labels = b["labels"].get<std::vector<int>>();
      std::vector<uint8_t> masks;
      for (const auto& bx : b["boxes"]) {
        auto m = box_mask(bx, S);
        masks.insert(masks.end(), m.begin(), m.end());
      }
      scorer.add_batch(heat, labels, masks);
    }
    ms::GroundingResult r = scorer.result();
    CHECK(r.positives == c["positives"].get<int64_t>());
    CHECK(r.hits == c["hits"].get<int64_t>());
    double d = std::max({max_diff(r.iou_per_image, c["iou_per_image"].get<std::vector<double>>()),
                         max_diff(r.dice_per_image, c["dice_per_image"].get<std::vector<double>>()),
                         std::fabs(r.iou - c["iou"].get<double>()), std::fabs(r.dice - c["dice"].get<double>()),
                         std::fabs(r.pointing - c["pointing"].get<double>())});
    CHECK(d <= kTol);
    worst = std::max(worst, d);
  }
  MESSAGE(fx["grounding"].size() << " score_cal cases; max |d| " << worst << " (tolerance " << kTol << ")");
}
