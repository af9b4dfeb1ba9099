// defines: the YAML reading that the pretraining config (model/config.h) and the fine-tuning
// config (train/finetune.h) share: the file, its top-level mapping and typed values, each
// failure a std::runtime_error naming the file (and the key).
#pragma once
#include <yaml-cpp/yaml.h>

#include <stdexcept>
#include <string>

namespace ms {

// The file's text; throws "config file '<path>' cannot be opened".
std::string read_config_file(const std::string& path);
// The document's top-level mapping (a null node for an empty document); throws
// "<origin>: not valid YAML: ..." or "<origin>: expected a mapping of keys to values ...".
YAML::Node load_config_map(const std::string& text, const std::string& origin);

// `n` as T; throws "<origin>: key '<key>' has an invalid value '<value>'".
template <class T>
T config_value(const YAML::Node& n, const std::string& key, const std::string& origin) {
  try {
    return n.as<T>();
  } catch (const YAML::Exception&) {
    throw std::runtime_error(origin + ": key '" + key + "' has an invalid value '" + YAML::Dump(n) + "'");
  }
}

// Calls fn(key, value) for each entry of the mapping `root`. The value is a copy, not a
// reference: yaml-cpp's iterator operator-> returns a proxy by value, so a reference to
// it->second dangles after that statement (ASan: stack-use-after-scope). yaml-cpp's own
// exceptions (a mapping used as a key, ...) are reported with `origin` (yaml_config fuzzer).
template <class Fn>
void for_each_config_key(const YAML::Node& root, const std::string& origin, Fn fn) {
  try {
    for (auto it = root.begin(); it != root.end(); ++it) {
      const std::string k = it->first.as<std::string>();
      const YAML::Node v = it->second;
      fn(k, v);
    }
  } catch (const YAML::Exception& e) {
    throw std::runtime_error(origin + ": " + e.what());
  }
}

// c.validate(), its error prefixed with `origin`.
template <class Config>
void validate_config(const Config& c, const std::string& origin) {
  try {
    c.validate();
  } catch (const std::exception& e) {
    throw std::runtime_error(origin + ": " + e.what());
  }
}

}  // namespace ms
