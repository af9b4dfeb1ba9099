// Image decoding and transforms (data/image.h, data/transforms.h) against Pillow 9.4,
// torchvision 0.14, OpenCV 4.6 (ALBEF's RandAugment), pydicom 2.3 and scikit-image 0.19:
// references in tests/fixtures/image_refs.safetensors, inputs in tests/fixtures/images/,
// both written by tests/make_fixtures_image.py.
#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "data/image.h"
#include "data/loader.h"
#include "data/transforms.h"
#include "engine/io.h"
#include "tests/test_util.h"
#include "train/commands.h"

using namespace ms;
namespace fs = std::filesystem;

namespace {

const std::map<std::string, FileTensor>& refs() {
  static const std::map<std::string, FileTensor> r = [] {
    auto p = test::fixture("image_refs.safetensors").string();
    REQUIRE_MESSAGE(fs::exists(p), "fixture missing: " << p << " (run /usr/bin/python3 tests/make_fixtures_image.py)");
    return load_safetensors_raw(p);
  }();
  return r;
}
const FileTensor& reference(const std::string& key) {
  auto it = refs().find(key);
  if (it == refs().end()) FAIL("reference " << key << " missing (re-run tests/make_fixtures_image.py)");
  return it->second;
}
std::string image_path(const std::string& name) { return test::fixture("images/" + name).string(); }

// A U8 [H,W,3] or [H,W] reference as an Image.
Image ref_image(const std::string& key) {
  const FileTensor& t = reference(key);
  REQUIRE(t.dtype == "U8");
  REQUIRE((t.shape.size() == 2 || (t.shape.size() == 3 && t.shape[2] == 3)));
  Image img(int(t.shape[1]), int(t.shape[0]), t.shape.size() == 3 ? 3 : 1);
  img.px = t.bytes;
  return img;
}

struct Diff {
  int64_t n = 0, differ = 0;
  int max_abs = 0;
};
Diff diff(const Image& a, const Image& b) {
  Diff d;
  if (a.w != b.w || a.h != b.h || a.c != b.c) {
    d.differ = d.n = -1;
    return d;
  }
  d.n = int64_t(a.px.size());
  for (size_t i = 0; i < a.px.size(); ++i) {
    int e = std::abs(int(a.px[i]) - int(b.px[i]));
    if (e) ++d.differ;
    d.max_abs = std::max(d.max_abs, e);
  }
  return d;
}
#define CHECK_SAME_IMAGE(ours, expected, what)                                                                        \
  do {                                                                                                                \
    Image o_ = (ours), e_ = (expected);                                                                               \
    Diff d_ = diff(o_, e_);                                                                                           \
    CHECK_MESSAGE(d_.differ == 0, what << ": " << o_.w << "x" << o_.h << "x" << o_.c << " vs " << e_.w << "x" << e_.h \
                                       << "x" << e_.c << ", " << d_.differ << " samples differ, max |d| "             \
                                       << d_.max_abs);                                                                \
  } while (0)

Image channel0(const Image& img) {
  Image g(img.w, img.h, 1);
  for (size_t i = 0; i < g.px.size(); ++i) g.px[i] = img.px[i * img.c];
  return g;
}

template <typename Fn>
std::string error_of(Fn fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

std::vector<uint8_t> slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}
void spit(const std::string& p, const uint8_t* d, size_t n) {
  std::ofstream f(p, std::ios::binary);
  f.write(reinterpret_cast<const char*>(d), std::streamsize(n));
}

const char* kDecodeFiles[] = {
    "grey8.png", "grey16.png", "grey1.png",   "grey4.png",        "la8.png",       "la16.png",     "rgb8.png",
    "rgb16.png", "rgba8.png",  "palette.png", "palette_trns.png", "grey_trns.png", "rgb_tall.png", "rgb24.bmp",
    "grey8.bmp", "rgba32.bmp", "grey.jpg",    "rgb420.jpg",       "rgb444.jpg",    "rgb_prog.jpg", "rgb_odd.jpg"};

}  // namespace

TEST_CASE("data: image decode matches PIL Image.open().convert('RGB')") {
  for (const std::string name : kDecodeFiles) {
    CAPTURE(name);
    Image ours = read_image(image_path(name));
    Image pil = ref_image("decode/" + name);
    Diff d = diff(ours, pil);
    REQUIRE_MESSAGE(d.n == int64_t(pil.px.size()), name << ": decoded " << ours.w << "x" << ours.h << "x" << ours.c);
    // Every format is exact, JPEG included: it is decoded by libjpeg-turbo with Pillow's settings
    // (with stb_image, until 2026-12-06, up to 3 levels and ~10 % of the samples differed).
    CHECK_MESSAGE(d.differ == 0, name << ": " << d.differ << " samples differ from PIL, max |d| " << d.max_abs);
    // keep_grey: grey sources stay one channel holding the same values.
    ReadOptions keep;
    keep.keep_grey = true;
    Image g = read_image(image_path(name), keep);
    if (g.c == 1) {
      CHECK_SAME_IMAGE(to_rgb(g), ours, name << " keep_grey");
    } else {
      CHECK_SAME_IMAGE(g, ours, name << " keep_grey (colour source)");
    }
  }
  // Grey sources by format: 8/16/1/4-bit grey, grey+alpha, grey+tRNS PNG, grey JPEG, 8-bit BMP is a palette.
  ReadOptions keep;
  keep.keep_grey = true;
  for (const std::string name :
       {"grey8.png", "grey16.png", "grey1.png", "grey4.png", "la8.png", "la16.png", "grey_trns.png", "grey.jpg"})
    CHECK_MESSAGE(read_image(image_path(name), keep).c == 1, name);
  // 16-bit grey is clipped, not shifted (PIL mode "I" -> RGB).
  Image g16 = read_image(image_path("grey16.png"), keep);
  int saturated = 0;
  for (uint8_t v : g16.px) saturated += v == 255;
  MESSAGE("grey16.png: " << saturated << "/" << g16.px.size() << " pixels clip to 255, as in PIL");
  CHECK(saturated > 0);
}

