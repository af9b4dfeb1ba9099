// Image decoding: JPEG with libjpeg-turbo (the library Pillow decodes with), PNG / BMP with
// stb_image, DICOM with DCMTK, and the RSNA histogram equalisation of spec §C.7. PIL parity
// notes are in data/image.h.
#include "data/image.h"

#include "engine/io.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <stdexcept>

// stb: Debian ships libstb.so, but the Makefile does not link it (yet), so we compile a
// private (static) copy of the two decoders we use here, PNG and BMP. stb's JPEG decoder is
// not compiled in: Debian's stb_image 2.27 has UB in its JPEG bit reader on hostile scans
// (docs/reliability.md), so JPEG goes to libjpeg-turbo below.
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_BMP
#define STBI_NO_STDIO
#define STBI_MAX_DIMENSIONS (1 << 16)
#include <stb/stb_image.h>
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcrledrg.h>
#include <dcmtk/dcmdata/dcpxitem.h>
#include <dcmtk/dcmdata/dctk.h>
#include <dcmtk/dcmjpeg/djdecode.h>
#include <dcmtk/dcmjpls/djdecode.h>
#include <dcmtk/oflog/oflog.h>
#include <zlib.h>

#include <csetjmp>
// libjpeg-turbo's libjpeg API (Debian's libjpeg62-turbo, the same libjpeg.so.62 that Debian's
// Pillow links). jpeglib.h needs FILE and size_t declared first.
#include <jpeglib.h>

// numpy's interp / histogram arithmetic has no fused multiply-adds; GCC would contract
// a*b+c at -march=x86-64-v3 and move the equalised values across truncation boundaries.
#pragma GCC optimize("fp-contract=off")

namespace ms {

namespace {

// Larger images are refused before any allocation (PIL's decompression-bomb limit is 179M).
constexpr int64_t kMaxPixels = int64_t(1) << 28;

[[noreturn]] void fail(const std::string& name, const std::string& why) { throw std::runtime_error(name + ": " + why); }

std::string hex_prefix(const uint8_t* d, size_t n) {
  static const char* k = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n && i < 8; ++i) {
    if (i) s += ' ';
    s += k[d[i] >> 4];
    s += k[d[i] & 15];
  }
  return s;
}

bool ends_with_ci(const std::string& s, const std::string& suf) {
  if (s.size() < suf.size()) return false;
  for (size_t i = 0; i < suf.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(s[s.size() - suf.size() + i])) != suf[i]) return false;
  return true;
}

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) fail(path, "cannot open file");
  std::streamoff n = f.tellg();
  if (n < 0) fail(path, "cannot read file");
  std::vector<uint8_t> buf(static_cast<size_t>(n));
  f.seekg(0);
  if (n > 0 && !f.read(reinterpret_cast<char*>(buf.data()), n)) fail(path, "read error");
  return buf;
}

enum class Format { kPng, kJpeg, kBmp, kDicom, kUnknown };

