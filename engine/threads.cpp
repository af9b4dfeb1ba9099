#include "engine/threads.h"
#include "engine/kernels/cpu/gemm.h"

#include <cblas.h>
#include <oneapi/dnnl/dnnl.h>
#include <omp.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" {
char* openblas_get_config(void);
char* openblas_get_corename(void);
void openblas_set_num_threads(int);
}

namespace ms {

namespace {

// The OpenBLAS kernel family this CPU can run at its best, or "" when the detected one is
// already fine. Debian's OpenBLAS 0.3.21 (DYNAMIC_ARCH) does not know some newer CPUs
// (e.g. Xeon family 6 model 207) and falls back to its SSE3 "Prescott" kernels, about 5x
// slower in sgemm; OPENBLAS_CORETYPE selects the family by name, but only at load time.
std::string better_blas_core(const std::string& detected) {
  static const char* avx512_cores[] = {"SkylakeX", "Cooperlake", "SapphireRapids"};
  static const char* avx2_cores[] = {"Haswell", "Zen", "SkylakeX", "Cooperlake", "SapphireRapids"};
  auto among = [&](const char* const* list, size_t n) {
    for (size_t i = 0; i < n; ++i)
      if (detected == list[i]) return true;
    return false;
  };
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (avx512 && !among(avx512_cores, 3)) return "SkylakeX";
  if (avx2 && !avx512 && !among(avx2_cores, 5)) return "Haswell";
  return "";
}

// When OpenBLAS picked a weaker kernel family than the CPU supports, runs this program
// again (same arguments) with OPENBLAS_CORETYPE set. Never when the user set it, and at
// most once (MEDSLIP_BLAS_CORE marks the second run).
void select_blas_core() {
  if (std::getenv("OPENBLAS_CORETYPE") || std::getenv("MEDSLIP_BLAS_CORE")) return;
  const std::string core = better_blas_core(openblas_get_corename());
  if (core.empty()) return;
  std::ifstream f("/proc/self/cmdline", std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<std::string> args;
  for (size_t p = 0; p < all.size();) {
    const size_t e = all.find('\0', p);
    args.push_back(all.substr(p, e == std::string::npos ? std::string::npos : e - p));
    if (e == std::string::npos) break;
    p = e + 1;
  }
  if (args.empty()) return;
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  setenv("OPENBLAS_CORETYPE", core.c_str(), 1);
  setenv("MEDSLIP_BLAS_CORE", (std::string(openblas_get_corename()) + " -> " + core).c_str(), 1);
  execv("/proc/self/exe", argv.data());
  unsetenv("OPENBLAS_CORETYPE");  // exec failed: carry on with what OpenBLAS chose
}

}  // namespace

void set_num_threads(int n) {
  if (n < 1) n = 1;
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

int num_threads() { return omp_get_max_threads(); }

void init_threads() {
  select_blas_core();
  int n = omp_get_num_procs();
  if (const char* e = std::getenv("OMP_NUM_THREADS")) {
    int v = std::atoi(e);
    if (v > 0) n = v;
  }
  set_num_threads(n);
}

std::string blas_info() {
  std::string s = std::string("OpenBLAS ") + openblas_get_config() + " (" + openblas_get_corename() + " kernels, " +
                  std::to_string(num_threads()) + " threads)";
  if (const char* m = std::getenv("MEDSLIP_BLAS_CORE"))
    s += std::string("; kernel family chosen by medslip (") + m + "): OpenBLAS did not recognise this CPU";
  const dnnl_version_t* v = dnnl_version();
  s = "matrix products: " + std::string(cpu::gemm_backend_name(cpu::gemm_backend())) + ", " +
      cpu::precision_name(cpu::gemm_precision()) + " (MEDSLIP_CPU_GEMM); oneDNN " + std::to_string(v->major) + "." +
      std::to_string(v->minor) + "." + std::to_string(v->patch) + " (OpenMP); " + s;
  return s;
}

}  // namespace ms
