#include "data/datasets.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace ms {

namespace fs = std::filesystem;

// ---- CSV ---------------------------------------------------------------------------------

int CsvTable::column(const std::string& name) const {
  for (size_t i = 0; i < header.size(); ++i)
    if (header[i] == name) return int(i);
  throw std::runtime_error(path + ": missing column '" + name + "'");
}

CsvTable parse_csv_text(const std::string& text, const std::string& path_for_errors) {
  CsvTable t;
  t.path = path_for_errors;
  size_t i = 0, n = text.size();
  if (n >= 3 && text.compare(0, 3, "\xEF\xBB\xBF") == 0) i = 3;
  int64_t line = 1;
  std::vector<std::string> rec;
  std::string field;
  bool any = false;  // the record has content (so an empty line is skipped)
  auto end_record = [&](int64_t rec_line) {
    rec.push_back(std::move(field));
    field.clear();
    if (any) {
      if (t.header.empty()) {
        t.header = std::move(rec);
      } else if (rec.size() != t.header.size()) {
        throw std::runtime_error(path_for_errors + ":" + std::to_string(rec_line) + ": expected " +
                                 std::to_string(t.header.size()) + " fields, got " + std::to_string(rec.size()));
      } else {
        t.rows.push_back(std::move(rec));
      }
    }
    rec.clear();
    any = false;
  };
  int64_t rec_line = line;
  while (i < n) {
    char c = text[i];
    if (c == '"' && field.empty()) {
      // Quoted field: runs to the closing quote; "" is a literal quote.
      any = true;
      int64_t start_line = line;
      ++i;
      for (;;) {
        if (i >= n)
          throw std::runtime_error(path_for_errors + ":" + std::to_string(start_line) + ": unterminated quoted field");
        char d = text[i];
        if (d == '"') {
          if (i + 1 < n && text[i + 1] == '"') { field += '"'; i += 2; continue; }
          ++i;
          break;
        }
        if (d == '\n') ++line;
        field += d;
        ++i;
      }
      if (i < n && text[i] != ',' && text[i] != '\n' && text[i] != '\r')
        throw std::runtime_error(path_for_errors + ":" + std::to_string(line) +
                                 ": unexpected character after a closing quote");
      continue;
    }
    if (c == ',') {
      any = true;
      rec.push_back(std::move(field));
      field.clear();
      ++i;
    } else if (c == '\r' || c == '\n') {
      end_record(rec_line);
      if (c == '\r' && i + 1 < n && text[i + 1] == '\n') ++i;
      ++i;
      ++line;
      rec_line = line;
    } else {
      any = true;
      field += c;
      ++i;
    }
  }
  if (any || !field.empty()) end_record(rec_line);
  if (t.header.empty()) throw std::runtime_error(path_for_errors + ": empty csv (expected a header line)");
  return t;
}

