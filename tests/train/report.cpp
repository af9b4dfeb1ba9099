// The run report: SVG plot geometry and ticks, roc_curve against sklearn's, base64, a report of
// a small run folder (every part present, every figure and picture counted, nothing external),
// the notes of an empty folder, and the page rendered by a real headless Chromium (skipped with
// a reason when chromium is absent): every <svg> and <img> present and drawn, a non-trivial screenshot.
#include <doctest/doctest.h>
#include <fmt/core.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>

#include "data/image.h"
#include "tests/test_util.h"
#include "train/metrics.h"
#include "train/report.h"
#include "train/svg_plot.h"

using namespace ms;
namespace fs = std::filesystem;

namespace {

size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

void write_text(const fs::path& p, const std::string& t) {
  std::ofstream f(p, std::ios::binary);
  f << t;
}

// A run folder as pretrain + zeroshot + ground leave it (small): 2 epochs of 3 steps, 3 classes
// (one without positives), 2 grounding overlays, attention overlays for 2 epochs, a segmentation fine-tuning.
fs::path make_run(const std::string& name) {
  const fs::path run = test::scratch_dir(name);
  std::string m;
  for (int s = 1; s <= 6; ++s) {
    nlohmann::json l = {{"type", "step"}, {"epoch", (s - 1) / 3}, {"batch", (s - 1) % 3}, {"step", s},
                        {"lr", 1e-5 * s}, {"images_per_s", 20.0 + s}};
    for (const char* k : {"loss", "loss_ce_pathology", "loss_cl_pathology", "loss_ce_anatomy", "loss_cl_anatomy", "loss_ap"})
      l[k] = 3.0 / s;
    m += l.dump() + "\n";
    if (s % 3 == 0) {
      nlohmann::json t = {{"loss", 1.5}, {"loss_ce_pathology", 0.5}, {"loss_cl_pathology", 0.5},
                          {"loss_ce_anatomy", 0.2}, {"loss_cl_anatomy", 0.2}, {"loss_ap", 0.1}};
      m += nlohmann::json({{"type", "epoch"}, {"epoch", s / 3 - 1}, {"step", s}, {"train", t}, {"valid", t}, {"seconds", 2.5}})
               .dump() + "\n";
    }
  }
  write_text(run / "metrics.jsonl", m);
  write_text(run / "config.yaml", "image_res: 64\nseed: 9\n");
  write_text(run / "reproducibility.json",
             nlohmann::json({{"program", "medslip test"}, {"seed", 9}, {"config", "image_res: 64\n"},
                             {"epochs", {{{"epoch", 0}, {"weights_sha256", "abc"}}}}}).dump());
  // zeroshot: scores + metrics exactly as run_zeroshot writes them.
  const std::vector<std::string> names = {"atelectasis", "cardiomegaly", "hernia"};
  const std::vector<double> sc = {0.9, 0.2, 0.1, 0.3, 0.2, 0.1, 0.4, 0.8, 0.1, 0.1, 0.7, 0.1};  // [4,3]
  const std::vector<int> lb = {1, 0, 0, 0, 1, 0, 1, 1, 0, 0, 1, 0};
  std::string csv = "row,img_path,score:atelectasis,label:atelectasis,score:cardiomegaly,label:cardiomegaly,score:hernia,label:hernia\n";
  for (int i = 0; i < 4; ++i) {
    csv += std::to_string(i) + ",img" + std::to_string(i) + ".png";
    for (int c = 0; c < 3; ++c) csv += "," + std::to_string(sc[size_t(i * 3 + c)]) + "," + std::to_string(lb[size_t(i * 3 + c)]);
    csv += "\n";
  }
  write_text(run / "zeroshot_scores.csv", csv);
  nlohmann::json z = {{"command", "zeroshot"}, {"n_images", 4}, {"dataset", "synthetic"},
                      {"csv", {{"path", "test.csv"}, {"sha256", "00"}}}, {"checkpoint", {{"path", "c"}, {"sha256", "11"}}},
                      {"scores_csv", "zeroshot_scores.csv"}};
  z["metrics"] = to_json(evaluate_classes(names, sc, lb));
  write_text(run / "zeroshot.json", z.dump());
  // ground: two overlays (one under a relative path that only resolves from the run folder).
  fs::create_directories(run / "heatmaps");
  Image a(40, 30, 3, 90), b(40, 30, 3, 200);
  write_png((run / "heatmaps/0_a_hit.png").string(), a);
  write_png((run / "heatmaps/1_b_miss.png").string(), b);
  nlohmann::json g = {{"command", "ground"}, {"n_images", 5}, {"query", {{"index", 20}, {"name", "pneumonia"}}},
                      {"threshold", 0.0}, {"csv", {{"path", "r.csv"}}},
                      {"metrics", {{"positives", 2}, {"hits", 1}, {"pointing", 0.5}, {"chance", 0.1}, {"iou", 0.2}, {"dice", 0.3}}}};
  g["images"] = {{{"id", "a"}, {"hit", true}, {"iou", 0.25}, {"dice", 0.4}, {"heatmap", (run / "heatmaps/0_a_hit.png").string()}},
                 {{"id", "b"}, {"hit", false}, {"iou", 0.0}, {"dice", 0.0}, {"heatmap", "heatmaps/1_b_miss.png"}}};
  write_text(run / "ground.json", g.dump());
  fs::create_directories(run / "attention");
  for (int e = 0; e < 2; ++e)
    for (const char* o : {"0_nodule", "1_effusion"}) write_png((run / "attention" / ("epoch" + std::to_string(e) + "_" + o + ".png")).string(), a);
  // finetune (segment): validation Dice per epoch, the test's scores, one predicted mask beside the truth.
  write_text(run / "valid.jsonl", "{\"epoch\":0,\"metric\":\"dice\",\"value\":0.31,\"best\":true}\n"
                                  "{\"epoch\":1,\"metric\":\"dice\",\"value\":0.42,\"best\":true}\n");
  fs::create_directories(run / "test/overlays");
  fs::create_directories(run / "test/masks");
  write_text(run / "test/metrics.json", nlohmann::json({{"images", 2}, {"csv", "seg.csv"}, {"loss", 0.7}, {"best_epoch", 1},
                                                        {"best_valid", 0.42}, {"dice", 0.4567}, {"dice_pos", 0.5}, {"dice_neg", 0.4},
                                                        {"num_pos", 1}, {"num_neg", 1}, {"miou", 0.3}}).dump());
  write_text(run / "test/predictions.csv", "image_path,dice,iou,predicted_pixels,mask_pixels\n/x/s0.png,0.812500,0.684211,10,12\n/x/s1.png,1,1,0,0\n");
  write_png((run / "test/overlays/0000_s0.png").string(), b);
  write_png((run / "test/masks/0000_s0.png").string(), Image(40, 30, 1, 255));
  return run;
}

std::pair<int, std::string> run_capture(const std::string& cmd) {
  std::string out;
  std::FILE* p = popen(cmd.c_str(), "r");
  if (!p) return {-1, out};
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int st = pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

}  // namespace

TEST_CASE("train: report svg plots, ticks and roc_curve") {
  double lo = 0.13, hi = 0.87;
  auto t = nice_ticks(lo, hi);
  CHECK(lo == doctest::Approx(0.0));  // 6 ticks of 0.2 cover it
  CHECK(hi == doctest::Approx(1.0));
  CHECK(t.size() == 6);
  lo = 0.13, hi = 0.87;
  t = nice_ticks(lo, hi, 9);
  CHECK(t[1] - t[0] == doctest::Approx(0.1));
  CHECK(lo == doctest::Approx(0.1));
  lo = 0, hi = 1044;
  t = nice_ticks(lo, hi, 7);
  CHECK(t[1] - t[0] == doctest::Approx(200));
  CHECK(hi == doctest::Approx(1200));
  lo = 1, hi = 15;  // steps: whole ticks (5), never 2.5
  t = nice_ticks(lo, hi, 7, true);
  CHECK(t[1] - t[0] == doctest::Approx(5));
  lo = 0, hi = 3;
  t = nice_ticks(lo, hi, 7, true);
  CHECK(t[1] - t[0] == doctest::Approx(1));
  CHECK(tick_label(5e-4, 1e-4) == "5e-4");
  CHECK(tick_label(2.5e-5, 5e-6) == "2.5e-5");
  CHECK(tick_label(1.2e6, 2e5) == "1.2e6");
  CHECK(tick_label(200, 200) == "200");
  CHECK(tick_label(0.25, 0.05) == "0.25");
  CHECK(tick_label(0.375, 0.025) == "0.375");
  CHECK(tick_label(0.4, 0.1) == "0.4");

  PlotOptions o;
  o.title = "T <&>";
  o.xlabel = "false-positive rate";
  o.ylabel = "true-positive rate";
  o.xmin = o.ymin = 0, o.xmax = o.ymax = 1;
  o.width = 400, o.height = 300, o.legend = false;
  PlotSeries a;
  a.x = a.y = {0, 0.5, 1};
  std::string svg = svg_line_plot({a}, o);
  CHECK(svg.find("T &lt;&amp;&gt;") != std::string::npos);
  CHECK(svg.find(">false-positive rate<") != std::string::npos);
  CHECK(svg.find(">true-positive rate<") != std::string::npos);
  // Plot area: left 72, top 36, width 400-72-14 = 314, height 300-36-50 = 214 -> (0.5,0.5) at (229, 143).
  CHECK(svg.find("points=\"72.00,250.00 229.00,143.00 386.00,36.00\"") != std::string::npos);

  // sklearn.metrics.roc_curve([0,0,1,1], [0.1,0.4,0.35,0.8], drop_intermediate=False)
  RocCurve r = roc_curve({0.1, 0.4, 0.35, 0.8}, {0, 0, 1, 1});
  CHECK(r.fpr == std::vector<double>{0, 0, 0.5, 0.5, 1});
  CHECK(r.tpr == std::vector<double>{0, 0.5, 0.5, 1, 1});
  CHECK(r.thresholds[1] == 0.8);
  CHECK(std::isinf(r.thresholds[0]));
  double area = 0;
  for (size_t i = 1; i < r.fpr.size(); ++i) area += (r.fpr[i] - r.fpr[i - 1]) * (r.tpr[i] + r.tpr[i - 1]) / 2;
  CHECK(area == roc_auc({0.1, 0.4, 0.35, 0.8}, {0, 0, 1, 1}));
  CHECK_THROWS_WITH(roc_curve({0.1, 0.2}, {1, 1}), doctest::Contains("roc_curve"));

  CHECK(base64_encode("Man") == "TWFu");
  CHECK(base64_encode("Ma") == "TWE=");
  CHECK(base64_encode("M") == "TQ==");
  CHECK(base64_encode("") == "");
}

TEST_CASE("train: report of a run folder has every part, inlined") {
  const fs::path run = make_run("report_full");
  ReportOptions o;
  o.run_dir = run.string();
  ReportResult info = write_report(o);
  CHECK(info.path == (run / "report.html").string());
  std::ifstream f(info.path);
  const std::string html((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  CHECK(info.notes.empty());
  // 6 loss terms + lr + throughput + ROC + fine-tuning validation.
  REQUIRE(info.figures.size() == 10);
  CHECK(info.figures[8] == "ROC curves per class, zero-shot (legend: AUROC)");
  CHECK(info.figures[9] == "Validation Dice per epoch (best checkpoint so far: red dots)");
  CHECK(count(html, "<svg") == 10);
  // 4 attention overlays + 2 grounding overlays + a predicted mask and its overlay, all as data: URIs;
  // nothing fetched from anywhere.
  CHECK(info.images == 8);
  CHECK(count(html, "src=\"data:image/png;base64,") == 8);
  CHECK(count(html, "src=\"") == 8);
  CHECK(html.find("0000_s0 — Dice 0.812, IoU 0.684") != std::string::npos);
  CHECK(html.find("<td>0.4567</td>") != std::string::npos);
  CHECK(!std::regex_search(html, std::regex("(src|href)=\"(https?:|//)")));
  CHECK(html.find("@import") == std::string::npos);
  // The AUROC table holds the evaluated values; the class without positives is left out, with its reason.
  ClassificationResult cr = evaluate_classes({"atelectasis", "cardiomegaly", "hernia"},
                                             {0.9, 0.2, 0.1, 0.3, 0.2, 0.1, 0.4, 0.8, 0.1, 0.1, 0.7, 0.1},
                                             {1, 0, 0, 0, 1, 0, 1, 1, 0, 0, 1, 0});
  CHECK(html.find(fmt::format("cardiomegaly ({:.3f})", cr.rows[1].m.auc)) != std::string::npos);
  CHECK(html.find("left out:") != std::string::npos);
  CHECK(html.find(fmt::format(">mean AUROC<")) != std::string::npos);
  CHECK(html.find("1_b_miss") == std::string::npos);  // pictures are inlined, not linked
  CHECK(html.find("<span class=\"miss\">miss</span>") != std::string::npos);
  CHECK(html.find("epoch 1</th>") != std::string::npos);
  CHECK(html.find("image_res: 64") != std::string::npos);

  // An empty folder: a page with a note per missing part, no error.
  const fs::path empty = test::scratch_dir("report_empty");
  ReportResult e;
  ReportOptions eo;
  eo.run_dir = empty.string();
  render_report(eo, &e);
  CHECK(e.figures.empty());
  CHECK(e.notes.size() == 4);
  ReportOptions nope;
  nope.run_dir = (empty / "nope").string();
  CHECK_THROWS_WITH(render_report(nope), doctest::Contains("no such folder"));
  write_text(empty / "metrics.jsonl", "{\"type\":\"step\"}\n{oops\n");
  CHECK_THROWS_WITH(render_report(eo), doctest::Contains("metrics.jsonl: line 2"));
}

TEST_CASE("train: report renders in headless chromium") {
  const char* env = std::getenv("MEDSLIP_CHROMIUM");
  std::string chromium = env && *env ? env : "";
  for (const char* c : {"/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"})
    if (chromium.empty() && fs::exists(c)) chromium = c;
  if (chromium.empty()) {
    MESSAGE("skipping: no chromium (apt-get install -y chromium, or set MEDSLIP_CHROMIUM)");
    return;
  }
  const fs::path run = make_run("report_chromium");
  ReportOptions o;
  o.run_dir = run.string();
  ReportResult info = write_report(o);
  const std::string flags = " --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run "
                            "--disable-extensions --user-data-dir=" + (run / "profile").string() + " ";
  const std::string url = "file://" + fs::absolute(info.path).string();
  auto [rc, dom] = run_capture(chromium + flags + "--dump-dom '" + url + "' 2>/dev/null");
  REQUIRE_MESSAGE(rc == 0, "chromium --dump-dom failed");
  // The page's own load check: images decoded and figures laid out, counted in the browser.
  std::smatch m;
  REQUIRE_MESSAGE(std::regex_search(dom, m, std::regex("data-images-ok=\"(\\d+)\" data-svgs-ok=\"(\\d+)\"")),
                  "the report's load check did not run (dump: " << dom.substr(0, 300) << ")");
  CHECK(std::stoi(m[1]) == info.images);
  CHECK(std::stoi(m[2]) == int(info.figures.size()));
  CHECK(count(dom, "<svg") == info.figures.size());
  CHECK(count(dom, "<img") == size_t(info.images));

  const fs::path shot = run / "screenshot.png";
  std::tie(rc, dom) = run_capture(chromium + flags + "--hide-scrollbars --window-size=1280,2400 --screenshot='" +
                                  shot.string() + "' '" + url + "' 2>/dev/null");
  REQUIRE_MESSAGE(fs::exists(shot), "chromium wrote no screenshot");
  Image im = read_image(shot.string());
  CHECK(im.w == 1280);
  CHECK(im.h == 2400);
  // Non-trivial: many colours (curves, text, pictures) and a good share of non-background pixels.
  std::vector<bool> seen(1 << 15);
  size_t colours = 0, ink = 0;
  for (size_t i = 0; i < im.px.size(); i += 3) {
    const uint8_t r = im.px[i], g = im.px[i + 1], b = im.px[i + 2];
    const size_t k = size_t(r >> 3) << 10 | size_t(g >> 3) << 5 | (b >> 3);
    if (!seen[k]) seen[k] = true, ++colours;
    if (std::abs(int(r) - 244) + std::abs(int(g) - 245) + std::abs(int(b) - 247) > 30) ++ink;
  }
  MESSAGE("screenshot: " << colours << " colours, " << 100.0 * ink / (im.px.size() / 3) << "% ink");
  CHECK(colours > 100);
  CHECK(ink > im.px.size() / 3 / 100);  // the small test run: >1% of the page is curves, text and pictures
}
