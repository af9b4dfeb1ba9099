// NumPy format spec: https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html
#include "data/npy.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace ms {

int64_t NpyHeader::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

namespace {

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw std::runtime_error(path + ": " + what);
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string out = "(";
  for (size_t k = 0; k < shape.size(); ++k) out += (k ? ", " : "") + std::to_string(shape[k]);
  return out + (shape.size() == 1 ? ",)" : ")");
}

// A tiny parser for the header, a Python dict literal such as
// {'descr': '<f8', 'fortran_order': False, 'shape': (3, 51, 75), }
struct DictParser {
  const std::string& s;
  const std::string& path;
  size_t i = 0;

  void ws() { while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i; }
  bool eat(char c) {
    ws();
    if (i < s.size() && s[i] == c) { ++i; return true; }
    return false;
  }
  void expect(char c) {
    if (!eat(c)) fail(path, std::string("malformed .npy header: expected '") + c + "' at char " + std::to_string(i) +
                                " in " + s);
  }
  std::string str() {
    ws();
    if (i >= s.size() || (s[i] != '\'' && s[i] != '"')) fail(path, "malformed .npy header: expected a string in " + s);
    char q = s[i++];
    size_t j = s.find(q, i);
    if (j == std::string::npos) fail(path, "malformed .npy header: unterminated string in " + s);
    std::string out = s.substr(i, j - i);
    i = j + 1;
    return out;
  }
  std::string word() {
    ws();
    size_t j = i;
    while (j < s.size() && std::isalpha(static_cast<unsigned char>(s[j]))) ++j;
    std::string out = s.substr(i, j - i);
    i = j;
    return out;
  }
  std::vector<int64_t> tuple() {
    expect('(');
    std::vector<int64_t> out;
    while (!eat(')')) {
      ws();
      size_t j = i;
      while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
      if (j == i) fail(path, "malformed .npy header: expected a non-negative integer in shape " + s);
      if (j - i > 18) fail(path, "malformed .npy header: shape value " + s.substr(i, j - i) + " out of range");
      out.push_back(std::stoll(s.substr(i, j - i)));
      i = j;
      if (i < s.size() && s[i] == 'L') ++i;  // Python 2 long suffix
      if (!eat(',')) { expect(')'); break; }
    }
    return out;
  }
};

void parse_descr(const std::string& path, const std::string& descr, NpyHeader& h) {
  if (descr.size() < 3) fail(path, "unsupported .npy dtype '" + descr + "'");
  char order = descr[0];
  h.kind = descr[1];
  std::string size = descr.substr(2);
  for (char c : size)
    if (!std::isdigit(static_cast<unsigned char>(c))) fail(path, "unsupported .npy dtype '" + descr + "'");
  if (size.size() > 2)  // std::stoi would throw a bare "stoi"
    fail(path, "unsupported .npy dtype '" + descr + "' (item size out of range)");
  h.itemsize = std::stoi(size);
  bool ok_kind = (h.kind == 'f' && (h.itemsize == 4 || h.itemsize == 8)) ||
                 ((h.kind == 'i' || h.kind == 'u') &&
                  (h.itemsize == 1 || h.itemsize == 2 || h.itemsize == 4 || h.itemsize == 8)) ||
                 (h.kind == 'b' && h.itemsize == 1);
  if (!ok_kind || (order != '<' && order != '>' && order != '|' && order != '='))
    fail(path, "unsupported .npy dtype '" + descr + "' (expected float f4/f8, int i1-i8, uint u1-u8 or bool b1)");
  h.swap = order == '>' && h.itemsize > 1;
  h.descr = descr;
}