CsvTable read_csv(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(path + ": cannot open csv file");
  std::stringstream ss;
  ss << f.rdbuf();
  return parse_csv_text(ss.str(), path);
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

std::string resolve_path(const std::string& root, const std::string& path) {
  if (root.empty() || path.empty() || fs::path(path).is_absolute()) return path;
  return (fs::path(root) / path).lexically_normal().string();
}

std::string parent_dir(const std::string& file) {
  fs::path p = fs::path(file).parent_path();
  return p.empty() ? std::string(".") : p.string();
}

// Parses a whole string as a number; throws naming `where`.
static double parse_number(const std::string& s, const std::string& where) {
  const char* b = s.c_str();
  while (*b == ' ' || *b == '\t') ++b;
  char* e = nullptr;
  double v = std::strtod(b, &e);
  while (e && (*e == ' ' || *e == '\t')) ++e;
  if (e == b || *e != '\0' || !std::isfinite(v))
    throw std::runtime_error(where + ": expected a number, got '" + s + "'");
  return v;
}

static float parse_binary(const std::string& s, const std::string& where) {
  double v = parse_number(s, where);
  if (v != 0.0 && v != 1.0) throw std::runtime_error(where + ": expected a 0/1 label, got '" + s + "'");
  return float(v);
}

// ---- MeDSLIP pretraining -----------------------------------------------------------------

MedslipDataset::MedslipDataset(const std::string& json_path, const std::string& npy_path,
                               const std::string& image_root)
    : json_path_(json_path) {
  std::ifstream f(json_path);
  if (!f) throw std::runtime_error(json_path + ": cannot open json file");
  nlohmann::ordered_json j;  // keeps file order, as Python's dict does
  try {
    f >> j;
  } catch (const std::exception& e) {
    throw std::runtime_error(json_path + ": invalid json (" + e.what() + ")");
  }
  if (!j.is_object()) throw std::runtime_error(json_path + ": expected a json object keyed by image path");
  npy_ = std::make_shared<NpyFile>(npy_path);
  const auto& shape = npy_->shape();
  if (shape.size() != 3 || shape[1] != kNumAnatomies || shape[2] != kNumPathologies)
    throw std::runtime_error(npy_path + ": expected shape [N, 51, 75], got " + [&] {
      std::string s = "[";
      for (size_t k = 0; k < shape.size(); ++k) s += (k ? ", " : "") + std::to_string(shape[k]);
      return s + "]";
    }());
  if (npy_->header().kind != 'f')
    throw std::runtime_error(npy_path + ": expected a float64/float32 matrix, got dtype " + npy_->header().descr);
  std::string root = image_root.empty() ? parent_dir(json_path) : image_root;
  items_.reserve(j.size());
  for (auto it = j.begin(); it != j.end(); ++it) {
    const auto& v = it.value();
    std::string where = json_path + ": entry '" + it.key() + "'";
    if (!v.is_object() || !v.contains("labels_id")) throw std::runtime_error(where + ": missing key 'labels_id'");
    const auto& id = v["labels_id"];
    if (!id.is_number_integer()) throw std::runtime_error(where + ": labels_id must be an integer");
    int64_t row = id.get<int64_t>();
    if (row < 0 || row >= shape[0])
      throw std::runtime_error(where + ": labels_id " + std::to_string(row) + " is out of range for " + npy_path +
                               " with " + std::to_string(shape[0]) + " rows");
    items_.push_back({it.key(), resolve_path(root, it.key()), row});
  }
}

const MedslipItem& MedslipDataset::item(int64_t i) const {
  if (i < 0 || i >= size())
    throw std::out_of_range(json_path_ + ": item " + std::to_string(i) + " out of range (size " +
                            std::to_string(size()) + ")");
  return items_[size_t(i)];
}

std::vector<float> MedslipDataset::matrix(int64_t i) const {
  std::vector<float> m(static_cast<size_t>(kMatrixSize));
  npy_->read_row(item(i).row, m.data());
  return m;
}

// ---- ChestX-ray14 ------------------------------------------------------------------------

Cxr14Dataset::Cxr14Dataset(const std::string& csv_path, const std::string& image_root) : csv_path_(csv_path) {
  CsvTable t = read_csv(csv_path);
  constexpr int kFirst = 3;  // §C.6: img_path, Image Index, Finding Label, then 14 labels
  if (int(t.header.size()) < kFirst + kNumCxr14Classes)
    throw std::runtime_error(csv_path +
                             ": expected 17 columns (img_path, Image Index, Finding Label, 14 labels), got " +
                             std::to_string(t.header.size()));
  for (int c = 0; c < kNumCxr14Classes; ++c) class_names_.push_back(t.header[size_t(kFirst + c)]);
  std::string root = image_root.empty() ? parent_dir(csv_path) : image_root;
  items_.reserve(t.rows.size());
  for (size_t r = 0; r < t.rows.size(); ++r) {
    const auto& row = t.rows[r];
    Cxr14Item it;
    if (row[0].empty()) throw std::runtime_error(csv_path + ": row " + std::to_string(r + 1) + ": empty img_path");
    it.path = resolve_path(root, row[0]);
    it.image_index = row[1];
    it.finding = row[2];
    for (int c = 0; c < kNumCxr14Classes; ++c)
      it.labels[size_t(c)] =
          parse_binary(row[size_t(kFirst + c)],
                       csv_path + ": row " + std::to_string(r + 1) + ", column '" + t.header[size_t(kFirst + c)] + "'");
    items_.push_back(std::move(it));
  }
}

const Cxr14Item& Cxr14Dataset::item(int64_t i) const {
  if (i < 0 || i >= size())
    throw std::out_of_range(csv_path_ + ": row " + std::to_string(i) + " out of range (size " + std::to_string(size()) +
                            ")");
  return items_[size_t(i)];
}

// ---- RSNA --------------------------------------------------------------------------------

std::vector<Box> parse_boxes(const std::string& s, const std::string& where) {
  std::vector<Box> out;
  std::string t = s;
  while (!t.empty() && (t.back() == ' ' || t.back() == '\t')) t.pop_back();
  while (!t.empty() && (t.front() == ' ' || t.front() == '\t')) t.erase(t.begin());
  if (t.empty() || t == "nan" || t == "NaN" || t == "NAN") return out;
  std::stringstream ss(t);
  std::string box;
  while (std::getline(ss, box, '|')) {
    std::stringstream bs(box);
    std::string v;
    std::vector<double> vals;
    while (std::getline(bs, v, ';')) vals.push_back(parse_number(v, where + " box '" + box + "'"));
    if (vals.size() != 4) throw std::runtime_error(where + ": box '" + box + "' must be x;y;w;h");
    for (double x : vals) {
      if (!std::isfinite(x)) throw std::runtime_error(where + ": box '" + box + "' has a value that is not a finite number");
      if (x < 0) throw std::runtime_error(where + ": box '" + box + "' has a negative value");
    }
    out.push_back({vals[0], vals[1], vals[2], vals[3]});
  }
  return out;
}

std::string format_boxes(const std::vector<Box>& boxes) {
  if (boxes.empty()) return "nan";
  std::string out;
  char buf[128];
  for (size_t k = 0; k < boxes.size(); ++k) {
    std::snprintf(buf, sizeof buf, "%s%.1f;%.1f;%.1f;%.1f", k ? "|" : "", boxes[k].x, boxes[k].y, boxes[k].w,
                  boxes[k].h);
    out += buf;
  }
  return out;
}

std::vector<float> rsna_seg_map(const std::vector<Box>& boxes, int canvas, int out) {
  if (canvas <= 0 || out <= 0) throw std::invalid_argument("rsna_seg_map: canvas and out sizes must be positive");
  // torch nearest (upsample_nearest2d): scale = float(in)/out, src = min(int(floor(dst*scale)), in-1).
  float scale = float(canvas) / float(out);
  std::vector<int64_t> src(static_cast<size_t>(out));
  for (int d = 0; d < out; ++d)
    src[size_t(d)] = std::min<int64_t>(int64_t(std::floor(float(d) * scale)), canvas - 1);
  std::vector<float> m(size_t(out) * size_t(out), 0.f);
  for (const Box& b : boxes) {
    // Python int() truncates toward zero; the slice [a:a+len] clips at the canvas. Values at or
    // past the canvas clip before the conversion (a double beyond int64 range is undefined to
    // convert: found by the csv fuzzer with a box of 1e30).
    auto trunc_clip = [&](double v) -> int64_t {
      if (!(v >= 0)) throw std::invalid_argument("rsna_seg_map: box values must be finite and >= 0");
      return v >= double(canvas) ? int64_t(canvas) : int64_t(v);
    };
    int64_t x0 = trunc_clip(b.x), y0 = trunc_clip(b.y);
    int64_t x1 = std::min<int64_t>(x0 + trunc_clip(b.w), canvas), y1 = std::min<int64_t>(y0 + trunc_clip(b.h), canvas);
    for (int r = 0; r < out; ++r) {
      int64_t sy = src[size_t(r)];
      if (sy < y0 || sy >= y1) continue;
      for (int c = 0; c < out; ++c) {
        int64_t sx = src[size_t(c)];
        if (sx >= x0 && sx < x1) m[size_t(r) * size_t(out) + size_t(c)] = 1.f;
      }
    }
  }
  return m;
}

RsnaDataset::RsnaDataset(const std::string& csv_path, const std::string& image_root) : csv_path_(csv_path) {
  CsvTable t = read_csv(csv_path);
  if (t.header.size() < 4)
    throw std::runtime_error(csv_path + ": expected columns ID, img_path, boxes, classes; got " +
                             std::to_string(t.header.size()) + " columns");
  std::string root = image_root.empty() ? parent_dir(csv_path) : image_root;
  items_.reserve(t.rows.size());
  for (size_t r = 0; r < t.rows.size(); ++r) {
    const auto& row = t.rows[r];
    std::string where = csv_path + ": row " + std::to_string(r + 1);
    RsnaItem it;
    it.id = row[0];
    if (row[1].empty()) throw std::runtime_error(where + ": empty img_path");
    it.path = resolve_path(root, row[1]);
    it.boxes = parse_boxes(row[2], where + ", column '" + t.header[2] + "'");
    it.label = parse_binary(row[3], where + ", column '" + t.header[3] + "'");
    items_.push_back(std::move(it));
  }
}

const RsnaItem& RsnaDataset::item(int64_t i) const {
  if (i < 0 || i >= size())
    throw std::out_of_range(csv_path_ + ": row " + std::to_string(i) + " out of range (size " + std::to_string(size()) +
                            ")");
  return items_[size_t(i)];
}

int64_t RsnaDataset::num_positive() const {
  int64_t n = 0;
  for (const auto& it : items_) n += it.label > 0.5f;
  return n;
}

}  // namespace ms
