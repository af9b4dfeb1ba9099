// TensorBoard event files (train/tensorboard.h): CRC32C against the standard check value, the TFRecord framing read
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
#include "train/report.h"
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
    const std::string ours = encode_png(im);
    CHECK(png == hex(std::vector<uint8_t>(ours.begin(), ours.end())));
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

namespace ms::test {

// Called by the pretraining test on its finished run (2 epochs of 3 steps with validation): the
// events TensorBoard reads match metrics.jsonl and the returned losses, every step and epoch; the
// attention pictures are there per epoch; and the run's report draws every figure it can.
void check_run_events(const std::string& run_dir, const std::vector<float>& step_totals) {
  std::vector<fs::path> events;
  for (auto& e : fs::directory_iterator(run_dir))
    if (e.path().filename().string().find("tfevents") != std::string::npos) events.push_back(e.path());
  REQUIRE(events.size() == 1);
  CHECK(events[0].extension() == ".pretrain");
  CHECK(read_tfrecords(events[0].string()).size() > step_totals.size() * 8);  // CRCs checked

  std::vector<nlohmann::json> epochs, steps;
  {
    std::ifstream f(run_dir + "/metrics.jsonl");
    std::string line;
    while (std::getline(f, line)) {
      auto j = nlohmann::json::parse(line);
      (j["type"] == "epoch" ? epochs : steps).push_back(j);
    }
  }
  REQUIRE(steps.size() == step_totals.size());
  REQUIRE(epochs.size() == 2);

  ReportOptions ro;
  ro.run_dir = run_dir;
  ReportResult rep;
  render_report(ro, &rep);
  CHECK(rep.figures.size() == 8);  // 6 loss terms, lr, images/s (no zeroshot yet)
  CHECK(rep.notes.size() == 2);    // zeroshot, ground
  CHECK(rep.images >= 2);          // attention overlays, 2 epochs x the probe's images

  const char* py = std::getenv("MEDSLIP_PYTHON");
  const std::string python = py && *py ? py : "/usr/bin/python3";
  if (run_capture(python + " -c 'import tensorboard' 2>/dev/null").first != 0) {
    MESSAGE("skipping the TensorBoard read-back of the pretraining run: no 'tensorboard' for " << python);
    return;
  }
  auto [rc, out] = run_capture(python + " tests/read_events.py '" + run_dir + "'");
  REQUIRE_MESSAGE(rc == 0, out);
  auto j = nlohmann::json::parse(out);
  for (const char* k : {"loss", "loss_ce_pathology", "loss_ce_anatomy", "loss_cl_pathology", "loss_cl_anatomy", "loss_ap"}) {
    const auto& tr = j["scalars"][std::string("train/") + k];
    REQUIRE_MESSAGE(tr.size() == steps.size(), k);
    for (size_t i = 0; i < steps.size(); ++i) {
      CHECK(tr[i][0].get<int64_t>() == steps[i]["step"].get<int64_t>());
      CHECK(tr[i][1].get<double>() == double(steps[i][k].get<float>()));
    }
    const auto& va = j["scalars"][std::string("valid/") + k];
    const auto& tm = j["scalars"][std::string("train_epoch_mean/") + k];
    REQUIRE(va.size() == 2);
    REQUIRE(tm.size() == 2);
    for (size_t e = 0; e < 2; ++e) {
      CHECK(va[e][0].get<int64_t>() == epochs[e]["step"].get<int64_t>());
      CHECK(va[e][1].get<double>() == double(epochs[e]["valid"][k].get<float>()));
      CHECK(tm[e][1].get<double>() == double(epochs[e]["train"][k].get<float>()));
    }
  }
  for (size_t i = 0; i < steps.size(); ++i) {
    CHECK(j["scalars"]["train/loss"][i][1].get<double>() == double(step_totals[i]));
    CHECK(j["scalars"]["train/lr"][i][1].get<double>() == double(steps[i]["lr"].get<float>()));
    CHECK(j["scalars"]["train/images_per_s"][i][1].get<double>() == double(float(steps[i]["images_per_s"].get<double>())));
  }
  size_t pictures = 0;
  for (auto& [tag, ev] : j["images"].items()) {
    CHECK(tag.rfind("attention/", 0) == 0);
    REQUIRE(ev.size() == 2);  // one per epoch
    CHECK(ev[1][0].get<int64_t>() == epochs[1]["step"].get<int64_t>());
    CHECK(ev[0][1].get<int>() > 100);  // width of the overlay (192 + colour bar)
    pictures += ev.size();
  }
  CHECK(int(pictures) == rep.images);
  REQUIRE(j["text"]["config"].size() == 1);
  CHECK(j["text"]["config"][0][1].get<std::string>().find("image_res: 64") != std::string::npos);
}

}  // namespace ms::test