TEST_CASE("data: image resize is bit-exact with PIL (bilinear/bicubic, antialias)") {
  int checked = 0;
  for (const auto& [key, t] : refs()) {
    if (key.rfind("resize/", 0) != 0) continue;
    // resize/<file>/<w>x<h>/<filter>
    auto a = key.find('/', 7), b = key.find('/', a + 1);
    std::string file = key.substr(7, a - 7), size = key.substr(a + 1, b - a - 1), filter = key.substr(b + 1);
    int w = std::stoi(size.substr(0, size.find('x'))), h = std::stoi(size.substr(size.find('x') + 1));
    Resample f = filter == "bicubic" ? Resample::kBicubic : Resample::kBilinear;
    Image src = ref_image("decode/" + file);  // PIL's decode, so a JPEG's decoder does not enter here
    CHECK_SAME_IMAGE(resize(src, w, h, f), ref_image(key), key);
    // Grey sources: one channel gives the same numbers as three equal ones.
    if (file.rfind("grey", 0) == 0)
      CHECK_SAME_IMAGE(resize(channel0(src), w, h, f), channel0(ref_image(key)), key << " c=1");
    ++checked;
  }
  MESSAGE(checked << " PIL resizes reproduced exactly");
  CHECK(checked >= 20);
  Image src = ref_image("decode/rgb8.png");
  CHECK_SAME_IMAGE(resize(src, src.w, src.h, Resample::kBilinear), src, "same-size resize is a copy");
}

TEST_CASE("data: image test transform equals torchvision Resize+ToTensor+Normalize") {
  int checked = 0;
  for (const auto& [key, t] : refs()) {
    if (key.rfind("tensor/", 0) != 0) continue;
    auto a = key.rfind('/');
    std::string file = key.substr(7, a - 7);
    int S = std::stoi(key.substr(a + 1));
    std::vector<float> expected = t.to_float_vector();
    std::vector<float> ours = test_transform(ref_image("decode/" + file), S);
    REQUIRE(ours.size() == expected.size());
    double max_abs = 0;
    for (size_t i = 0; i < ours.size(); ++i) max_abs = std::max(max_abs, double(std::fabs(ours[i] - expected[i])));
    CHECK_MESSAGE(max_abs == 0.0, key << ": max |d| " << max_abs);
    // From the file itself (PNG decode is exact too).
    if (file.find(".png") != std::string::npos) {
      std::vector<float> full = test_transform(read_image(image_path(file)), S);
      CHECK_MESSAGE(full == expected, key << " from the file");
    }
    ++checked;
  }
  CHECK(checked >= 5);
  CHECK(load_test_image(image_path("rgb8.png"), 24) == reference("tensor/rgb8.png/24").to_float_vector());
  CHECK(load_test_image(image_path("grey8.png"), 24) == reference("tensor/grey8.png/24").to_float_vector());
  // Through a JPEG decoded from the file (libjpeg-turbo, as PIL): exactly torchvision on PIL's decode.
  CHECK(test_transform(read_image(image_path("rgb420.jpg")), 24) == reference("tensor/rgb420.jpg/24").to_float_vector());
}

TEST_CASE("data: image resized_crop equals torchvision F.resized_crop bicubic") {
  int checked = 0;
  for (const auto& [key, t] : refs()) {
    if (key.rfind("crop/", 0) != 0) continue;
    // crop/<file>/<l>,<t>,<w>,<h>/<S>
    auto a = key.find('/', 5), b = key.rfind('/');
    std::string file = key.substr(5, a - 5), box = key.substr(a + 1, b - a - 1);
    int S = std::stoi(key.substr(b + 1));
    int l, tp, w, h;
    REQUIRE(std::sscanf(box.c_str(), "%d,%d,%d,%d", &l, &tp, &w, &h) == 4);
    CHECK_SAME_IMAGE(resized_crop(ref_image("decode/" + file), l, tp, w, h, S, S, Resample::kBicubic), ref_image(key),
                     key);
    ++checked;
  }
  CHECK(checked >= 8);
  Image src = ref_image("decode/rgb8.png");
  CHECK_FALSE(error_of([&] { resized_crop(src, 40, 0, 10, 5, 8, 8, Resample::kBicubic); }).empty());
  CHECK_FALSE(error_of([&] { resize(src, 0, 8, Resample::kBilinear); }).empty());
}

TEST_CASE("data: image RandAugment ops match ALBEF / PIL / OpenCV") {
  struct Op {
    const char* name;
    AugOp op;
    bool negative;
  };
  const Op ops[] = {{"Identity", AugOp::kIdentity, false},     {"AutoContrast", AugOp::kAutoContrast, false},
                    {"Equalize", AugOp::kEqualize, false},     {"Brightness", AugOp::kBrightness, false},
                    {"Sharpness", AugOp::kSharpness, false},   {"ShearX+", AugOp::kShearX, false},
                    {"ShearX-", AugOp::kShearX, true},         {"ShearY+", AugOp::kShearY, false},
                    {"ShearY-", AugOp::kShearY, true},         {"TranslateX+", AugOp::kTranslateX, false},
                    {"TranslateX-", AugOp::kTranslateX, true}, {"TranslateY+", AugOp::kTranslateY, false},
                    {"TranslateY-", AugOp::kTranslateY, true}, {"Rotate+", AugOp::kRotate, false},
                    {"Rotate-", AugOp::kRotate, true}};
  int checked = 0;
  for (const char* img_name : {"rgb", "grey", "odd", "edges"}) {
    Image in = ref_image(std::string("aug_input/") + img_name);
    for (const Op& o : ops) {
      std::string key = std::string("aug/") + img_name + "/" + o.name;
      if (!refs().count(key)) continue;
      double arg = 0;
      Image out = apply_aug(in, o.op, 7, o.negative, &arg);
      CHECK_SAME_IMAGE(out, ref_image(key), key << " (arg " << arg << ")");
      if (std::string(img_name) == "grey")
        CHECK_SAME_IMAGE(apply_aug(channel0(in), o.op, 7, o.negative), channel0(ref_image(key)), key << " c=1");
      ++checked;
    }
    std::string key = std::string("aug/") + img_name + "/Rotate7.3";
    if (refs().count(key)) {
      CHECK_SAME_IMAGE(rotate(in, 7.3), ref_image(key), key);
      ++checked;
    }
  }
  MESSAGE(checked << " op outputs reproduced exactly");
  CHECK(checked >= 40);
  // Arguments at M = 7 (spec §C.4).
  double arg = 0;
  Image in = ref_image("aug_input/rgb");
  apply_aug(in, AugOp::kBrightness, 7, false, &arg);
  CHECK(arg == doctest::Approx(1.36));
  apply_aug(in, AugOp::kShearX, 7, true, &arg);
  CHECK(arg == doctest::Approx(-0.21));
  apply_aug(in, AugOp::kTranslateY, 7, false, &arg);
  CHECK(arg == doctest::Approx(7.0));
  apply_aug(in, AugOp::kRotate, 7, true, &arg);
  CHECK(arg == doctest::Approx(-21.0));
  // Hand-computed: brightness LUT truncates (25 * 1.36 = 34, 200 * 1.36 = 272 -> 255, 3 * 1.36 = 4.08 -> 4).
  Image px(3, 1, 1);
  px.px = {25, 200, 3};
  brightness(px, 1.36f);
  CHECK(px.px == std::vector<uint8_t>{34, 255, 4});
  // Translate by +7: dst(x) = src(x + 7), the last 7 columns are the fill 128.
  Image ramp(10, 1, 1);
  for (int x = 0; x < 10; ++x) ramp.px[size_t(x)] = uint8_t(10 * x);
  Image t = translate_x(ramp, 7.f);
  CHECK(t.px == std::vector<uint8_t>{70, 80, 90, 128, 128, 128, 128, 128, 128, 128});
}

