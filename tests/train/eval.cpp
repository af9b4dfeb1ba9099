// train/eval: the zeroshot / ground / predict jobs end to end, through their command functions,
// on a tiny model (the reference problem: ResNet-18 trunk, 64 px, random weights) and a tiny
// synthetic set (medslip synth, 40 images of 64 px, 36 held out for testing). No fixtures: the
// checks are self-consistency (metrics recomputed from the saved per-image scores, hashes
// recomputed from the files, normalisation-invariant pointing game) and named errors.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "data/datasets.h"
#include "data/image.h"
#include "data/synth.h"
#include "engine/device.h"
#include "engine/io.h"
#include "engine/threads.h"
#include "engine/nn_state.h"
#include "tests/test_util.h"
#include "train/commands.h"
#include "train/eval.h"
#include "train/hash.h"
#include "train/reference_problem.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct EvalSetup {
  fs::path dir;
  std::string ckpt, books, synth, cxr_csv, rsna_csv;
  int64_t n_test = 0, n_rsna_positive = 0;
  int image_res = 0;
};

// Built once for the whole suite (about a second).
const EvalSetup& setup() {
  static const EvalSetup s = [] {
    EvalSetup s;
    s.dir = ms::test::scratch_dir("train_eval");
    ms::ReferenceProblem p = ms::make_reference_problem();
    s.image_res = p.cfg.image_res;
    s.ckpt = (s.dir / "model.safetensors").string();
    ms::save_module(s.ckpt, *p.model, {{"config", p.cfg.to_yaml()}});
    s.books = (s.dir / "books.safetensors").string();
    ms::save_safetensors(s.books, {ms::SaveItem::f32("pathology_book", p.pathology_book),
                                   ms::SaveItem::f32("anatomy_book", p.anatomy_book)});
    ms::SynthOptions so;
    so.out_dir = (s.dir / "synth").string();
    so.n = 40;
    so.size = 64;
    so.seed = 1;
    so.valid_frac = 0.0;
    so.test_frac = 0.9;
    so.threads = 1;
    ms::SynthReport rep = ms::write_synth_dataset(so);
    s.n_test = rep.n_test;
    s.n_rsna_positive = rep.n_rsna_positive;
    s.synth = so.out_dir;
    s.cxr_csv = (fs::path(so.out_dir) / "cxr14_test.csv").string();
    s.rsna_csv = (fs::path(so.out_dir) / "rsna_test.csv").string();
    return s;
  }();
  return s;
}

std::string read_text(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Runs a command function with argv = {name, args...}, capturing its stdout and stderr.
struct CmdResult {
  int rc = -1;
  std::string out, err;
};
CmdResult run_cmd(ms::CommandFn fn, std::vector<std::string> args) {
  args.insert(args.begin(), "medslip-cmd");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const fs::path dir = fs::temp_directory_path();
  const std::string out_path = (dir / "medslip_test_eval_stdout.txt").string();
  const std::string err_path = (dir / "medslip_test_eval_stderr.txt").string();
  std::fflush(stdout);
  std::fflush(stderr);
  const int saved_out = dup(1), saved_err = dup(2);
  const int fo = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  const int fe = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  dup2(fo, 1);
  dup2(fe, 2);
  close(fo);
  close(fe);
  CmdResult r;
  r.rc = fn(int(args.size()), argv.data());
  std::fflush(stdout);
  std::fflush(stderr);
  dup2(saved_out, 1);
  dup2(saved_err, 2);
  close(saved_out);
  close(saved_err);
  r.out = read_text(out_path);
  r.err = read_text(err_path);
  return r;
}

// The lines of `text` that contain `needle`.
std::vector<std::string> lines_with(const std::string& text, const std::string& needle) {
  std::vector<std::string> out;
  std::istringstream is(text);
  for (std::string line; std::getline(is, line);)
    if (line.find(needle) != std::string::npos) out.push_back(line);
  return out;
}

// A failed command: non-zero exit and exactly one "error:" line on stderr, naming `what`.
void check_named_error(const CmdResult& r, const std::string& what) {
  CHECK(r.rc != 0);
  auto errs = lines_with(r.err, "error:");
  REQUIRE_MESSAGE(errs.size() == 1, "stderr: " << r.err);
  MESSAGE("named error: " << errs[0]);
  CHECK_MESSAGE(errs[0].find(what) != std::string::npos, errs[0] << " does not name " << what);
}

json load_json(const fs::path& p) {
  std::ifstream f(p);
  REQUIRE_MESSAGE(f.good(), "missing " << p.string());
  return json::parse(f);
}

std::vector<std::string> zeroshot_args(const std::string& csv, const std::string& out,
                                       const std::string& dataset = "synthetic") {
  const EvalSetup& s = setup();
  // One compute thread: on a loaded 2-core machine OpenMP barriers make 2 threads ~10x slower.
  return {"--checkpoint", s.ckpt, "--books", s.books, "--csv",   csv,     "--dataset", dataset, "--image-root",
          s.synth,        "--out", out,    "--batch", "16",    "--workers", "1",       "--threads", "1", "--quiet"};
}

// Writes the file's text with line `row` (0 = header) replaced.
std::string edited_csv(const std::string& src, const fs::path& dst, size_t row, const std::string& line) {
  std::istringstream is(read_text(src));
  std::string text;
  size_t i = 0;
  for (std::string l; std::getline(is, l); ++i) text += (i == row ? line : l) + "\n";
  std::ofstream(dst) << text;
  return dst.string();
}

}  // namespace

