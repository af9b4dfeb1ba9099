// Pretraining: same seed, same losses; stop + --resume gives the uninterrupted loss curve
// bit for bit; the reproducibility record reproduces; bad configs give named errors.
#include <doctest/doctest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "engine/io.h"
#include "model/config.h"
#include "tests/test_util.h"
#include "train/pretrain.h"
#include "train/run_record.h"

using namespace ms;
namespace fs = std::filesystem;

namespace ms::test {
// tests/train/tensorboard.cpp: the run's TensorBoard events against metrics.jsonl, and its report.
void check_run_events(const std::string& run_dir, const std::vector<float>& step_totals);
}  // namespace ms::test

namespace {

// A small synthetic set, random books and a config that runs a step in well under a second.
MedslipConfig tiny_setup(const fs::path& dir) {
  test::write_tiny_pretrain_set(dir, 40, 64, 32);
  MedslipConfig c = test::tiny_pretrain_config(dir, 64, 4);
  c.epochs = 3;
  c.max_steps_per_epoch = 3;
  c.num_workers = 2;
  return c;
}

bool same(const std::vector<StepLosses>& a, const std::vector<StepLosses>& b) {
  if (a.size() != b.size()) return false;
  return std::memcmp(a.data(), b.data(), a.size() * sizeof(StepLosses)) == 0;
}

}  // namespace

TEST_CASE("train: pretrain resumes bit for bit and the record reproduces") {
  const fs::path base = fs::temp_directory_path() / "medslip_test_pretrain";
  fs::remove_all(base);
  fs::create_directories(base);
  MedslipConfig cfg = tiny_setup(base);

  PretrainOptions a;
  a.cfg = cfg;
  a.out_dir = (base / "straight").string();
  a.max_epochs = 2;
  a.quiet = true;
  PretrainResult full = run_pretrain(a);
  REQUIRE(full.losses.size() == 6);
  for (auto& l : full.losses) CHECK(std::isfinite(l.total));
  {
    std::vector<float> totals;
    for (auto& l : full.losses) totals.push_back(l.total);
    test::check_run_events(a.out_dir, totals);
  }

  // The same run interrupted after 4 steps (mid-epoch 1), then resumed.
  PretrainOptions b = a;
  b.out_dir = (base / "interrupted").string();
  b.stop_after_steps = 4;
  PretrainResult first = run_pretrain(b);
  CHECK(first.losses.size() == 4);
  PretrainOptions c = a;
  c.out_dir = b.out_dir;
  c.resume = b.out_dir;
  c.max_epochs = 1;  // finishes epoch 1 (started at epoch 1 batch 1)
  PretrainResult rest = run_pretrain(c);
  std::vector<StepLosses> joined = first.losses;
  joined.insert(joined.end(), rest.losses.begin(), rest.losses.end());
  CHECK_MESSAGE(same(joined, full.losses), "resumed losses differ from the uninterrupted run");
  CHECK(rest.global_step == 6);

  // Same seed twice: identical; and the epoch weight hashes agree across the two runs.
  auto ra = RunRecord::load(a.out_dir), rb = RunRecord::load(b.out_dir);
  REQUIRE(ra["epochs"].size() == 2);
  REQUIRE(rb["epochs"].size() == 2);
  CHECK(ra["epochs"][1]["weights_sha256"] == rb["epochs"][1]["weights_sha256"]);
  CHECK(ra["train_images_sha256"] == rb["train_images_sha256"]);
  CHECK(ra["epochs"][0].contains("valid"));

  // medslip verify --run re-runs epoch 0 and finds the same weights.
  CHECK(verify_run(a.out_dir, 1) == 0);

  // A checkpoint loads back into a model by the official names.
  auto meta = safetensors_metadata(a.out_dir + "/" + kCheckpointLast);
  CHECK(meta.at("epoch") == "2");
  CHECK(meta.count("config"));
}

TEST_CASE("train: pretrain errors name the key or file") {
  const fs::path base = fs::temp_directory_path() / "medslip_test_pretrain_err";
  fs::remove_all(base);
  fs::create_directories(base);
  MedslipConfig cfg = tiny_setup(fs::temp_directory_path() / "medslip_test_pretrain");
  PretrainOptions o;
  o.cfg = cfg;
  o.out_dir = (base / "run").string();
  o.quiet = true;
  o.cfg.train_file = "";
  CHECK_THROWS_WITH(run_pretrain(o), doctest::Contains("'train_file'"));
  o.cfg = cfg;
  o.cfg.batch_size = 1000;
  CHECK_THROWS_WITH(run_pretrain(o), doctest::Contains("fewer than batch_size 1000"));
  o.cfg = cfg;
  o.cfg.books = (base / "nope.safetensors").string();
  CHECK_THROWS_WITH(run_pretrain(o), doctest::Contains("nope.safetensors"));
  o.cfg = cfg;
  o.resume = (base / "missing").string();
  CHECK_THROWS_WITH(run_pretrain(o), doctest::Contains("no checkpoint"));
}
