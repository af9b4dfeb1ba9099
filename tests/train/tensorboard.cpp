// TensorBoard event files: CRC32C against the standard check value, the TFRecord framing read
// back (and a flipped byte caught), and every scalar, image and text read back by TensorBoard's
// own EventAccumulator (tests/read_events.py; skipped with a reason when tensorboard is absent).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/test_util.h"
#include "train/tensorboard.h"

using namespace ms;
namespace fs = std::filesystem;

namespace {

// Runs a shell command, returns (exit status, stdout).
std::pair<int, std::string> run_capture(const std::string& cmd) {
  std::string out;
  std::FILE* p = popen(cmd.c_str(), "r");
  if (!p) return {-1, out};
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int st = pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

std::string hex(const std::vector<uint8_t>& b) {
  static const char* d = "0123456789abcdef";
  std::string s;
  for (uint8_t c : b) { s += d[c >> 4]; s += d[c & 15]; }
  return s;
}

Image test_image(int w, int h, int c) {
  Image im(w, h, c);
  for (size_t i = 0; i < im.px.size(); ++i) im.px[i] = uint8_t((i * 37 + 11) % 256);
  return im;
}

}  // namespace

TEST_CASE("train: tensorboard crc32c and record framing") {
  const std::string check = "123456789";
  CHECK(crc32c(reinterpret_cast<const uint8_t*>(check.data()), check.size()) == 0xE3069283u);  // RFC 3720 B.4
  CHECK(crc32c(nullptr, 0) == 0u);
  // Masking as TensorFlow's crc32c::Mask: rotate right by 15, add 0xa282ead8.
  const uint32_t c = 0xE3069283u;
  CHECK(masked_crc32c(reinterpret_cast<const uint8_t*>(check.data()), check.size()) ==
        uint32_t(((c >> 15) | (c << 17)) + 0xa282ead8u));

  const fs::path dir = test::scratch_dir("tb_framing");
  std::string path;
  {
    TensorBoardWriter w(dir.string(), "unit");
    path = w.path();
    w.add_scalar("a", 1.5, 0);
    w.add_scalar("a", -2.25, 1);
  }
  CHECK(fs::path(path).filename().string().rfind("events.out.tfevents.", 0) == 0);
  auto recs = read_tfrecords(path);
  REQUIRE(recs.size() == 3);  // file_version + 2 scalars
  CHECK(recs[0].find("brain.Event:2") != std::string::npos);

  // One flipped byte in the data of the last record is a named CRC error.
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-6, std::ios::end);
    char x;
    f.read(&x, 1);
    f.seekp(-6, std::ios::end);
    x ^= 0x40;
    f.write(&x, 1);
  }
  CHECK_THROWS_WITH(read_tfrecords(path), doctest::Contains("record 2: data CRC mismatch"));
}

TEST_CASE("train: tensorboard event files read back by TensorBoard's EventAccumulator") {
  const fs::path dir = test::scratch_dir("tb_roundtrip");
  // Values that float32 keeps exactly and ones it rounds; steps 0 .. beyond 2^32.
  const std::vector<std::pair<int64_t, double>> loss = {{0, 4.25}, {1, 3.1}, {2, 1e-7}, {7, -0.5}, {int64_t(1) << 33, 123456.789}};
  const Image grey = test_image(5, 3, 1), rgb = test_image(4, 6, 3);
  const std::string text = "## config\n\n| key | value |\n|---|---|\n| lr | 5e-4 |\nunicode: μ ≤ 1";
  size_t n_events = 0;
  {
    TensorBoardWriter w(dir.string());
    for (auto& [s, v] : loss) w.add_scalar("train/loss", v, s), ++n_events;
    w.add_scalar("lr", 5e-4, 3), ++n_events;
    w.add_image("attention/0_grey", grey, 1), ++n_events;
    w.add_image("attention/1_rgb", rgb, 2), ++n_events;
    w.add_text("config", text, 0), ++n_events;
    auto recs = read_tfrecords(w.path());
    CHECK(recs.size() == n_events + 1);
  }

  const char* py = std::getenv("MEDSLIP_PYTHON");
  const std::string python = py && *py ? py : "/usr/bin/python3";
  auto [probe, _] = run_capture(python + " -c 'import tensorboard' 2>/dev/null");
  if (probe != 0) {
    MESSAGE("skipping the TensorBoard read-back: " << python << " has no 'tensorboard' package "
            "(install: " << python << " -m pip install --break-system-packages tensorboard)");
    return;
  }
  auto [rc, out] = run_capture(python + " tests/read_events.py '" + dir.string() + "'");
  REQUIRE_MESSAGE(rc == 0, "tests/read_events.py failed: " << out);
  nlohmann::json j = nlohmann::json::parse(out);

  const auto& sl = j["scalars"]["train/loss"];
  REQUIRE(sl.size() == loss.size());
  for (size_t i = 0; i < loss.size(); ++i) {
    CHECK(sl[i][0].get<int64_t>() == loss[i].first);
    CHECK(sl[i][1].get<double>() == double(float(loss[i].second)));  // float32, bit for bit
  }
  REQUIRE(j["scalars"]["lr"].size() == 1);
  CHECK(j["scalars"]["lr"][0][1].get<double>() == double(float(5e-4)));

  for (auto& [tag, im, step] : {std::tuple<std::string, Image, int>{"attention/0_grey", grey, 1},
                                std::tuple<std::string, Image, int>{"attention/1_rgb", rgb, 2}}) {
    const auto& e = j["images"][tag];
    REQUIRE_MESSAGE(e.size() == 1, tag);
    CHECK(e[0][0].get<int>() == step);
    CHECK(e[0][1].get<int>() == im.w);
    CHECK(e[0][2].get<int>() == im.h);
    const std::string png = e[0][3];
    CHECK(png == hex(encode_png(im)));
    // and the PNG decodes to the same pixels
    std::vector<uint8_t> bytes;
    for (size_t k = 0; k + 1 < png.size(); k += 2) bytes.push_back(uint8_t(std::stoi(png.substr(k, 2), nullptr, 16)));
    ReadOptions ro;
    ro.keep_grey = true;
    Image back = decode_image_bytes(bytes.data(), bytes.size(), tag, ro);
    CHECK(back.px == im.px);
  }
  REQUIRE(j["text"]["config"].size() == 1);
  CHECK(j["text"]["config"][0][0].get<int>() == 0);
  CHECK(j["text"]["config"][0][1].get<std::string>() == text);
}
