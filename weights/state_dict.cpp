// One loader for every weights file we accept; see weights/README.md.
#include "weights/state_dict.h"

#include <cstdio>
#include <fstream>
#include <set>
#include <stdexcept>

#include "weights/torch_pickle.h"
#include "weights/zip_reader.h"

namespace ms {

WeightsFormat detect_weights_format(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(path + ": cannot open (no such file?)");
  uint8_t head[2] = {0, 0};
  f.read(reinterpret_cast<char*>(head), 2);
  if (f.gcount() == 0) throw std::runtime_error(path + ": empty file");
  if (ZipReader::looks_like_zip(path)) return WeightsFormat::TorchZip;
  if (f && head[0] == 0x80 && head[1] <= 5) return WeightsFormat::TorchLegacy;
  if (is_safetensors_file(path)) return WeightsFormat::Safetensors;
  return WeightsFormat::Unknown;
}

int64_t StateDict::numel() const {
  int64_t n = 0;
  for (const auto& [k, t] : tensors) n += t.numel();
  return n;
}

std::map<std::string, Tensor> StateDict::to_float() const {
  std::map<std::string, Tensor> out;
  for (const auto& [k, t] : tensors) out[k] = t.to_float();
  return out;
}

std::vector<SaveItem> StateDict::to_save_items(bool keep_float_dtypes) const {
  std::vector<SaveItem> items;
  for (const auto& name : names) {
    const FileTensor& t = tensors.at(name);
    if (keep_float_dtypes || t.is_integer() || t.dtype == "F32")
      items.push_back(SaveItem::raw(name, t));
    else
      items.push_back(SaveItem::raw(name, FileTensor::from_float(t.to_float_vector(), t.shape)));
  }
  return items;
}

static void add(StateDict& sd, const std::string& path, std::string name, FileTensor t, const std::string& strip) {
  if (!strip.empty() && name.compare(0, strip.size(), strip) == 0) name = name.substr(strip.size());
  if (name.empty() || sd.tensors.count(name))
    throw std::runtime_error(path + ": tensor name '" + name + "' occurs twice" +
                             (strip.empty() ? std::string() : " after stripping '" + strip + "'"));
  sd.names.push_back(name);
  sd.tensors[name] = std::move(t);
}

static std::string keys_of(const PyObj& d) {
  std::string s;
  for (size_t k = 0; k < d.dict.size() && k < 12; ++k) {
    const auto& [key, v] = d.dict[k];
    s += (k ? ", " : "") + PyObj::key_text(key) +
         (v->is_tensor() ? "" : std::string(" (") + (v->is_dict() ? "dict" : v->repr(20)) + ")");
  }
  if (d.dict.size() > 12) s += ", ...";
  return s;
}

// A dict whose leaves (after flattening nested dicts) are all tensors.
static bool is_tensor_dict(const PyRef& o, const std::string& path) {
  if (!o || !o->is_dict() || o->dict.empty()) return false;
  for (const auto& [name, leaf] : flatten_pyobj(o, path))
    if (!leaf->is_tensor()) return false;
  return true;
}

static StateDict read_torch(const std::string& path, const StateDictOptions& opt) {
  TorchLoadOptions topt;
  topt.allow_unknown_globals = opt.allow_unknown_globals;
  TorchCheckpoint ck(path, topt);
  PyRef root = ck.root();
  if (!root->is_dict())
    throw std::runtime_error(path + ": top level is a " + root->repr() + ", expected a dict (state dict)");
  PyRef sel = root;
  std::string where;
  if (!opt.key.empty()) {
    sel = root->get(opt.key);
    where = "['" + opt.key + "']";
    if (!sel && opt.key.find('/') != std::string::npos) {  // "a/b" descends
      sel = root;
      where.clear();
      size_t start = 0;
      while (sel && start <= opt.key.size()) {
        size_t end = opt.key.find('/', start);
        std::string part = opt.key.substr(start, end == std::string::npos ? std::string::npos : end - start);
        sel = sel->get(part);
        where += "['" + part + "']";
        if (end == std::string::npos) break;
        start = end + 1;
      }
    }
    if (!sel) throw std::runtime_error(path + ": no key '" + opt.key + "' (top-level keys: " + keys_of(*root) + ")");
    if (!sel->is_dict()) throw std::runtime_error(path + where + " is " + sel->repr() + ", expected a dict of tensors");
  } else if (!is_tensor_dict(root, path)) {
    sel = nullptr;
    for (const char* k : {"model", "state_dict"}) {
      PyRef c = root->get(k);
      if (is_tensor_dict(c, path)) {
        sel = c;
        where = std::string("['") + k + "']";
        if (opt.verbose)
          std::fprintf(stderr, "note: %s: using the state dict under '%s' (top level: %s); --key picks another\n",
                       path.c_str(), k, keys_of(*root).c_str());
        break;
      }
    }
    if (!sel)
      throw std::runtime_error(path +
                               ": top level is not a dict of tensors and has no 'model' or 'state_dict' dict of "
                               "tensors (keys: " +
                               keys_of(*root) + "); pick one with --key");
  }
  StateDict sd;
  sd.source = path + where;
  for (auto& [name, leaf] : flatten_pyobj(sel, path)) {
    if (!leaf->is_tensor())
      throw std::runtime_error(sd.source + ": entry '" + name + "' is " + leaf->repr() +
                               ", not a tensor (pick the state dict with --key)");
    add(sd, path, name, ck.tensor(leaf->tensor), opt.strip_prefix);
  }
  return sd;
}

static StateDict read_safetensors(const std::string& path, const StateDictOptions& opt) {
  StateDict sd;
  sd.source = path;
  const std::string want = opt.key.empty() ? "" : opt.key + ".";
  auto raw = load_safetensors_raw(path);
  for (const auto& e : list_safetensors(path)) {
    if (!want.empty() && e.name.compare(0, want.size(), want) != 0) continue;
    add(sd, path, e.name.substr(want.size()), std::move(raw.at(e.name)), opt.strip_prefix);
  }
  if (!want.empty() && sd.names.empty()) throw std::runtime_error(path + ": no tensor name starts with '" + want + "'");
  if (!want.empty()) sd.source += " ['" + opt.key + ".*']";
  return sd;
}

StateDict read_state_dict(const std::string& path, const StateDictOptions& opt) {
  switch (detect_weights_format(path)) {
    case WeightsFormat::Safetensors: return read_safetensors(path, opt);
    case WeightsFormat::TorchZip:
    case WeightsFormat::TorchLegacy: return read_torch(path, opt);  // the legacy case throws a named error
    case WeightsFormat::Unknown: break;
  }
  // Not recognisable: give the safetensors parser's reason if the extension says safetensors.
  if (path.size() >= 12 && path.compare(path.size() - 12, 12, ".safetensors") == 0) list_safetensors(path);
  throw std::runtime_error(path + ": not a safetensors file nor a torch.save zip archive");
}

std::map<std::string, Tensor> load_state_dict_any(const std::string& path, const std::string& key,
                                                  const std::string& strip_prefix) {
  StateDictOptions opt;
  opt.key = key;
  opt.strip_prefix = strip_prefix;
  return read_state_dict(path, opt).to_float();
}

}  // namespace ms
