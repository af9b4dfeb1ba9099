// defines: safetensors read/write — FileTensor (a tensor exactly as stored: dtype + shape +
// little-endian bytes), TensorFileEntry (a header row), SaveItem, list/load/save functions.
// Format (huggingface/safetensors): u64 little-endian header length N, N bytes of JSON
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}},
// then the data buffer; offsets are relative to the buffer start.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace ms {

// Bytes per element of a safetensors dtype name ("F32", "BF16", "I64", "BOOL", ...);
// throws std::invalid_argument naming the dtype when it is unknown.
int64_t safetensors_dtype_size(const std::string& dtype);
bool safetensors_dtype_known(const std::string& dtype);

// A tensor as a file holds it. Floats F16/BF16/F32/F64 and integers I8..I64/U8..U64/BOOL.
// Conversions: to_float() rounds F64 to float and integers beyond 2^24 lose precision;
// to_i64() is exact for integer dtypes (and for floats holding integral values);
// to_f64() is exact for F64/F32/F16/BF16 and integers up to 2^53.
struct FileTensor {
  std::string dtype = "F32";
  Shape shape;
  std::vector<uint8_t> bytes;  // numel * dtype size, little-endian

  int64_t numel() const { return shape_numel(shape); }
  bool is_integer() const;  // I*, U*, BOOL
  Tensor to_float() const;
  std::vector<float> to_float_vector() const;
  std::vector<int64_t> to_i64() const;
  std::vector<double> to_f64() const;

  static FileTensor from_float(const Tensor& t);  // F32 (copies from any device)
  static FileTensor from_float(const std::vector<float>& v, const Shape& shape);
  static FileTensor from_i64(const std::vector<int64_t>& v, const Shape& shape);
  static FileTensor from_f64(const std::vector<double>& v, const Shape& shape);
};

// One row of a safetensors header. begin/end are byte offsets into the data buffer.
struct TensorFileEntry {
  std::string name;
  std::string dtype;
  Shape shape;
  int64_t begin = 0, end = 0;
};

// What save_safetensors writes under one name. Build with the helpers:
//   SaveItem::f32("w", t)           float Tensor stored as F32
//   SaveItem::as_i64("n", t)        float Tensor of integral values stored as I64
//                                   (BatchNorm num_batches_tracked, index tensors)
//   SaveItem::i64("idx", v, shape)  raw int64 values, stored exactly
//   SaveItem::f64("x", v, shape)    raw double values, stored exactly
//   SaveItem::raw("y", file_tensor) a FileTensor as it is (any dtype)
struct SaveItem {
  std::string name;
  FileTensor value;

  static SaveItem f32(const std::string& name, const Tensor& t);
  static SaveItem as_i64(const std::string& name, const Tensor& t);  // throws if a value is not integral
  static SaveItem i64(const std::string& name, const std::vector<int64_t>& v, const Shape& shape);
  static SaveItem f64(const std::string& name, const std::vector<double>& v, const Shape& shape);
  static SaveItem raw(const std::string& name, FileTensor t);
};

// --- reading (every function validates the whole header first) ----------------------
// Errors (std::runtime_error) name the file and, where there is one, the tensor: file too
// short, header length beyond the file, bad JSON, missing/ill-typed dtype/shape/data_offsets,
// unknown dtype, offsets out of range or overlapping, shape*dtype size != byte range.
std::vector<TensorFileEntry> list_safetensors(const std::string& path);  // in file-offset order
std::map<std::string, std::string> safetensors_metadata(const std::string& path);
bool is_safetensors_file(const std::string& path);  // header parses; no exception

std::map<std::string, Tensor> load_safetensors(const std::string& path);           // all as float32
std::map<std::string, FileTensor> load_safetensors_raw(const std::string& path);   // exact
Tensor load_safetensors_tensor(const std::string& path, const std::string& name);  // float32
FileTensor load_safetensors_raw_tensor(const std::string& path, const std::string& name);
// Exact reads of one tensor; an integer read of a float tensor requires integral values.
std::vector<int64_t> load_safetensors_i64(const std::string& path, const std::string& name);
std::vector<double> load_safetensors_f64(const std::string& path, const std::string& name);

// --- writing -------------------------------------------------------------------------

// Writes `n` bytes to path + ".tmp", flushes them to disk (fsync) and renames over `path`, so
// a reader, a crash or a kill never sees a partial file; on failure (disk full, no such
// folder) removes the temporary and throws one line naming it. Every output file of the
// commands goes through this (or save_safetensors, which does the same).
void write_file_atomic(const std::string& path, const void* data, size_t n);
void write_file_atomic(const std::string& path, const std::string& text);
// The concatenation of several buffers (a safetensors header and its tensors) without a copy.
void write_file_atomic(const std::string& path, const std::vector<std::pair<const void*, size_t>>& chunks);

// Writes path + ".tmp" then renames over path (atomic on one filesystem). Names must be
// unique, non-empty and not "__metadata__". Tensors are laid out in the order given.
void save_safetensors(const std::string& path, const std::vector<SaveItem>& items,
                      const std::map<std::string, std::string>& metadata = {});
// save_safetensors(path, {SaveItem::f32(..), SaveItem::i64(..)}) picks this one (no ambiguity with the maps).
void save_safetensors(const std::string& path, std::initializer_list<SaveItem> items,
                      const std::map<std::string, std::string>& metadata = {});
void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});  // all F32
void save_safetensors(const std::string& path, const std::map<std::string, FileTensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});  // dtypes kept

}  // namespace ms