template <class T>
void convert(const NpyHeader& h, const unsigned char* src, int64_t n, T* out) {
  for (int64_t k = 0; k < n; ++k) {
    unsigned char b[8];
    const unsigned char* p = src + k * h.itemsize;
    if (h.swap) {
      for (int j = 0; j < h.itemsize; ++j) b[j] = p[h.itemsize - 1 - j];
    } else {
      std::memcpy(b, p, size_t(h.itemsize));
    }
    double v = 0;
    switch (h.kind) {
      case 'f':
        if (h.itemsize == 4) { float f; std::memcpy(&f, b, 4); v = f; }
        else { double d; std::memcpy(&d, b, 8); v = d; }
        break;
      case 'i':
        if (h.itemsize == 1) { int8_t x; std::memcpy(&x, b, 1); v = double(x); }
        else if (h.itemsize == 2) { int16_t x; std::memcpy(&x, b, 2); v = double(x); }
        else if (h.itemsize == 4) { int32_t x; std::memcpy(&x, b, 4); v = double(x); }
        else { int64_t x; std::memcpy(&x, b, 8); v = double(x); }
        break;
      case 'u':
        if (h.itemsize == 1) v = double(b[0]);
        else if (h.itemsize == 2) { uint16_t x; std::memcpy(&x, b, 2); v = double(x); }
        else if (h.itemsize == 4) { uint32_t x; std::memcpy(&x, b, 4); v = double(x); }
        else { uint64_t x; std::memcpy(&x, b, 8); v = double(x); }
        break;
      default:  // 'b'
        v = b[0] ? 1.0 : 0.0;
    }
    out[k] = T(v);
  }
}

void pread_all(int fd, const std::string& path, void* buf, size_t bytes, int64_t offset) {
  auto* p = static_cast<char*>(buf);
  while (bytes > 0) {
    ssize_t r = ::pread(fd, p, bytes, off_t(offset));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) fail(path, "read error or unexpected end of file at byte " + std::to_string(offset));
    p += r;
    bytes -= size_t(r);
    offset += r;
  }
}

}  // namespace

NpyHeader read_npy_header(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path, "cannot open .npy file");
  unsigned char pre[12] = {};
  f.read(reinterpret_cast<char*>(pre), 10);
  if (f.gcount() < 10 || std::memcmp(pre, "\x93NUMPY", 6) != 0) fail(path, "not a .npy file (bad magic)");
  int major = pre[6];
  int64_t hlen = 0, start = 0;
  if (major == 1) {
    hlen = int64_t(pre[8]) | int64_t(pre[9]) << 8;
    start = 10;
  } else if (major == 2 || major == 3) {
    f.read(reinterpret_cast<char*>(pre + 10), 2);
    if (f.gcount() < 2) fail(path, "truncated .npy header");
    hlen = int64_t(pre[8]) | int64_t(pre[9]) << 8 | int64_t(pre[10]) << 16 | int64_t(pre[11]) << 24;
    start = 12;
  } else {
    fail(path, "unsupported .npy format version " + std::to_string(major) + "." + std::to_string(pre[7]) +
                   " (expected 1, 2 or 3)");
  }
  // The header length is checked against the file before anything is allocated (found by the
  // npy fuzzer: a 76-byte file declaring a 4 GB header took 20 s in memset).
  std::error_code ec;
  const auto file_bytes = std::filesystem::file_size(path, ec);
  if (ec || uint64_t(start + hlen) > file_bytes)
    fail(path, "truncated .npy header (declares " + std::to_string(hlen) + " header bytes, the file has " +
                   std::to_string(ec ? 0 : file_bytes) + ")");
  std::string s(size_t(hlen), '\0');
  f.read(&s[0], hlen);
  if (f.gcount() < hlen) fail(path, "truncated .npy header");

  NpyHeader h;
  bool have_descr = false, have_order = false, have_shape = false;
  DictParser p{s, path};
  p.expect('{');
  while (!p.eat('}')) {
    std::string key = p.str();
    p.expect(':');
    if (key == "descr") {
      p.ws();
      if (p.i < s.size() && s[p.i] == '[') fail(path, "structured .npy dtypes are not supported (descr is a list)");
      parse_descr(path, p.str(), h);
      have_descr = true;
    } else if (key == "fortran_order") {
      std::string w = p.word();
      if (w == "True") fail(path, "fortran_order=True is not supported (expected a C-order array; "
                                  "save with np.ascontiguousarray)");
      if (w != "False") fail(path, "malformed .npy header: fortran_order must be True or False in " + s);
      have_order = true;
    } else if (key == "shape") {
      h.shape = p.tuple();
      have_shape = true;
    } else {
      fail(path, "malformed .npy header: unexpected key '" + key + "'");
    }
    if (!p.eat(',')) { p.expect('}'); break; }
  }
  if (!have_descr || !have_order || !have_shape)
    fail(path, "malformed .npy header: expected keys 'descr', 'fortran_order' and 'shape' in " + s);
  h.data_offset = start + hlen;

  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) fail(path, "cannot stat .npy file");
  {
    // The element count must fit before it is multiplied out (npy fuzzer: a shape of
    // (2, 1, 7777777777777771, 7777777777777774, 224) overflowed int64, undefined behaviour; and
    // (5, 3, 773, 7770, 3, 777, 777777774, 7773883, 0, ...) overflowed on its way to 0). As
    // NumPy does, the product of the non-zero dimensions times the item size must fit, so
    // numel() and row_numel() never overflow, whatever zero the shape holds.
    int64_t bytes = h.itemsize;
    for (int64_t d : h.shape)
      if (d != 0 && __builtin_mul_overflow(bytes, d, &bytes))
        fail(path, "malformed .npy header: shape " + shape_text(h.shape) + " of " + std::to_string(h.itemsize) +
                       "-byte items is larger than 2^63 bytes");
  }
  // numel() x itemsize fits (it is at most the product checked above); the header's bytes on top may not
  int64_t need = 0;
  if (__builtin_add_overflow(h.data_offset, h.numel() * h.itemsize, &need)) need = INT64_MAX;
  if (int64_t(st.st_size) < need)
    fail(path, "truncated .npy data: shape needs " + std::to_string(need) + " bytes, file has " +
                   std::to_string(int64_t(st.st_size)));
  return h;
}

