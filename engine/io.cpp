// safetensors read/write. The header is validated in full before any data is touched, so a
// malformed file gives one error naming the file and tensor, never a crash or garbage.
#include "engine/io.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>

namespace ms {

static_assert(sizeof(float) == 4 && sizeof(double) == 8, "IEEE float/double expected");
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors I/O assumes a little-endian host"
#endif

using json = nlohmann::json;

// The Python library refuses headers above 100 MB; so do we (a corrupt length is the usual cause).
static constexpr uint64_t kMaxHeader = 100u * 1000u * 1000u;

static const std::map<std::string, int64_t>& dtype_sizes() {
  static const std::map<std::string, int64_t> m = {{"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8},
                                                   {"I32", 4}, {"I16", 2}, {"I8", 1},  {"U64", 8},  {"U32", 4},
                                                   {"U16", 2}, {"U8", 1},  {"BOOL", 1}};
  return m;
}

bool safetensors_dtype_known(const std::string& dtype) { return dtype_sizes().count(dtype) > 0; }

int64_t safetensors_dtype_size(const std::string& dtype) {
  auto it = dtype_sizes().find(dtype);
  if (it == dtype_sizes().end())
    throw std::invalid_argument("unknown dtype '" + dtype +
                                "' (expected F64, F32, F16, BF16, I64, I32, I16, I8, U64, U32, U16, U8 or BOOL)");
  return it->second;
}

// ---- element conversion ---------------------------------------------------------------

static float half_to_float(uint16_t h) {
  uint32_t sign = uint32_t(h >> 15) << 31, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  float f;
  if (exp == 0) {  // zero or subnormal: mant * 2^-24
    f = std::ldexp(float(mant), -24);
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    bits |= sign;
    std::memcpy(&f, &bits, 4);
    return f;
  }
  uint32_t bits = exp == 31 ? (sign | 0x7f800000u | (mant << 13)) : (sign | ((exp + 112) << 23) | (mant << 13));
  std::memcpy(&f, &bits, 4);
  return f;
}

static float bf16_to_float(uint16_t h) {
  uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

template <typename T>
static T load_le(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

// Element i of a FileTensor as double (exact for every float dtype and integers up to 2^53).
static double element_f64(const FileTensor& t, int64_t i) {
  const std::string& d = t.dtype;
  const uint8_t* b = t.bytes.data();
  if (d == "F32") return load_le<float>(b + 4 * i);
  if (d == "F64") return load_le<double>(b + 8 * i);
  if (d == "F16") return half_to_float(load_le<uint16_t>(b + 2 * i));
  if (d == "BF16") return bf16_to_float(load_le<uint16_t>(b + 2 * i));
  if (d == "I64") return double(load_le<int64_t>(b + 8 * i));
  if (d == "I32") return load_le<int32_t>(b + 4 * i);
  if (d == "I16") return load_le<int16_t>(b + 2 * i);
  if (d == "I8") return load_le<int8_t>(b + i);
  if (d == "U64") return double(load_le<uint64_t>(b + 8 * i));
  if (d == "U32") return load_le<uint32_t>(b + 4 * i);
  if (d == "U16") return load_le<uint16_t>(b + 2 * i);
  if (d == "U8") return b[i];
  if (d == "BOOL") return b[i] ? 1.0 : 0.0;
  throw std::invalid_argument("unknown dtype '" + d + "'");
}

static void check_size(const FileTensor& t) {
  int64_t n = t.numel();
  if (n < 0 || int64_t(t.bytes.size()) != n * safetensors_dtype_size(t.dtype))
    throw std::invalid_argument("FileTensor " + t.dtype + shape_str(t.shape) + " holds " +
                                std::to_string(t.bytes.size()) + " bytes, expected " +
                                std::to_string(n * safetensors_dtype_size(t.dtype)));
}

bool FileTensor::is_integer() const { return dtype[0] == 'I' || dtype[0] == 'U' || dtype == "BOOL"; }

std::vector<float> FileTensor::to_float_vector() const {
  check_size(*this);
  int64_t n = numel();
  std::vector<float> out(static_cast<size_t>(n));
  if (dtype == "F32") {
    if (n) std::memcpy(out.data(), bytes.data(), size_t(n) * 4);
  } else {
    for (int64_t i = 0; i < n; ++i) out[size_t(i)] = float(element_f64(*this, i));
  }
  return out;
}

Tensor FileTensor::to_float() const {
  check_size(*this);
  Tensor t = Tensor::empty(shape);
  int64_t n = numel();
  if (dtype == "F32") {
    if (n) std::memcpy(t.data(), bytes.data(), size_t(n) * 4);
  } else {
    float* p = t.data();
    for (int64_t i = 0; i < n; ++i) p[i] = float(element_f64(*this, i));
  }
  return t;
}

std::vector<int64_t> FileTensor::to_i64() const {
  check_size(*this);
  int64_t n = numel();
  std::vector<int64_t> out(static_cast<size_t>(n));
  if (dtype == "I64") {
    if (n) std::memcpy(out.data(), bytes.data(), size_t(n) * 8);
    return out;
  }
  for (int64_t i = 0; i < n; ++i) {
    if (dtype == "U64") {
      uint64_t u = load_le<uint64_t>(bytes.data() + 8 * i);
      if (u > uint64_t(std::numeric_limits<int64_t>::max()))
        throw std::invalid_argument("U64 value " + std::to_string(u) + " does not fit in int64");
      out[size_t(i)] = int64_t(u);
      continue;
    }
    double v = element_f64(*this, i);
    if (!is_integer() && (std::trunc(v) != v || std::fabs(v) > 9.2e18))
      throw std::invalid_argument(dtype + " value " + std::to_string(v) + " at index " + std::to_string(i) +
                                  " is not an integer");
    out[size_t(i)] = int64_t(v);
  }
  return out;
}

std::vector<double> FileTensor::to_f64() const {
  check_size(*this);
  int64_t n = numel();
  std::vector<double> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out[size_t(i)] = element_f64(*this, i);
  return out;
}

FileTensor FileTensor::from_float(const std::vector<float>& v, const Shape& shape) {
  if (int64_t(v.size()) != shape_numel(shape))
    throw std::invalid_argument("from_float: " + std::to_string(v.size()) + " values for shape " + shape_str(shape));
  FileTensor t;
  t.dtype = "F32";
  t.shape = shape;
  t.bytes.resize(v.size() * 4);
  if (!v.empty()) std::memcpy(t.bytes.data(), v.data(), v.size() * 4);
  return t;
}

FileTensor FileTensor::from_float(const Tensor& t) {
  if (!t.defined()) throw std::invalid_argument("from_float: undefined tensor");
  return from_float(t.to_vector(), t.shape());
}

FileTensor FileTensor::from_i64(const std::vector<int64_t>& v, const Shape& shape) {
  if (int64_t(v.size()) != shape_numel(shape))
    throw std::invalid_argument("from_i64: " + std::to_string(v.size()) + " values for shape " + shape_str(shape));
  FileTensor t;
  t.dtype = "I64";
  t.shape = shape;
  t.bytes.resize(v.size() * 8);
  if (!v.empty()) std::memcpy(t.bytes.data(), v.data(), v.size() * 8);
  return t;
}

FileTensor FileTensor::from_f64(const std::vector<double>& v, const Shape& shape) {
  if (int64_t(v.size()) != shape_numel(shape))
    throw std::invalid_argument("from_f64: " + std::to_string(v.size()) + " values for shape " + shape_str(shape));
  FileTensor t;
  t.dtype = "F64";
  t.shape = shape;
  t.bytes.resize(v.size() * 8);
  if (!v.empty()) std::memcpy(t.bytes.data(), v.data(), v.size() * 8);
  return t;
}

SaveItem SaveItem::f32(const std::string& name, const Tensor& t) {
  if (!t.defined()) throw std::invalid_argument("save '" + name + "': undefined tensor");
  return {name, FileTensor::from_float(t)};
}

SaveItem SaveItem::as_i64(const std::string& name, const Tensor& t) {
  if (!t.defined()) throw std::invalid_argument("save '" + name + "': undefined tensor");
  auto v = t.to_vector();
  std::vector<int64_t> iv(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    if (!std::isfinite(v[i]) || std::trunc(v[i]) != v[i])
      throw std::invalid_argument("save '" + name + "' as I64: value " + std::to_string(v[i]) + " at index " +
                                  std::to_string(i) + " is not an integer");
    iv[i] = int64_t(v[i]);
  }
  return {name, FileTensor::from_i64(iv, t.shape())};
}

SaveItem SaveItem::i64(const std::string& name, const std::vector<int64_t>& v, const Shape& shape) {
  return {name, FileTensor::from_i64(v, shape)};
}

SaveItem SaveItem::f64(const std::string& name, const std::vector<double>& v, const Shape& shape) {
  return {name, FileTensor::from_f64(v, shape)};
}

SaveItem SaveItem::raw(const std::string& name, FileTensor t) { return {name, std::move(t)}; }

// ---- reading --------------------------------------------------------------------------

namespace {

struct Header {
  std::vector<TensorFileEntry> entries;  // sorted by begin
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  // 8 + header length
};

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw std::runtime_error(path + ": " + what);
}

uint64_t file_size_of(const std::string& path) {
  std::error_code ec;
  auto st = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(st)) fail(path, "cannot open safetensors file (no such file)");
  if (std::filesystem::is_directory(st)) fail(path, "is a directory, expected a .safetensors file");
  uint64_t sz = std::filesystem::file_size(path, ec);
  if (ec) fail(path, "cannot read file size: " + ec.message());
  return sz;
}

int64_t json_int(const std::string& path, const std::string& name, const char* field, const json& v) {
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    if (u > uint64_t(std::numeric_limits<int64_t>::max()))
      fail(path, "tensor '" + name + "': " + field + " value too large");
    return int64_t(u);
  }
  if (v.is_number_integer()) {
    int64_t i = v.get<int64_t>();
    if (i < 0) fail(path, "tensor '" + name + "': negative " + field + " value " + std::to_string(i));
    return i;
  }
  fail(path, "tensor '" + name + "': " + field + " must hold non-negative integers, got " + v.dump());
}

Header read_header(const std::string& path, std::ifstream& f) {
  uint64_t fsize = file_size_of(path);
  f.open(path, std::ios::binary);
  if (!f) fail(path, "cannot open safetensors file");
  if (fsize < 8)
    fail(path, "file is " + std::to_string(fsize) + " bytes, too short for a safetensors header (8-byte length)");
  uint8_t lenbuf[8];
  f.read(reinterpret_cast<char*>(lenbuf), 8);
  if (!f) fail(path, "cannot read the 8-byte header length");
  uint64_t n = load_le<uint64_t>(lenbuf);
  if (n > kMaxHeader)
    fail(path, "header length " + std::to_string(n) + " exceeds the 100 MB limit (not a safetensors file?)");
  if (n > fsize - 8)
    fail(path, "header length " + std::to_string(n) + " runs beyond the end of the file (" + std::to_string(fsize) +
                   " bytes): truncated or not a safetensors file");
  if (n < 2) fail(path, "header length " + std::to_string(n) + " is too small for a JSON object");
  std::string text(size_t(n), '\0');
  f.read(text.data(), std::streamsize(n));
  if (!f) fail(path, "cannot read the " + std::to_string(n) + "-byte header");

  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for numbers like 1e309 (fuzzer)
    fail(path, std::string("header is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) fail(path, "header JSON must be an object of tensor entries, got " + std::string(j.type_name()));

  Header h;
  h.data_start = 8 + n;
  uint64_t buf_size = fsize - 8 - n;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const json& e = it.value();
    if (name == "__metadata__") {
      if (!e.is_object()) fail(path, "__metadata__ must be an object of strings");
      for (auto m = e.begin(); m != e.end(); ++m) {
        if (!m.value().is_string())
          fail(path, "__metadata__ value for '" + m.key() + "' must be a string, got " + m.value().dump());
        h.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!e.is_object()) fail(path, "tensor '" + name + "': entry must be an object, got " + e.dump());
    for (const char* key : {"dtype", "shape", "data_offsets"})
      if (!e.contains(key)) fail(path, "tensor '" + name + "': missing \"" + key + "\"");
    TensorFileEntry te;
    te.name = name;
    if (!e["dtype"].is_string()) fail(path, "tensor '" + name + "': dtype must be a string, got " + e["dtype"].dump());
    te.dtype = e["dtype"].get<std::string>();
    if (!safetensors_dtype_known(te.dtype))
      fail(path, "tensor '" + name + "': unknown dtype '" + te.dtype +
                     "' (expected F64, F32, F16, BF16, I64, I32, I16, I8, U64, U32, U16, U8 or BOOL)");
    if (!e["shape"].is_array()) fail(path, "tensor '" + name + "': shape must be an array, got " + e["shape"].dump());
    int64_t numel = 1;
    bool overflow = false;
    for (const auto& d : e["shape"]) {
      int64_t v = json_int(path, name, "shape", d);
      te.shape.push_back(v);
      if (v != 0 && numel > std::numeric_limits<int64_t>::max() / 8 / v) overflow = true;
      numel *= v;
    }
    const json& off = e["data_offsets"];
    if (!off.is_array() || off.size() != 2)
      fail(path, "tensor '" + name + "': data_offsets must be [begin, end], got " + off.dump());
    te.begin = json_int(path, name, "data_offsets", off[0]);
    te.end = json_int(path, name, "data_offsets", off[1]);
    if (te.end < te.begin)
      fail(path, "tensor '" + name + "': data_offsets [" + std::to_string(te.begin) + ", " + std::to_string(te.end) +
                     "] end before begin");
    if (uint64_t(te.end) > buf_size)
      fail(path, "tensor '" + name + "': data_offsets [" + std::to_string(te.begin) + ", " + std::to_string(te.end) +
                     "] beyond the data buffer of " + std::to_string(buf_size) + " bytes (truncated file?)");
    int64_t want = overflow ? -1 : numel * safetensors_dtype_size(te.dtype);
    if (want != te.end - te.begin)
      fail(path, "tensor '" + name + "': shape " + shape_str(te.shape) + " x " + te.dtype + " needs " +
                     (overflow ? std::string("too many") : std::to_string(want)) + " bytes but data_offsets span " +
                     std::to_string(te.end - te.begin));
    h.entries.push_back(std::move(te));
  }
  std::sort(h.entries.begin(), h.entries.end(), [](const TensorFileEntry& a, const TensorFileEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  for (size_t i = 1; i < h.entries.size(); ++i) {
    const auto& a = h.entries[i - 1];
    const auto& b = h.entries[i];
    if (b.begin < a.end)
      fail(path, "tensors '" + a.name + "' [" + std::to_string(a.begin) + ", " + std::to_string(a.end) + ") and '" +
                     b.name + "' [" + std::to_string(b.begin) + ", " + std::to_string(b.end) + ") overlap");
  }
  return h;
}

FileTensor read_entry(const std::string& path, std::ifstream& f, const Header& h, const TensorFileEntry& e) {
  FileTensor t;
  t.dtype = e.dtype;
  t.shape = e.shape;
  t.bytes.resize(size_t(e.end - e.begin));
  if (!t.bytes.empty()) {
    f.seekg(std::streamoff(h.data_start + uint64_t(e.begin)));
    f.read(reinterpret_cast<char*>(t.bytes.data()), std::streamsize(t.bytes.size()));
    if (!f) fail(path, "tensor '" + e.name + "': short read of " + std::to_string(t.bytes.size()) + " bytes");
  }
  return t;
}

const TensorFileEntry& find_entry(const std::string& path, const Header& h, const std::string& name) {
  for (const auto& e : h.entries)
    if (e.name == name) return e;
  std::string names;
  for (size_t i = 0; i < h.entries.size() && i < 8; ++i) names += (i ? ", " : "") + h.entries[i].name;
  if (h.entries.size() > 8) names += ", ...";
  fail(path, "no tensor named '" + name + "' (the file has " + std::to_string(h.entries.size()) + ": " + names + ")");
}

}  // namespace

std::vector<TensorFileEntry> list_safetensors(const std::string& path) {
  std::ifstream f;
  return read_header(path, f).entries;
}

std::map<std::string, std::string> safetensors_metadata(const std::string& path) {
  std::ifstream f;
  return read_header(path, f).metadata;
}

bool is_safetensors_file(const std::string& path) {
  try {
    std::ifstream f;
    read_header(path, f);
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

std::map<std::string, FileTensor> load_safetensors_raw(const std::string& path) {
  std::ifstream f;
  Header h = read_header(path, f);
  std::map<std::string, FileTensor> out;
  for (const auto& e : h.entries) out[e.name] = read_entry(path, f, h, e);
  return out;
}

std::map<std::string, Tensor> load_safetensors(const std::string& path) {
  std::ifstream f;
  Header h = read_header(path, f);
  std::map<std::string, Tensor> out;
  for (const auto& e : h.entries) out[e.name] = read_entry(path, f, h, e).to_float();
  return out;
}

FileTensor load_safetensors_raw_tensor(const std::string& path, const std::string& name) {
  std::ifstream f;
  Header h = read_header(path, f);
  return read_entry(path, f, h, find_entry(path, h, name));
}

Tensor load_safetensors_tensor(const std::string& path, const std::string& name) {
  return load_safetensors_raw_tensor(path, name).to_float();
}

std::vector<int64_t> load_safetensors_i64(const std::string& path, const std::string& name) {
  FileTensor t = load_safetensors_raw_tensor(path, name);
  try {
    return t.to_i64();
  } catch (const std::exception& ex) {
    fail(path, "tensor '" + name + "': " + ex.what());
  }
}

std::vector<double> load_safetensors_f64(const std::string& path, const std::string& name) {
  return load_safetensors_raw_tensor(path, name).to_f64();
}

// ---- writing --------------------------------------------------------------------------

void save_safetensors(const std::string& path, const std::vector<SaveItem>& items,
                      const std::map<std::string, std::string>& metadata) {
  json j = json::object();
  if (!metadata.empty()) {
    json m = json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    j["__metadata__"] = m;
  }
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const auto& it : items) {
    if (it.name.empty()) throw std::invalid_argument(path + ": cannot save a tensor with an empty name");
    if (it.name == "__metadata__")
      throw std::invalid_argument(path + ": '__metadata__' is reserved, not a tensor name");
    if (!seen.insert(it.name).second) throw std::invalid_argument(path + ": tensor name '" + it.name + "' given twice");
    try {
      check_size(it.value);
    } catch (const std::exception& ex) {
      throw std::invalid_argument(path + ": tensor '" + it.name + "': " + ex.what());
    }
    uint64_t n = it.value.bytes.size();
    j[it.name] = {{"dtype", it.value.dtype}, {"shape", it.value.shape}, {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string header = j.dump();
  header.append((8 - header.size() % 8) % 8, ' ');  // pad so the data buffer is 8-byte aligned, like the Python library

  uint64_t n = header.size();
  char lenbuf[8];
  std::memcpy(lenbuf, &n, 8);
  std::vector<std::pair<const void*, size_t>> chunks = {{lenbuf, 8}, {header.data(), header.size()}};
  for (const auto& it : items)
    if (!it.value.bytes.empty()) chunks.push_back({it.value.bytes.data(), it.value.bytes.size()});
  write_file_atomic(path, chunks);
}

void write_file_atomic(const std::string& path, const std::vector<std::pair<const void*, size_t>>& chunks) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error(tmp + ": cannot open for writing: " + std::strerror(errno));
  size_t n = 0, done = 0;
  int err = 0;
  for (const auto& [data, size] : chunks) {
    n += size;
    const char* p = static_cast<const char*>(data);
    size_t left = size;
    while (left > 0 && !err) {
      ssize_t w = ::write(fd, p, left);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        err = w < 0 ? errno : ENOSPC;
        break;
      }
      p += w, left -= size_t(w), done += size_t(w);
    }
  }
  if (!err && ::fsync(fd) != 0 && errno != EINVAL && errno != EROFS) err = errno;
  if (::close(fd) != 0 && !err) err = errno;
  if (err) {
    ::unlink(tmp.c_str());
    throw std::runtime_error(tmp + ": write failed after " + std::to_string(done) + " of " + std::to_string(n) +
                             " bytes: " + std::strerror(err) + " (" + path + " is unchanged)");
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    err = errno;
    ::unlink(tmp.c_str());
    throw std::runtime_error(path + ": cannot rename " + tmp + " into place: " + std::strerror(err));
  }
}

void write_file_atomic(const std::string& path, const void* data, size_t n) { write_file_atomic(path, {{data, n}}); }

void write_file_atomic(const std::string& path, const std::string& text) {
  write_file_atomic(path, text.data(), text.size());
}

void save_safetensors(const std::string& path, std::initializer_list<SaveItem> items,
                      const std::map<std::string, std::string>& metadata) {
  save_safetensors(path, std::vector<SaveItem>(items), metadata);
}

void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::vector<SaveItem> items;
  items.reserve(tensors.size());
  for (const auto& [name, t] : tensors) items.push_back(SaveItem::f32(name, t));
  save_safetensors(path, items, metadata);
}

void save_safetensors(const std::string& path, const std::map<std::string, FileTensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::vector<SaveItem> items;
  items.reserve(tensors.size());
  for (const auto& [name, t] : tensors) items.push_back(SaveItem::raw(name, t));
  save_safetensors(path, items, metadata);
}

}  // namespace ms