TEST_CASE("train: zeroshot metrics equal the metrics recomputed from the saved per-image scores") {
  const EvalSetup& s = setup();
  const fs::path out = s.dir / "zeroshot";
  CmdResult r = run_cmd(ms::cmd_zeroshot, zeroshot_args(s.cxr_csv, out.string()));
  REQUIRE_MESSAGE(r.rc == 0, r.err);
  CHECK(r.out.find("mean (") != std::string::npos);
  json j = load_json(out / "zeroshot.json");
  CHECK(j["checkpoint"]["sha256"] == ms::sha256_file(s.ckpt));
  CHECK(j["csv"]["sha256"] == ms::sha256_file(s.cxr_csv));
  CHECK(j["books"]["sha256"] == ms::sha256_file(s.books));
  CHECK(j["n_images"] == s.n_test);

  ms::CsvTable t = ms::read_csv((out / j["scores_csv"].get<std::string>()).string());
  REQUIRE(int64_t(t.rows.size()) == s.n_test);
  const json& classes = j["metrics"]["classes"];
  REQUIRE(classes.size() == size_t(ms::kNumCxr14Classes));
  int used = 0, skipped = 0;
  double auc_sum = 0;
  for (size_t c = 0; c < classes.size(); ++c) {
    const std::string name = classes[c]["name"];
    CHECK(classes[c]["query_index"] == ms::kCxr14QueryIndex[c]);
    std::vector<double> score;
    std::vector<int> label;
    const int sc = t.column("score:" + name), lc = t.column("label:" + name);
    for (const auto& row : t.rows) {
      score.push_back(double(std::stof(row[size_t(sc)])));  // %.9g round-trips the float32 score
      label.push_back(std::stoi(row[size_t(lc)]));
    }
    if (classes[c]["skipped"].get<bool>()) {
      ++skipped;
      CHECK(classes[c].contains("skip_reason"));
      CHECK(r.out.find("'" + name + "' is left out of the means") != std::string::npos);
      continue;
    }
    ++used;
    const double auc = ms::roc_auc(score, label);
    CHECK(classes[c]["auc"].get<double>() == auc);  // exact: the same scores, counts and formula
    ms::ClassMetrics m = ms::max_f1_metrics(score, label);
    CHECK(classes[c]["f1"].get<double>() == m.f1);
    CHECK(classes[c]["acc"].get<double>() == m.acc);
    auc_sum += auc;
  }
  MESSAGE(used << " classes evaluated, " << skipped << " skipped (never drawn by synth), mean AUC "
               << j["metrics"]["mean"]["auc"].get<double>());
  CHECK(used >= 3);
  CHECK(skipped >= 4);  // fibrosis, pleural thickening, hernia, infiltration are never drawn
  CHECK(j["metrics"]["mean"]["classes_used"] == used);
  CHECK(j["metrics"]["mean"]["auc"].get<double>() == doctest::Approx(auc_sum / used).epsilon(1e-12));

  // The RSNA layout: one class, the pneumonia query.
  const fs::path out2 = s.dir / "zeroshot_rsna";
  CmdResult r2 = run_cmd(ms::cmd_zeroshot, zeroshot_args(s.rsna_csv, out2.string(), "rsna"));
  REQUIRE_MESSAGE(r2.rc == 0, r2.err);
  json j2 = load_json(out2 / "zeroshot.json");
  REQUIRE(j2["metrics"]["classes"].size() == 1);
  CHECK(j2["metrics"]["classes"][0]["query_index"] == ms::kPneumoniaQuery);
  CHECK(j2["metrics"]["classes"][0]["positives"] == s.n_rsna_positive);
}

