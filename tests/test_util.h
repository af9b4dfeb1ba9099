// defines: helpers shared by the test suites — where ../shared and the fixtures are,
// and compare(), which prints rel-L2 / max-abs / worst index / share of tolerance used
// (llm.c's check_tensor, doctest-ified) and then CHECKs.
#pragma once
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "engine/tensor.h"

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

}  // namespace ms::test