Format sniff(const uint8_t* d, size_t n) {
  static const uint8_t png[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
  if (n >= 8 && std::memcmp(d, png, 8) == 0) return Format::kPng;
  if (n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF) return Format::kJpeg;
  if (n >= 2 && d[0] == 'B' && d[1] == 'M') return Format::kBmp;
  if (n >= 132 && std::memcmp(d + 128, "DICM", 4) == 0) return Format::kDicom;
  return Format::kUnknown;
}

// The JPEG marker walk that runs before any decoder sees the bytes. It was written for stb_image
// 2.27 (Debian's), which trusts parts of a JPEG's marker segments that a hostile file controls
// (a DHT whose 16 code counts sum past 256 made stbi__build_huffman write past the Huffman
// table); JPEG is now decoded by libjpeg-turbo, which checks these itself, but the walk stays
// in front as a second wall and as the source of our named errors: SOI, segments whose lengths
// fit, DHT tables (class 0/1, id 0..3, <= 256 codes, the segment length exactly their sum), DQT
// tables (precision 0/1, id 0..3, length exact), one SOF (baseline/extended/progressive Huffman,
// 8-bit, 1..4 components, sampling 1..4, table id 0..3, distinct ids) before any SOS, SOS
// components that the SOF declared and whose tables were defined, DRI of length 4, at most
// kMaxJpegScans scans, and an EOI. A JPEG that ends early is refused ("truncated"), as PIL
// raises "image file is truncated" where a decoder would fill the missing data in.
// Returns "" for a stream the decoder may see, else the reason.
// Each scan of a progressive JPEG is a pass over every block of its components, so a file of
// many tiny scans costs far more time than its size suggests. libjpeg-turbo's documentation
// (djpeg -maxscans, its OSS-Fuzz harnesses) limits untrusted files to 500 scans; real encoders
// write 1 (baseline) to about a dozen (cjpeg -progressive: 10 for colour).
constexpr int kMaxJpegScans = 500;

std::string jpeg_structure_error(const uint8_t* d, size_t n) {
  int scans = 0;
  auto u16 = [&](size_t o) { return (size_t(d[o]) << 8) | d[o + 1]; };
  const std::string trunc = "truncated JPEG (no end-of-image marker)";
  size_t p = 2;  // after SOI
  bool have_sof = false, progressive = false;
  std::vector<int> comp_ids, comp_tq;
  bool dht[2][4] = {}, dqt[4] = {};  // tables defined so far (class/id; id)
  while (true) {
    while (p < n && d[p] != 0xFF) ++p;  // tolerate junk between segments, as libjpeg does
    while (p < n && d[p] == 0xFF) ++p;  // fill bytes
    if (p >= n) return trunc;
    uint8_t m = d[p++];
    if (m == 0xD9) return have_sof ? "" : "corrupt JPEG (end of image before a frame header)";
    if ((m >= 0xD0 && m <= 0xD7) || m == 0x01) continue;  // standalone markers
    if (m == 0xD8) return "corrupt JPEG (a second start-of-image marker)";
    if (p + 2 > n) return trunc;
    size_t len = u16(p);
    if (len < 2 || p + len > n) return len < 2 ? "corrupt JPEG (marker segment length < 2)" : trunc;
    const uint8_t* s = d + p + 2;  // segment payload
    size_t L = len - 2;
    char mk[8];
    std::snprintf(mk, sizeof mk, "FF%02X", m);
    auto bad = [&](const std::string& what) { return "corrupt JPEG (" + what + " in the " + mk + " segment)"; };
    if (m == 0xC4) {  // DHT
      size_t q = 0;
      while (q < L) {
        if (q + 17 > L) return bad("Huffman table header cut short");
        int tc = s[q] >> 4, th = s[q] & 15;
        if (tc > 1 || th > 3) return bad("Huffman table class/id " + std::to_string(tc) + "/" + std::to_string(th));
        size_t count = 0;
        for (int i = 1; i <= 16; ++i) count += s[q + i];
        if (count > 256) return bad("Huffman table with " + std::to_string(count) + " codes (at most 256)");
        dht[tc][th] = true;
        q += 17 + count;
      }
      if (q != L) return bad("Huffman tables longer than the segment");
    } else if (m == 0xDB) {  // DQT
      size_t q = 0;
      while (q < L) {
        int pq = s[q] >> 4, tq = s[q] & 15;
        if (pq > 1 || tq > 3) return bad("quantisation table precision/id " + std::to_string(pq) + "/" + std::to_string(tq));
        dqt[tq] = true;
        q += 1 + (pq ? 128 : 64);
      }
      if (q != L) return bad("quantisation tables longer than the segment");
    } else if (m == 0xC0 || m == 0xC1 || m == 0xC2) {  // SOF0/1/2 (Huffman)
      if (have_sof) return bad("second frame header");
      have_sof = true;
      progressive = m == 0xC2;
      if (L < 6) return bad("frame header cut short");
      if (s[0] != 8)  // extended (SOF1) and progressive (SOF2) JPEGs may carry 12-bit samples
        return "unsupported JPEG: " + std::to_string(s[0]) + "-bit samples (only 8-bit JPEGs are decoded)";
      int nc = s[5];
      if (nc < 1 || nc > 4 || L != size_t(6 + 3 * nc)) return bad(std::to_string(nc) + " components");
      for (int i = 0; i < nc; ++i) {
        int id = s[6 + 3 * i], hs = s[7 + 3 * i] >> 4, vs = s[7 + 3 * i] & 15, tq = s[8 + 3 * i];
        if (hs < 1 || hs > 4 || vs < 1 || vs > 4) return bad("sampling factor outside 1..4");
        if (tq > 3) return bad("quantisation table id " + std::to_string(tq));
        if (std::find(comp_ids.begin(), comp_ids.end(), id) != comp_ids.end()) return bad("repeated component id");
        comp_ids.push_back(id);
        comp_tq.push_back(tq);
      }
    } else if ((m >= 0xC3 && m <= 0xCF) && m != 0xC4 && m != 0xC8 && m != 0xCC) {
      // Valid JPEG processes we do not decode: a named refusal, not "corrupt". (libjpeg-turbo
      // 2.1 and PIL decode the arithmetic-coded ones; they stay refused here: the marker walk
      // does not check their DAC segments, and few encoders write them.)
      const char* what = m == 0xC3 ? "lossless (SOF3)"
                         : m <= 0xC7 ? "hierarchical (differential)"
                         : m <= 0xCB ? (m == 0xCB ? "arithmetic-coded lossless" : "arithmetic-coded")
                                     : "hierarchical arithmetic-coded";
      return std::string("unsupported JPEG: ") + what + " frame (" + mk +
             "); only baseline, extended and progressive Huffman-coded JPEGs are decoded";
    } else if (m == 0xDD) {  // DRI
      if (L != 2) return bad("restart interval length");
    } else if (m == 0xDA) {  // SOS
      if (!have_sof) return bad("scan before the frame header");
      if (++scans > kMaxJpegScans)
        return "corrupt JPEG (more than " + std::to_string(kMaxJpegScans) +
               " scans; real encoders write at most a few dozen)";
      if (L < 1) return bad("scan header cut short");
      int ns = s[0];
      if (ns < 1 || ns > 4 || L != size_t(4 + 2 * ns)) return bad(std::to_string(ns) + " scan components");
      // stb_image 2.27 decoded with whatever a table slot held, defined or not: a scan using a
      // Huffman table no DHT defined read h->size[16777460] (image fuzzer, UBSan). So every
      // table a scan will use must have been defined before it: sequential scans use their DC
      // and AC tables, progressive first DC scans (Ss = 0, Ah = 0) the DC table, AC scans
      // (Ss > 0) the AC table, DC refinements none. Frame components' quantisation tables too.
      // (Motion-JPEG frames that rely on the standard tables without a DHT are refused here.)
      const int ss = s[1 + 2 * ns], ah = s[3 + 2 * ns] >> 4;
      for (int i = 0; i < ns; ++i) {
        auto at = std::find(comp_ids.begin(), comp_ids.end(), int(s[1 + 2 * i]));
        if (at == comp_ids.end()) return bad("scan component not in the frame");
        const int td = s[2 + 2 * i] >> 4, ta = s[2 + 2 * i] & 15;
        if (td > 3 || ta > 3) return bad("Huffman table id " + std::to_string(td > 3 ? td : ta));
        const bool need_dc = progressive ? (ss == 0 && ah == 0) : true, need_ac = progressive ? ss > 0 : true;
        if ((need_dc && !dht[0][td]) || (need_ac && !dht[1][ta]))
          return bad("scan uses " + std::string(need_dc && !dht[0][td] ? "DC" : "AC") + " Huffman table " +
                     std::to_string(need_dc && !dht[0][td] ? td : ta) + ", which no DHT segment defined");
        const int tq = comp_tq[size_t(at - comp_ids.begin())];
        if (!dqt[tq]) return bad("frame component uses quantisation table " + std::to_string(tq) +
                                 ", which no DQT segment defined");
      }
    }
    p += len;
    if (m != 0xDA) continue;
    // Entropy-coded data after SOS: FF00 is a stuffed byte, FFD0-FFD7 restart markers.
    while (true) {
      if (p + 1 >= n) return trunc;
      if (d[p] != 0xFF) {
        ++p;
        continue;
      }
      uint8_t b = d[p + 1];
      if (b == 0x00 || (b >= 0xD0 && b <= 0xD7)) {
        p += 2;
        continue;
      }
      if (b == 0xFF) {
        ++p;
        continue;
      }
      break;  // a marker: the next segment (progressive scans, DHT, EOI)
    }
  }
}

// stb reads a BMP whose pixel array is cut short as zeros; require the bytes to be there.
void check_bmp_size(const uint8_t* d, size_t n, const std::string& name) {
  auto u32 = [&](size_t o) {
    return uint32_t(d[o]) | uint32_t(d[o + 1]) << 8 | uint32_t(d[o + 2]) << 16 | uint32_t(d[o + 3]) << 24;
  };
  auto u16 = [&](size_t o) { return uint32_t(d[o]) | uint32_t(d[o + 1]) << 8; };
  if (n < 26) fail(name, "truncated BMP (" + std::to_string(n) + " bytes, header incomplete)");
  uint32_t off = u32(10), hsz = u32(14);
  int64_t w, h, bpp, comp = 0;
  if (hsz == 12) {
    w = u16(18), h = u16(20), bpp = u16(24);
  } else {
    if (n < 34) fail(name, "truncated BMP (" + std::to_string(n) + " bytes, header incomplete)");
    w = int32_t(u32(18)), h = int32_t(u32(22)), bpp = u16(28), comp = u32(30);
  }
  if (comp == 1 || comp == 2 || comp == 4 || comp == 5) {  // stb_image decodes none of these
    static const char* kind[] = {"", "RLE8", "RLE4", "", "JPEG", "PNG"};
    fail(name, std::string("unsupported BMP compression ") + kind[comp] + " (" + std::to_string(comp) +
                   "): only uncompressed and bit-field BMPs are read; save it uncompressed or as PNG");
  }
  // Any other value is no BMP compression. stb 2.27 refuses it only for 16/32-bit pixels and
  // decodes 1/4/8/24-bit ones as if uncompressed (image fuzzer: a 53-byte BMP of compression
  // 0xFFFF0006 declaring 12288 x 21509 1-bit pixels: 800 MB and 36 s under ASan of zeros read
  // past the end of the file), before our size check could apply. Pillow: "Unsupported BMP
  // compression".
  if (comp != 0 && comp != 3 && comp != 6)
    fail(name, "unsupported BMP compression " + std::to_string(comp) +
                   ": only uncompressed (0) and bit-field (3, 6) BMPs are read");
  // stb 2.27 allocates the whole w x h output before it looks at the bit depth ("bad bpp"): a
  // 29-byte OS/2 BMP of 12361 x 21060 pixels at 0 bits made it allocate 781 MB first (image
  // fuzzer, a 33 s unit under ASan on the loaded machine). Pillow: "Unsupported BMP pixel depth".
  if (bpp != 1 && bpp != 4 && bpp != 8 && bpp != 16 && bpp != 24 && bpp != 32)
    fail(name, "unsupported BMP bit depth " + std::to_string(bpp) + " (1, 4, 8, 16, 24 or 32 bits per pixel are read)");
  if (w <= 0 || h == 0) return;  // stb reports a bad header
  // w < 2^31 and bpp < 2^16, so the stride fits; stride * |h| may not (UBSan, image fuzzer:
  // a 114-byte BMP claiming 471466032 x 117440512 pixels of 6144 bits), so compare in long double.
  int64_t stride = ((bpp * w + 31) / 32) * 4;
  long double need = (long double)(off) + (long double)(stride) * (long double)(std::llabs(h));
  if ((long double)(n) < need)
    fail(name, "truncated BMP (" + std::to_string(n) + " bytes, the " + std::to_string(w) + "x" +
                   std::to_string(std::llabs(h)) + " pixel array needs " +
                   std::to_string(uint64_t(std::min(need, 1e19L))) + ")");
}

void check_dims(int64_t w, int64_t h, const std::string& name) {
  if (w <= 0 || h <= 0) fail(name, "image has no pixels (" + std::to_string(w) + "x" + std::to_string(h) + ")");
  if (w * h > kMaxPixels)
    fail(name, "image too large (" + std::to_string(w) + "x" + std::to_string(h) + " pixels, limit 2^28)");
}

// A zero-length IDAT chunk is valid PNG, but stb_image 2.27 then memcpy's 0 bytes into a
// null buffer (undefined behaviour; image fuzzer, UBSan). Returns the file without its empty
// IDAT chunks in `out` (true), or false when it has none. The walk stops at the first chunk
// whose length runs past the file; stb reports such files itself.
// Also refuses, by name, a chunk before IEND whose length runs past the end of the file:
// stb 2.27 reallocates an IDAT's declared length before reading it (image fuzzer: 2 GB for a
// 5.6 KB file, libFuzzer out-of-memory).
bool png_drop_empty_idat(const uint8_t* d, size_t n, std::vector<uint8_t>& out, const std::string& name) {
  size_t p = 8;
  bool found = false;
  while (p + 8 <= n) {
    const size_t len = (size_t(d[p]) << 24) | (size_t(d[p + 1]) << 16) | (size_t(d[p + 2]) << 8) | d[p + 3];
    if (len > n - p - 8 || p + 12 + len > n) {
      char type[5] = {0};
      for (int k = 0; k < 4; ++k) type[k] = std::isprint(d[p + 4 + k]) ? char(d[p + 4 + k]) : '?';
      fail(name, std::string("truncated or corrupt PNG (chunk '") + type + "' at byte " + std::to_string(p) +
                     " declares " + std::to_string(len) + " bytes, the file has " + std::to_string(n) + ")");
    }
    const bool iend = std::memcmp(d + p + 4, "IEND", 4) == 0;
    if (len == 0 && std::memcmp(d + p + 4, "IDAT", 4) == 0) {
      if (!found) out.assign(d, d + p);
      found = true;
    } else if (found) {
      out.insert(out.end(), d + p, d + p + 12 + len);
    }
    p += 12 + len;
    if (iend) break;
  }
  if (found) out.insert(out.end(), d + p, d + n);
  return found;
}

Image decode_stb(const uint8_t* d, size_t n, Format fmt, const std::string& name, const ReadOptions& opt) {
  std::vector<uint8_t> cleaned;
  if (fmt == Format::kPng && png_drop_empty_idat(d, n, cleaned, name)) d = cleaned.data(), n = cleaned.size();
  const char* kind = fmt == Format::kPng ? "PNG" : "BMP";
  if (n > size_t(INT32_MAX)) fail(name, std::string(kind) + " file too large");
  if (fmt == Format::kBmp) check_bmp_size(d, n, name);
  int w = 0, h = 0, comp = 0;
  if (!stbi_info_from_memory(d, int(n), &w, &h, &comp))
    fail(name, std::string("cannot decode ") + kind + ": " + stbi_failure_reason());
  // stb 2.27's BMP info gives a top-down BMP's height as stored (negative); its loader flips.
  if (fmt == Format::kBmp && h < 0 && h > INT32_MIN) h = -h;
  check_dims(w, h, name);
  bool grey = comp <= 2;
  // PNG IHDR: bit depth at byte 24, colour type at 25 (0 grey, 2 RGB, 3 palette, 4 grey+alpha, 6 RGBA).
  bool grey16 = fmt == Format::kPng && n > 25 && d[24] == 16 && d[25] == 0;
  int c = grey && opt.keep_grey ? 1 : 3;
  Image img;
  if (grey16) {
    // PIL opens 16-bit grey as mode "I"; convert('RGB'/'L') clips to 0..255 (not >> 8).
    int ww, hh, cc;
    stbi_us* p = stbi_load_16_from_memory(d, int(n), &ww, &hh, &cc, 1);
    if (!p) fail(name, std::string("cannot decode PNG: ") + stbi_failure_reason());
    img = Image(ww, hh, c);
    size_t np = size_t(ww) * hh;
    for (size_t i = 0; i < np; ++i) {
      uint8_t v = p[i] > 255 ? 255 : uint8_t(p[i]);
      for (int k = 0; k < c; ++k) img.px[i * c + k] = v;
    }
    stbi_image_free(p);
    return img;
  }
  // 8-bit request: stb keeps the high byte of 16-bit RGB(A)/grey+alpha (PIL's ";16B" raw
  // modes do the same) and drops alpha without compositing (as PIL's convert).
  int ww, hh, cc;
  stbi_uc* p = stbi_load_from_memory(d, int(n), &ww, &hh, &cc, c);
  if (!p) fail(name, std::string("cannot decode ") + kind + ": " + stbi_failure_reason());
  img.w = ww, img.h = hh, img.c = c;
  img.px.assign(p, p + size_t(ww) * hh * c);
  stbi_image_free(p);
  return img;
}

// ---- JPEG: libjpeg-turbo ------------------------------------------------------------------
//
// Pillow decodes JPEG with libjpeg (on Debian: this same libjpeg62-turbo 2.1.5), so the same
// calls with Pillow's settings give Pillow's pixels: libjpeg's defaults (islow IDCT, fancy
// upsampling), out_color_space GRAYSCALE for 1 component, RGB for 3 (libjpeg picks YCbCr or
// RGB from JFIF / Adobe / component ids, as for Pillow), CMYK for 4 (CMYK or YCCK), which Pillow
// reads as inverted "CMYK;I" (Adobe's convention) and converts to RGB with
// R = (255 - K) - (C * (255 - K)) / 255 (its MULDIV255 rounding), reproduced below.
// Errors: libjpeg's error_exit longjmps back here (the documented way for a C library; every
// C++ object of this frame is created before setjmp and lives on, and everything written after
// it lives on the heap, so nothing is skipped or indeterminate), then one line naming the file.
// Warnings (corrupt entropy data that libjpeg decodes through) are not errors, as in Pillow.

struct JpegSession {
  jpeg_decompress_struct cinfo{};
  jpeg_error_mgr jerr{};
  std::jmp_buf jump{};
  char message[JMSG_LENGTH_MAX] = {0};
  bool created = false;
  Image img;
  std::vector<uint8_t> row;
  ~JpegSession() {
    if (created) jpeg_destroy_decompress(&cinfo);
  }
};

extern "C" {
static void medslip_jpeg_error_exit(j_common_ptr c) {
  auto* s = static_cast<JpegSession*>(c->client_data);
  (*c->err->format_message)(c, s->message);
  std::longjmp(s->jump, 1);
}
static void medslip_jpeg_output_message(j_common_ptr) {}  // libjpeg would print to stderr
}

Image decode_jpeg(const uint8_t* d, size_t n, const std::string& name, const ReadOptions& opt) {
  if (n > size_t(INT32_MAX)) fail(name, "JPEG file too large");
  std::string why = jpeg_structure_error(d, n);
  if (!why.empty()) fail(name, why);
  const auto s = std::make_unique<JpegSession>();
  jpeg_decompress_struct* ci = &s->cinfo;
  ci->err = jpeg_std_error(&s->jerr);
  s->jerr.error_exit = medslip_jpeg_error_exit;
  s->jerr.output_message = medslip_jpeg_output_message;
  ci->client_data = s.get();
  if (setjmp(s->jump)) {
    // One line: libjpeg's messages are single sentences ("Bogus Huffman table definition", ...).
    std::string msg = s->message;
    std::replace(msg.begin(), msg.end(), '\n', ' ');
    fail(name, "cannot decode JPEG: " + msg);
  }
  jpeg_create_decompress(ci);
  s->created = true;
  jpeg_mem_src(ci, d, static_cast<unsigned long>(n));
  jpeg_read_header(ci, TRUE);
  const int64_t w = ci->image_width, h = ci->image_height;
  check_dims(w, h, name);
  // A JPEG codes every 8x8 block of every component with at least one bit (its DC difference,
  // in baseline and in a progressive file's first DC scan), so no valid file holds more than
  // 512 pixels per byte. The image fuzzer found a 1.3 KB JPEG declaring 49456 x 255 pixels
  // (10 s under ASan for a picture of zeros; 2^28 pixels would take minutes and 800 MB).
  if (double(w) * double(h) > 1024.0 * double(n) + 65536.0)
    fail(name, "JPEG declares " + std::to_string(w) + "x" + std::to_string(h) + " pixels, more than its " +
                   std::to_string(n) + " bytes can encode (corrupt header or a decompression bomb)");
  const int nc = ci->num_components;
  if (nc == 1) {
    ci->out_color_space = JCS_GRAYSCALE;
  } else if (nc == 3) {
    ci->out_color_space = JCS_RGB;
  } else if (nc == 4) {
    ci->out_color_space = JCS_CMYK;
  } else {  // Pillow: "cannot handle 2-layer images"
    fail(name, "unsupported JPEG: " + std::to_string(nc) + " components (1 grey, 3 colour or 4 CMYK are decoded)");
  }
  jpeg_start_decompress(ci);
  const int oc = ci->output_components;
  if (int64_t(ci->output_width) != w || int64_t(ci->output_height) != h || oc != (nc == 1 ? 1 : nc == 3 ? 3 : 4))
    fail(name, "cannot decode JPEG: decoder output " + std::to_string(ci->output_width) + "x" +
                   std::to_string(ci->output_height) + "x" + std::to_string(oc) + " does not match its header");
  const int c = nc == 1 && opt.keep_grey ? 1 : 3;
  s->img = Image(int(w), int(h), c);
  s->row.resize(size_t(w) * size_t(oc));
  while (ci->output_scanline < ci->output_height) {
    const int y = int(ci->output_scanline);
    JSAMPROW rp = s->row.data();
    if (jpeg_read_scanlines(ci, &rp, 1) != 1) fail(name, "cannot decode JPEG: no scanline " + std::to_string(y));
    uint8_t* out = s->img.row(y);
    const uint8_t* in = s->row.data();
    if (oc == c) {
      std::memcpy(out, in, size_t(w) * size_t(c));
    } else if (oc == 1) {  // grey -> 3 equal channels
      for (int64_t x = 0; x < w; ++x) out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = in[x];
    } else {  // CMYK as stored (Adobe-inverted): Pillow's "CMYK;I" unpack, then its cmyk2rgb
      for (int64_t x = 0; x < w; ++x) {
        const int nk = in[4 * x + 3];  // 255 - K
        for (int k = 0; k < 3; ++k) {
          const int cc = 255 - in[4 * x + k];
          const int t = cc * nk + 128;
          const int v = nk - (((t >> 8) + t) >> 8);
          out[3 * x + k] = uint8_t(std::clamp(v, 0, 255));
        }
      }
    }
  }
  jpeg_finish_decompress(ci);
  return std::move(s->img);
}

// ---- DICOM --------------------------------------------------------------------------

void register_dicom_codecs() {
  static std::once_flag once;
  std::call_once(once, [] {
    // Our own errors carry DCMTK's reason; keep its logger from printing them twice.
    OFLog::configure(OFLogger::FATAL_LOG_LEVEL);
    DJDecoderRegistration::registerCodecs();  // JPEG baseline / extended / lossless
    DcmRLEDecoderRegistration::registerCodecs();
    DJLSDecoderRegistration::registerCodecs();  // JPEG-LS lossless / near-lossless
  });
}

// DCMTK 3.6.7 (Debian 12) walks each JPEG fragment's marker segments to find the frame
// header's bit depth (DJCodecDecoder::scanJpegDataForBitDepth) and does not advance past a TEM
// marker (FF01): a fragment with FF01 before its SOF loops forever (found by the dicom fuzzer:
// a 2.5 KB file, over 30 s under ASan, never returns). This is the same walk; true when it
// would reach a TEM.
bool dcmtk_jpeg_walk_hangs(const Uint8* d, Uint32 n) {
  if (!d) return false;
  Uint32 off = 0;
  while (off + 4 < n) {
    const unsigned m = (unsigned(d[off]) << 8) | d[off + 1];
    if (m == 0xFF01) return true;
    if ((m >= 0xFFC0 && m <= 0xFFCF && m != 0xFFC4 && m != 0xFFC8 && m != 0xFFCC)) return false;  // SOFn: found
    if ((m >= 0xFFD0 && m <= 0xFFD9)) {
      off += 2;  // RSTn, SOI, EOI
    } else if (m == 0xFFFF) {
      off += 1;  // a fill byte (dicom fuzzer, session 5: FF FF FF 01 hung DCMTK past the old walk)
    } else if (m == 0xFFC4 || m == 0xFFC8 || m == 0xFFCC || (m >= 0xFFDA && m <= 0xFFDF) ||
               (m >= 0xFFE0 && m <= 0xFFFE)) {
      off += ((unsigned(d[off + 2]) << 8) | d[off + 3]) + 2;  // a segment with a length (JPG, FFC8, too)
    } else if (d[off] == 0xFF && d[off + 1] > 2 && d[off + 1] <= 0xBF) {
      off += 2;  // reserved markers
    } else {
      return false;  // DCMTK stops here (syntax error)
    }
  }
  return false;
}

// Refuses, naming the file, an encapsulated JPEG (DCMTK's dcmjpeg codec) whose fragments
// would hang DCMTK's header walk.
void check_dcmtk_jpeg_fragments(DcmDataset* ds, E_TransferSyntax xs, const std::string& path) {
  if (xs < EXS_JPEGProcess1 || xs > EXS_JPEGProcess14SV1) return;
  DcmElement* pe = nullptr;
  if (ds->findAndGetElement(DCM_PixelData, pe).bad() || !pe || pe->ident() != EVR_PixelData) return;
  DcmPixelSequence* seq = nullptr;
  const DcmRepresentationParameter* rp = nullptr;
  if (static_cast<DcmPixelData*>(pe)->getEncapsulatedRepresentation(xs, rp, seq).bad() || !seq) return;
  for (unsigned long i = 0; i < seq->card(); ++i) {
    DcmPixelItem* item = nullptr;
    Uint8* bytes = nullptr;
    if (seq->getItem(item, i).bad() || !item || item->getUint8Array(bytes).bad()) continue;
    if (dcmtk_jpeg_walk_hangs(bytes, item->getLength()))
      fail(path, "corrupt JPEG in DICOM fragment " + std::to_string(i) +
                     ": a TEM marker (FF01) before the frame header (DCMTK's decoder would never return)");
  }
}

template <class T>
T require_u16(DcmDataset* ds, const DcmTagKey& tag, const char* what, const std::string& path) {
  Uint16 v = 0;
  if (ds->findAndGetUint16(tag, v).bad()) fail(path, std::string("DICOM attribute ") + what + " missing or invalid");
  return T(v);
}

}  // namespace

