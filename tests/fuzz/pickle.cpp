// Fuzz target: the pickle VM alone. The input becomes archive/data.pkl of a stored zip
// (correct CRC, so the fuzzer's mutations reach the VM instead of the zip checks) beside
// one 64-byte storage archive/data/0; every tensor found is then materialised.
#include <zlib.h>

#include "weights/torch_pickle.h"
#include "tests/fuzz/fuzz.h"

namespace {

void put16(std::string& s, uint32_t v) { s += char(v & 255), s += char(v >> 8 & 255); }
void put32(std::string& s, uint32_t v) { put16(s, v & 0xFFFF), put16(s, v >> 16); }

std::string stored_zip(const std::vector<std::pair<std::string, std::string>>& files) {
  std::string out, cd;
  for (const auto& [name, body] : files) {
    uint32_t crc = uint32_t(crc32(0, reinterpret_cast<const Bytef*>(body.data()), uInt(body.size())));
    uint32_t off = uint32_t(out.size());
    put32(out, 0x04034b50), put16(out, 20), put16(out, 0), put16(out, 0), put16(out, 0), put16(out, 0);
    put32(out, crc), put32(out, uint32_t(body.size())), put32(out, uint32_t(body.size()));
    put16(out, uint32_t(name.size())), put16(out, 0);
    out += name, out += body;
    put32(cd, 0x02014b50), put16(cd, 20), put16(cd, 20), put16(cd, 0), put16(cd, 0), put16(cd, 0), put16(cd, 0);
    put32(cd, crc), put32(cd, uint32_t(body.size())), put32(cd, uint32_t(body.size()));
    put16(cd, uint32_t(name.size())), put16(cd, 0), put16(cd, 0), put16(cd, 0), put16(cd, 0), put32(cd, 0);
    put32(cd, off);
    cd += name;
  }
  uint32_t cd_off = uint32_t(out.size());
  out += cd;
  put32(out, 0x06054b50), put16(out, 0), put16(out, 0), put16(out, uint32_t(files.size())),
      put16(out, uint32_t(files.size())), put32(out, uint32_t(cd.size())), put32(out, cd_off), put16(out, 0);
  return out;
}

}  // namespace

MS_FUZZ_TARGET(pickle, ".pkl") {
  std::string storage(64, '\0');
  for (size_t i = 0; i < storage.size(); ++i) storage[i] = char(i * 37 + 11);
  std::string zip = stored_zip({{"archive/data.pkl", std::string(reinterpret_cast<const char*>(data), size)},
                                {"archive/data/0", storage},
                                {"archive/version", "3\n"}});
  std::string p = ms::fuzz::scratch_file("pickle", ".pth", zip);
  ms::TorchLoadOptions opt;
  opt.allow_unknown_globals = size % 2 == 1;
  try {
    ms::TorchCheckpoint ck(p, opt);
    for (auto& [path, obj] : ms::flatten_pyobj(ck.root(), p)) {
      obj->repr();
      if (obj->is_tensor()) {
        try {
          ms::FileTensor t = ck.tensor(obj->tensor);
          if (int64_t(t.bytes.size()) != t.numel() * ms::safetensors_dtype_size(t.dtype))
            ms::fuzz::finding("tensor '" + path + "' has a byte count that does not match its shape");
        } catch (const std::exception& e) {
          ms::fuzz::expect_named(e, p);
        }
      }
    }
  } catch (const std::exception& e) {
    ms::fuzz::expect_named(e, p);
  }
}
