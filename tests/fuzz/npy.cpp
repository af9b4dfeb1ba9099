// Fuzz target: .npy files (header dict, dtype, shape, data size), whole and by rows.
#include "data/npy.h"
#include "tests/fuzz/fuzz.h"

MS_FUZZ_TARGET(npy, ".npy") {
  std::string p = ms::fuzz::scratch_file("npy", ".npy", data, size);
  try {
    ms::NpyHeader h = ms::read_npy_header(p);
    ms::NpyArray<double> a = ms::read_npy_double(p);
    int64_t n = 1;
    for (int64_t d : a.shape) n *= d;
    if (int64_t(a.data.size()) != n) ms::fuzz::finding("npy data size does not match the shape");
    ms::NpyFile f(p);
    if (!f.shape().empty() && f.shape()[0] > 0) {
      std::vector<double> row(size_t(f.row_numel()));
      f.read_row(0, row.data());
      f.read_row(f.shape()[0] - 1, row.data());
    }
  } catch (const std::exception& e) {
    ms::fuzz::expect_named(e, p);
  }
}
