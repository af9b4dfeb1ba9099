// The tiny training setups of tests/test_util.h.
#include "tests/test_util.h"

#include <sys/wait.h>

#include <cstdio>
#include <fstream>

#include "data/image.h"
#include "data/synth.h"
#include "engine/rng.h"
#include "model/books.h"
#include "model/config.h"
#include "train/finetune.h"

namespace fs = std::filesystem;

namespace ms::test {

void write_random_books(const fs::path& file, int64_t width, uint64_t seed) {
  Books b;
  Rng r(seed, 11);
  b.pathology = Tensor::empty({75, width});
  b.anatomy = Tensor::empty({51, width});
  r.fill_normal(b.pathology.data(), b.pathology.numel());
  r.fill_normal(b.anatomy.data(), b.anatomy.numel());
  save_books(file.string(), b);
}

void write_tiny_pretrain_set(const fs::path& dir, int n, int size, int64_t books_width) {
  if (fs::exists(dir / "books.safetensors")) return;
  fs::create_directories(dir);
  SynthOptions so;
  so.out_dir = (dir / "data").string();
  so.n = n;
  so.size = size;
  so.seed = 5;
  write_synth_dataset(so);
  write_random_books(dir / "books.safetensors", books_width);
}

MedslipConfig tiny_pretrain_config(const fs::path& dir, int image_res, int batch_size) {
  MedslipConfig c;
  c.res_base_model = "resnet18";
  c.image_res = image_res;
  c.N = 1;
  c.batch_size = batch_size;
  c.train_file = (dir / "data/train.json").string();
  c.valid_file = (dir / "data/valid.json").string();
  c.label_file = (dir / "data/landmark_observation_adj_mtx.npy").string();
  c.books = (dir / "books.safetensors").string();
  c.epochs = 2;
  c.warmup_epochs = 1;
  c.warmup_iters_per_step = 2;
  c.num_workers = 1;
  c.seed = 9;
  return c;
}

std::string write_tiny_finetune_set(const std::string& name, int n, int size) {
  const fs::path root = scratch_dir(name);
  fs::create_directories(root / "images");
  fs::create_directories(root / "masks");
  std::ofstream csv(root / "tiny.csv");
  csv << "image_path,mask_path,finding,split\n";
  Rng rng(3, 0);
  const float scale = float(size) / 64.f;
  for (int k = 0; k < n; ++k) {
    Image img(size, size, 1), mask(size, size, 1);
    const bool has = k % 2 == 0;
    const float cy = (20.f + 2.f * float(k % 12)) * scale, cx = (24.f + float(k % 12)) * scale, r = (9.f + float(k % 3)) * scale;
    for (int y = 0; y < size; ++y)
      for (int x = 0; x < size; ++x) {
        float v = 60.f + 80.f * float(y) / float(size - 1) + 20.f * rng.uniform();
        if (has && (float(x) - cx) * (float(x) - cx) + (float(y) - cy) * (float(y) - cy) < r * r) {
          v += 90.f;
          mask.at(y, x, 0) = 255;
        }
        img.at(y, x, 0) = uint8_t(std::min(255.f, v));
      }
    const std::string file = "im" + std::to_string(k) + ".png";
    write_png((root / "images" / file).string(), img);
    write_png((root / "masks" / file).string(), mask);
    csv << "images/" << file << ",masks/" << file << "," << (has ? 1 : 0) << "," << (3 * k < 2 * n ? "train" : "test") << "\n";
  }
  return root.string();
}

FinetuneConfig tiny_finetune_config(const std::string& root, const std::string& task, int image_res) {
  FinetuneConfig c;
  c.task = task;
  c.res_base_model = "resnet18";
  c.image_res = image_res;
  c.train_file = root + "/tiny.csv";
  c.split_column = "split";
  c.valid_fraction = 0.25f;
  if (task == "classify") c.label_columns = {"finding"};
  else c.mask_column = "mask_path";
  c.batch_size = 2;
  c.test_batch_size = 4;
  c.num_workers = 0;
  c.seed = 5;
  c.lr = c.min_lr = c.warmup_lr = 1e-4f;
  c.warmup_epochs = 0;
  c.epochs = 2;
  c.sample_outputs = 2;
  return c;
}

int sh(const std::string& cmd, std::string* out) {
  const std::string full = cmd + " 2>&1";
  FILE* p = popen(full.c_str(), "r");
  REQUIRE(p);
  std::string text;
  char buf[4096];
  while (size_t k = fread(buf, 1, sizeof buf, p)) text.append(buf, k);
  const int st = pclose(p);
  if (out) *out = text;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

}  // namespace ms::test