TEST_CASE("data: image RandomResizedCrop parameters") {
  Rng rng(7, kStreamAugment);
  // No try fits a 1000x10 image: the central crop at ratio 4/3 (torchvision gives (0, 493, 10, 13)).
  CropBox b = random_resized_crop_params(1000, 10, rng);
  CHECK(b.top == 0);
  CHECK(b.left == 493);
  CHECK(b.height == 10);
  CHECK(b.width == 13);
  b = random_resized_crop_params(10, 1000, rng);  // too tall: width 10, height round(10 / 0.75) = 13
  CHECK(b.width == 10);
  CHECK(b.height == 13);
  CHECK(b.top == 493);
  int fallback = 0;
  for (int i = 0; i < 2000; ++i) {
    CropBox c = random_resized_crop_params(256, 200, rng);
    REQUIRE(c.width > 0);
    REQUIRE(c.height > 0);
    REQUIRE(c.left >= 0);
    REQUIRE(c.top >= 0);
    REQUIRE(c.left + c.width <= 256);
    REQUIRE(c.top + c.height <= 200);
    double area = double(c.width) * c.height / (256.0 * 200.0), ratio = double(c.width) / c.height;
    if (c.width == 256 && c.height == 200) {
      ++fallback;
      continue;
    }
    CHECK(area >= 0.2 - 0.02);
    CHECK(area <= 1.0 + 0.02);
    CHECK(ratio >= 0.75 * 0.95);
    CHECK(ratio <= 4.0 / 3.0 * 1.05);
  }
  MESSAGE("RandomResizedCrop on 256x200: " << fallback << "/2000 whole-image crops");
}

TEST_CASE("data: image train transform is deterministic per seed") {
  Image rgb = ref_image("decode/rgb8.png");
  auto run = [&](const Image& img, uint64_t seed, TrainDraw* draw) {
    Rng rng(seed, kStreamAugment);
    return train_transform(img, 32, rng, draw);
  };
  TrainDraw d1, d2;
  std::vector<float> a = run(rgb, 11, &d1), b = run(rgb, 11, &d2);
  CHECK(a.size() == size_t(3 * 32 * 32));
  CHECK(a == b);
  Rng r11(11, kStreamAugment);
  CHECK(load_train_image(image_path("rgb8.png"), 32, r11) == a);
  CHECK(d1.crop.left == d2.crop.left);
  CHECK(d1.augs.size() == 2);
  int distinct = 0;
  for (uint64_t s = 12; s < 20; ++s) distinct += run(rgb, s, nullptr) != a;
  CHECK(distinct == 8);
  // A grey image as one channel gives the same tensor as its RGB replica, draw for draw.
  Image grey = ref_image("decode/grey8.png");
  int ops_seen[kNumAugOps] = {0};
  for (uint64_t s = 0; s < 40; ++s) {
    TrainDraw d;
    std::vector<float> g1 = run(channel0(grey), s, &d), g3 = run(grey, s, nullptr);
    CHECK_MESSAGE(g1 == g3, "seed " << s);
    for (const AugStep& st : d.augs)
      if (st.applied) ++ops_seen[int(st.op)];
  }
  std::string seen;
  for (int k = 0; k < kNumAugOps; ++k)
    seen += std::string(" ") + aug_op_name(AugOp(k)) + " " + std::to_string(ops_seen[k]);
  MESSAGE("ops applied in 40 train draws:" << seen);
  // Output range: normalised ImageNet values of uint8 pixels.
  for (float v : a) {
    CHECK(v >= (0 - 0.485f) / 0.229f - 1e-5f);
    CHECK(v <= (1 - 0.406f) / 0.225f + 1e-5f);
  }
}

TEST_CASE("data: image train transform honours the augmentation options") {
  Image rgb = ref_image("decode/rgb8.png");
  AugmentOptions light;
  light.crop_scale_min = 0.8;
  light.rand_augment_n = 0;
  const double area = double(rgb.w) * rgb.h;
  for (uint64_t s = 0; s < 30; ++s) {
    Rng r1(s, kStreamAugment), r2(s, kStreamAugment);
    TrainDraw d;
    std::vector<float> a = train_transform(rgb, 32, r1, &d, light);
    CHECK(d.augs.empty());  // no RandAugment op drawn
    // Every crop keeps at least 80 % of the image (the central-crop fallback keeps more).
    CHECK_MESSAGE(double(d.crop.width) * d.crop.height >= 0.8 * area * 0.97, "seed " << s);
    CHECK(train_transform(rgb, 32, r2, nullptr, light) == a);
  }
  // The defaults are the reference's: the same tensor as before the options existed.
  Rng r1(11, kStreamAugment), r2(11, kStreamAugment);
  CHECK(train_transform(rgb, 32, r1) == train_transform(rgb, 32, r2, nullptr, AugmentOptions{}));
}

