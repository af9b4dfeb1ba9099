// The main job end to end, small: synthesise a few dozen images, a few pretraining steps,
// zero-shot classification and grounding on the checkpoint that pretraining wrote — the same
// chain as `make demo`, so CI guards it — ending, like the demo, with the run report.
#include <doctest/doctest.h>

#include <filesystem>

#include "data/synth.h"
#include "engine/threads.h"
#include "model/books.h"
#include "train/eval.h"
#include "train/pretrain.h"
#include "train/report.h"

#include "tests/test_util.h"

using namespace ms;
namespace fs = std::filesystem;

TEST_CASE("train: pipeline smoke run (synth -> pretrain -> zeroshot -> ground)") {
  const fs::path dir = fs::temp_directory_path() / "medslip_test_pipeline";
  fs::remove_all(dir);
  fs::create_directories(dir);
  SynthOptions so;
  so.out_dir = (dir / "data").string();
  so.n = 48;
  so.size = 64;
  so.seed = 3;
  SynthReport sr = write_synth_dataset(so);
  REQUIRE(sr.n_test > 0);

  // random books keep the test independent of the installed text encoder
  const std::string books = (dir / "books.safetensors").string();
  test::write_random_books(books, 32, 1);

  PretrainOptions po;
  po.cfg.res_base_model = "resnet18";
  po.cfg.image_res = 64;
  po.cfg.N = 1;
  po.cfg.batch_size = 8;
  po.cfg.train_file = so.out_dir + "/train.json";
  po.cfg.valid_file = so.out_dir + "/valid.json";
  po.cfg.label_file = so.out_dir + "/landmark_observation_adj_mtx.npy";
  po.cfg.books = books;
  po.cfg.epochs = 1;
  po.cfg.max_steps_per_epoch = 3;
  po.out_dir = (dir / "run").string();
  po.quiet = true;
  PretrainResult pr = run_pretrain(po);
  REQUIRE(pr.losses.size() == 3);
  CHECK(pr.finished);
  CHECK(pr.losses.back().total < pr.losses.front().total);  // the first steps drop the ICL term fast

  ZeroshotOptions zo;
  zo.model.checkpoint = pr.checkpoint;
  zo.model.books = books;
  zo.model.threads = 1;
  zo.csv = so.out_dir + "/cxr14_test.csv";
  zo.dataset = "synthetic";
  zo.out_dir = po.out_dir;
  zo.progress = false;
  ZeroshotReport zr = run_zeroshot(zo);
  CHECK(zr.paths.size() == size_t(sr.n_test));
  CHECK(fs::exists(zr.json_path));
  CHECK(zr.result.mean_auc >= 0.0);
  CHECK(zr.result.mean_auc <= 1.0);

  GroundOptions go;
  go.model = zo.model;
  go.csv = so.out_dir + "/rsna_test.csv";
  go.dataset = "synthetic";
  go.out_dir = po.out_dir;
  go.heatmap_dir = (dir / "heatmaps").string();
  go.progress = false;
  GroundReport gr = run_ground(go);
  CHECK(gr.result.pointing >= 0.0);
  CHECK(gr.result.pointing <= 1.0);
  CHECK(gr.result.chance > 0.0);
  CHECK(fs::exists(gr.json_path));
  CHECK(!gr.images.empty());
  CHECK(fs::exists(gr.images[0].heatmap));

  // The report of the run: every part present (no notes), ROC included, every overlay inlined.
  ReportOptions ro;
  ro.run_dir = po.out_dir;
  ReportResult rep = write_report(ro);
  CHECK(rep.notes.empty());
  CHECK(rep.figures.size() == 9);  // 6 loss terms, lr, images/s, ROC
  CHECK(rep.images >= int(std::min<size_t>(gr.images.size(), 8)) + 1);  // overlays + attention
  CHECK(fs::exists(fs::path(po.out_dir) / "report.html"));
}
