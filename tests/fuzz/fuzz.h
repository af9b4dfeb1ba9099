// defines: the fuzz targets' registry — one function per parser a user's file reaches,
// shared by the libFuzzer harnesses (tests/fuzz/libfuzzer/main.cpp, `make fuzz`, built
// with clang -fsanitize=fuzzer,address,undefined) and the doctest replay of every committed
// corpus / regression input (tests/fuzz/replay.cpp, part of `make test`, plain g++).
//
// A target feeds the bytes to the parser exactly as the program would (through a file when
// the program reads files) and accepts two outcomes: a result that satisfies the target's
// checks, or a std::exception whose message names the input (the project's rule for errors).
// Anything else — a crash, a sanitizer report, an exception that does not name the input,
// a result that breaks an invariant — is a finding: `finding()` aborts under libFuzzer and
// throws fuzz::Finding (not a std::exception, so no parser can swallow it) under doctest.
#pragma once
#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>
#include <vector>

namespace ms::fuzz {

using TargetFn = void (*)(const uint8_t* data, size_t size);

struct Target {
  const char* name;
  TargetFn fn;
  const char* ext;  // file extension the input is written with ("" for in-memory targets)
};

// Every registered target, in name order.
const std::vector<Target>& targets();
const Target* find_target(const std::string& name);

struct Registrar {
  Registrar(const char* name, TargetFn fn, const char* ext);
};
#define MS_FUZZ_TARGET(NAME, EXT)                                                 \
  static void fuzz_##NAME(const uint8_t* data, size_t size);                       \
  static const ::ms::fuzz::Registrar fuzz_reg_##NAME(#NAME, fuzz_##NAME, EXT);     \
  static void fuzz_##NAME(const uint8_t* data, size_t size)

struct Finding {
  std::string what;
};
[[noreturn]] void finding(const std::string& what);
// True inside the libFuzzer harness (set by its main).
extern bool g_libfuzzer;

// Writes the bytes to a per-process scratch file (/dev/shm when there is one) named
// medslip_fuzz_<pid>_<tag><ext> and returns its path. The same path is reused every call.
std::string scratch_file(const std::string& tag, const std::string& ext, const uint8_t* data, size_t size);
std::string scratch_file(const std::string& tag, const std::string& ext, const std::string& text);

// The error contract: a std::exception whose message is non-empty and contains `name`.
void expect_named(const std::exception& e, const std::string& name);

}  // namespace ms::fuzz