TEST_CASE("train: zeroshot errors name the bad row, image or tensor") {
  const EvalSetup& s = setup();
  const fs::path dir = s.dir / "zeroshot_errors";
  fs::create_directories(dir);
  const std::string header_and = "images/000010.png,000010.png,No Finding";
  SUBCASE("a label that is not 0/1") {
    std::string csv = edited_csv(s.cxr_csv, dir / "bad_label.csv", 2, header_and + ",0,0,2,0,0,0,0,0,0,0,0,0,0,0");
    check_named_error(run_cmd(ms::cmd_zeroshot, zeroshot_args(csv, dir.string())), "bad_label.csv");
  }
  SUBCASE("a row with too few fields") {
    std::string csv = edited_csv(s.cxr_csv, dir / "short_row.csv", 3, header_and + ",0,0");
    check_named_error(run_cmd(ms::cmd_zeroshot, zeroshot_args(csv, dir.string())), "short_row.csv");
  }
  SUBCASE("a missing image") {
    std::string csv =
        edited_csv(s.cxr_csv, dir / "missing_image.csv", 5,
                   "images/no_such.png,x.png,No Finding,0,0,0,0,0,0,0,0,0,0,0,0,0,0");
    check_named_error(run_cmd(ms::cmd_zeroshot, zeroshot_args(csv, dir.string())), "no_such.png");
  }
  SUBCASE("a checkpoint without a tensor, or with a mis-shaped one") {
    auto sd = ms::load_safetensors_raw(s.ckpt);
    auto meta = ms::safetensors_metadata(s.ckpt);
    const std::string key = "classifier_pathology.weight";
    REQUIRE(sd.count(key));
    auto missing = sd;
    missing.erase(key);
    const std::string ck1 = (dir / "missing_tensor.safetensors").string();
    ms::save_safetensors(ck1, missing, meta);
    auto args = zeroshot_args(s.cxr_csv, dir.string());
    args[1] = ck1;
    check_named_error(run_cmd(ms::cmd_zeroshot, args), key);

    auto bad = sd;
    bad[key] = ms::FileTensor::from_float(std::vector<float>(3 * 7, 0.5f), {3, 7});
    const std::string ck2 = (dir / "bad_shape.safetensors").string();
    ms::save_safetensors(ck2, bad, meta);
    args[1] = ck2;
    CmdResult r = run_cmd(ms::cmd_zeroshot, args);
    check_named_error(r, key);
    CHECK(r.err.find("[3,7]") != std::string::npos);
  }
  SUBCASE("a checkpoint or csv that does not exist, an unknown dataset") {
    auto args = zeroshot_args(s.cxr_csv, dir.string());
    args[1] = (dir / "nope.safetensors").string();
    check_named_error(run_cmd(ms::cmd_zeroshot, args), "nope.safetensors");
    check_named_error(run_cmd(ms::cmd_zeroshot, zeroshot_args((dir / "nope.csv").string(), dir.string())),
                      "nope.csv");
    CHECK(run_cmd(ms::cmd_zeroshot, zeroshot_args(s.cxr_csv, dir.string(), "mimic")).rc != 0);
  }
  if (!ms::cuda_built()) {
    SUBCASE("--device cuda on a CPU build") {
      auto args = zeroshot_args(s.cxr_csv, dir.string());
      args.insert(args.end(), {"--device", "cuda"});
      check_named_error(run_cmd(ms::cmd_zeroshot, args), "--device cuda");
    }
  }
}

