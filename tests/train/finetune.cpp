// Fine-tuning (spec E.5, E.6): metrics against the reference's metric.py, the data side
// (subsets, OpenCV resizes, transforms), a smoke run of both tasks on tiny generated data
// (seconds), bit-identical --resume, and the one-line errors for bad input.
#include <doctest/doctest.h>
#include <map>

#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "data/finetune_data.h"
#include "data/image.h"
#include "engine/io.h"
#include "engine/nn_state.h"
#include "tests/test_util.h"
#include "train/finetune.h"
#include "train/hash.h"
#include "train/metrics.h"
#include "train/run_record.h"

using namespace ms;
namespace fs = std::filesystem;

namespace {

std::string write_tiny_set(const std::string& name) { return test::write_tiny_finetune_set(name); }
FinetuneConfig tiny_config(const std::string& root, const std::string& task) { return test::tiny_finetune_config(root, task); }

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("train: finetune Dice and mIoU equal the reference's metric.py") {
  auto path = test::fixture("finetune_ref.safetensors");
  REQUIRE_MESSAGE(fs::exists(path), "missing fixture " << path << " (run make fixtures)");
  auto ref = load_safetensors_raw(path.string());
  const FileTensor& p = ref.at("metric.prob");
  const int64_t n = p.shape[0];
  SegmentationResult r = segmentation_scores(p.to_float_vector(), ref.at("metric.truth").to_float_vector(), n);
  auto d = ref.at("metric.dice").to_f64();  // dice, dice_neg, dice_pos, num_neg, num_pos
  CHECK(r.dice == doctest::Approx(d[0]).epsilon(1e-6));
  CHECK(r.dice_neg == doctest::Approx(d[1]).epsilon(1e-6));
  CHECK(r.dice_pos == doctest::Approx(d[2]).epsilon(1e-6));
  CHECK(r.num_neg == int64_t(d[3]));
  CHECK(r.num_pos == int64_t(d[4]));
  CHECK(r.miou == doctest::Approx(ref.at("metric.miou").to_f64()[0]).epsilon(1e-6));
  MESSAGE("dice " << r.dice << " vs " << d[0] << ", mIoU " << r.miou << " vs " << ref.at("metric.miou").to_f64()[0]);
  // The empty-mask rule: an empty truth scores 1 with an empty prediction, else 0.
  CHECK(r.dice_per_image[0] == 0.0);
  CHECK(r.dice_per_image[1] == 1.0);
}

TEST_CASE("data: finetune subsets are seeded, sized int(p*n) and sorted; the holdout is disjoint") {
  auto a = finetune_subset(600, 0.1, 0), b = finetune_subset(600, 0.1, 0), c = finetune_subset(600, 0.1, 1);
  CHECK(a.size() == 60);
  CHECK(a == b);
  CHECK(a != c);
  CHECK(std::is_sorted(a.begin(), a.end()));
  CHECK(finetune_subset(7, 1.0, 3).size() == 7);
  CHECK(finetune_subset(250, 0.01, 0).size() == 2);  // int(0.01 * 250)
  CHECK_THROWS_WITH(finetune_subset(50, 0.01, 0), doctest::Contains("keeps none"));
  auto [t, v] = holdout_split(100, 0.15, 0);
  CHECK(v.size() == 15);
  CHECK(t.size() == 85);
  std::vector<int64_t> all;
  std::merge(t.begin(), t.end(), v.begin(), v.end(), std::back_inserter(all));
  for (int64_t i = 0; i < 100; ++i) CHECK(all[size_t(i)] == i);
}

TEST_CASE("data: cv_resize follows OpenCV (INTER_NEAREST floor, INTER_LINEAR half-pixel, INTER_AREA averages)") {
  Image row(2, 1, 1);
  row.px = {0, 100};
  Image up = cv_resize(row, 4, 1, CvInterp::kLinear);
  CHECK(std::vector<int>(up.px.begin(), up.px.end()) == std::vector<int>{0, 25, 75, 100});  // cv2.resize output
  Image nn = cv_resize(row, 4, 1, CvInterp::kNearest);
  CHECK(std::vector<int>(nn.px.begin(), nn.px.end()) == std::vector<int>{0, 0, 100, 100});
  Image sq(4, 4, 1);
  for (int i = 0; i < 16; ++i) sq.px[size_t(i)] = uint8_t(i * 10);
  Image half = cv_resize(sq, 2, 2, CvInterp::kArea);  // 2x2 block means: (0+10+40+50)/4 = 25, ...
  CHECK(std::vector<int>(half.px.begin(), half.px.end()) == std::vector<int>{25, 45, 105, 125});
  Image same = cv_resize(sq, 4, 4, CvInterp::kLinear);
  CHECK(same.px == sq.px);
  // Enlarging with INTER_AREA: OpenCV's area-weighted linear taps, which replicate at integer factors.
  Image area_up = cv_resize(row, 4, 1, CvInterp::kArea);
  CHECK(std::vector<int>(area_up.px.begin(), area_up.px.end()) == std::vector<int>{0, 0, 100, 100});  // integer factors replicate
}

TEST_CASE("train: finetune classify smoke run (ResNet-18, 64 px): validation-chosen best, test outputs, record") {
  const std::string root = write_tiny_set("ft_cls_data");
  FinetuneOptions o;
  o.cfg = tiny_config(root, "classify");
  o.cfg.max_steps_per_epoch = 2;
  o.out_dir = test::scratch_dir("ft_cls_run").string();
  o.quiet = true;
  FinetuneResult r = run_finetune(o);
  CHECK(r.finished);
  CHECK(r.losses.size() == 4);
  for (float l : r.losses) CHECK(std::isfinite(l));
  CHECK(r.best_epoch >= 0);
  CHECK(fs::exists(o.out_dir + "/checkpoint_best.safetensors"));
  CHECK(fs::exists(o.out_dir + "/test/predictions.csv"));
  REQUIRE(r.test.contains("mean"));
  CHECK(r.test["images"] == 4);
  const double auc = r.test["mean"]["auc"].get<double>();
  CHECK(auc >= 0.0);
  CHECK(auc <= 1.0);
  auto meta = safetensors_metadata(o.out_dir + "/checkpoint_best.safetensors");
  CHECK(meta["task"] == "classify");
  CHECK(FinetuneConfig::from_yaml_string(meta["finetune_config"]).image_res == 64);
  auto rec = RunRecord::load(o.out_dir);
  CHECK(rec["job"] == "finetune");
  CHECK(rec["train_images"] == 6);  // 8 train rows minus the 25 % validation carve-out
  CHECK(rec["valid_images"] == 2);
  CHECK(rec.contains("test"));
  // The validation metric of each epoch reaches metrics.jsonl (and TensorBoard's valid/mean_auc)
  // with the value valid.jsonl gives for that epoch.
  std::map<int, double> valid_auc;
  std::ifstream vf(o.out_dir + "/valid.jsonl");
  for (std::string line; std::getline(vf, line);) {
    auto j = nlohmann::json::parse(line);
    valid_auc[j["epoch"].get<int>()] = j["value"].get<double>();
  }
  REQUIRE(!valid_auc.empty());
  int epochs_seen = 0;
  std::ifstream mf(o.out_dir + "/metrics.jsonl");
  for (std::string line; std::getline(mf, line);) {
    auto j = nlohmann::json::parse(line);
    if (j.value("type", "") != "epoch") continue;
    ++epochs_seen;
    REQUIRE(j.contains("metrics"));
    CHECK(j["metrics"]["mean_auc"].get<double>() == valid_auc.at(j["epoch"].get<int>()));
  }
  CHECK(epochs_seen == int(valid_auc.size()));
  bool events = false;
  for (const auto& e : fs::directory_iterator(o.out_dir))
    events |= e.path().filename().string().rfind("events.out.tfevents.", 0) == 0;
  CHECK(events);
}

TEST_CASE("train: finetune --resume continues bit for bit (classify, ResNet-18)") {
  const std::string root = write_tiny_set("ft_resume_data");
  FinetuneOptions a;
  a.cfg = tiny_config(root, "classify");
  a.cfg.max_steps_per_epoch = 2;
  a.cfg.split_column = "";
  a.cfg.test_file = "";
  a.out_dir = test::scratch_dir("ft_resume_a").string();
  a.quiet = true;
  FinetuneResult ra = run_finetune(a);
  FinetuneOptions b = a;
  b.out_dir = test::scratch_dir("ft_resume_b").string();
  b.stop_after_steps = 3;  // mid-epoch 1
  FinetuneResult rb1 = run_finetune(b);
  CHECK_FALSE(rb1.finished);
  b.stop_after_steps = -1;
  b.resume = b.out_dir;
  FinetuneResult rb2 = run_finetune(b);
  CHECK(rb2.finished);
  std::vector<float> joined = rb1.losses;
  joined.insert(joined.end(), rb2.losses.begin(), rb2.losses.end());
  REQUIRE(joined.size() == ra.losses.size());
  for (size_t i = 0; i < joined.size(); ++i) CHECK(joined[i] == ra.losses[i]);  // bitwise
  CHECK(sha256_file(a.out_dir + "/checkpoint_last.safetensors") == sha256_file(b.out_dir + "/checkpoint_last.safetensors"));
  CHECK(sha256_file(a.out_dir + "/checkpoint_best.safetensors") == sha256_file(b.out_dir + "/checkpoint_best.safetensors"));
}

TEST_CASE("train: finetune segment smoke run (ResNet-18 U-Net, 64 px): Dice, mask PNGs, overlays") {
  const std::string root = write_tiny_set("ft_seg_data");
  FinetuneOptions o;
  o.cfg = tiny_config(root, "segment");
  o.cfg.epochs = 1;
  o.cfg.max_steps_per_epoch = 2;
  o.out_dir = test::scratch_dir("ft_seg_run").string();
  o.quiet = true;
  FinetuneResult r = run_finetune(o);
  CHECK(r.finished);
  REQUIRE(r.test.contains("dice"));
  CHECK(r.test["images"] == 4);
  CHECK(r.test["num_pos"].get<int>() + r.test["num_neg"].get<int>() == 4);
  int pngs = 0;
  for (auto& e : fs::directory_iterator(o.out_dir + "/test/overlays")) pngs += e.path().extension() == ".png";
  CHECK(pngs == 2);
  Image m = read_image(o.out_dir + "/test/masks/" + fs::directory_iterator(o.out_dir + "/test/masks")->path().filename().string());
  CHECK(m.w == 64);
}

TEST_CASE("train: finetune bad input gives one-line errors naming the file, key or row") {
  const std::string root = write_tiny_set("ft_bad_data");
  // A label that is not 0/1: the file, the line and the column.
  {
    std::ofstream f(root + "/badlabel.csv");
    f << "image_path,finding\nimages/im0.png,1\nimages/im1.png,2\n";
  }
  FinetuneCsvOptions co;
  co.label_columns = {"finding"};
  std::string e = error_of([&] { FinetuneDataset(root + "/badlabel.csv", co); });
  CHECK(e.find("badlabel.csv: line 3, column 'finding': label '2' is not 0 or 1") != std::string::npos);
  // A missing image: the csv, its line and the path.
  {
    std::ofstream f(root + "/missing.csv");
    f << "image_path,finding\nimages/im0.png,1\nimages/nope.png,0\n";
  }
  e = error_of([&] { FinetuneDataset(root + "/missing.csv", co).check_files(); });
  CHECK(e.find("missing.csv: line 3: image") != std::string::npos);
  CHECK(e.find("nope.png' does not exist") != std::string::npos);
  // An empty mask cell (csv fuzz finding: it loaded as a sample without a mask, i.e. an
  // all-background segmentation target) and, with file_name_only, a path with no file name.
  {
    std::ofstream f(root + "/emptymask.csv");
    f << "image_path,mask\nimages/im0.png,masks/m0.png\nimages/im1.png,\nimages/im2.png,masks/\n";
  }
  FinetuneCsvOptions mo;
  mo.mask_column = "mask";
  e = error_of([&] { FinetuneDataset(root + "/emptymask.csv", mo); });
  CHECK(e.find("emptymask.csv: line 3: empty 'mask'") != std::string::npos);
  {
    std::ofstream f(root + "/emptymask.csv");
    f << "image_path,mask\nimages/im0.png,masks/m0.png\nimages/im2.png,masks/\n";
  }
  CHECK_NOTHROW(FinetuneDataset(root + "/emptymask.csv", mo));  // the whole path: a folder, refused when read
  mo.file_name_only = true;
  e = error_of([&] { FinetuneDataset(root + "/emptymask.csv", mo); });
  CHECK(e.find("emptymask.csv: line 3: 'mask' value 'masks/' has no file name") != std::string::npos);
  // A missing column: the file and the column.
  co.label_columns = {"pneumothorax"};
  e = error_of([&] { FinetuneDataset(root + "/missing.csv", co); });
  CHECK(e.find("pneumothorax") != std::string::npos);
  CHECK(e.find("missing.csv") != std::string::npos);
  // A mask of another size than its image: both files and both sizes.
  {
    Image small(32, 32, 1);
    write_png(root + "/masks/small.png", small);
    FinetuneItem it;
    it.image = root + "/images/im0.png";
    it.mask = root + "/masks/small.png";
    it.row = 4;
    Rng rng(1, 0);
    FinetuneTransformOptions t;
    t.task = FinetuneTask::kSegment;
    t.size = 64;
    e = error_of([&] { load_finetune_sample(it, t, false, rng); });
    CHECK(e.find("small.png' is 32x32, its image '") != std::string::npos);
    CHECK(e.find("im0.png' is 64x64") != std::string::npos);
    CHECK(e.find("csv line 6: ") == 0);
  }
  // A checkpoint with no matching keys: the file.
  {
    const std::string ck = root + "/unrelated.safetensors";
    save_safetensors(ck, std::map<std::string, FileTensor>{{"foo.weight", FileTensor::from_float(Tensor::zeros({2}))}});
    FinetuneModelConfig mc;
    mc.arch = "resnet18";
    FinetuneClassifier m(mc, 1);
    e = error_of([&] { init_from_checkpoint(m, ck); });
    CHECK(e.find("unrelated.safetensors: no tensor name matches the model") != std::string::npos);
    CHECK(e.find("foo.weight") != std::string::npos);
  }
  // A config key with a bad value names the key.
  e = error_of([&] { FinetuneConfig::from_yaml_string("task: detect\nlabel_columns: [a]\n", "c.yaml"); });
  CHECK(e.find("c.yaml: key 'task'") != std::string::npos);
  e = error_of([&] { FinetuneConfig::from_yaml_string("task: classify\nlabel_columns: [a]\nimage_res: 100\n", "c.yaml"); });
  CHECK(e.find("key 'image_res': must be a positive multiple of 32") != std::string::npos);
}

TEST_CASE("train: finetune CLI bad input: one line on stderr naming the file or row, exit 1") {
  const fs::path exe = fs::read_symlink("/proc/self/exe").parent_path() / "medslip";
  if (!fs::exists(exe)) {
    MESSAGE("skipping: " << exe << " is not built");
    return;
  }
  const std::string root = write_tiny_set("ft_cli_bad");
  auto edit_csv = [&](const std::string& name, int row, int col, const std::string& value) {
    std::ifstream in(root + "/tiny.csv");
    std::ofstream out(root + "/" + name);
    std::string line;
    for (int r = -1; std::getline(in, line); ++r) {
      if (r == row) {
        std::vector<std::string> f;
        std::stringstream ss(line);
        for (std::string c; std::getline(ss, c, ',');) f.push_back(c);
        f[size_t(col)] = value;
        line = f[0] + "," + f[1] + "," + f[2] + "," + f[3];
      }
      out << line << "\n";
    }
  };
  edit_csv("badlabel.csv", 3, 2, "2");                    // csv line 5
  edit_csv("missing.csv", 5, 0, "images/nope.png");       // csv line 7
  write_png(root + "/masks/small.png", Image(32, 32, 1));
  edit_csv("badmask.csv", 9, 1, "masks/small.png");       // a test row: found when the test loads it
  save_safetensors(root + "/unrelated.safetensors",
                   std::map<std::string, FileTensor>{{"foo.weight", FileTensor::from_float(Tensor::zeros({2}))}});
  auto config = [&](const std::string& csv, const std::string& task) {
    const std::string p = root + "/" + csv + "." + task + ".yaml";
    std::ofstream f(p);
    f << "task: " << task << "\nres_base_model: resnet18\nimage_res: 64\ntrain_file: " << root << "/" << csv
      << "\nsplit_column: split\nvalid_fraction: 0.25\n"
      << (task == "classify" ? "label_columns: [finding]\n" : "mask_column: mask_path\n")
      << "batch_size: 2\ntest_batch_size: 4\nnum_workers: 0\nmax_steps_per_epoch: 1\n"
         "schedular: {sched: cosine, epochs: 1}\n";
    return p;
  };
  struct Case {
    std::string args, want;
  };
  const std::vector<Case> cases = {
      {"--config " + config("badlabel.csv", "classify"), "badlabel.csv: line 5, column 'finding': label '2' is not 0 or 1"},
      {"--config " + config("missing.csv", "classify"), "missing.csv: line 7: image '"},
      {"--config " + config("badmask.csv", "segment"), "small.png' is 32x32, its image '"},
      {"--config " + config("tiny.csv", "classify") + " --init " + root + "/unrelated.safetensors",
       "unrelated.safetensors: no tensor name matches the model"},
  };
  int k = 0;
  for (const auto& c : cases) {
    CAPTURE(c.args);
    const std::string err = root + "/err" + std::to_string(k) + ".txt";
    const std::string cmd = exe.string() + " finetune " + c.args + " --out " + root + "/run" + std::to_string(k++) +
                            " --quiet >/dev/null 2>" + err;
    const int st = std::system(cmd.c_str());
    std::ifstream f(err);
    const std::string text((std::istreambuf_iterator<char>(f)), {});
    CHECK(WIFEXITED(st));
    CHECK(WEXITSTATUS(st) == 1);
    CHECK_MESSAGE(std::count(text.begin(), text.end(), '\n') == 1, "not one line: " << text);
    CHECK_MESSAGE(text.find(c.want) != std::string::npos, text);
  }
}
