// Fuzz target: PNG / JPEG / BMP decoding (JPEG: our marker walk, then libjpeg-turbo; PNG / BMP: our checks, then stb_image).
#include "data/image.h"
#include "tests/fuzz/fuzz.h"

MS_FUZZ_TARGET(image, ".img") {
  ms::ReadOptions opt;
  opt.keep_grey = size % 2 == 1;
  try {
    ms::Image img = ms::decode_image_bytes(data, size, "fuzz.img", opt);
    if (img.w <= 0 || img.h <= 0 || (img.c != 1 && img.c != 3) || img.px.size() != size_t(img.w) * img.h * img.c)
      ms::fuzz::finding("decoded an inconsistent image " + std::to_string(img.w) + "x" + std::to_string(img.h));
  } catch (const std::exception& e) {
    ms::fuzz::expect_named(e, "fuzz.img");
  }
}