Image to_rgb(const Image& img) {
  if (img.c == 3) return img;
  if (img.c != 1) throw std::invalid_argument("to_rgb: expected 1 or 3 channels, got " + std::to_string(img.c));
  Image out(img.w, img.h, 3);
  for (size_t i = 0, n = img.px.size(); i < n; ++i) out.px[3 * i] = out.px[3 * i + 1] = out.px[3 * i + 2] = img.px[i];
  return out;
}

DicomPixels read_dicom_pixels(const std::string& path) {
  register_dicom_codecs();
  DcmFileFormat ff;
  OFCondition st = ff.loadFile(OFFilename(path.c_str()));
  if (st.bad()) fail(path, std::string("cannot read DICOM: ") + st.text());
  DcmDataset* ds = ff.getDataset();
  DicomPixels d;
  DcmXfer xfer(ds->getOriginalXfer());
  d.transfer_syntax = xfer.getXferName();
  if (!ds->tagExists(DCM_PixelData)) fail(path, "DICOM file has no PixelData");
  {
    // A decompression bomb: Rows x Columns far beyond what the file's bytes can encode (found
    // by the dicom fuzzer: a 2 KB JPEG DICOM claiming 65462 x 48 pixels, over 20 s to decode
    // under ASan; Rows = Columns = 65535 would ask for 16 GB). No JPEG / JPEG-LS / RLE stream
    // holds more than 256 pixels per byte (a baseline 8x8 block needs >= 2 bits), so refuse
    // before decompressing.
    Uint16 r = 0, c = 0, spp = 1;
    ds->findAndGetUint16(DCM_Rows, r);
    ds->findAndGetUint16(DCM_Columns, c);
    ds->findAndGetUint16(DCM_SamplesPerPixel, spp);
    std::error_code ec;
    const auto bytes = std::filesystem::file_size(path, ec);
    const double samples = double(r) * double(c) * double(std::max<Uint16>(spp, 1));
    if (!ec && samples > 256.0 * double(bytes) + double(1 << 20))
      fail(path, "DICOM declares " + std::to_string(c) + "x" + std::to_string(r) + " pixels, more than its " +
                     std::to_string(bytes) + " bytes can hold (corrupt Rows/Columns or a decompression bomb)");
  }
  {
    // Encapsulated syntaxes with a registered decoder: DCMTK's dcmjpeg (JPEG processes 1, 2&4,
    // 6&8, 10&12, 14, 14 SV1), RLE and JPEG-LS. Anything else (JPEG 2000, arithmetic or
    // hierarchical JPEG, MPEG, HEVC, ...) gets its name, not DCMTK's "Pixel representation
    // cannot be changed".
    const E_TransferSyntax xs = ds->getOriginalXfer();
    static const E_TransferSyntax kDecodable[] = {
        EXS_JPEGProcess1,  EXS_JPEGProcess2_4, EXS_JPEGProcess6_8,   EXS_JPEGProcess10_12, EXS_JPEGProcess14,
        EXS_JPEGProcess14SV1, EXS_RLELossless, EXS_JPEGLSLossless, EXS_JPEGLSLossy};
    if (xfer.isEncapsulated() && std::find(std::begin(kDecodable), std::end(kDecodable), xs) == std::end(kDecodable))
      fail(path, "unsupported DICOM transfer syntax " + d.transfer_syntax + " (" + xfer.getXferID() +
                     "): medslip decodes uncompressed, deflated, RLE, JPEG (baseline, extended, progressive, "
                     "lossless) and JPEG-LS pixel data; convert the file first (e.g. gdcmconv --raw)");
    check_dcmtk_jpeg_fragments(ds, xs, path);
  }
  st = ds->chooseRepresentation(EXS_LittleEndianExplicit, nullptr);
  if (st.bad() || !ds->canWriteXfer(EXS_LittleEndianExplicit))
    fail(path, "cannot decompress DICOM pixel data (transfer syntax " + d.transfer_syntax + ")" +
                   (st.bad() ? std::string(": ") + st.text() : std::string(": no decoder for it")));

  int rows = require_u16<int>(ds, DCM_Rows, "Rows", path);
  int cols = require_u16<int>(ds, DCM_Columns, "Columns", path);
  d.bits_allocated = require_u16<int>(ds, DCM_BitsAllocated, "BitsAllocated", path);
  d.bits_stored = require_u16<int>(ds, DCM_BitsStored, "BitsStored", path);
  d.is_signed = require_u16<int>(ds, DCM_PixelRepresentation, "PixelRepresentation", path) == 1;
  Uint16 spp = 1, planar = 0;
  ds->findAndGetUint16(DCM_SamplesPerPixel, spp);
  ds->findAndGetUint16(DCM_PlanarConfiguration, planar);
  OFString photometric;
  if (ds->findAndGetOFString(DCM_PhotometricInterpretation, photometric).bad())
    fail(path, "DICOM attribute PhotometricInterpretation missing");
  d.photometric = photometric.c_str();
  while (!d.photometric.empty() && d.photometric.back() == ' ') d.photometric.pop_back();
  check_dims(cols, rows, path);
  d.w = cols, d.h = rows, d.samples = spp;
  if (d.photometric == "MONOCHROME1" || d.photometric == "MONOCHROME2") {
    if (spp != 1) fail(path, "DICOM " + d.photometric + " with SamplesPerPixel " + std::to_string(spp));
  } else if (d.photometric == "RGB") {
    if (spp != 3) fail(path, "DICOM RGB with SamplesPerPixel " + std::to_string(spp));
  } else {
    fail(path, "unsupported DICOM PhotometricInterpretation " + d.photometric +
                   " (expected MONOCHROME1, MONOCHROME2 or RGB)");
  }
  if (d.bits_allocated != 8 && d.bits_allocated != 16)
    fail(path, "unsupported DICOM BitsAllocated " + std::to_string(d.bits_allocated) + " (expected 8 or 16)");
  if (d.bits_stored < 1 || d.bits_stored > d.bits_allocated)
    fail(path, "invalid DICOM BitsStored " + std::to_string(d.bits_stored) + " for BitsAllocated " +
                   std::to_string(d.bits_allocated));

  Float64 f = 0;
  if (ds->findAndGetFloat64(DCM_RescaleSlope, f).good() && f != 0) d.slope = f;
  if (ds->findAndGetFloat64(DCM_RescaleIntercept, f).good()) d.intercept = f;
  Float64 wc = 0, ww = 0;
  if (ds->findAndGetFloat64(DCM_WindowCenter, wc, 0).good() && ds->findAndGetFloat64(DCM_WindowWidth, ww, 0).good()) {
    d.has_window = true, d.window_center = wc, d.window_width = ww;
    OFString fn;
    if (ds->findAndGetOFString(DCM_VOILUTFunction, fn).good() && !fn.empty()) {
      d.voi_function = fn.c_str();
      while (!d.voi_function.empty() && d.voi_function.back() == ' ') d.voi_function.pop_back();
    }
  }

  DcmElement* pe = nullptr;
  if (ds->findAndGetElement(DCM_PixelData, pe).bad() || !pe) fail(path, "DICOM PixelData unreadable");
  size_t n = size_t(rows) * cols * spp;  // first frame
  d.values.resize(n);
  if (d.bits_allocated == 8) {
    Uint8* p = nullptr;
    if (pe->getUint8Array(p).bad() || !p) fail(path, "DICOM PixelData unreadable as 8-bit");
    if (pe->getLength() < n)
      fail(path, "DICOM PixelData too short (" + std::to_string(pe->getLength()) + " bytes for " +
                     std::to_string(cols) + "x" + std::to_string(rows) + "x" + std::to_string(spp) + " 8-bit samples)");
    for (size_t i = 0; i < n; ++i) d.values[i] = d.is_signed ? int32_t(int8_t(p[i])) : int32_t(p[i]);
  } else {
    Uint16* p = nullptr;
    if (pe->getUint16Array(p).bad() || !p) fail(path, "DICOM PixelData unreadable as 16-bit");
    if (pe->getLength() < 2 * n)
      fail(path, "DICOM PixelData too short (" + std::to_string(pe->getLength()) + " bytes for " +
                     std::to_string(cols) + "x" + std::to_string(rows) + "x" + std::to_string(spp) +
                     " 16-bit samples)");
    for (size_t i = 0; i < n; ++i) d.values[i] = d.is_signed ? int32_t(int16_t(p[i])) : int32_t(p[i]);
  }
  if (spp == 3 && planar == 1) {  // RRR..GGG..BBB -> RGBRGB
    std::vector<int32_t> il(n);
    size_t np = size_t(rows) * cols;
    for (size_t i = 0; i < np; ++i)
      for (int k = 0; k < 3; ++k) il[3 * i + k] = d.values[k * np + i];
    d.values.swap(il);
  }
  return d;
}

