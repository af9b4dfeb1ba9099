// defines: the thread count shared by OpenMP loops and OpenBLAS.
#pragma once
#include <string>

namespace ms {
// Reads OMP_NUM_THREADS (default: all cores) and applies it to OpenMP and OpenBLAS.
void init_threads();
void set_num_threads(int n);
int num_threads();
// "OpenBLAS 0.3.21 (Haswell kernels, 2 threads)" — for logs and reports.
std::string blas_info();
}  // namespace ms
