// defines: TorchCheckpoint — reads a torch.save file (zip: <archive>/data.pkl + <archive>/data/<key>
// storages) with a small pickle VM for the subset state dicts use; PyObj, the values it yields
// (None/bool/int/float/str/bytes/list/tuple/dict/set/tensor); TorchTensorRef, a lazy view into a
// storage that tensor() materialises (dtype kept, any strides/offset) as a contiguous FileTensor.
// Safety: nothing from the file is executed. Only an allow-list of globals is recognised
// (collections.OrderedDict, torch._utils._rebuild_tensor[_v2], _rebuild_parameter[_with_state],
// torch.*Storage, builtins.set/frozenset, torch.Size); any other global or opcode is an error
// naming it, unless allow_unknown_globals turns such objects into inert Opaque placeholders.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/io.h"
#include "weights/zip_reader.h"

namespace ms {

struct TorchTensorRef {
  std::string storage_key;  // <archive>/data/<storage_key>
  std::string dtype;        // safetensors name: F32, F64, F16, BF16, I64, I32, I16, I8, U8, BOOL
  int64_t storage_numel = 0;
  int64_t offset = 0;  // in elements
  Shape shape;
  std::vector<int64_t> stride;  // in elements
  bool parameter = false;       // came through torch._utils._rebuild_parameter
  int64_t numel() const { return shape_numel(shape); }
};

struct PyObj;
using PyRef = std::shared_ptr<PyObj>;

struct PyObj {
  enum class Kind { None, Bool, Int, Float, Str, Bytes, List, Tuple, Dict, Set, Tensor, Global, Storage, Opaque };
  Kind kind = Kind::None;
  int64_t i = 0;                              // Bool, Int
  double f = 0;                               // Float
  std::string s;                              // Str, Bytes, Global/Opaque name
  std::vector<PyRef> items;                   // List, Tuple, Set
  std::vector<std::pair<PyRef, PyRef>> dict;  // Dict, in insertion order
  TorchTensorRef tensor;                      // Tensor; Storage uses storage_key/dtype/storage_numel

  bool is_str() const { return kind == Kind::Str; }
  bool is_dict() const { return kind == Kind::Dict; }
  bool is_tensor() const { return kind == Kind::Tensor; }
  // Dict lookup by string key; nullptr when absent (or not a dict).
  PyRef get(const std::string& key) const;
  // Dict key as text: strings as they are, ints in decimal, anything else as repr().
  static std::string key_text(const PyRef& k);
  // Short Python-like rendering for `medslip inspect` (e.g. 3, 'medslip', [1, 2.5], {...: 4 items}).
  std::string repr(size_t max_len = 60) const;
};

struct TorchLoadOptions {
  // Unknown globals become inert Opaque objects instead of an error (never executed).
  bool allow_unknown_globals = false;
};

class TorchCheckpoint {
 public:
  // Parses the zip directory and runs the pickle; storages are read lazily by tensor().
  // Errors name the file: not a zip, legacy (pre-1.6) format, TorchScript archive, bad
  // pickle (opcode, offset), unsupported global, storage missing or too small for a view.
  explicit TorchCheckpoint(const std::string& path, const TorchLoadOptions& opt = {});

  const std::string& path() const { return path_; }
  const PyRef& root() const { return root_; }
  // The tensor's values as a contiguous FileTensor in its own dtype.
  FileTensor tensor(const TorchTensorRef& t);

  // True when the file looks like a torch.save zip (PK signature and a */data.pkl entry).
  static bool is_torch_zip(const std::string& path);

 private:
  std::string path_;
  ZipReader zip_;
  std::string prefix_;  // "<archive>/"
  PyRef root_;
  std::string cached_key_;  // last storage read (views of one storage are usually adjacent)
  std::vector<uint8_t> cached_;
};

// Every leaf under `root` with a dotted path: dict keys via PyObj::key_text, list/tuple
// items by index. Containers are descended (depth <= 64, at most 2^22 leaves); leaves are
// scalars, strings, tensors. `source` (the file) starts the error messages.
std::vector<std::pair<std::string, PyRef>> flatten_pyobj(const PyRef& root, const std::string& source = "");

}  // namespace ms