NpyFile::NpyFile(const std::string& path) : path_(path), header_(read_npy_header(path)) {
  fd_ = ::open(path.c_str(), O_RDONLY);
  if (fd_ < 0) fail(path, "cannot open .npy file");
}

NpyFile::~NpyFile() {
  if (fd_ >= 0) ::close(fd_);
}

int64_t NpyFile::row_numel() const {
  if (header_.shape.empty()) fail(path_, "a 0-d .npy has no rows");
  int64_t n = 1;
  for (size_t k = 1; k < header_.shape.size(); ++k) n *= header_.shape[k];
  return n;
}

void NpyFile::read_range(int64_t start, int64_t count, double* out) const {
  if (start < 0 || count < 0 || start + count > header_.numel())
    fail(path_, "element range [" + std::to_string(start) + ", " + std::to_string(start + count) +
                    ") is outside the array of " + std::to_string(header_.numel()) + " elements");
  std::vector<unsigned char> buf(size_t(count * header_.itemsize));
  if (!buf.empty()) pread_all(fd_, path_, buf.data(), buf.size(), header_.data_offset + start * header_.itemsize);
  convert(header_, buf.data(), count, out);
}

void NpyFile::read_row(int64_t row, double* out) const {
  if (header_.shape.empty() || row < 0 || row >= header_.shape[0])
    fail(path_, "row " + std::to_string(row) + " is out of range (the array has " +
                    std::to_string(header_.shape.empty() ? 0 : header_.shape[0]) + " rows)");
  int64_t n = row_numel();
  read_range(row * n, n, out);
}

void NpyFile::read_row(int64_t row, float* out) const {
  std::vector<double> tmp(static_cast<size_t>(row_numel()));
  read_row(row, tmp.data());
  for (size_t k = 0; k < tmp.size(); ++k) out[k] = float(tmp[k]);
}

