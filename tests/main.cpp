// The doctest runner for every suite. Run from the repository root (make test).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>

#include "engine/threads.h"

int main(int argc, char** argv) {
  ms::init_threads();
  // Scratch files go to a folder of this run's own (TMPDIR, which temp_directory_path() and
  // child processes honour), so two test runs on one machine never write into each other's.
  namespace fs = std::filesystem;
  const fs::path scratch = fs::temp_directory_path() / ("medslip_tests_" + std::to_string(::getpid()));
  fs::create_directories(scratch);
  ::setenv("TMPDIR", scratch.c_str(), 1);
  doctest::Context ctx;
  ctx.applyCommandLine(argc, argv);
  const int rc = ctx.run();
  if (rc == 0) {  // kept after a failure, for a look at what the failing test wrote
    std::error_code ec;
    fs::remove_all(scratch, ec);
  }
  return rc;
}
