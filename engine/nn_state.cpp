#include "engine/nn_state.h"

#include <stdexcept>

#include "engine/autograd.h"

namespace ms {

std::map<std::string, FileTensor> module_state_files(const nn::Module& m) {
  std::map<std::string, FileTensor> out;
  for (const auto& e : m.state_entries()) {
    if (e.is_int64) {
      auto v = e.tensor->to_vector();
      std::vector<int64_t> iv(v.begin(), v.end());
      out[e.name] = FileTensor::from_i64(iv, e.tensor->shape());
    } else {
      out[e.name] = FileTensor::from_float(*e.tensor);
    }
  }
  return out;
}

void save_module(const std::string& path, const nn::Module& m, const std::map<std::string, std::string>& metadata) {
  save_safetensors(path, module_state_files(m), metadata);
}

nn::LoadReport load_module_state(nn::Module& m, std::map<std::string, Tensor> sd, bool strict,
                                 const std::string& origin, const std::string& strip_prefix) {
  if (!strip_prefix.empty()) {
    std::map<std::string, Tensor> stripped;
    for (auto& [k, v] : sd)
      stripped[k.compare(0, strip_prefix.size(), strip_prefix) == 0 ? k.substr(strip_prefix.size()) : k] = v;
    sd.swap(stripped);
  }
  // A tensor registered under several names must arrive with one value.
  std::map<const Tensor*, std::string> first_name;
  for (const auto& e : m.state_entries()) {
    auto [it, inserted] = first_name.insert({e.tensor, e.name});
    if (inserted) continue;
    auto a = sd.find(it->second), b = sd.find(e.name);
    if (a == sd.end() || b == sd.end()) continue;
    if (a->second.shape() != b->second.shape() || a->second.to_vector() != b->second.to_vector())
      throw std::invalid_argument(origin + ": '" + it->second + "' and '" + e.name +
                                  "' are one shared parameter in the model but differ in the file");
  }
  // A shared tensor present under only one of its names counts as loaded.
  for (const auto& e : m.state_entries()) {
    if (sd.count(e.name)) continue;
    for (const auto& f : m.state_entries())
      if (f.tensor == e.tensor && f.name != e.name && sd.count(f.name)) { sd[e.name] = sd[f.name]; break; }
  }
  try {
    return m.load_state_dict(sd, strict);
  } catch (const std::exception& ex) {
    throw std::invalid_argument(origin + ": " + ex.what());
  }
}

}  // namespace ms