std::vector<uint8_t> equalize_hist_u8(const std::vector<int32_t>& values) {
  if (values.empty()) throw std::invalid_argument("equalize_hist_u8: empty image");
  auto [mn_it, mx_it] = std::minmax_element(values.begin(), values.end());
  const int32_t vmin = *mn_it, vmax = *mx_it;
  // The output depends on a pixel only through its value: work on distinct values.
  const int64_t range = int64_t(vmax) - vmin + 1;
  std::vector<int32_t> uniq;
  std::vector<int64_t> count;
  if (range <= (int64_t(1) << 22)) {
    std::vector<int64_t> dense(size_t(range), 0);
    for (int32_t v : values) ++dense[size_t(v - vmin)];
    for (int64_t i = 0; i < range; ++i)
      if (dense[size_t(i)]) uniq.push_back(int32_t(vmin + i)), count.push_back(dense[size_t(i)]);
  } else {
    std::vector<int32_t> s(values);
    std::sort(s.begin(), s.end());
    for (size_t i = 0; i < s.size(); ++i) {
      if (i == 0 || s[i] != s[i - 1]) uniq.push_back(s[i]), count.push_back(0);
      ++count.back();
    }
  }
  // np.histogram(x, bins=256) with x = v / 255. (float64): edges by np.linspace, the bin
  // index from (x - first) * norm with numpy's +-1 corrections at the edges.
  constexpr int kBins = 256;
  double first = double(vmin) / 255.0, last = double(vmax) / 255.0;
  if (first == last) first -= 0.5, last += 0.5;
  double edges[kBins + 1];
  const double step = (last - first) / kBins;
  for (int i = 0; i < kBins; ++i) edges[i] = double(i) * step + first;
  edges[kBins] = last;
  const double norm = kBins / (last - first);
  int64_t hist[kBins] = {0};
  for (size_t u = 0; u < uniq.size(); ++u) {
    double x = double(uniq[u]) / 255.0;
    int64_t idx = int64_t((x - first) * norm);
    if (idx == kBins) --idx;
    if (x < edges[idx]) --idx;
    if (idx != kBins - 1 && x >= edges[idx + 1]) ++idx;
    hist[idx] += count[u];
  }
  // cdf = cumsum / total; np.interp(x, bin_centres, cdf).
  double cdf[kBins], centre[kBins];
  int64_t acc = 0;
  for (int i = 0; i < kBins; ++i) acc += hist[i];
  const double total = double(acc);
  acc = 0;
  for (int i = 0; i < kBins; ++i) {
    acc += hist[i];
    cdf[i] = double(acc) / total;
    centre[i] = (edges[i] + edges[i + 1]) / 2.0;
  }
  std::vector<uint8_t> lut(uniq.size());
  for (size_t u = 0; u < uniq.size(); ++u) {
    double x = double(uniq[u]) / 255.0, y;
    if (x < centre[0]) {
      y = cdf[0];
    } else if (x > centre[kBins - 1]) {
      y = cdf[kBins - 1];
    } else {
      int j = int(std::upper_bound(centre, centre + kBins, x) - centre) - 1;  // centre[j] <= x < centre[j+1]
      if (j == kBins - 1 || centre[j] == x) {
        y = cdf[j];
      } else {
        double slope = (cdf[j + 1] - cdf[j]) / (centre[j + 1] - centre[j]);
        double t = slope * (x - centre[j]);  // two statements: no fused multiply-add
        y = t + cdf[j];
      }
    }
    double o = 255.0 * y;
    lut[u] = uint8_t(o < 0 ? 0 : o > 255 ? 255 : o);  // astype(uint8) truncates
  }
  std::vector<uint8_t> out(values.size());
  if (range <= (int64_t(1) << 22)) {
    std::vector<uint8_t> dense(size_t(range), 0);
    for (size_t u = 0; u < uniq.size(); ++u) dense[size_t(uniq[u] - vmin)] = lut[u];
    for (size_t i = 0; i < values.size(); ++i) out[i] = dense[size_t(values[i] - vmin)];
  } else {
    for (size_t i = 0; i < values.size(); ++i)
      out[i] = lut[size_t(std::lower_bound(uniq.begin(), uniq.end(), values[i]) - uniq.begin())];
  }
  return out;
}

