// defines: a description of the machine and build, for logs, `medslip verify` and the
// reproducibility record: CPU model, instruction set compiled for, BLAS and its kernel,
// threads, GPU (CUDA builds), version and git commit.
#pragma once
#include <string>

namespace ms {
std::string cpu_model();
std::string build_isa();     // "x86-64-v3 (AVX2, FMA)" or "native (...)"
std::string build_version(); // "medslip 0.1.0 (git abc1234)"
std::string build_flags();
std::string platform_report();  // multi-line, for humans
}  // namespace ms
