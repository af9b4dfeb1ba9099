// The doctest runner for every suite. Run from the repository root (make test).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include "engine/threads.h"

int main(int argc, char** argv) {
  ms::init_threads();
  doctest::Context ctx;
  ctx.applyCommandLine(argc, argv);
  return ctx.run();
}