Image dicom_to_image(const DicomPixels& d, DicomMode mode, const std::string& path) {
  const size_t n = d.values.size();
  if (n != size_t(d.w) * d.h * d.samples) fail(path, "DICOM pixel count does not match Rows x Columns");
  Image img(d.w, d.h, d.samples);
  if (mode == DicomMode::kRsna) {
    // dataset_RSNA.py: equalize_hist over all samples (a colour image is flattened).
    img.px = equalize_hist_u8(d.values);
    return img;
  }
  if (d.samples == 3) {  // RGB: scale BitsStored to 8 bits
    const double mx = double((int64_t(1) << d.bits_stored) - 1);
    for (size_t i = 0; i < n; ++i) {
      double v = std::clamp(double(d.values[i]), 0.0, mx);
      img.px[i] = uint8_t(std::lround(v * 255.0 / mx));
    }
    return img;
  }
  // Stored value (masked / sign-extended to BitsStored) -> modality value.
  std::vector<double> m(n);
  const int bs = d.bits_stored;
  const uint32_t mask = bs >= 32 ? 0xFFFFFFFFu : ((1u << bs) - 1);
  for (size_t i = 0; i < n; ++i) {
    uint32_t raw = uint32_t(d.values[i]) & mask;
    int64_t v = raw;
    if (d.is_signed && bs < 32 && (raw >> (bs - 1)) & 1) v = int64_t(raw) - (int64_t(1) << bs);
    m[i] = double(v) * d.slope + d.intercept;
  }
  const double c = d.window_center, w = d.window_width;
  bool linear = d.voi_function == "LINEAR", exact = d.voi_function == "LINEAR_EXACT",
       sigmoid = d.voi_function == "SIGMOID";
  bool use_window = d.has_window && ((linear && w >= 1) || ((exact || sigmoid) && w > 0));
  double lo = 0, hi = 0;
  if (!use_window) {
    auto [a, b] = std::minmax_element(m.begin(), m.end());
    lo = *a, hi = *b;
  }
  const bool invert = d.photometric == "MONOCHROME1";
  for (size_t i = 0; i < n; ++i) {
    double x = m[i], y;
    if (!use_window) {
      y = hi > lo ? (x - lo) / (hi - lo) * 255.0 : 0.0;
    } else if (linear) {  // PS3.3 C.11.2.1.2.1
      if (x <= c - 0.5 - (w - 1) / 2)
        y = 0;
      else if (x > c - 0.5 + (w - 1) / 2)
        y = 255;
      else
        y = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255.0;
    } else if (exact) {  // C.11.2.1.3.2
      if (x <= c - w / 2)
        y = 0;
      else if (x > c + w / 2)
        y = 255;
      else
        y = ((x - c) / w + 0.5) * 255.0;
    } else {  // SIGMOID, C.11.2.1.3.1
      y = 255.0 / (1.0 + std::exp(-4.0 * (x - c) / w));
    }
    if (invert) y = 255.0 - y;
    img.px[i] = uint8_t(std::lround(std::clamp(y, 0.0, 255.0)));
  }
  return img;
}

