// defines: Image (8-bit HWC pixels), read_image (JPEG through libjpeg-turbo, PNG / BMP through
// stb_image, DICOM through DCMTK) with the semantics of the reference's `Image.open(path).convert('RGB')`,
// DicomMode (display windowing, or the RSNA read path of spec §C.7), equalize_hist_u8
// (skimage.exposure.equalize_hist as the RSNA Dataset uses it), write_png.
//
// PIL parity of the decode (checked by tests/data/image.cpp against Pillow 9.4):
//   grey -> replicated; grey+alpha, RGBA -> alpha dropped without compositing (PIL's
//   convert drops it); palette -> palette colours; 16-bit RGB(A) / grey+alpha -> high byte
//   (PIL's "RGB;16B" raw modes); 16-bit grey -> PIL opens mode "I" and convert('RGB')
//   CLIPS each value to 0..255 (a 16-bit radiograph turns mostly white: that is what the
//   reference model would see, so we do the same); EXIF orientation is ignored (as PIL's
//   Image.open). JPEG: libjpeg-turbo, the library Pillow decodes with, called with Pillow's
//   settings (islow IDCT, fancy upsampling, CMYK read as Adobe-inverted and converted as
//   Pillow's convert('RGB')): the same pixels, checked exactly by the tests.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace ms {

// 8-bit pixels, row-major HWC. c is 1 (grey) or 3 (RGB). A grey Image stands for the RGB
// image with three equal channels: every transform treats channels independently, so
// working on one channel and replicating at the end is exact and three times cheaper.
struct Image {
  int w = 0, h = 0, c = 0;
  std::vector<uint8_t> px;  // h * w * c

  Image() = default;
  Image(int w_, int h_, int c_, uint8_t fill = 0) : w(w_), h(h_), c(c_), px(size_t(w_) * h_ * c_, fill) {}
  uint8_t* row(int y) { return px.data() + size_t(y) * w * c; }
  const uint8_t* row(int y) const { return px.data() + size_t(y) * w * c; }
  uint8_t& at(int y, int x, int ch) { return px[(size_t(y) * w + x) * c + ch]; }
  uint8_t at(int y, int x, int ch) const { return px[(size_t(y) * w + x) * c + ch]; }
};

Image to_rgb(const Image& img);  // grey -> 3 equal channels; RGB -> copy

// How a DICOM file becomes 8 bits.
enum class DicomMode {
  // For viewing / running the model on one's own DICOMs: stored value -> rescale
  // slope/intercept -> the file's first VOI window (PS3.3 C.11.2.1.2, LINEAR / LINEAR_EXACT /
  // SIGMOID) or, without one, min-max over the image -> MONOCHROME1 inverted -> rounded.
  kDisplay,
  // Spec §C.7 (dataset_RSNA.py): pydicom's pixel_array (raw stored values: no rescale, no
  // window, no MONOCHROME1 inversion) / 255 -> equalize_hist (256 bins) -> x255 -> truncated.
  kRsna,
};

struct ReadOptions {
  bool keep_grey = false;  // return c = 1 for grey sources instead of replicating
  DicomMode dicom = DicomMode::kDisplay;
};

// Decodes a PNG (1/2/4/8/16-bit grey, grey+alpha, RGB, RGBA, palette), JPEG (baseline and
// progressive), BMP or DICOM file, chosen by the file's magic bytes (DICOM also by a
// .dcm/.dicom extension when the preamble is missing). Throws std::runtime_error naming the
// file and the reason for an empty, truncated, corrupt or unsupported file.
Image read_image(const std::string& path, const ReadOptions& opt = {});
// The same for bytes in memory (not DICOM); `name` is used in error messages.
Image decode_image_bytes(const uint8_t* data, size_t n, const std::string& name, const ReadOptions& opt = {});

// A DICOM file's first frame as stored values after decompression, as pydicom 2.x's
// pixel_array gives them: each BitsAllocated word read as unsigned, or as two's complement
// when PixelRepresentation is 1, without masking to BitsStored.
struct DicomPixels {
  int w = 0, h = 0, samples = 1;  // samples: 1 (MONOCHROME1/2) or 3 (RGB, interleaved)
  std::string photometric;        // after decompression (YBR JPEGs are converted to RGB)
  std::string transfer_syntax;    // of the file, e.g. "JPEG Baseline"
  int bits_allocated = 0, bits_stored = 0;
  bool is_signed = false;
  double slope = 1, intercept = 0;  // RescaleSlope / RescaleIntercept (defaults 1, 0)
  bool has_window = false;
  double window_center = 0, window_width = 0;
  std::string voi_function = "LINEAR";
  std::vector<int32_t> values;  // h * w * samples
};
DicomPixels read_dicom_pixels(const std::string& path);
Image dicom_to_image(const DicomPixels& d, DicomMode mode, const std::string& path);

// skimage.exposure.equalize_hist(values / 255.) * 255 truncated to uint8, for integer
// `values` (spec §C.7): np.histogram with 256 bins over [min, max], cdf / total, np.interp
// at the bin centres, each step with numpy's float64 arithmetic.
std::vector<uint8_t> equalize_hist_u8(const std::vector<int32_t>& values);

// An 8-bit PNG (c = 1 or 3) in memory: filter "up" on every row, zlib level 3 (also the bytes of
// TensorBoard image summaries and of the run report's data: URIs).
std::string encode_png(const Image& img);
// Writes encode_png(img); throws naming the path on failure.
void write_png(const std::string& path, const Image& img);

}  // namespace ms
