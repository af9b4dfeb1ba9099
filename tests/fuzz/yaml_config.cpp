// Fuzz target: the YAML training config (yaml-cpp, then our key handling and validation).
#include "model/config.h"
#include "tests/fuzz/fuzz.h"

MS_FUZZ_TARGET(yaml_config, ".yaml") {
  try {
    ms::MedslipConfig::from_yaml_string(std::string(reinterpret_cast<const char*>(data), size), "fuzz.yaml");
  } catch (const std::exception& e) {
    ms::fuzz::expect_named(e, "fuzz.yaml");
  }
}