TEST_CASE("data: image shared CXR14 PNGs decode and resize exactly as PIL/torchvision") {
  if (!test::have_shared()) {
    MESSAGE("skipping: shared data not found under " << test::shared_dir().string());
    return;
  }
  fs::path dir = test::shared_dir() / "data" / "cxr14-sample" / "images";
  int checked = 0;
  for (const auto& [key, t] : refs()) {
    if (key.rfind("cxr/", 0) != 0) continue;
    auto a = key.rfind('/');
    std::string id = key.substr(4, a - 4);
    int S = std::stoi(key.substr(a + 1));
    ReadOptions keep;
    keep.keep_grey = true;
    Image img = read_image((dir / (id + ".png")).string(), keep);
    CHECK(img.c == 1);
    CHECK_SAME_IMAGE(resize(img, S, S, Resample::kBilinear), ref_image(key), key);
    ++checked;
  }
  CHECK(checked == 6);
  // All 120 decode; time decode + test transform (the loader's per-image cost).
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir)) files.push_back(e.path());
  auto t0 = std::chrono::steady_clock::now();
  for (const auto& f : files) {
    Image img = read_image(f.string());
    REQUIRE(img.w == 256);
    REQUIRE(img.h == 256);
    std::vector<float> x = test_transform(img, 224);
    REQUIRE(x.size() == size_t(3 * 224 * 224));
  }
  double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  MESSAGE(files.size() << " CXR14 PNGs 256x256: decode + test transform 224 in " << ms / files.size() << " ms each");
}

TEST_CASE("data: image DICOM pixels, RSNA equalisation and display mapping") {
  for (const std::string name :
       {"mono2_u16.dcm", "mono1_u16.dcm", "mono2_s16.dcm", "rgb8.dcm", "jpeg_mono8.dcm", "jpeg_ybr.dcm"}) {
    CAPTURE(name);
    std::string path = image_path(name);
    DicomPixels d = read_dicom_pixels(path);
    std::string base = "dcm/" + name;
    std::vector<int64_t> raw = reference(base + "/raw").to_i64();
    REQUIRE(d.values.size() == raw.size());
    int64_t differ = 0, max_abs = 0;
    for (size_t i = 0; i < raw.size(); ++i) {
      int64_t e = std::llabs(int64_t(d.values[i]) - raw[i]);
      differ += e != 0;
      max_abs = std::max(max_abs, e);
    }
    MESSAGE(name << " (" << d.transfer_syntax << ", " << d.photometric << "): raw values vs pydicom: " << differ << "/"
                 << raw.size() << " differ, max |d| " << max_abs);
    if (name != "jpeg_ybr.dcm")
      CHECK(differ == 0);
    else
      CHECK(max_abs <= 2);  // DCMTK's IJG 6b vs Pillow's libjpeg-turbo, chroma upsampling + YCbCr->RGB
    Image rsna = dicom_to_image(d, DicomMode::kRsna, path);
    Image rsna_ref = ref_image(base + "/rsna");
    if (differ == 0) CHECK_SAME_IMAGE(rsna, rsna_ref, name << " RSNA path");
    if (refs().count(base + "/display"))
      CHECK_SAME_IMAGE(dicom_to_image(d, DicomMode::kDisplay, path), ref_image(base + "/display"), name << " display");
    // read_image: RGB by default, one channel with keep_grey.
    ReadOptions o;
    o.dicom = DicomMode::kRsna;
    Image via = read_image(path, o);
    CHECK(via.c == 3);
    o.keep_grey = true;
    CHECK(read_image(path, o).c == d.samples);
  }
  DicomPixels d = read_dicom_pixels(image_path("mono2_u16.dcm"));
  CHECK(d.slope == 2.0);
  CHECK(d.intercept == -100.0);
  CHECK(d.has_window);
  CHECK(d.window_center == 3000.0);
  CHECK(d.bits_stored == 12);
}

TEST_CASE("data: image shared SIIM DICOM (JPEG baseline) RSNA read path vs pydicom + skimage") {
  if (!test::have_shared()) {
    MESSAGE("skipping: shared data not found under " << test::shared_dir().string());
    return;
  }
  std::string path = (test::shared_dir() / "data" / "dicom" / "siim-acr-sample.dcm").string();
  auto t0 = std::chrono::steady_clock::now();
  DicomPixels d = read_dicom_pixels(path);
  double ms_read = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  REQUIRE(d.w == 1024);
  REQUIRE(d.h == 1024);
  CHECK(d.photometric == "MONOCHROME2");
  // Raw values: histogram and every 8th pixel against pydicom (Pillow's libjpeg-turbo).
  std::vector<int64_t> hist(256, 0);
  int64_t out_of_range = 0;
  for (int32_t v : d.values) {
    if (v < 0 || v > 255)
      ++out_of_range;
    else
      ++hist[size_t(v)];
  }
  REQUIRE(out_of_range == 0);
  std::vector<int64_t> ref_hist = reference("siim/raw_hist").to_i64();
  int64_t hist_l1 = 0;
  for (int i = 0; i < 256; ++i) hist_l1 += std::llabs(hist[size_t(i)] - ref_hist[size_t(i)]);
  Image sub(128, 128, 1);
  for (int y = 0; y < 128; ++y)
    for (int x = 0; x < 128; ++x) sub.px[size_t(y) * 128 + x] = uint8_t(d.values[size_t(y) * 8 * 1024 + x * 8]);
  Diff ds = diff(sub, ref_image("siim/raw_sub"));
  MESSAGE("SIIM DICOM (" << d.transfer_syntax << "): DCMTK decode vs pydicom: histogram L1 " << hist_l1 << ", "
                         << ds.differ << "/16384 sampled pixels differ; read in " << ms_read << " ms");
  CHECK(hist_l1 == 0);
  CHECK(ds.differ == 0);
  // Equalisation: value -> output table and output histogram.
  t0 = std::chrono::steady_clock::now();
  Image eq = dicom_to_image(d, DicomMode::kRsna, path);
  double ms_eq = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::vector<int64_t> lut_ref = reference("siim/rsna_lut").to_i64();
  int lut_off = 0, off_by_more = 0;
  std::vector<int64_t> eq_hist(256, 0);
  for (size_t i = 0; i < eq.px.size(); ++i) {
    ++eq_hist[eq.px[i]];
    int e = std::abs(int(eq.px[i]) - int(lut_ref[size_t(d.values[i])]));
    lut_off += e != 0;
    off_by_more += e > 1;
  }
  MESSAGE("SIIM RSNA equalisation: " << lut_off << " pixels differ from skimage (" << off_by_more
                                     << " by more than 1), " << ms_eq << " ms");
  CHECK(lut_off == 0);
  CHECK(eq_hist == reference("siim/rsna_hist").to_i64());
  CHECK_SAME_IMAGE(resize(eq, 224, 224, Resample::kBilinear), ref_image("siim/rsna_224"),
                   "SIIM RSNA path + Resize 224");
}

