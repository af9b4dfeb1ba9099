// End to end: real IU X-ray reports -> medslip triplets -> pretrain, with synthetic phantoms as
// stand-in images (the IU set ships no images here). Checks that `pretrain` reads what
// `triplets` writes, as it is, and trains on it.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "data/datasets.h"
#include "data/report_triplets.h"
#include "data/synth.h"
#include "engine/rng.h"
#include "model/books.h"
#include "tests/test_util.h"
#include "train/pretrain.h"

using namespace ms;
namespace fs = std::filesystem;

TEST_CASE("train: IU reports -> medslip triplets -> pretrain loads and trains (synthetic stand-in images)") {
  const fs::path iu = test::shared_dir() / "data" / "reports" / "iu_xray_reports.csv";
  if (!fs::exists(iu)) {
    MESSAGE("skipped: " << iu << " absent");
    return;
  }
  const fs::path dir = test::scratch_dir("triplets_pretrain");
  // The first 40 IU reports, as they are.
  CsvTable t = read_csv(iu.string());
  {
    std::ofstream f(dir / "reports.csv", std::ios::binary);
    for (size_t c = 0; c < t.header.size(); ++c) f << (c ? "," : "") << csv_field(t.header[c]);
    f << "\n";
    for (size_t r = 0; r < 40; ++r) {
      for (size_t c = 0; c < t.header.size(); ++c) f << (c ? "," : "") << csv_field(t.rows[r][c]);
      f << "\n";
    }
  }
  TripletsOptions o;
  o.reports_csv = (dir / "reports.csv").string();
  o.text_columns = {"findings", "impression"};
  o.id_column = "report_id";
  o.image_column = "image_ids";
  o.image_template = "images/{}.png";
  o.out_dir = (dir / "iu").string();
  TripletsSummary s = write_report_triplets(o);
  CHECK(s.n_reports == 40);
  CHECK(s.n_images > 40);  // most IU reports have a frontal and a lateral image

  // Stand-in images: synthetic phantoms under the IU image names.
  SynthOptions so;
  so.out_dir = (dir / "synth").string();
  so.n = 8;
  so.size = 64;
  write_synth_dataset(so);
  fs::create_directories(dir / "iu" / "images");
  int k = 0;
  for (const char* split : {"train.json", "valid.json", "test.json"}) {
    std::ifstream f(dir / "iu" / split);
    nlohmann::json j = nlohmann::json::parse(f);
    for (auto it = j.begin(); it != j.end(); ++it, ++k) {
      char src[64];
      std::snprintf(src, sizeof src, "images/%06d.png", k % 8);
      fs::copy_file(dir / "synth" / src, dir / "iu" / it.key());
    }
  }
  test::write_random_books(dir / "books.safetensors", 32, 3);

  PretrainOptions p;
  p.cfg.res_base_model = "resnet18";
  p.cfg.image_res = 64;
  p.cfg.N = 1;
  p.cfg.batch_size = 4;
  p.cfg.train_file = (dir / "iu" / "train.json").string();
  p.cfg.valid_file = (dir / "iu" / "valid.json").string();
  p.cfg.label_file = (dir / "iu" / "landmark_observation_adj_mtx.npy").string();
  p.cfg.books = (dir / "books.safetensors").string();
  p.cfg.epochs = 1;
  p.cfg.max_steps_per_epoch = 2;
  p.cfg.num_workers = 1;
  p.out_dir = (dir / "run").string();
  p.quiet = true;
  PretrainResult res = run_pretrain(p);
  REQUIRE(res.losses.size() == 2);
  for (const auto& l : res.losses) CHECK(std::isfinite(l.total));
  CHECK(fs::exists(dir / "run" / kCheckpointLast));
}
