#include "train/platform.h"

#include <fstream>
#include <string>

#include "engine/device.h"
#include "engine/threads.h"

#ifndef MEDSLIP_GIT_COMMIT
#define MEDSLIP_GIT_COMMIT "unknown"
#endif
#ifndef MEDSLIP_BUILD_FLAGS
#define MEDSLIP_BUILD_FLAGS "unknown"
#endif

namespace ms {

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0) {
      auto p = line.find(':');
      return p == std::string::npos ? line : line.substr(p + 2);
    }
  return "unknown CPU";
}

std::string build_isa() {
  std::string s;
#if defined(__AVX512F__)
  s += "AVX-512 ";
#endif
#if defined(__AVX2__)
  s += "AVX2 ";
#endif
#if defined(__FMA__)
  s += "FMA ";
#endif
  if (s.empty()) s = "baseline x86-64 ";
  s.pop_back();
  return s;
}

std::string build_version() { return std::string("medslip 0.1.0 (git ") + MEDSLIP_GIT_COMMIT + ")"; }
std::string build_flags() { return MEDSLIP_BUILD_FLAGS; }

std::string platform_report() {
  std::string r;
  r += "version   " + build_version() + "\n";
  r += "cpu       " + cpu_model() + "\n";
  r += "isa       compiled for " + build_isa() + "\n";
  r += "blas      " + blas_info() + "\n";
  r += "threads   " + std::to_string(num_threads()) + "\n";
  r += "gpu       " + (cuda_available() ? cuda_device_name() : std::string(cuda_built() ? "none found" : "not built (CPU build)"));
  return r;
}

}  // namespace ms