TEST_CASE("data: image equalize_hist edge cases (hand-computed)") {
  // Constant image: range widened to +-0.5, all in bin 128, x sits halfway between
  // centres 127 and 128 -> cdf 0.5 -> 127.
  CHECK(equalize_hist_u8(std::vector<int32_t>(10, 77)) == std::vector<uint8_t>(10, 127));
  // Three values over a huge range (the sorted path): bins 0, 128, 255 -> 1/3, 1/2, 1.
  CHECK(equalize_hist_u8({0, 5000000, 10000000}) == std::vector<uint8_t>{85, 127, 255});
  // Two values at the range ends: cdf 2/3 below the last bin, 1 in it.
  CHECK(equalize_hist_u8({-7, -7, 3}) == std::vector<uint8_t>{170, 170, 255});
  CHECK_FALSE(error_of([] { equalize_hist_u8({}); }).empty());
}

TEST_CASE("data: image damaged files raise errors naming the file and the reason") {
  struct Case {
    std::string file, reason;
  };
  const Case cases[] = {
      {"bad_truncated.png", "PNG"},
      {"bad_truncated.jpg", "truncated JPEG"},
      {"bad_truncated.bmp", "truncated BMP"},
      {"bad_truncated.dcm", "DICOM"},
      {"bad_empty.png", "empty file"},
      {"bad_random.png", "not a PNG, JPEG, BMP or DICOM"},
      {"bad_text.png", "not a PNG, JPEG, BMP or DICOM"},
      {"bad_header.jpg", "JPEG"},
      {"bad_data.png", "PNG"},
      {"does_not_exist.png", "cannot open"},
  };
  for (const Case& c : cases) {
    std::string p = image_path(c.file);
    std::string msg = error_of([&] { read_image(p); });
    CHECK_MESSAGE(msg.find(p) != std::string::npos, c.file << ": message does not name the file: '" << msg << "'");
    CHECK_MESSAGE(msg.find(c.reason) != std::string::npos,
                  c.file << ": expected '" << c.reason << "' in '" << msg << "'");
    MESSAGE(c.file << " -> " << msg.substr(msg.find(c.file)));
  }
  // Cut copies of a good PNG / JPEG / BMP / DICOM at several lengths: an error, never a crash
  // or an image made of zeros (checked under AddressSanitizer too).
  fs::path dir = test::scratch_dir("data_image_cut");
  std::vector<std::string> sources = {image_path("rgb8.png"),      image_path("rgb_prog.jpg"),
                                      image_path("grey.jpg"),      image_path("grey8.bmp"),
                                      image_path("mono2_s16.dcm"), image_path("jpeg_mono8.dcm")};
  if (test::have_shared()) sources.push_back((test::shared_dir() / "data" / "dicom" / "siim-acr-sample.dcm").string());
  int errors = 0, total = 0;
  for (const std::string& src : sources) {
    std::vector<uint8_t> bytes = slurp(src);
    std::string ext = fs::path(src).extension().string();
    for (double frac : {0.0, 0.02, 0.1, 0.3, 0.5, 0.8, 0.95, 0.995}) {
      size_t n = size_t(frac * double(bytes.size()));
      std::string p = (dir / ("cut_" + std::to_string(total) + ext)).string();
      spit(p, bytes.data(), n);
      std::string msg = error_of([&] { read_image(p); });
      ++total;
      if (!msg.empty()) {
        ++errors;
        CHECK_MESSAGE(msg.find(p) != std::string::npos, msg);
      } else {
        FAIL_CHECK(src << " cut to " << n << "/" << bytes.size() << " bytes decoded without error");
      }
    }
  }
  MESSAGE(errors << "/" << total << " truncated copies rejected");
  // Random bytes behind valid magic numbers.
  Rng rng(3, kStreamData);
  const std::vector<std::vector<uint8_t>> magics = {
      {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A}, {0xFF, 0xD8, 0xFF}, {'B', 'M'}};
  for (int trial = 0; trial < 30; ++trial) {
    std::vector<uint8_t> junk = magics[size_t(trial % 3)];
    for (int i = 0; i < 600; ++i) junk.push_back(uint8_t(rng.randint(256)));
    std::string msg = error_of([&] { decode_image_bytes(junk.data(), junk.size(), "junk"); });
    CHECK_MESSAGE(msg.rfind("junk: ", 0) == 0, "random bytes after a magic number: '" << msg << "'");
  }
  std::vector<uint8_t> dcm(132, 0);
  std::memcpy(dcm.data() + 128, "DICM", 4);
  for (int i = 0; i < 400; ++i) dcm.push_back(uint8_t(rng.randint(256)));
  std::string p = (dir / "junk.dcm").string();
  spit(p, dcm.data(), dcm.size());
  CHECK(error_of([&] { read_image(p); }).find(p) != std::string::npos);
  std::vector<uint8_t> bytes = slurp(image_path("mono2_u16.dcm"));
  p = (dir / "no_pixels.dcm").string();
  spit(p, bytes.data(), 700);  // the header survives, the pixel data is cut
  CHECK(error_of([&] { read_image(p); }).find(p) != std::string::npos);
}

TEST_CASE("data: image a DICOM declaring more pixels than its bytes can hold is refused before decoding") {
  // dicom fuzzer finding: a 2 KB JPEG DICOM whose Rows/Columns were mutated to 65462 x 48 took
  // over 20 s to decode under ASan. Now refused at once, naming the file.
  const std::string p = "tests/fuzz/corpus/dicom/reg_bomb_rows_columns.dcm";
  std::string msg = error_of([&] { read_image(p); });
  CHECK_MESSAGE(msg.find(p) != std::string::npos, msg);
  CHECK_MESSAGE(msg.find("decompression bomb") != std::string::npos, msg);
}

