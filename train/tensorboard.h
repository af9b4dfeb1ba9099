// defines: TensorBoardWriter — TensorBoard event files (events.out.tfevents.*) written by a small
// encoder of our own, so `tensorboard --logdir RUN` shows a run's scalars, images and text:
//   - the TFRecord framing: uint64 length, masked CRC32C of the length, the bytes, masked CRC32C
//     of the bytes (little-endian; mask = ((crc >> 15) | (crc << 17)) + 0xa282ead8);
//   - the few protobuf fields of tensorflow/core/util/event.proto and framework/summary.proto that
//     scalars, images and text need: Event{wall_time=1 double, step=2 int64, file_version=3,
//     summary=5}, Summary{value=1}, Value{tag=1, simple_value=2 float, image=4, tensor=8,
//     metadata=9}, Image{height=1, width=2, colorspace=3, encoded_image_string=4 (PNG)}, text as
//     the text plugin stores it: metadata.plugin_data.plugin_name = "text" and a DT_STRING tensor.
// Why not a library: Debian packages no C++ TensorBoard writer (tensorboard_logger / tensorboardX
// are Python); libprotobuf would need the TensorFlow .proto files, which Debian does not ship
// either. The format is small and the test (tests/train/tensorboard.cpp) reads our files back with
// TensorBoard's own EventAccumulator (tests/read_events.py) and checks every value.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "data/image.h"

namespace ms {

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) and TFRecord's masked form.
uint32_t crc32c(const uint8_t* data, size_t n, uint32_t crc = 0);
uint32_t masked_crc32c(const uint8_t* data, size_t n);

// One TFRecord: length, masked CRC of the length, data, masked CRC of the data.
std::string tfrecord(const std::string& data);
// The records of a TFRecord file, in order; throws naming the file and record on a bad length or CRC.
std::vector<std::string> read_tfrecords(const std::string& path);

class TensorBoardWriter {
 public:
  // Creates log_dir and events.out.tfevents.<unix time>.<host>.<pid>[.<suffix>] inside it, and writes
  // the file_version event. Several writers (pretrain, then zeroshot, ...) may share one folder.
  explicit TensorBoardWriter(const std::string& log_dir, const std::string& suffix = "");
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  // A scalar (stored as float32, as TensorBoard does) at a step. Non-finite values are written as they are.
  void add_scalar(const std::string& tag, double value, int64_t step);
  // An image (grey or RGB, 8-bit), stored as PNG.
  void add_image(const std::string& tag, const Image& image, int64_t step);
  // Markdown text (TensorBoard's text dashboard renders it).
  void add_text(const std::string& tag, const std::string& text, int64_t step);
  void flush();  // events are flushed after every add; this is for callers that want to be explicit

  const std::string& path() const { return path_; }

 private:
  void write_event(const std::string& summary, int64_t step);
  std::string path_;
  std::FILE* f_ = nullptr;
};

}  // namespace ms
