// defines: ZipReader — reads the central directory of a zip file (incl. ZIP64, as torch.save
// writes for files over 4 GB) and extracts stored or deflated entries with a CRC-32 check.
// Enough for torch.save archives; no encryption, no multi-disk archives.
#pragma once
#include <cstdint>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace ms {

struct ZipEntry {
  std::string name;
  uint16_t method = 0;  // 0 stored, 8 deflated
  uint32_t crc32 = 0;
  uint64_t compressed_size = 0, size = 0;
  uint64_t local_header_offset = 0;
};

class ZipReader {
 public:
  // Throws std::runtime_error naming `path` when the file is not a readable zip archive.
  explicit ZipReader(const std::string& path);

  const std::string& path() const { return path_; }
  const std::vector<ZipEntry>& entries() const { return entries_; }  // central-directory order
  const ZipEntry* find(const std::string& name) const;               // nullptr when absent
  // The entry's uncompressed bytes (CRC checked); throws naming the file and entry.
  std::vector<uint8_t> read(const ZipEntry& e);
  std::vector<uint8_t> read(const std::string& name);

  // True when the file starts with a zip local-file or end-of-directory signature.
  static bool looks_like_zip(const std::string& path);

 private:
  std::string path_;
  std::ifstream f_;
  uint64_t file_size_ = 0;
  std::vector<ZipEntry> entries_;
  std::map<std::string, size_t> by_name_;
  void read_bytes(uint64_t offset, void* dst, uint64_t n, const std::string& what);
};

}  // namespace ms
