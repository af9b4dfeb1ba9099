// TensorBoard event files: TFRecord framing with masked CRC32C, and a hand-written protobuf
// encoding of the Event / Summary fields we use (field numbers in train/tensorboard.h).
#include "train/tensorboard.h"

#include <fmt/core.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace fs = std::filesystem;

namespace ms {
namespace {

const std::array<uint32_t, 256>& crc_table() {
  static const std::array<uint32_t, 256> t = [] {
    std::array<uint32_t, 256> a{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      a[i] = c;
    }
    return a;
  }();
  return t;
}

void put_le(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out += char((v >> (8 * i)) & 0xff);
}

// ---- protobuf wire format: varint (type 0), fixed64 (1), length-delimited (2), fixed32 (5) ----
void varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += char((v & 0x7f) | 0x80);
    v >>= 7;
  }
  out += char(v);
}
void key(std::string& out, int field, int wire) { varint(out, uint64_t(field) << 3 | uint64_t(wire)); }
void pb_varint(std::string& out, int field, uint64_t v) { key(out, field, 0); varint(out, v); }
void pb_bytes(std::string& out, int field, const std::string& b) {
  key(out, field, 2);
  varint(out, b.size());
  out += b;
}
void pb_double(std::string& out, int field, double v) {
  uint64_t u;
  std::memcpy(&u, &v, 8);
  key(out, field, 1);
  put_le(out, u, 8);
}
void pb_float(std::string& out, int field, float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  key(out, field, 5);
  put_le(out, u, 4);
}

}  // namespace

uint32_t crc32c(const uint8_t* data, size_t n, uint32_t crc) {
  const auto& t = crc_table();
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = t[(crc ^ data[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

uint32_t masked_crc32c(const uint8_t* data, size_t n) {
  const uint32_t c = crc32c(data, n);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

std::string tfrecord(const std::string& data) {
  std::string len;
  put_le(len, data.size(), 8);
  std::string out = len;
  put_le(out, masked_crc32c(reinterpret_cast<const uint8_t*>(len.data()), 8), 4);
  out += data;
  put_le(out, masked_crc32c(reinterpret_cast<const uint8_t*>(data.data()), data.size()), 4);
  return out;
}

std::vector<std::string> read_tfrecords(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(path + ": cannot open");
  const std::string all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto le = [&](size_t at, int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v |= uint64_t(uint8_t(all[at + size_t(i)])) << (8 * i);
    return v;
  };
  auto crc_at = [&](size_t at, size_t n) { return masked_crc32c(reinterpret_cast<const uint8_t*>(all.data()) + at, n); };
  std::vector<std::string> out;
  size_t at = 0;
  while (at < all.size()) {
    const size_t rec = out.size();
    if (all.size() - at < 12) throw std::runtime_error(fmt::format("{}: record {}: truncated header", path, rec));
    const uint64_t n = le(at, 8);
    if (uint32_t(le(at + 8, 4)) != crc_at(at, 8))
      throw std::runtime_error(fmt::format("{}: record {}: length CRC mismatch", path, rec));
    if (all.size() - at - 12 < n + 4) throw std::runtime_error(fmt::format("{}: record {}: truncated data", path, rec));
    if (uint32_t(le(at + 12 + n, 4)) != crc_at(at + 12, n))
      throw std::runtime_error(fmt::format("{}: record {}: data CRC mismatch", path, rec));
    out.push_back(all.substr(at + 12, n));
    at += 12 + n + 4;
  }
  return out;
}

TensorBoardWriter::TensorBoardWriter(const std::string& log_dir, const std::string& suffix) {
  std::error_code ec;
  fs::create_directories(log_dir, ec);
  if (!fs::is_directory(log_dir)) throw std::runtime_error("TensorBoard log folder " + log_dir + ": cannot create it");
  char host[256] = "localhost";
  if (gethostname(host, sizeof host - 1) != 0) std::strcpy(host, "localhost");
  host[sizeof host - 1] = 0;
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  path_ = (fs::path(log_dir) / fmt::format("events.out.tfevents.{}.{}.{}{}", std::chrono::duration_cast<std::chrono::seconds>(now).count(),
                                           host, getpid(), suffix.empty() ? "" : "." + suffix))
              .string();
  f_ = std::fopen(path_.c_str(), "ab");
  if (!f_) throw std::runtime_error(path_ + ": cannot create the event file");
  std::string ev;
  pb_double(ev, 1, std::chrono::duration<double>(now).count());
  pb_bytes(ev, 3, "brain.Event:2");
  const std::string r = tfrecord(ev);
  std::fwrite(r.data(), 1, r.size(), f_);
  flush();
}

TensorBoardWriter::~TensorBoardWriter() {
  if (f_) std::fclose(f_);
}

void TensorBoardWriter::write_event(const std::string& value, int64_t step) {
  std::string summary, ev;
  pb_bytes(summary, 1, value);
  pb_double(ev, 1, std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count());
  pb_varint(ev, 2, uint64_t(step));  // int64: negative steps as 10-byte two's complement, as protobuf does
  pb_bytes(ev, 5, summary);
  const std::string r = tfrecord(ev);
  if (std::fwrite(r.data(), 1, r.size(), f_) != r.size()) throw std::runtime_error(path_ + ": write failed");
  flush();
}

void TensorBoardWriter::add_scalar(const std::string& tag, double value, int64_t step) {
  std::string v;
  pb_bytes(v, 1, tag);
  pb_float(v, 2, float(value));
  write_event(v, step);
}

void TensorBoardWriter::add_image(const std::string& tag, const Image& image, int64_t step) {
  const std::string png = encode_png(image);
  std::string im, v;
  pb_varint(im, 1, uint64_t(image.h));
  pb_varint(im, 2, uint64_t(image.w));
  pb_varint(im, 3, uint64_t(image.c));  // 1 grey, 3 RGB
  pb_bytes(im, 4, png);
  pb_bytes(v, 1, tag);
  pb_bytes(v, 4, im);
  write_event(v, step);
}

void TensorBoardWriter::add_text(const std::string& tag, const std::string& text, int64_t step) {
  std::string plugin, meta, dim, shape, tensor, v;
  pb_bytes(plugin, 1, "text");
  pb_bytes(meta, 1, plugin);
  pb_varint(dim, 1, 1);
  pb_bytes(shape, 2, dim);  // shape [1]
  pb_varint(tensor, 1, 7);  // DT_STRING
  pb_bytes(tensor, 2, shape);
  pb_bytes(tensor, 8, text);
  pb_bytes(v, 1, tag);
  pb_bytes(v, 8, tensor);
  pb_bytes(v, 9, meta);
  write_event(v, step);
}

void TensorBoardWriter::flush() {
  if (f_ && std::fflush(f_) != 0) throw std::runtime_error(path_ + ": write failed");
}

}  // namespace ms
