// cv_resize (data/finetune_data.h) against OpenCV 4.6's cv2.resize on real radiographs and a real
// lung mask: the resizes the reference's albumentations transforms make (RandomResizedCrop's
// INTER_AREA on crops that grow, shrink, or grow on one axis and shrink on the other; Resize's
// INTER_LINEAR; INTER_NEAREST on masks). Fixture: tests/make_fixtures_finetune_resize.py.
// Every output byte must be equal.
#include <doctest/doctest.h>

#include <sstream>

#include "data/finetune_data.h"
#include "engine/io.h"
#include "tests/test_util.h"

using namespace ms;

TEST_CASE("data: cv_resize equals cv2.resize byte for byte on real radiographs (INTER_LINEAR, INTER_AREA, INTER_NEAREST)") {
  auto path = test::fixture("finetune_resize.safetensors");
  REQUIRE_MESSAGE(std::filesystem::exists(path), "missing fixture " << path << " (tests/make_fixtures_finetune_resize.py)");
  auto ref = load_safetensors_raw(path.string());
  auto meta = safetensors_metadata(path.string());
  auto image_of = [](const FileTensor& t) {
    REQUIRE(t.dtype == "U8");
    REQUIRE(t.shape.size() == 3);
    Image im(int(t.shape[1]), int(t.shape[0]), int(t.shape[2]));
    im.px = t.bytes;
    return im;
  };
  std::stringstream ss(meta.at("cases"));
  int cases = 0;
  for (std::string line; std::getline(ss, line);) {
    std::stringstream ls(line);
    std::string name, source, interp;
    int y, x, h, w, ow, oh;
    ls >> name >> source >> y >> x >> h >> w >> ow >> oh >> interp;
    CAPTURE(name);
    const Image src = image_of(ref.at("source." + source));
    Image crop(w, h, src.c);
    for (int r = 0; r < h; ++r)
      std::copy(src.row(y + r) + size_t(x) * src.c, src.row(y + r) + size_t(x + w) * src.c, crop.row(r));
    const CvInterp ip = interp == "area" ? CvInterp::kArea : interp == "linear" ? CvInterp::kLinear : CvInterp::kNearest;
    const Image got = cv_resize(crop, ow, oh, ip);
    const Image want = image_of(ref.at(name + ".out"));
    REQUIRE(got.w == want.w);
    REQUIRE(got.h == want.h);
    REQUIRE(got.c == want.c);
    int64_t differ = 0, worst = 0, first = -1;
    for (size_t i = 0; i < got.px.size(); ++i)
      if (got.px[i] != want.px[i]) {
        ++differ;
        worst = std::max<int64_t>(worst, std::abs(int(got.px[i]) - int(want.px[i])));
        if (first < 0) first = int64_t(i);
      }
    CHECK_MESSAGE(differ == 0, name << " (" << w << "x" << h << " -> " << ow << "x" << oh << " " << interp << "): " << differ
                                    << " of " << got.px.size() << " bytes differ from cv2.resize, by up to " << worst
                                    << ", first at byte " << first);
    ++cases;
  }
  CHECK(cases >= 10);
}