Image decode_image_bytes(const uint8_t* data, size_t n, const std::string& name, const ReadOptions& opt) {
  if (n == 0) fail(name, "empty file");
  Format fmt = sniff(data, n);
  if (fmt == Format::kDicom) fail(name, "DICOM can only be read from a file (use read_image)");
  if (fmt == Format::kUnknown)
    fail(name, "not a PNG, JPEG, BMP or DICOM file (first bytes: " + hex_prefix(data, n) + ")");
  if (fmt == Format::kJpeg) return decode_jpeg(data, n, name, opt);
  return decode_stb(data, n, fmt, name, opt);
}

Image read_image(const std::string& path, const ReadOptions& opt) {
  std::vector<uint8_t> buf = read_file(path);
  if (buf.empty()) fail(path, "empty file");
  Format fmt = sniff(buf.data(), buf.size());
  if (fmt == Format::kDicom ||
      (fmt == Format::kUnknown && (ends_with_ci(path, ".dcm") || ends_with_ci(path, ".dicom")))) {
    buf.clear();
    buf.shrink_to_fit();
    Image img = dicom_to_image(read_dicom_pixels(path), opt.dicom, path);
    return opt.keep_grey || img.c == 3 ? img : to_rgb(img);
  }
  return decode_image_bytes(buf.data(), buf.size(), path, opt);
}

