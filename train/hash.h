// defines: SHA-256 (FIPS 180-4) for the reproducibility record and the evaluation outputs:
// hashes of files (checkpoints, CSVs), of byte buffers, and of a module's weights.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace ms {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t n);
  void update(const std::string& s) { update(s.data(), s.size()); }
  std::string hex_digest();  // finalises; 64 lowercase hex chars
 private:
  void block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t buf_len_ = 0;
  uint64_t total_ = 0;
};

std::string sha256_hex(const std::string& bytes);
std::string sha256_file(const std::string& path);  // throws naming the file if unreadable

}  // namespace ms
