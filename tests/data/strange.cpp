// Strange-but-valid files (docs/reliability.md): progressive / restart-marker / CMYK / EXIF
// JPEGs, interlaced and odd-depth PNGs, BMP header variants, DICOMs in every transfer syntax
// Debian's tools write (implicit VR, big endian, deflated, JPEG lossless / extended /
// progressive, RLE, JPEG-LS, JPEG 2000), multi-frame, signed and odd bit depths. Made by
// tests/make_fixtures_strange.py with Pillow, cjpeg, DCMTK and pydicom; each either decodes
// to the reference library's image within the manifest's tolerance or raises one named
// error saying what is unsupported.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "data/image.h"
#include "engine/io.h"
#include "tests/test_util.h"

using namespace ms;

namespace {

struct Stats {
  int64_t n = 0;
  int max_abs = 0;
  double mean_abs = 0;
  bool shape_ok = true;
};

Stats compare_u8(const Image& ours, const FileTensor& ref) {
  Stats s;
  s.shape_ok = ref.dtype == "U8" && ref.shape.size() == 3 && ref.shape[0] == ours.h && ref.shape[1] == ours.w &&
               ref.shape[2] == 3 && ours.c == 3;
  if (!s.shape_ok) return s;
  double sum = 0;
  for (size_t i = 0; i < ours.px.size(); ++i) {
    int e = std::abs(int(ours.px[i]) - int(ref.bytes[i]));
    s.max_abs = std::max(s.max_abs, e);
    sum += e;
  }
  s.n = int64_t(ours.px.size());
  s.mean_abs = sum / double(std::max<int64_t>(s.n, 1));
  return s;
}

Stats compare_int(const DicomPixels& ours, const FileTensor& ref) {
  Stats s;
  const bool colour = ours.samples == 3;
  s.shape_ok = ref.is_integer() && ref.shape.size() == (colour ? 3u : 2u) && ref.shape[0] == ours.h &&
               ref.shape[1] == ours.w && (!colour || ref.shape[2] == 3);
  if (!s.shape_ok) return s;
  std::vector<int64_t> r = ref.to_i64();
  double sum = 0;
  for (size_t i = 0; i < ours.values.size(); ++i) {
    int64_t e = std::llabs(int64_t(ours.values[i]) - r[i]);
    s.max_abs = std::max<int>(s.max_abs, int(std::min<int64_t>(e, 1 << 30)));
    sum += double(e);
  }
  s.n = int64_t(ours.values.size());
  s.mean_abs = sum / double(std::max<int64_t>(s.n, 1));
  return s;
}

}  // namespace

TEST_CASE("data: image strange-but-valid files decode like PIL / pydicom or give one named error") {
  const auto dir = test::fixture("strange");
  const auto refs_path = test::fixture("strange_refs.safetensors");
  REQUIRE_MESSAGE(std::filesystem::exists(dir / "manifest.json"),
                  "fixtures missing: run /usr/bin/python3 tests/make_fixtures_strange.py");
  const auto refs = load_safetensors_raw(refs_path.string());
  nlohmann::json manifest;
  std::ifstream(dir / "manifest.json") >> manifest;
  REQUIRE(manifest.size() >= 60);
  int decoded = 0, refused = 0, displays = 0;
  for (const auto& e : manifest) {
    const std::string file = e["file"], kind = e["kind"], expect = e["expect"];
    const std::string path = (dir / file).string();
    CAPTURE(file);
    CAPTURE(std::string(e["why"]));
    if (expect == "error") {
      const std::string want = e["error"];
      std::string msg;
      try {
        Image img = read_image(path);
        FAIL_CHECK("decoded " << img.w << "x" << img.h << " where a named error '" << want << "' was expected");
        continue;
      } catch (const std::exception& ex) {
        msg = ex.what();
      }
      CHECK_MESSAGE(msg.find(path) != std::string::npos, "error does not name the file: " << msg);
      CHECK_MESSAGE(msg.find(want) != std::string::npos, "error does not say '" << want << "': " << msg);
      CHECK_MESSAGE(msg.find('\n') == std::string::npos, "error is not one line: " << msg);
      ++refused;
      continue;
    }
    const int max_abs = e["max_abs"];
    const double mean_abs = e["mean_abs"];
    auto it = refs.find(std::string(e["ref"]));
    REQUIRE_MESSAGE(it != refs.end(), "reference " << std::string(e["ref"]) << " missing");
    Stats s;
    try {
      if (kind == "image") {
        s = compare_u8(read_image(path), it->second);
      } else {
        DicomPixels px = read_dicom_pixels(path);
        s = compare_int(px, it->second);
        // Both 8-bit mappings run and keep the size; the display mapping of grey files against
        // the numpy statement of it (rounding at .5 may differ by one level).
        for (DicomMode m : {DicomMode::kDisplay, DicomMode::kRsna}) {
          Image img = dicom_to_image(px, m, path);
          CHECK((img.w == px.w && img.h == px.h && img.px.size() == size_t(img.w) * img.h * img.c));
          if (m == DicomMode::kDisplay && e.contains("display")) {
            const FileTensor& want = refs.at(std::string(e["display"]));
            REQUIRE(want.bytes.size() == img.px.size());
            int worst = 0;
            for (size_t i = 0; i < img.px.size(); ++i)
              worst = std::max(worst, std::abs(int(img.px[i]) - int(want.bytes[i])));
            CHECK_MESSAGE(worst <= 1, "display mapping differs by " << worst << " levels");
            ++displays;
          }
        }
      }
    } catch (const std::exception& ex) {
      FAIL_CHECK("expected a decode, got: " << std::string(ex.what()));
      continue;
    }
    CHECK_MESSAGE(s.shape_ok, "shape or dtype differs from the reference");
    if (!s.shape_ok) continue;
    CHECK_MESSAGE(s.max_abs <= max_abs, "max |ours - ref| " << s.max_abs << " > " << max_abs);
    if (mean_abs > 0) CHECK_MESSAGE(s.mean_abs <= mean_abs, "mean |ours - ref| " << s.mean_abs << " > " << mean_abs);
    if (std::getenv("MEDSLIP_TEST_VERBOSE"))
      std::printf("%-34s max |d| %5d (allowed %5d)  mean |d| %.3f (allowed %.3f)\n", file.c_str(), s.max_abs, max_abs,
                  s.mean_abs, mean_abs);
    ++decoded;
  }
  MESSAGE(decoded << " strange files decoded within tolerance, " << refused << " refused with a named error");
  CHECK(decoded + refused == int(manifest.size()));
  CHECK(displays >= 20);
}
