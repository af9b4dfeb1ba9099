// The libFuzzer entry point of one harness: `make fuzz` compiles this file once per target
// with -DMEDSLIP_FUZZ_TARGET='"name"' and links it with tests/fuzz/<name>.cpp and the
// library built with clang -fsanitize=fuzzer-no-link,address,undefined.
#include <cstdio>
#include <cstdlib>

#include "tests/fuzz/fuzz.h"

#ifndef MEDSLIP_FUZZ_TARGET
#error "compile with -DMEDSLIP_FUZZ_TARGET='\"name\"'"
#endif

static ms::fuzz::TargetFn g_fn = nullptr;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  ms::fuzz::g_libfuzzer = true;
  setenv("OMP_NUM_THREADS", "1", 1);
  const ms::fuzz::Target* t = ms::fuzz::find_target(MEDSLIP_FUZZ_TARGET);
  if (!t) {
    std::fprintf(stderr, "no fuzz target '%s' is registered\n", MEDSLIP_FUZZ_TARGET);
    std::abort();
  }
  g_fn = t->fn;
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    g_fn(data, size);
  } catch (const ms::fuzz::Finding& f) {
    std::fprintf(stderr, "medslip fuzz finding: %s\n", f.what.c_str());
    std::abort();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "medslip fuzz finding: uncaught exception: %s\n", e.what());
    std::abort();
  }
  return 0;
}
