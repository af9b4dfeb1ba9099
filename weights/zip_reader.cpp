// Zip reading after PKWARE APPNOTE 6.3: end-of-central-directory (EOCD) record, optional
// ZIP64 EOCD, central-directory file headers, local file headers; inflate via zlib.
#include "weights/zip_reader.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <stdexcept>

namespace ms {

namespace {

constexpr uint32_t kLocalSig = 0x04034b50, kCentralSig = 0x02014b50, kEocdSig = 0x06054b50;
constexpr uint32_t kEocd64Sig = 0x06064b50, kEocd64LocSig = 0x07064b50;

uint16_t u16(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }
uint32_t u32(const uint8_t* p) {
  return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}
uint64_t u64(const uint8_t* p) { return uint64_t(u32(p)) | (uint64_t(u32(p + 4)) << 32); }

}  // namespace

bool ZipReader::looks_like_zip(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  uint8_t b[4] = {0, 0, 0, 0};
  f.read(reinterpret_cast<char*>(b), 4);
  if (!f) return false;
  uint32_t sig = u32(b);
  return sig == kLocalSig || sig == kEocdSig;
}

void ZipReader::read_bytes(uint64_t offset, void* dst, uint64_t n, const std::string& what) {
  if (offset > file_size_ || n > file_size_ - offset)
    throw std::runtime_error(path_ + ": " + what + " at byte " + std::to_string(offset) + " (+" + std::to_string(n) +
                             ") lies beyond the end of the file (" + std::to_string(file_size_) +
                             " bytes): truncated?");
  f_.clear();
  f_.seekg(std::streamoff(offset));
  f_.read(static_cast<char*>(dst), std::streamsize(n));
  if (!f_) throw std::runtime_error(path_ + ": short read of " + what);
}

ZipReader::ZipReader(const std::string& path) : path_(path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) throw std::runtime_error(path + ": no such file");
  file_size_ = std::filesystem::file_size(path, ec);
  f_.open(path, std::ios::binary);
  if (ec || !f_) throw std::runtime_error(path + ": cannot open");
  if (file_size_ < 22)
    throw std::runtime_error(path + ": " + std::to_string(file_size_) + " bytes, too short for a zip archive");

  // The EOCD record (22 bytes + comment of up to 64 KiB) ends the file; scan back for it.
  uint64_t tail_n = std::min<uint64_t>(file_size_, 22 + 65535);
  std::vector<uint8_t> tail(tail_n);
  read_bytes(file_size_ - tail_n, tail.data(), tail_n, "zip end record");
  int64_t eocd = -1;
  for (int64_t i = int64_t(tail_n) - 22; i >= 0; --i)
    if (u32(&tail[size_t(i)]) == kEocdSig && uint64_t(i) + 22 + u16(&tail[size_t(i) + 20]) == tail_n) {
      eocd = i;
      break;
    }
  if (eocd < 0)
    throw std::runtime_error(path + ": no zip end-of-central-directory record (truncated, or not a zip archive)");
  const uint8_t* e = &tail[size_t(eocd)];
  uint64_t count = u16(e + 10), cd_size = u32(e + 12), cd_offset = u32(e + 16);
  uint64_t eocd_pos = file_size_ - tail_n + uint64_t(eocd);
  if (count == 0xffff || cd_size == 0xffffffffu || cd_offset == 0xffffffffu) {  // ZIP64
    if (eocd_pos < 20) throw std::runtime_error(path + ": ZIP64 locator missing");
    uint8_t loc[20];
    read_bytes(eocd_pos - 20, loc, 20, "ZIP64 end locator");
    if (u32(loc) != kEocd64LocSig) throw std::runtime_error(path + ": ZIP64 end locator missing");
    uint8_t rec[56];
    read_bytes(u64(loc + 8), rec, 56, "ZIP64 end record");
    if (u32(rec) != kEocd64Sig) throw std::runtime_error(path + ": bad ZIP64 end record signature");
    count = u64(rec + 32);
    cd_size = u64(rec + 40);
    cd_offset = u64(rec + 48);
  }
  if (cd_offset > file_size_ || cd_size > file_size_ - cd_offset)
    throw std::runtime_error(path + ": central directory [" + std::to_string(cd_offset) + ", +" +
                             std::to_string(cd_size) + ") lies beyond the end of the file: truncated?");
  if (count > cd_size / 46)
    throw std::runtime_error(path + ": central directory claims " + std::to_string(count) + " entries in " +
                             std::to_string(cd_size) + " bytes");
  std::vector<uint8_t> cd(cd_size);
  read_bytes(cd_offset, cd.data(), cd_size, "central directory");
  size_t p = 0;
  for (uint64_t k = 0; k < count; ++k) {
    if (p + 46 > cd.size() || u32(&cd[p]) != kCentralSig)
      throw std::runtime_error(path + ": corrupt central directory at entry " + std::to_string(k));
    const uint8_t* h = &cd[p];
    ZipEntry z;
    uint16_t flags = u16(h + 8);
    z.method = u16(h + 10);
    z.crc32 = u32(h + 16);
    z.compressed_size = u32(h + 20);
    z.size = u32(h + 24);
    uint16_t name_n = u16(h + 28), extra_n = u16(h + 30), comment_n = u16(h + 32);
    z.local_header_offset = u32(h + 42);
    if (p + 46 + name_n + extra_n + comment_n > cd.size())
      throw std::runtime_error(path + ": corrupt central directory at entry " + std::to_string(k));
    z.name.assign(reinterpret_cast<const char*>(h + 46), name_n);
    if (flags & 1) throw std::runtime_error(path + ": entry '" + z.name + "' is encrypted");
    // ZIP64 extra field (id 1): 64-bit values, only for the fields saturated at 0xffffffff.
    const uint8_t* x = h + 46 + name_n;
    for (size_t q = 0; q + 4 <= extra_n;) {
      uint16_t id = u16(x + q), n = u16(x + q + 2);
      if (q + 4 + n > extra_n) break;
      if (id == 1) {
        size_t r = q + 4;
        auto take = [&](uint64_t& v) {
          if (v != 0xffffffffu) return;
          if (r + 8 > q + 4 + n) throw std::runtime_error(path + ": bad ZIP64 extra field in '" + z.name + "'");
          v = u64(x + r);
          r += 8;
        };
        take(z.size);
        take(z.compressed_size);
        take(z.local_header_offset);
      }
      q += 4 + n;
    }
    p += 46 + name_n + extra_n + comment_n;
    by_name_[z.name] = entries_.size();
    entries_.push_back(std::move(z));
  }
}