// zlib rather than stb_image_write: on the synthetic films stb's deflate neither compresses
// (65.2 kB for a 64 kB image) nor runs fast (3.7 ms); zlib level 3 with the "up" filter gives
// 47 kB in 0.9 ms (256x256, measured when `medslip synth` had its own copy of this encoder).
std::string encode_png(const Image& img) {
  if ((img.c != 1 && img.c != 3) || img.w <= 0 || img.h <= 0 || img.px.size() != size_t(img.w) * img.h * img.c)
    throw std::invalid_argument("encode_png expects a non-empty 1- or 3-channel image");
  const int w = img.w, h = img.h, channels = img.c;
  const uint8_t* px = img.px.data();
  size_t row = size_t(w) * size_t(channels);
  std::vector<uint8_t> raw((row + 1) * size_t(h));
  for (int y = 0; y < h; ++y) {
    uint8_t* dst = &raw[size_t(y) * (row + 1)];
    const uint8_t* cur = px + size_t(y) * row;
    dst[0] = 2;  // filter "up": difference to the row above
    for (size_t x = 0; x < row; ++x) dst[1 + x] = uint8_t(cur[x] - (y > 0 ? cur[x - row] : 0));
  }
  uLongf zlen = compressBound(uLong(raw.size()));
  std::vector<uint8_t> z(zlen);
  if (compress2(z.data(), &zlen, raw.data(), uLong(raw.size()), 3) != Z_OK)
    throw std::runtime_error("PNG compression failed");
  std::string out("\x89PNG\r\n\x1a\n", 8);
  auto chunk = [&](const char* type, const uint8_t* data, size_t n) {
    uint8_t len[4] = {uint8_t(n >> 24), uint8_t(n >> 16), uint8_t(n >> 8), uint8_t(n)};
    out.append(reinterpret_cast<const char*>(len), 4);
    size_t start = out.size();
    out.append(type, 4);
    if (n > 0) out.append(reinterpret_cast<const char*>(data), n);
    uLong crc = crc32(0, reinterpret_cast<const Bytef*>(out.data() + start), uInt(n + 4));
    uint8_t c[4] = {uint8_t(crc >> 24), uint8_t(crc >> 16), uint8_t(crc >> 8), uint8_t(crc)};
    out.append(reinterpret_cast<const char*>(c), 4);
  };
  uint8_t ihdr[13] = {uint8_t(w >> 24), uint8_t(w >> 16), uint8_t(w >> 8), uint8_t(w),
                      uint8_t(h >> 24), uint8_t(h >> 16), uint8_t(h >> 8), uint8_t(h),
                      8, uint8_t(channels == 3 ? 2 : 0), 0, 0, 0};  // depth 8, grey or RGB
  chunk("IHDR", ihdr, 13);
  chunk("IDAT", z.data(), zlen);
  chunk("IEND", nullptr, 0);
  return out;
}

void write_png(const std::string& path, const Image& img) {
  if ((img.c != 1 && img.c != 3) || img.w <= 0 || img.h <= 0 || img.px.size() != size_t(img.w) * img.h * img.c)
    throw std::invalid_argument(path + ": write_png expects a non-empty 1- or 3-channel image");
  std::string png;
  try {
    png = encode_png(img);
  } catch (const std::exception& e) {
    throw std::runtime_error(path + ": " + e.what());
  }
  write_file_atomic(path, png);  // a failed or killed write leaves no partial PNG
}


}  // namespace ms