TEST_CASE("train: ground pointing game, chance level, hashes and heatmap overlays") {
  const EvalSetup& s = setup();
  REQUIRE(s.n_rsna_positive > 0);
  const fs::path out = s.dir / "ground", heat = s.dir / "heatmaps";
  std::vector<std::string> base = {"--checkpoint", s.ckpt, "--books", s.books, "--csv", s.rsna_csv, "--dataset",
                                   "synthetic", "--batch", "16", "--workers", "1", "--threads", "1", "--quiet"};
  auto args = base;
  args.insert(args.end(), {"--out", out.string(), "--save-heatmaps", heat.string()});
  CmdResult r = run_cmd(ms::cmd_ground, args);
  REQUIRE_MESSAGE(r.rc == 0, r.err);
  CHECK(r.out.find("pointing chance level") != std::string::npos);
  CHECK(r.err.find("threshold 0 marks every pixel") != std::string::npos);
  json j = load_json(out / "ground.json");
  const json& m = j["metrics"];
  MESSAGE("pointing " << m["pointing"] << " (chance " << m["chance"] << "), IoU " << m["iou"] << ", Dice "
                      << m["dice"]);
  CHECK(m["positives"] == s.n_rsna_positive);
  CHECK(m["pointing"].get<double>() >= 0.0);
  CHECK(m["pointing"].get<double>() <= 1.0);
  CHECK(m["chance"].get<double>() > 0.0);
  CHECK(m["chance"].get<double>() < 1.0);
  CHECK(j["query"]["index"] == ms::kPneumoniaQuery);
  CHECK(j["threshold"] == 0.0);
  CHECK(j["checkpoint"]["sha256"] == ms::sha256_file(s.ckpt));
  CHECK(j["csv"]["sha256"] == ms::sha256_file(s.rsna_csv));
  // Threshold 0: every pixel is predicted, so IoU is the box area share (spec E.4: degenerate).
  for (const auto& im : j["images"]) CHECK(im["iou"].get<double>() == doctest::Approx(im["chance"].get<double>()));

  // Overlays: one per positive, decodable, side 512 + colour bar, named hit/miss as scored.
  REQUIRE(j["images"].size() == size_t(s.n_rsna_positive));
  for (const auto& im : j["images"]) {
    const std::string png = im["heatmap"];
    CHECK(png.find(im["hit"].get<bool>() ? "_hit.png" : "_miss.png") != std::string::npos);
    ms::Image img = ms::read_image(png);
    CHECK(img.h == 512);
    CHECK(img.w > 512);
  }

  // Per-batch normalisation divides by a positive scalar: the pointing game cannot change.
  // With the anatomy product the threshold defaults to 0.01.
  auto args2 = base;
  args2.insert(args2.end(), {"--out", (s.dir / "ground_batch").string(), "--normalize", "batch"});
  REQUIRE(run_cmd(ms::cmd_ground, args2).rc == 0);
  json j2 = load_json(s.dir / "ground_batch" / "ground.json");
  CHECK(j2["normalize"] == "batch");
  CHECK(j2["metrics"]["hits"] == m["hits"]);
  auto args3 = base;
  args3.insert(args3.end(), {"--out", (s.dir / "ground_product").string(), "--anatomy-product", "--query", "14"});
  CmdResult r3 = run_cmd(ms::cmd_ground, args3);
  REQUIRE_MESSAGE(r3.rc == 0, r3.err);
  json j3 = load_json(s.dir / "ground_product" / "ground.json");
  CHECK(j3["threshold"].get<double>() == doctest::Approx(0.01));
  CHECK(j3["query"]["name"] == "consolidation");
  CHECK(j3["metrics"]["pointing"].get<double>() >= 0.0);
  CHECK(j3["metrics"]["pointing"].get<double>() <= 1.0);

  {  // a csv without positives is a named error
    std::istringstream is(read_text(s.rsna_csv));
    std::string text, line;
    std::getline(is, line);
    text = line + "\n";
    while (std::getline(is, line))
      if (line.size() >= 2 && line.substr(line.size() - 2) == ",0") text += line + "\n";
    const std::string neg = (s.dir / "ground_negatives.csv").string();
    std::ofstream(neg) << text;
    auto a = base;
    a[5] = neg;
    a.insert(a.end(), {"--out", (s.dir / "ground_neg").string()});
    check_named_error(run_cmd(ms::cmd_ground, a), "ground_negatives.csv");
  }
}

