// Fuzz target: torch.save files as a whole — the zip reader (central directory, ZIP64,
// deflate, CRC) and then the pickle VM and storages (weights/state_dict.cpp's entry point).
#include "weights/state_dict.h"
#include "tests/fuzz/fuzz.h"

MS_FUZZ_TARGET(pth, ".pth") {
  std::string p = ms::fuzz::scratch_file("pth", ".pth", data, size);
  ms::StateDictOptions opt;
  opt.verbose = false;
  try {
    ms::StateDict sd = ms::read_state_dict(p, opt);
    for (const auto& kv : sd.tensors)
      if (int64_t(kv.second.bytes.size()) != kv.second.numel() * ms::safetensors_dtype_size(kv.second.dtype))
        ms::fuzz::finding("tensor '" + kv.first + "' has a byte count that does not match its shape");
  } catch (const std::exception& e) {
    ms::fuzz::expect_named(e, p);
  }
}
