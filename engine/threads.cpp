#include "engine/threads.h"

#include <cblas.h>
#include <omp.h>

#include <cstdlib>
#include <string>

extern "C" {
char* openblas_get_config(void);
char* openblas_get_corename(void);
void openblas_set_num_threads(int);
}

namespace ms {

void set_num_threads(int n) {
  if (n < 1) n = 1;
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

int num_threads() { return omp_get_max_threads(); }

void init_threads() {
  int n = omp_get_num_procs();
  if (const char* e = std::getenv("OMP_NUM_THREADS")) {
    int v = std::atoi(e);
    if (v > 0) n = v;
  }
  set_num_threads(n);
}

std::string blas_info() {
  return std::string("OpenBLAS ") + openblas_get_config() + " (" + openblas_get_corename() + " kernels, " +
         std::to_string(num_threads()) + " threads)";
}

}  // namespace ms
