// Fuzz target: DICOM files (DCMTK parse + decompression, our pixel / windowing code), both
// read paths (display and the RSNA one).
#include "data/image.h"
#include "tests/fuzz/fuzz.h"

MS_FUZZ_TARGET(dicom, ".dcm") {
  std::string p = ms::fuzz::scratch_file("dicom", ".dcm", data, size);
  try {
    ms::DicomPixels px = ms::read_dicom_pixels(p);
    if (px.values.size() != size_t(px.w) * px.h * px.samples) ms::fuzz::finding("DICOM pixel count != w*h*samples");
    for (ms::DicomMode m : {ms::DicomMode::kDisplay, ms::DicomMode::kRsna}) {
      try {
        ms::Image img = ms::dicom_to_image(px, m, p);
        if (img.px.size() != size_t(img.w) * img.h * img.c) ms::fuzz::finding("DICOM image size mismatch");
      } catch (const std::exception& e) {
        ms::fuzz::expect_named(e, p);
      }
    }
  } catch (const std::exception& e) {
    ms::fuzz::expect_named(e, p);
  }
}
