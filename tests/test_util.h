// defines: helpers shared by the test suites — where ../shared and the fixtures are,
// compare(), which prints rel-L2 / max-abs / worst index / share of tolerance used
// (llm.c's check_tensor, doctest-ified) and then CHECKs, and the tiny training setups the
// train: suites share (defined in tests/test_util.cpp, so this header stays light).
#pragma once
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace ms {
struct MedslipConfig;   // model/config.h
struct FinetuneConfig;  // train/finetune.h
}  // namespace ms

namespace ms::test {

// $MEDSLIP_SHARED, else ../shared beside the checkout (tests run from the repo root).
inline std::filesystem::path shared_dir() {
  if (const char* e = std::getenv("MEDSLIP_SHARED"); e && *e) return e;
  return std::filesystem::current_path() / ".." / "shared";
}
inline bool have_shared() { return std::filesystem::exists(shared_dir() / "spec"); }
inline std::filesystem::path fixture(const std::string& name) {
  return std::filesystem::current_path() / "tests" / "fixtures" / name;
}
// A scratch directory under the system temp dir, emptied on creation.
inline std::filesystem::path scratch_dir(const std::string& name) {
  auto p = std::filesystem::temp_directory_path() / ("medslip_test_" + name);
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p;
}

struct CompareResult {
  double rel_l2 = 0, max_abs = 0;
  int64_t worst = -1;
};

inline CompareResult compare_values(const std::vector<float>& ours, const std::vector<float>& ref) {
  CompareResult r;
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size() && i < ours.size(); ++i) {
    double d = double(ours[i]) - double(ref[i]);
    num += d * d;
    den += double(ref[i]) * double(ref[i]);
    if (std::fabs(d) > r.max_abs || std::isnan(d)) { r.max_abs = std::fabs(d); r.worst = int64_t(i); }
  }
  r.rel_l2 = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  return r;
}

// Relative L2 error ||ours - ref|| / ||ref|| against `tol`; prints one line either way.
inline bool compare(const std::string& name, const Tensor& ours, const Tensor& ref, double tol, bool verbose = true) {
  if (ours.shape() != ref.shape()) {
    FAIL_CHECK(name << ": shape " << shape_str(ours.shape()) << " vs reference " << shape_str(ref.shape()));
    return false;
  }
  auto a = ours.to_vector(), b = ref.to_vector();
  CompareResult r = compare_values(a, b);
  bool ok = r.rel_l2 <= tol && std::isfinite(r.rel_l2);
  if (verbose || !ok) {
    std::string worst = r.worst >= 0 ? " worst[" + std::to_string(r.worst) + "]=" + std::to_string(a[size_t(r.worst)]) +
                                           " vs " + std::to_string(b[size_t(r.worst)])
                                     : "";
    MESSAGE(name << ": rel_l2 " << r.rel_l2 << " (" << int(100.0 * r.rel_l2 / tol) << "% of " << tol << "), max|d| "
                 << r.max_abs << worst);
  }
  CHECK_MESSAGE(ok, name << " rel_l2 " << r.rel_l2 << " > " << tol << " (re-run `make fixtures` if the reference changed)");
  return ok;
}

// ---- tiny training setups (tests/test_util.cpp) ------------------------------------------------

// Random books ([75, width] and [51, width], normal values from `seed`) at `file`: the tests
// stay independent of any text encoder.
void write_random_books(const std::filesystem::path& file, int64_t width, uint64_t seed = 3);
// The synthetic pretraining set (data/synth.h: n images of size x size, seed 5) in dir/data and
// random books of `books_width` in dir/books.safetensors; written when dir has no books yet.
void write_tiny_pretrain_set(const std::filesystem::path& dir, int n, int size, int64_t books_width);
// A pretraining config on that set that runs a step in about a second: ResNet-18 to layer3,
// one decoder layer, 2 epochs, warmup 1 epoch stepped every 2 iterations, 1 worker, seed 9.
MedslipConfig tiny_pretrain_config(const std::filesystem::path& dir, int image_res, int batch_size);
// A fine-tuning set in the scratch dir `name`: `n` grey size x size PNGs (a vertical gradient,
// a bright disc on every other one), their disc masks, and tiny.csv: image_path, mask_path,
// finding (0/1), split (the first 2/3 "train", the rest "test"). Returns the folder.
std::string write_tiny_finetune_set(const std::string& name, int n = 12, int size = 64);
// A fine-tuning config on that set: ResNet-18, batch 2, 2 epochs, constant lr 1e-4, seed 5; the
// validation set a 25 % carve-out of the training rows, the test rows by the split column.
FinetuneConfig tiny_finetune_config(const std::string& root, const std::string& task, int image_res = 64);
// Runs a shell command; returns its exit status, and its stdout + stderr in *out.
int sh(const std::string& cmd, std::string* out = nullptr);

}  // namespace ms::test