TEST_CASE("data: image a BMP whose pixel-array size overflows 64 bits is a named error") {
  // image fuzzer finding (2026-12-05, UBSan): a 114-byte BMP claiming 471466032 x 117440512
  // pixels of 6144 bits; stride * height overflowed int64 in the truncation check.
  // Since 2026-12-06 bit depths other than 1/4/8/16/24/32 are refused first, so that file now
  // stops there; the same overflow with 32 bits per pixel and 2^31-1 x 2^31-1 pixels still
  // reaches the size check (stride 8.6e9 x height 2.1e9 > 2^63).
  const std::string p = "tests/fuzz/corpus/image/reg_bmp_size_overflow.bmp";
  std::string msg = error_of([&] { read_image(p); });
  CHECK(msg == p + ": unsupported BMP bit depth 6144 (1, 4, 8, 16, 24 or 32 bits per pixel are read)");
  std::vector<uint8_t> b = slurp(image_path("rgba32.bmp"));
  REQUIRE((b.size() > 34 && b[14] >= 40 && b[28] == 32));
  for (int k = 0; k < 4; ++k) b[18 + k] = b[22 + k] = k == 3 ? 0x7F : 0xFF;  // w = h = 2^31 - 1
  fs::path dir = test::scratch_dir("data_image_bmp_overflow");
  const std::string q = (dir / "huge.bmp").string();
  spit(q, b.data(), b.size());
  msg = error_of([&] { read_image(q); });
  CHECK_MESSAGE(msg.rfind(q + ": truncated BMP (", 0) == 0, msg);
  CHECK_MESSAGE(msg.find("the 2147483647x2147483647 pixel array needs") != std::string::npos, msg);
}

TEST_CASE("data: image a BMP with an unknown compression value or bit depth is refused by name before stb decodes it") {
  // image fuzzer finding (2026-12-06, a timeout: 36 s and 1.7 GB under ASan): a 53-byte BMP,
  // compression 0xFFFF0006, 12288 x 21509 1-bit pixels. stb 2.27 checks the compression field
  // only for 16/32-bit pixels and decoded this as uncompressed, zeros past the end of the file;
  // our size check skipped unknown compressions, trusting stb to refuse them.
  const std::string p = "tests/fuzz/corpus/image/reg_bmp_unknown_compression_12288x21509.bmp";
  std::string msg = error_of([&] { read_image(p); });
  CHECK(msg == p + ": unsupported BMP compression 4294901766: only uncompressed (0) and bit-field (3, 6) BMPs are read");
  // A valid 8-bit BMP with its compression field (bytes 30..33) set to 7: the same refusal.
  std::vector<uint8_t> b = slurp(image_path("grey8.bmp"));
  REQUIRE((b.size() > 34 && b[14] == 40 && b[30] == 0));
  b[30] = 7;
  fs::path dir = test::scratch_dir("data_image_bmp_comp");
  const std::string q = (dir / "comp7.bmp").string();
  spit(q, b.data(), b.size());
  msg = error_of([&] { read_image(q); });
  CHECK(msg == q + ": unsupported BMP compression 7: only uncompressed (0) and bit-field (3, 6) BMPs are read");
  // image fuzzer (2026-12-06): a 29-byte OS/2 BMP, 12361 x 21060 pixels of 0 bits; stb 2.27
  // allocated the 781 MB output before its "bad bpp". Refused by name before stb sees it.
  const std::string r = "tests/fuzz/corpus/image/reg_bmp_0bpp_12361x21060.bmp";
  msg = error_of([&] { read_image(r); });
  CHECK(msg == r + ": unsupported BMP bit depth 0 (1, 4, 8, 16, 24 or 32 bits per pixel are read)");
  b[30] = 0;
  b[28] = 2;  // 2 bits per pixel (Windows CE): neither stb nor we read it
  spit(q, b.data(), b.size());
  msg = error_of([&] { read_image(q); });
  CHECK(msg == q + ": unsupported BMP bit depth 2 (1, 4, 8, 16, 24 or 32 bits per pixel are read)");
  b[28] = 8;
  spit(q, b.data(), b.size());
  CHECK_SAME_IMAGE(read_image(q), read_image(image_path("grey8.bmp")), "grey8.bmp rewritten unchanged");
}

TEST_CASE("data: image a JPEG declaring more pixels than its bytes can encode is refused before decoding") {
  // image fuzzer finding (2026-12-05, a 10 s slow unit under ASan): 1345 bytes declaring
  // 49456 x 255 pixels. Every 8x8 block costs a JPEG at least one bit: <= 512 pixels a byte.
  const std::string p = "tests/fuzz/corpus/image/reg_jpeg_bomb_49456x255.jpg";
  std::string msg = error_of([&] { read_image(p); });
  CHECK_MESSAGE(msg.find(p) != std::string::npos, msg);
  CHECK_MESSAGE(msg.find("49456x255 pixels, more than its 1345 bytes can encode") != std::string::npos, msg);
  // Honest JPEGs stay inside the bound (1024 a byte + 64 K): a flat grey 2048x2048 picture from
  // Pillow is 85 pixels a byte (baseline, quality 75) or 251 (progressive, optimised tables).
  for (const char* f : {"grey.jpg", "rgb420.jpg", "rgb_prog.jpg", "rgb_odd.jpg"})
    CHECK_NOTHROW(read_image(image_path(f)));
}

TEST_CASE("data: image a JPEG scan using a Huffman table no DHT defined is refused (stb reads garbage tables)") {
  // image fuzzer finding (2026-12-05, UBSan in stb_image 2.27: h->size[16777460]): a
  // progressive JPEG whose AC scan uses AC table 0, never defined.
  const std::string p = "tests/fuzz/corpus/image/reg_scan_undefined_huffman_table.jpg";
  std::string msg = error_of([&] { read_image(p); });
  CHECK_MESSAGE(msg.find(p) != std::string::npos, msg);
  CHECK_MESSAGE(msg.find("scan uses AC Huffman table 0, which no DHT segment defined") != std::string::npos, msg);
  // A valid baseline JPEG with its DHT segment renamed to a COM segment: the same refusal, for DC.
  std::vector<uint8_t> b = slurp(image_path("grey.jpg"));
  for (size_t i = 2; i + 1 < b.size(); ++i)
    if (b[i] == 0xFF && b[i + 1] == 0xC4) b[i + 1] = 0xFE;
  fs::path dir = test::scratch_dir("data_image_nodht");
  const std::string q = (dir / "nodht.jpg").string();
  spit(q, b.data(), b.size());
  msg = error_of([&] { read_image(q); });
  CHECK_MESSAGE(msg.find("DC Huffman table 0, which no DHT segment defined") != std::string::npos, msg);
}