TEST_CASE("train: predict lists 75 findings, locates the top ones, survives a bad image") {
  const EvalSetup& s = setup();
  const std::string img1 = (fs::path(s.synth) / "images" / "000010.png").string();
  const std::string img2 = (fs::path(s.synth) / "images" / "000011.png").string();
  const std::string bad = (s.dir / "not_there.png").string();
  const std::string heat = (s.dir / "predict.png").string();
  CmdResult r = run_cmd(ms::cmd_predict, {"--checkpoint", s.ckpt, "--books", s.books, img1, bad, img2, "--heatmap",
                                          heat, "--top", "3", "--threads", "1"});
  check_named_error(r, "not_there.png");
  CHECK(r.out.find("image 1/3") != std::string::npos);
  CHECK(r.out.find("image 3/3") != std::string::npos);
  CHECK(lines_with(r.out, "excluded_obs").size() == 2);  // every observation listed, for both good images
  CHECK(fs::exists(s.dir / "predict_1.png"));
  CHECK(!fs::exists(s.dir / "predict_2.png"));
  CHECK(fs::exists(s.dir / "predict_3.png"));
  ms::Image ov = ms::read_image((s.dir / "predict_3.png").string());
  CHECK(ov.h == 512);

  // The core: sorted probabilities, anatomy for the top K only.
  ms::ReferenceProblem p = ms::make_reference_problem();
  p.model->eval();
  const int64_t S = p.cfg.image_res;
  ms::Rng rng(0, 0);
  const int threads = ms::num_threads();
  ms::set_num_threads(1);
  ms::Prediction pr = ms::predict_image(*p.model, ms::test_image_fn(int(S))(img1, rng), S, 3, ms::Device::CPU);
  ms::set_num_threads(threads);
  REQUIRE(pr.findings.size() == size_t(ms::kNumPathologies));
  for (size_t k = 0; k < pr.findings.size(); ++k) {
    CHECK(pr.findings[k].probability >= 0.f);
    CHECK(pr.findings[k].probability <= 1.f);
    if (k) CHECK(pr.findings[k - 1].probability >= pr.findings[k].probability);
    CHECK((pr.findings[k].anatomy >= 0) == (k < 3));
  }
  CHECK(pr.grid * pr.grid == int64_t(pr.top_map.size()));
}

TEST_CASE("train: heatmap overlay draws the map, boxes, pointing cross and colour bar") {
  uint8_t c[3];
  ms::jet_colour(0.f, c);
  CHECK((c[0] == 0 && c[1] == 0 && c[2] == 128));
  ms::jet_colour(0.5f, c);
  CHECK((c[0] == 128 && c[1] == 255 && c[2] == 128));
  ms::jet_colour(1.f, c);
  CHECK((c[0] == 128 && c[1] == 0 && c[2] == 0));

  ms::Image grey(100, 80, 1, 100);
  std::vector<float> grid(16, 0.f);
  grid[1 * 4 + 2] = 1.f;  // row 1, column 2
  ms::Box box{0, 0, 256, 256};  // top-left quarter of the 1024 canvas
  ms::Image ov = ms::heatmap_overlay(grey, grid, 4, {box}, 1024, 256);
  REQUIRE(ov.h == 256);
  REQUIRE(ov.w > 256);
  // Cross at the centre of cell (1, 2): (2.5 * 64, 1.5 * 64) = (160, 96), magenta.
  CHECK((ov.at(96, 160, 0) == 255 && ov.at(96, 160, 1) == 0 && ov.at(96, 160, 2) == 255));
  // Box edge (white) at x = 0..1 along y = 30.
  CHECK((ov.at(30, 0, 0) == 255 && ov.at(30, 0, 1) == 255 && ov.at(30, 0, 2) == 255));
  // A zero cell: grey 100 blended with jet(0) at opacity 0.15.
  CHECK(ov.at(200, 200, 0) == 85);
  CHECK(ov.at(200, 200, 2) == std::lround(0.85 * 100 + 0.15 * 128));
  // Colour bar: hot at the top right, cold at the bottom right.
  CHECK(ov.at(0, ov.w - 1, 0) == 128);
  CHECK(ov.at(255, ov.w - 1, 2) == 128);
  CHECK_THROWS_AS(ms::heatmap_overlay(grey, grid, 3), std::invalid_argument);

  // Layer mean: (w1 + w2) / 2.
  ms::Tensor a = ms::Tensor::from_vector({0.2f, 0.8f}, {1, 1, 2}), b = ms::Tensor::from_vector({0.6f, 0.4f}, {1, 1, 2});
  auto mean = ms::mean_layer_attention({a, b});
  CHECK(mean[0] == doctest::Approx(0.4f));
  CHECK(mean[1] == doctest::Approx(0.6f));
  CHECK(ms::patch_grid(196) == 14);
  CHECK_THROWS_AS(ms::patch_grid(15), std::invalid_argument);
}
