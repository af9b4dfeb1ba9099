// Fuzz target: safetensors files (header JSON, offsets, dtypes) as weights are read, and the
// same bytes as a books file (load_books_file).
#include "engine/io.h"
#include "model/books.h"
#include "tests/fuzz/fuzz.h"

MS_FUZZ_TARGET(safetensors, ".safetensors") {
  std::string p = ms::fuzz::scratch_file("st", ".safetensors", data, size);
  try {
    auto entries = ms::list_safetensors(p);
    ms::safetensors_metadata(p);
    auto raw = ms::load_safetensors_raw(p);
    for (auto& kv : raw) {
      if (int64_t(kv.second.bytes.size()) != kv.second.numel() * ms::safetensors_dtype_size(kv.second.dtype))
        ms::fuzz::finding("tensor '" + kv.first + "' has a byte count that does not match its shape");
      kv.second.to_f64();
    }
    ms::load_safetensors(p);
  } catch (const std::exception& e) {
    ms::fuzz::expect_named(e, p);
  }
  try {
    ms::Books b = ms::load_books_file(p);  // --books: a safetensors file with its own checks
  } catch (const std::exception& e) {
    ms::fuzz::expect_named(e, p);
  }
}