TEST_CASE("data: image JPEG scans stb_image 2.27 mis-decoded go to libjpeg-turbo: a named error, as Pillow's") {
  // image fuzzer finding (2026-12-05, UBSan in stb_image 2.27's bit reader, stb_image.h:2065:
  // shift exponent 33): a 224x224 baseline JPEG whose second scan drives stb's code_bits
  // negative. libjpeg-turbo (as Pillow: "broken data stream") refuses a second scan after an
  // interleaved baseline scan. The input is also replayed by 'io: fuzz corpus ...' (under
  // SAN=address,undefined that replay is the UB check).
  const std::string p = "tests/fuzz/corpus/image/reg_stb_shift_exponent_33.jpg";
  std::string msg = error_of([&] { read_image(p); });
  CHECK(msg == p + ": cannot decode JPEG: Didn't expect more than one scan");
  // Its companion from the same run: 52 KB declaring 50144 x 255 pixels, 17 s under ASan in stb;
  // libjpeg-turbo stops at the same kind of second scan at once.
  const std::string q = "tests/fuzz/corpus/image/reg_jpeg_slow_50144x255.jpg";
  msg = error_of([&] { read_image(q); });
  CHECK(msg == q + ": cannot decode JPEG: Didn't expect more than one scan");
}

TEST_CASE("data: image a JPEG with damaged entropy data decodes through libjpeg's warnings, as Pillow") {
  // Pillow decodes through libjpeg's "Corrupt JPEG data" warnings (it only fails on libjpeg's
  // errors); so do we. Zeroing bytes inside the scan cannot make a marker.
  std::vector<uint8_t> b = slurp(image_path("grey.jpg"));
  size_t sos = 0;
  for (size_t i = 2; i + 1 < b.size(); ++i)
    if (b[i] == 0xFF && b[i + 1] == 0xDA) sos = i;
  REQUIRE(sos > 0);
  const size_t start = sos + 2 + ((size_t(b[sos + 2]) << 8) | b[sos + 3]);
  REQUIRE(start + 40 < b.size());
  for (size_t i = start + 10; i < start + 30; ++i) b[i] = 0;
  fs::path dir = test::scratch_dir("data_image_jpeg_damaged");
  const std::string q = (dir / "damaged.jpg").string();
  spit(q, b.data(), b.size());
  Image good = read_image(image_path("grey.jpg")), bad = read_image(q);
  CHECK((bad.w == good.w && bad.h == good.h && bad.c == good.c));
  CHECK(diff(bad, good).differ > 0);
}

TEST_CASE("data: image a JPEG with more than 500 scans is refused before decoding") {
  // Each progressive scan is a pass over every block: many tiny scans cost far more time than
  // the file's size suggests. libjpeg-turbo's advice for untrusted files is a 500-scan limit.
  std::vector<uint8_t> b = slurp(image_path("rgb_prog.jpg"));
  size_t last_sos = 0;
  for (size_t i = 2; i + 1 < b.size(); ++i)
    if (b[i] == 0xFF && b[i + 1] == 0xDA) last_sos = i;
  REQUIRE((last_sos > 0 && b[b.size() - 2] == 0xFF && b.back() == 0xD9));
  const std::vector<uint8_t> scan(b.begin() + long(last_sos), b.end() - 2);  // SOS + its data
  int scans = 0;
  for (size_t i = 2; i + 1 < b.size(); ++i) scans += b[i] == 0xFF && b[i + 1] == 0xDA;
  std::vector<uint8_t> many(b.begin(), b.end() - 2);
  for (int k = scans; k <= 500; ++k) many.insert(many.end(), scan.begin(), scan.end());  // 501 scans
  many.push_back(0xFF);
  many.push_back(0xD9);
  fs::path dir = test::scratch_dir("data_image_jpeg_scans");
  const std::string q = (dir / "scans501.jpg").string();
  spit(q, many.data(), many.size());
  std::string msg = error_of([&] { read_image(q); });
  CHECK(msg == q + ": corrupt JPEG (more than 500 scans; real encoders write at most a few dozen)");
}

TEST_CASE("data: image a PNG with zero-length IDAT chunks decodes as without them") {
  // image fuzzer finding (2026-12-05, UBSan in stb_image 2.27: memcpy into a null buffer for
  // an empty IDAT). Empty IDAT chunks are valid PNG; they are dropped before stb sees the file.
  // (The fuzzer's input, tests/fuzz/corpus/image/reg_png_empty_idat.png, is replayed by
  // 'io: fuzz corpus ...'; under SAN=address,undefined that replay is the check.)
  std::vector<uint8_t> b = slurp(image_path("rgb8.png"));
  const uint8_t empty_idat[12] = {0, 0, 0, 0, 'I', 'D', 'A', 'T', 0x35, 0xAF, 0x06, 0x1E};  // CRC of "IDAT"
  size_t at = 33;  // after the signature and IHDR: before the first IDAT, and again after it
  b.insert(b.begin() + long(at), empty_idat, empty_idat + 12);
  fs::path dir = test::scratch_dir("data_image_empty_idat");
  const std::string q = (dir / "empty_idat.png").string();
  spit(q, b.data(), b.size());
  CHECK_SAME_IMAGE(read_image(q), read_image(image_path("rgb8.png")), "rgb8.png with an empty IDAT first");
}

TEST_CASE("data: image a PNG chunk longer than the file is refused before stb allocates it") {
  // image fuzzer finding (2026-12-05, out-of-memory): stb 2.27 reallocates an IDAT's declared
  // length (2 GB here, in a 5.6 KB file) before reading it.
  const std::string p = "tests/fuzz/corpus/image/reg_png_idat_length_2gb.png";
  std::string msg = error_of([&] { read_image(p); });
  CHECK_MESSAGE(msg.find(p) != std::string::npos, msg);
  CHECK_MESSAGE(msg.find("truncated or corrupt PNG (chunk 'IDAT'") != std::string::npos, msg);
}

