// defines: env_setting, the one way the CPU kernels read a choice from the environment
// (MEDSLIP_CONV_ALGO in winograd.cpp, MEDSLIP_CPU_GEMM in matmul.cpp).
#pragma once
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace ms::cpu {

// The value of environment variable `var` through `parse`, or `fallback` when unset or empty;
// a value `parse` refuses throws std::invalid_argument naming the variable.
template <class T, class Parse>
T env_setting(const char* var, T fallback, Parse parse) {
  const char* e = std::getenv(var);
  if (!e || !*e) return fallback;
  try {
    return parse(std::string(e));
  } catch (const std::invalid_argument& err) {
    throw std::invalid_argument(std::string(var) + ": " + err.what());
  }
}

}  // namespace ms::cpu
