#include "tests/fuzz/fuzz.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace ms::fuzz {

bool g_libfuzzer = false;

static std::vector<Target>& registry() {
  static std::vector<Target> r;
  return r;
}

Registrar::Registrar(const char* name, TargetFn fn, const char* ext) {
  auto& r = registry();
  r.push_back({name, fn, ext});
  std::sort(r.begin(), r.end(), [](const Target& a, const Target& b) { return std::string(a.name) < b.name; });
}

const std::vector<Target>& targets() { return registry(); }

const Target* find_target(const std::string& name) {
  for (const Target& t : registry())
    if (name == t.name) return &t;
  return nullptr;
}

void finding(const std::string& what) {
  if (g_libfuzzer) {
    std::fprintf(stderr, "medslip fuzz finding: %s\n", what.c_str());
    std::abort();
  }
  throw Finding{what};
}

std::string scratch_file(const std::string& tag, const std::string& ext, const uint8_t* data, size_t size) {
  static const std::string dir = [] {
    std::error_code ec;
    if (std::filesystem::is_directory("/dev/shm", ec) && access("/dev/shm", W_OK) == 0) return std::string("/dev/shm");
    return std::filesystem::temp_directory_path().string();
  }();
  std::string p = dir + "/medslip_fuzz_" + std::to_string(getpid()) + "_" + tag + ext;
  std::FILE* f = std::fopen(p.c_str(), "wb");
  if (!f) finding("cannot write the scratch file " + p);
  if (size && std::fwrite(data, 1, size, f) != size) finding("cannot write the scratch file " + p);
  std::fclose(f);
  return p;
}

std::string scratch_file(const std::string& tag, const std::string& ext, const std::string& text) {
  return scratch_file(tag, ext, reinterpret_cast<const uint8_t*>(text.data()), text.size());
}

void expect_named(const std::exception& e, const std::string& name) {
  std::string m = e.what();
  if (m.empty()) finding("an exception with an empty message (expected one naming " + name + ")");
  if (m.find(name) == std::string::npos) finding("an error that does not name the input " + name + ": '" + m + "'");
}

}  // namespace ms::fuzz