const ZipEntry* ZipReader::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &entries_[it->second];
}

std::vector<uint8_t> ZipReader::read(const std::string& name) {
  const ZipEntry* e = find(name);
  if (!e) throw std::runtime_error(path_ + ": no entry '" + name + "' in the zip archive");
  return read(*e);
}

std::vector<uint8_t> ZipReader::read(const ZipEntry& e) {
  const std::string what = "entry '" + e.name + "'";
  uint8_t lh[30];
  read_bytes(e.local_header_offset, lh, 30, what + " local header");
  if (u32(lh) != kLocalSig) throw std::runtime_error(path_ + ": " + what + ": bad local header signature");
  uint64_t data_at = e.local_header_offset + 30 + u16(lh + 26) + u16(lh + 28);
  if (e.method != 0 && e.method != 8)
    throw std::runtime_error(path_ + ": " + what + ": unsupported compression method " + std::to_string(e.method) +
                             " (expected stored or deflated)");
  if (e.method == 0 && e.compressed_size != e.size)
    throw std::runtime_error(path_ + ": " + what + ": stored entry with compressed size != size");
  // Check the sizes against the file before allocating (pth fuzzer: a 1 KB file whose entry
  // claimed 2 GB was allocated first). Deflate expands at most ~1032:1.
  if (data_at > file_size_ || e.compressed_size > file_size_ - data_at)
    throw std::runtime_error(path_ + ": " + what + " data (" + std::to_string(e.compressed_size) + " bytes at offset " +
                             std::to_string(data_at) + ") lies beyond the end of the file (" +
                             std::to_string(file_size_) + " bytes): truncated or corrupt archive");
  if (e.method == 8 && e.size > 1032 * e.compressed_size + 1024)
    throw std::runtime_error(path_ + ": " + what + ": claims " + std::to_string(e.size) + " bytes from " +
                             std::to_string(e.compressed_size) + " deflated ones (deflate expands at most 1032:1)");
  std::vector<uint8_t> comp(e.compressed_size);
  read_bytes(data_at, comp.data(), e.compressed_size, what + " data");
  std::vector<uint8_t> out;
  if (e.method == 0) {
    out = std::move(comp);
  } else {
    if (e.size > (uint64_t(1) << 40))
      throw std::runtime_error(path_ + ": " + what + ": implausible size " + std::to_string(e.size));
    out.resize(e.size);
    z_stream zs{};
    if (inflateInit2(&zs, -MAX_WBITS) != Z_OK) throw std::runtime_error(path_ + ": zlib inflateInit failed");
    // inflate in chunks (avail_in/out are 32-bit)
    uint64_t in_done = 0, out_done = 0;
    int rc = Z_OK;
    while (rc == Z_OK) {
      zs.next_in = comp.data() + in_done;
      zs.avail_in = uInt(std::min<uint64_t>(comp.size() - in_done, 1u << 30));
      zs.next_out = out.data() + out_done;
      zs.avail_out = uInt(std::min<uint64_t>(out.size() - out_done, 1u << 30));
      uInt in0 = zs.avail_in, out0 = zs.avail_out;
      rc = inflate(&zs, Z_NO_FLUSH);
      in_done += in0 - zs.avail_in;
      out_done += out0 - zs.avail_out;
      if (rc == Z_OK && in0 == zs.avail_in && out0 == zs.avail_out) rc = Z_BUF_ERROR;  // no progress
    }
    inflateEnd(&zs);
    if (rc != Z_STREAM_END || out_done != e.size)
      throw std::runtime_error(path_ + ": " + what + ": corrupt deflate data (zlib " + std::to_string(rc) + ")");
  }
  uLong crc = crc32(0L, Z_NULL, 0);
  for (uint64_t off = 0; off < out.size(); off += (1u << 30))
    crc = crc32(crc, out.data() + off, uInt(std::min<uint64_t>(out.size() - off, 1u << 30)));
  if (uint32_t(crc) != e.crc32) throw std::runtime_error(path_ + ": " + what + ": CRC-32 mismatch (corrupt file)");
  return out;
}

}  // namespace ms
