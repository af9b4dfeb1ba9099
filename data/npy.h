// defines: NumPy .npy reading (format versions 1, 2 and 3; little/big-endian float, int,
// uint and bool dtypes; C order only) into float or double, row-block reads for large
// files, and .npy writing of float64/float32 arrays (the synthetic set's label matrix).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace ms {

// The parsed header of a .npy file.
struct NpyHeader {
  std::string descr;            // e.g. "<f8"
  char kind = 0;                // 'f', 'i', 'u' or 'b'
  int itemsize = 0;             // bytes per element
  bool swap = false;            // stored big-endian on this little-endian host
  std::vector<int64_t> shape;   // () for a scalar
  int64_t data_offset = 0;      // byte offset of the first element
  int64_t numel() const;
};

// Parses magic, version and header dict; throws std::runtime_error naming `path` on
// anything else than C-order data of a supported dtype, or a file shorter than the shape.
NpyHeader read_npy_header(const std::string& path);

template <class T>
struct NpyArray {
  std::vector<int64_t> shape;
  std::vector<T> data;  // row-major
};

// Whole file, converted to T (float or double).
NpyArray<double> read_npy_double(const std::string& path);
NpyArray<float> read_npy_float(const std::string& path);

// An open .npy for reading blocks of rows on demand (e.g. one [51,75] matrix of a
// [N,51,75] file). Reads use pread, so one NpyFile is safe to share between threads.
class NpyFile {
 public:
  explicit NpyFile(const std::string& path);
  ~NpyFile();
  NpyFile(const NpyFile&) = delete;
  NpyFile& operator=(const NpyFile&) = delete;

  const NpyHeader& header() const { return header_; }
  const std::vector<int64_t>& shape() const { return header_.shape; }
  const std::string& path() const { return path_; }
  // Elements of the sub-array at index `row` of the first dimension (shape()[1:]).
  int64_t row_numel() const;
  void read_row(int64_t row, float* out) const;
  void read_row(int64_t row, double* out) const;
  // Elements [start, start + count) in flat order.
  void read_range(int64_t start, int64_t count, double* out) const;

 private:
  std::string path_;
  NpyHeader header_;
  int fd_ = -1;
};

// Streams a C-order little-endian float64 ('<f8') or float32 ('<f4') array to disk row by
// row (version 1.0 header, 2.0 when it needs more room). close() checks the count.
class NpyWriter {
 public:
  NpyWriter(const std::string& path, const std::vector<int64_t>& shape, bool float64 = true);
  ~NpyWriter();
  NpyWriter(const NpyWriter&) = delete;
  NpyWriter& operator=(const NpyWriter&) = delete;
  void write(const double* values, int64_t n);  // converted to the file's dtype
  void close();

 private:
  std::string path_;
  bool f64_;
  int64_t total_ = 0, written_ = 0;
  void* file_ = nullptr;  // FILE*
};

// Writes a whole array in one go (NpyWriter underneath).
void write_npy(const std::string& path, const std::vector<int64_t>& shape, const double* data);
void write_npy(const std::string& path, const std::vector<int64_t>& shape, const float* data);

}  // namespace ms