TEST_CASE("data: image a DICOM JPEG fragment with a TEM marker before its frame header is refused (DCMTK would hang)") {
  // dicom fuzzer finding (2026-12-05): DCMTK 3.6.7's scanJpegDataForBitDepth never advances past
  // a TEM marker (FF01), so this 2.5 KB file never returned. Refused before DCMTK decodes.
  const std::string p = "tests/fuzz/corpus/dicom/reg_tem_marker_hang.dcm";
  std::string msg = error_of([&] { read_image(p); });
  CHECK_MESSAGE(msg.find(p) != std::string::npos, msg);
  CHECK_MESSAGE(msg.find("TEM marker (FF01)") != std::string::npos, msg);
  // The same in a valid JPEG DICOM: its APP0 marker (FF E0 after SOI) turned into a TEM.
  std::ifstream f(image_path("jpeg_mono8.dcm"), std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(f)), {});
  size_t at = bytes.find(std::string("\xFF\xD8\xFF\xE0", 4));
  REQUIRE(at != std::string::npos);
  CHECK_NOTHROW(read_image(image_path("jpeg_mono8.dcm")));
  bytes[at + 3] = '\x01';
  fs::path dir = test::scratch_dir("data_image_tem");
  const std::string q = (dir / "tem.dcm").string();
  std::ofstream(q, std::ios::binary) << bytes;
  msg = error_of([&] { read_image(q); });
  CHECK_MESSAGE(msg.find(q) != std::string::npos, msg);
  CHECK_MESSAGE(msg.find("TEM marker") != std::string::npos, msg);
  // dicom fuzzer finding (session 5): the TEM behind fill bytes (FF FF, which DCMTK steps over
  // one byte at a time) or behind an FFC8 segment (skipped by its length): the first walk here
  // stopped at those and let DCMTK hang. Both made in place from the valid file, and the finding.
  for (const std::string& marker : {std::string("\xFF\xD8\xFF\xFF\xFF\x01", 6),
                                    std::string("\xFF\xD8\xFF\xC8\x00\x02\xFF\x01", 8)}) {
    std::string b = bytes;
    b.replace(at, marker.size(), marker);
    const std::string r = (dir / "tem_hidden.dcm").string();
    std::ofstream(r, std::ios::binary | std::ios::trunc) << b;
    msg = error_of([&] { read_image(r); });
    CHECK_MESSAGE(msg.find("TEM marker (FF01)") != std::string::npos, msg);
  }
  const std::string fill = "tests/fuzz/corpus/dicom/reg_tem_after_fill_bytes_hang.dcm";
  msg = error_of([&] { read_image(fill); });
  CHECK_MESSAGE(msg.find(fill) != std::string::npos, msg);
  CHECK_MESSAGE(msg.find("TEM marker (FF01)") != std::string::npos, msg);
}

TEST_CASE("data: image write_png round trip") {
  fs::path dir = test::scratch_dir("data_image_png");
  Image rgb = ref_image("decode/rgb8.png"), g = channel0(rgb);
  write_png((dir / "rgb.png").string(), rgb);
  write_png((dir / "g.png").string(), g);
  CHECK_SAME_IMAGE(read_image((dir / "rgb.png").string()), rgb, "rgb round trip");
  ReadOptions keep;
  keep.keep_grey = true;
  CHECK_SAME_IMAGE(read_image((dir / "g.png").string(), keep), g, "grey round trip");
  CHECK_FALSE(error_of([&] { write_png((dir / "nodir" / "x.png").string(), rgb); }).empty());
}

TEST_CASE("data: image `medslip preprocess` writes the tensor the model sees") {
  fs::path dir = test::scratch_dir("data_image_preprocess");
  std::string out = (dir / "x.safetensors").string(), png = (dir / "x.png").string();
  std::string src = image_path("rgb8.png");
  std::vector<std::string> args = {"preprocess", src, "--size", "24", "--out", out};
  auto run = [](std::vector<std::string> a) {
    std::vector<char*> argv;
    for (auto& s : a) argv.push_back(s.data());
    return cmd_preprocess(int(argv.size()), argv.data());
  };
  REQUIRE(run(args) == 0);
  Tensor t = load_safetensors_tensor(out, "image");
  CHECK(t.shape() == Shape{1, 3, 24, 24});
  CHECK(t.to_vector() == reference("tensor/rgb8.png/24").to_float_vector());
  CHECK(safetensors_metadata(out).at("transform") == "test");
  // --train: the same seed gives the same tensor; the PNG holds the 8-bit image.
  args = {"preprocess", src, "--size", "32", "--train", "--seed", "9", "--out", out, "--png", png};
  REQUIRE(run(args) == 0);
  std::vector<float> a = load_safetensors_tensor(out, "image").to_vector();
  REQUIRE(run(args) == 0);
  CHECK(load_safetensors_tensor(out, "image").to_vector() == a);
  Rng rng(9, kStreamAugment);
  CHECK(train_transform(read_image(src), 32, rng) == a);
  CHECK(to_normalized_chw(read_image(png)) == a);
  // --epoch/--item: the pretraining loader's draws for that sample.
  args = {"preprocess", src, "--size", "32", "--train", "--seed", "9", "--epoch", "2", "--item", "5", "--out", out};
  REQUIRE(run(args) == 0);
  Rng loader_rng = sample_rng(9, 2, 5, false);
  CHECK(load_safetensors_tensor(out, "image").to_vector() == train_transform(read_image(src), 32, loader_rng));
  CHECK_THROWS(run({"preprocess", src, "--seed", "3", "--out", out}));  // --seed without --train
  CHECK_THROWS(run({"preprocess", src, "--train", "--epoch", "3", "--out", out}));  // --epoch without --item
}

TEST_CASE("data: image mutated files either decode or raise, never crash") {
  // Byte flips inside valid files (headers, tables, entropy-coded data); run under
  // AddressSanitizer as well (make SAN=address). A flip may still give a valid image.
  fs::path dir = test::scratch_dir("data_image_mutate");
  Rng rng(5, kStreamData);
  int decoded = 0, rejected = 0;
  for (const std::string name : {"rgb8.png", "grey16.png", "palette.png", "rgb420.jpg", "rgb_prog.jpg", "grey.jpg",
                                 "rgb24.bmp", "grey8.bmp", "mono2_u16.dcm", "jpeg_mono8.dcm", "jpeg_ybr.dcm"}) {
    std::vector<uint8_t> bytes = slurp(image_path(name));
    for (int trial = 0; trial < 25; ++trial) {
      std::vector<uint8_t> m = bytes;
      int flips = 1 + int(rng.randint(4));
      for (int f = 0; f < flips; ++f) m[size_t(rng.randint(int64_t(m.size())))] ^= uint8_t(1 + rng.randint(255));
      std::string p = (dir / ("m" + std::to_string(trial) + "_" + name)).string();
      spit(p, m.data(), m.size());
      try {
        Image img = read_image(p);
        CHECK(img.px.size() == size_t(img.w) * img.h * img.c);
        ++decoded;
      } catch (const std::exception& e) {
        CHECK_MESSAGE(std::string(e.what()).find(p) != std::string::npos, e.what());
        ++rejected;
      }
    }
  }
  MESSAGE("mutated files: " << decoded << " decoded, " << rejected << " rejected with a named error");
}
