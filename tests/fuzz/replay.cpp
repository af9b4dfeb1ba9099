// Replays every committed fuzz input (tests/fuzz/corpus/<target>/*: seeds and the inputs of
// past findings) through its target with the normal build, so `make test` keeps every
// fixed finding fixed without clang. Under `make test SAN=address,undefined` the same
// inputs run with the sanitizers.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "tests/fuzz/fuzz.h"

namespace fs = std::filesystem;

TEST_CASE("io: fuzz corpus and regression inputs replay through every target") {
  const fs::path root = fs::current_path() / "tests" / "fuzz" / "corpus";
  REQUIRE(fs::is_directory(root));
  const auto& targets = ms::fuzz::targets();
  CHECK(targets.size() >= 12);
  int64_t files = 0;
  for (const ms::fuzz::Target& t : targets) {
    fs::path dir = root / t.name;
    CHECK_MESSAGE(fs::is_directory(dir), "target '" << t.name << "' has no corpus folder " << dir);
    if (!fs::is_directory(dir)) continue;
    std::vector<fs::path> inputs;
    for (const auto& e : fs::directory_iterator(dir))
      if (e.is_regular_file()) inputs.push_back(e.path());
    std::sort(inputs.begin(), inputs.end());
    CHECK_MESSAGE(!inputs.empty(), "target '" << t.name << "' has an empty corpus");
    for (const fs::path& in : inputs) {
      std::ifstream f(in, std::ios::binary);
      std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), {});
      try {
        t.fn(bytes.data(), bytes.size());
      } catch (const ms::fuzz::Finding& e) {
        FAIL_CHECK(t.name << ": " << in.filename().string() << ": " << e.what);
      }
      ++files;
    }
  }
  MESSAGE(files << " fuzz inputs replayed through " << targets.size() << " targets");
}

TEST_CASE("io: fuzz target contract (a named error passes, anything else is a finding)") {
  // The image target on bytes with no known magic number: a named error, no finding.
  const ms::fuzz::Target* img = ms::fuzz::find_target("image");
  REQUIRE(img);
  const uint8_t junk[] = {1, 2, 3, 4};
  CHECK_NOTHROW(img->fn(junk, sizeof junk));
  // An error that does not name the input is a finding.
  CHECK_THROWS_AS(ms::fuzz::expect_named(std::runtime_error("bad header"), "fuzz.img"), ms::fuzz::Finding);
  CHECK_NOTHROW(ms::fuzz::expect_named(std::runtime_error("fuzz.img: bad header"), "fuzz.img"));
}

TEST_CASE("io: fuzz pickle findings: deep nesting and shared containers give named errors, fast") {
  // pickle fuzzer finding (2026-12-05): a list nested 65 levels deep threw "checkpoint nests
  // deeper than 64 levels" without the file name (flatten_pyobj did not know it). The same
  // walk would expand a container shared through the pickle memo once per use: 30 levels of
  // [a, a] are 2^30 leaves from ~150 bytes. Both are named errors now, the second before any
  // leaf is built. The target throws ms::fuzz::Finding for an error that does not name the file.
  const ms::fuzz::Target* pk = ms::fuzz::find_target("pickle");
  REQUIRE(pk);
  auto run = [&](const std::string& pkl) {
    pk->fn(reinterpret_cast<const uint8_t*>(pkl.data()), pkl.size());
    pk->fn(reinterpret_cast<const uint8_t*>(pkl.data()), pkl.size() - 1);  // odd / even size: both load modes
  };
  std::string deep = "\x80\x02" + std::string(70, ']') + std::string(69, 'a') + ".";
  CHECK_NOTHROW(run(deep + "."));
  std::string shared = std::string("\x80\x02") + "]q" + std::string(1, '\0');
  for (int k = 1; k <= 30; ++k) {  // MARK, BINGET k-1 twice, LIST, BINPUT k
    const std::string prev(1, char(k - 1));
    shared += "(h" + prev + "h" + prev + "lq" + std::string(1, char(k));
  }
  const auto t0 = std::chrono::steady_clock::now();
  CHECK_NOTHROW(run(shared + ".."));
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
}