template <class T>
static NpyArray<T> read_npy_as(const std::string& path) {
  NpyFile f(path);
  NpyArray<T> a;
  a.shape = f.shape();
  int64_t n = f.header().numel();
  std::vector<double> tmp(static_cast<size_t>(n));
  f.read_range(0, n, tmp.data());
  a.data.assign(tmp.begin(), tmp.end());
  return a;
}

NpyArray<double> read_npy_double(const std::string& path) { return read_npy_as<double>(path); }
NpyArray<float> read_npy_float(const std::string& path) { return read_npy_as<float>(path); }

NpyWriter::NpyWriter(const std::string& path, const std::vector<int64_t>& shape, bool float64)
    : path_(path), f64_(float64) {
  total_ = 1;
  for (int64_t d : shape) {
    if (d < 0) throw std::invalid_argument(path + ": negative dimension in .npy shape");
    total_ *= d;
  }
  std::string dict = std::string("{'descr': '") + (f64_ ? "<f8" : "<f4") + "', 'fortran_order': False, 'shape': (";
  for (size_t k = 0; k < shape.size(); ++k) dict += (k ? ", " : "") + std::to_string(shape[k]);
  dict += shape.size() == 1 ? ",), }" : "), }";  // numpy writes (5,) for one dimension
  // The whole header (magic, version, length, dict, '\n') is padded to a multiple of 64.
  bool v2 = dict.size() + 11 > 65535;
  size_t pre = v2 ? 12 : 10;
  size_t total = (pre + dict.size() + 1 + 63) / 64 * 64;
  dict.append(total - pre - dict.size() - 1, ' ');
  dict += '\n';
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) throw std::runtime_error(path + ": cannot create .npy file");
  file_ = f;
  uint32_t len = uint32_t(dict.size());
  unsigned char head[12] = {0x93, 'N', 'U', 'M', 'P', 'Y', uint8_t(v2 ? 2 : 1), 0,
                            uint8_t(len), uint8_t(len >> 8), uint8_t(len >> 16), uint8_t(len >> 24)};
  if (std::fwrite(head, 1, pre, f) != pre || std::fwrite(dict.data(), 1, dict.size(), f) != dict.size())
    throw std::runtime_error(path + ": write error");
}

NpyWriter::~NpyWriter() {
  if (file_) std::fclose(static_cast<FILE*>(file_));
}

void NpyWriter::write(const double* values, int64_t n) {
  if (!file_) throw std::runtime_error(path_ + ": write after close");
  if (n < 0 || written_ + n > total_)
    throw std::runtime_error(path_ + ": writing " + std::to_string(written_ + n) + " values into an array of " +
                             std::to_string(total_));
  size_t ok;
  if (f64_) {
    ok = std::fwrite(values, sizeof(double), size_t(n), static_cast<FILE*>(file_));  // host is little-endian
  } else {
    std::vector<float> tmp(values, values + n);
    ok = std::fwrite(tmp.data(), sizeof(float), size_t(n), static_cast<FILE*>(file_));
  }
  if (ok != size_t(n)) throw std::runtime_error(path_ + ": write error");
  written_ += n;
}

void NpyWriter::close() {
  if (!file_) return;
  FILE* f = static_cast<FILE*>(file_);
  file_ = nullptr;
  bool ok = std::fclose(f) == 0;
  if (!ok) throw std::runtime_error(path_ + ": write error on close");
  if (written_ != total_)
    throw std::runtime_error(path_ + ": wrote " + std::to_string(written_) + " of " + std::to_string(total_) +
                             " values");
}

void write_npy(const std::string& path, const std::vector<int64_t>& shape, const double* data) {
  NpyWriter w(path, shape, true);
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  w.write(data, n);
  w.close();
}

void write_npy(const std::string& path, const std::vector<int64_t>& shape, const float* data) {
  NpyWriter w(path, shape, false);
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<double> tmp(data, data + n);
  w.write(tmp.data(), n);
  w.close();
}

}  // namespace ms
