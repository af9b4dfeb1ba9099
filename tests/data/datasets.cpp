// Datasets, .npy, CSV, the RSNA seg map (§C.7), triplet sampling (§C.2-C.3), the threaded
// loader's determinism and the synthetic set (`medslip synth`). Fixtures: tests/fixtures/data
// from tests/make_fixtures_data.py.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "data/datasets.h"
#include "data/image.h"
#include "data/loader.h"
#include "data/npy.h"
#include "data/synth.h"
#include "data/transforms.h"
#include "data/triplets.h"
#include "model/vocab.h"
#include "tests/test_util.h"
#include "train/commands.h"

using namespace ms;
namespace fs = std::filesystem;

namespace {

void write_file(const fs::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary);
  f << s;
}

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// A .npy written byte by byte: magic, version, header length, dict (padded), data.
std::string npy_bytes(int major, const std::string& dict, const std::string& data) {
  std::string h = dict;
  size_t pre = major == 1 ? 10 : 12;
  while ((pre + h.size() + 1) % 64) h += ' ';
  h += '\n';
  std::string out("\x93NUMPY", 6);
  out += char(major);
  out += char(0);
  uint32_t n = uint32_t(h.size());
  out += char(n & 0xff);
  out += char((n >> 8) & 0xff);
  if (major != 1) {
    out += char((n >> 16) & 0xff);
    out += char((n >> 24) & 0xff);
  }
  return out + h + data;
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

// ---- vocabularies --------------------------------------------------------------------------

TEST_CASE("data: vocabularies follow spec §C.1 and §C.6") {
  CHECK(std::string(kObservations[0]) == "normal");
  CHECK(std::string(kObservations[8]) == "effusion");
  CHECK(std::string(kObservations[20]) == "pneumonia");
  CHECK(std::string(kObservations[56]) == "infiltrate");
  CHECK(std::string(kObservations[73]) == "tail_abnorm_obs");
  CHECK(std::string(kObservations[74]) == "excluded_obs");
  CHECK(std::string(kAnatomies[0]) == "trachea");
  CHECK(std::string(kAnatomies[31]) == "right_costophrenic");
  CHECK(std::string(kAnatomies[50]) == "other");
  std::set<std::string> o(kObservations.begin(), kObservations.end()), a(kAnatomies.begin(), kAnatomies.end());
  CHECK(o.size() == 75);
  CHECK(a.size() == 51);
  // CXR14 query map: every class reads the observation its name says (fibrosis -> tail).
  const char* expect[kNumCxr14Classes] = {"atelectasis", "cardiomegaly", "effusion", "infiltrate", "mass",
                                          "nodule", "pneumonia", "pneumothorax", "consolidation", "edema",
                                          "emphysema", "tail_abnorm_obs", "thicken", "hernia"};
  for (int c = 0; c < kNumCxr14Classes; ++c)
    CHECK(std::string(kObservations[size_t(kCxr14QueryIndex[size_t(c)])]) == expect[c]);
  CHECK(anatomy_prompt("left_hilar") == "It is located at left_hilar. ");
  CHECK(observation_index("nodule") == 38);
  CHECK(anatomy_index("svc") == 42);
  CHECK(anatomy_index("nowhere") == -1);
  CHECK(contains(error_of([] { observation_index_or_throw("bogus"); }), "bogus"));
}

// ---- .npy ----------------------------------------------------------------------------------

TEST_CASE("data: npy reads numpy's files in every header version and dtype") {
  std::vector<double> base(24);
  for (int i = 0; i < 24; ++i) base[size_t(i)] = i;
  struct Case { const char* file; std::function<double(double)> f; const char* descr; };
  std::vector<Case> cases = {
      {"npy_v1_f8.npy", [](double x) { return x * 0.5 - 3; }, "<f8"},
      {"npy_v2_f8.npy", [](double x) { return x * 0.5 - 3; }, "<f8"},
      {"npy_v3_f8.npy", [](double x) { return x * 0.5 - 3; }, "<f8"},
      {"npy_v1_be_f8.npy", [](double x) { return x * 0.5 - 3; }, ">f8"},
      {"npy_v1_f4.npy", [](double x) { return x * 0.25; }, "<f4"},
      {"npy_v1_i8.npy", [](double x) { return x - 10; }, "<i8"},
      {"npy_v1_i4.npy", [](double x) { return x - 10; }, "<i4"},
      {"npy_v1_u1.npy", [](double x) { return x * 10; }, "|u1"},
      {"npy_v1_bool.npy", [](double x) { return int(x) % 3 == 0 ? 1.0 : 0.0; }, "|b1"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.file);
    std::string path = test::fixture(std::string("data/") + c.file).string();
    NpyHeader h = read_npy_header(path);
    CHECK(h.descr == c.descr);
    CHECK(h.shape == std::vector<int64_t>{2, 3, 4});
    auto a = read_npy_double(path);
    REQUIRE(a.data.size() == 24);
    for (int i = 0; i < 24; ++i) CHECK(a.data[size_t(i)] == c.f(base[size_t(i)]));
    auto b = read_npy_float(path);
    CHECK(b.data[23] == float(c.f(23)));
    NpyFile f(path);
    CHECK(f.row_numel() == 12);
    std::vector<double> row(12);
    f.read_row(1, row.data());
    CHECK(row[0] == c.f(12));
    CHECK(row[11] == c.f(23));
  }
  auto s = read_npy_double(test::fixture("data/npy_scalar.npy").string());
  CHECK(s.shape.empty());
  CHECK(s.data == std::vector<double>{2.5});
}

TEST_CASE("data: npy errors name the file and the problem") {
  auto dir = test::scratch_dir("npy_errors");
  std::string fortran = test::fixture("data/npy_fortran.npy").string();
  std::string e = error_of([&] { read_npy_double(fortran); });
  CHECK(contains(e, "npy_fortran.npy"));
  CHECK(contains(e, "fortran_order"));

  std::string eight(16, '\0');
  auto bad = [&](const std::string& name, const std::string& bytes, const std::string& want) {
    CAPTURE(name);
    write_file(dir / name, bytes);
    std::string msg = error_of([&] { read_npy_double((dir / name).string()); });
    CHECK(contains(msg, name));
    CHECK_MESSAGE(contains(msg, want), msg);
  };
  bad("magic.npy", "PK\x03\x04 not numpy", "bad magic");
  bad("version.npy",
      npy_bytes(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", eight).replace(6, 1, "\x05"),
      "version 5");
  bad("complex.npy", npy_bytes(1, "{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }", eight), "dtype '<c8'");
  bad("object.npy", npy_bytes(1, "{'descr': '|O', 'fortran_order': False, 'shape': (2,), }", eight), "dtype");
  bad("struct.npy", npy_bytes(1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", eight),
      "structured");
  bad("short.npy", npy_bytes(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }", eight), "truncated");
  bad("nokey.npy", npy_bytes(1, "{'descr': '<f8', 'shape': (2,), }", eight), "fortran_order");
  bad("garbled.npy", npy_bytes(1, "{'descr': '<f8', 'fortran_order': maybe, 'shape': (2,), }", eight),
      "fortran_order");
  bad("extra.npy", npy_bytes(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), 'x': 1, }", eight),
      "unexpected key 'x'");
  bad("hdrshort.npy", std::string("\x93NUMPY\x01\x00\xff\x00{'descr'", 17), "truncated");
  // Fuzzer finding (npy target): a version-3 header length of ~4 GB was allocated before the
  // file size was looked at; now it is a named error at once.
  bad("hdr4gb.npy", std::string("\x93NUMPY\x03\x00\xf0\xff\xff\xff{'descr'", 19), "declares 4294967280 header bytes");
  // Fuzzer findings (npy target, 2026-12-05): std::stoi / std::stoll threw a bare "stoi" for a
  // 40-digit item size or shape value; now named errors.
  bad("itemsize.npy",
      npy_bytes(1, "{'descr': '>f4333333333333333333333333333333333333333', 'fortran_order': False, 'shape': (2,), }",
                eight),
      "item size out of range");
  bad("shape_huge.npy",
      npy_bytes(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999999999999999,), }", eight),
      "shape value 99999999999999999999999 out of range");
  // npy fuzzer finding (UBSan): a shape whose element count overflows int64.
  bad("shape_overflow.npy",
      npy_bytes(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (7777777777777771, 7777777777777774), }",
                eight),
      "shape (7777777777777771, 7777777777777774) of 8-byte items is larger than 2^63 bytes");
  // npy fuzzer finding, session 5 (UBSan): huge dimensions before a 0, whose running product
  // overflowed on its way to 0 elements; refused as NumPy does (the non-zero dimensions' product).
  bad("shape_overflow_then_zero.npy",
      npy_bytes(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 777777777774, 7773883, 0, 8), }", eight),
      "shape (3, 777777777774, 7773883, 0, 8) of 8-byte items is larger than 2^63 bytes");
  // ... while a shape with a 0 whose other dimensions fit is an empty array, as in NumPy.
  write_file(dir / "empty_rows.npy",
             npy_bytes(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (0, 51, 75), }", ""));
  CHECK(read_npy_double((dir / "empty_rows.npy").string()).data.empty());
  CHECK(read_npy_double((dir / "empty_rows.npy").string()).shape == std::vector<int64_t>{0, 51, 75});
  CHECK(contains(error_of([&] { read_npy_double((dir / "missing.npy").string()); }), "missing.npy"));
  // Version 2 with a hand-written header reads fine.
  std::string data(16, '\0');
  double v[2] = {1.5, -2.0};
  std::memcpy(&data[0], v, 16);
  write_file(dir / "v2.npy", npy_bytes(2, "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", data));
  CHECK(read_npy_double((dir / "v2.npy").string()).data == std::vector<double>{1.5, -2.0});
  // Row reads are bounds-checked.
  NpyFile f(test::fixture("data/npy_v1_f8.npy").string());
  std::vector<double> row(12);
  CHECK(contains(error_of([&] { f.read_row(2, row.data()); }), "row 2 is out of range"));
}

TEST_CASE("data: npy writer round-trips and numpy-compatible headers") {
  auto dir = test::scratch_dir("npy_write");
  std::vector<double> d = {1, -1, 0, 0.5, 2, 3};
  write_npy((dir / "a.npy").string(), {2, 3}, d.data());
  write_npy((dir / "b.npy").string(), {6}, std::vector<float>(d.begin(), d.end()).data());
  auto a = read_npy_double((dir / "a.npy").string());
  CHECK(a.shape == std::vector<int64_t>{2, 3});
  CHECK(a.data == d);
  NpyHeader hb = read_npy_header((dir / "b.npy").string());
  CHECK(hb.descr == "<f4");
  CHECK(hb.shape == std::vector<int64_t>{6});
  CHECK(hb.data_offset % 64 == 0);  // numpy aligns the data to 64 bytes
  std::string raw = read_file(dir / "b.npy");
  CHECK(contains(raw, "'shape': (6,)"));
  NpyWriter w((dir / "c.npy").string(), {2, 2});
  w.write(d.data(), 3);
  CHECK(contains(error_of([&] { w.close(); }), "wrote 3 of 4"));
}

// ---- CSV -----------------------------------------------------------------------------------

TEST_CASE("data: CSV parsing handles quotes, commas, CRLF, BOM and blank lines") {
  std::string text = "\xEF\xBB\xBF" "a,b,c\r\n"
                     "1,\"x, y\",3\r\n"
                     "\r\n"
                     "\"say \"\"hi\"\"\",,\"multi\nline\"\n"
                     "4,5,6";
  CsvTable t = parse_csv_text(text, "mem.csv");
  REQUIRE(t.header == std::vector<std::string>{"a", "b", "c"});
  REQUIRE(t.rows.size() == 3);
  CHECK(t.rows[0] == std::vector<std::string>{"1", "x, y", "3"});
  CHECK(t.rows[1] == std::vector<std::string>{"say \"hi\"", "", "multi\nline"});
  CHECK(t.rows[2] == std::vector<std::string>{"4", "5", "6"});
  CHECK(t.column("c") == 2);
  CHECK(contains(error_of([&] { t.column("zz"); }), "missing column 'zz'"));
  std::string e = error_of([] { parse_csv_text("a,b\n1,2,3\n", "bad.csv"); });
  CHECK(contains(e, "bad.csv:2"));
  CHECK(contains(e, "expected 2 fields, got 3"));
  CHECK(contains(error_of([] { parse_csv_text("a\n\"open\n", "q.csv"); }), "unterminated"));
  CHECK(contains(error_of([] { parse_csv_text("", "empty.csv"); }), "empty csv"));
  CHECK(csv_field("plain") == "plain");
  CHECK(csv_field("a,b") == "\"a,b\"");
  CHECK(csv_field("q\"") == "\"q\"\"\"");
}

TEST_CASE("data: CXR14 reader takes label columns 3-16 and resolves paths") {
  auto dir = test::scratch_dir("cxr14");
  std::string header = "img_path,Image Index,Finding Label";
  for (const char* c : kCxr14Classes) header += std::string(",") + c;
  write_file(dir / "t.csv", header + "\r\n" +
                                "img/a.png,a.png,\"Effusion|Mass, left\",0,0,1,0,1,0,0,0,0,0,0,0,0,0\r\n"
                                "/abs/b.png,b.png,Hernia,0,0,0,0,0,0,0,0,0,0,0,0,0,1\r\n");
  Cxr14Dataset ds((dir / "t.csv").string());
  REQUIRE(ds.size() == 2);
  CHECK(ds.item(0).path == (dir / "img/a.png").string());
  CHECK(ds.item(0).finding == "Effusion|Mass, left");
  CHECK(ds.item(0).labels[2] == 1);  // pleural effusion
  CHECK(ds.item(0).labels[4] == 1);  // lung mass
  CHECK(ds.item(0).labels[0] == 0);
  CHECK(ds.item(1).path == "/abs/b.png");
  CHECK(ds.item(1).labels[13] == 1);  // hernia, the last column
  CHECK(ds.class_names()[0] == "atelectasis");
  Cxr14Dataset rooted((dir / "t.csv").string(), "/data/cxr");
  CHECK(rooted.item(0).path == "/data/cxr/img/a.png");
  CHECK(contains(error_of([&] { ds.item(2); }), "out of range"));

  write_file(dir / "bad.csv", header + "\nx.png,x.png,None,0,0,0,0,0,0,0,0,0,0,0,0,0,yes\n");
  std::string e = error_of([&] { Cxr14Dataset((dir / "bad.csv").string()); });
  CHECK(contains(e, "bad.csv: row 1, column 'hernia'"));
  write_file(dir / "few.csv", "img_path,Image Index,Finding Label,atelectasis\nx.png,x.png,N,0\n");
  CHECK(contains(error_of([&] { Cxr14Dataset((dir / "few.csv").string()); }), "expected 17 columns"));
  CHECK(contains(error_of([&] { Cxr14Dataset((dir / "none.csv").string()); }), "none.csv: cannot open"));
}

TEST_CASE("data: real CXR14 sample labels (../shared)") {
  if (!test::have_shared()) {
    MESSAGE("skipping: ../shared not present");
    return;
  }
  fs::path csv = test::shared_dir() / "data" / "cxr14-sample" / "labels.csv";
  Cxr14Dataset ds(csv.string());
  REQUIRE(ds.size() == 120);
  CHECK(ds.item(0).image_index == "00000353_000.png");
  CHECK(ds.item(0).finding == "Emphysema");
  CHECK(ds.item(0).labels[10] == 1);  // emphysema (column 13 of the csv)
  CHECK(ds.item(1).labels[6] == 1);   // 00001021_000.png: pneumonia
  CHECK(ds.item(2).labels[5] == 1);   // 00001089_000.png: lung nodule
  int mismatched = 0, positives = 0;
  for (int64_t i = 0; i < ds.size(); ++i) {
    const auto& it = ds.item(i);
    float sum = 0;
    for (float l : it.labels) sum += l;
    positives += sum > 0;
    mismatched += (it.finding == "No Finding") != (sum == 0);
    CHECK(fs::exists(it.path));
  }
  CHECK(mismatched == 0);
  MESSAGE("CXR14 sample: " << positives << " of 120 rows with a positive label");
}

// ---- RSNA ----------------------------------------------------------------------------------

TEST_CASE("data: RSNA seg map truncates each box value and resizes nearest (§C.7)") {
  auto b = parse_boxes("197.5;291.9;289.2;454.7", "t");
  REQUIRE(b.size() == 1);
  auto m = rsna_seg_map(b);
  REQUIRE(m.size() == size_t(224 * 224));
  // Rows [291, 745) and columns [197, 486) of 1024; 224-pixel r reads row floor(r * 1024/224).
  auto at = [&](int r, int c) { return m[size_t(r) * 224 + size_t(c)]; };
  CHECK(at(63, 100) == 0);   // 63 * 4.571 = 288.0 -> 288 < 291
  CHECK(at(64, 100) == 1);   // 292.57 -> 292
  CHECK(at(162, 100) == 1);  // 740.57 -> 740
  CHECK(at(163, 100) == 0);  // 745.14 -> 745 = 291 + 454, excluded
  CHECK(at(100, 43) == 0);   // 196.57 -> 196 < 197
  CHECK(at(100, 44) == 1);   // 201.14
  CHECK(at(100, 106) == 1);  // 484.57 -> 484 < 197 + 289 = 486
  CHECK(at(100, 107) == 0);  // 489.14
  double ones = 0;
  for (float v : m) ones += v;
  CHECK(ones == (162 - 64 + 1) * (106 - 44 + 1));
  // Each value truncated separately: x = 0.9 -> 0 and w = 1.9 -> 1 cover column 0 only
  // (truncating x + w = 2.8 would cover two).
  auto small = rsna_seg_map(parse_boxes("0.9;0.9;1.9;1.9", "t"), 8, 8);
  CHECK(small[0] == 1);
  CHECK(small[1] == 0);
  CHECK(small[8] == 0);
  // Negatives and malformed boxes.
  CHECK(parse_boxes("nan", "t").empty());
  CHECK(parse_boxes("", "t").empty());
  CHECK(contains(error_of([] { parse_boxes("1;2;3", "f.csv: row 4"); }), "f.csv: row 4"));
  CHECK(contains(error_of([] { parse_boxes("1;2;a;4", "f.csv"); }), "expected a number"));
  CHECK(contains(error_of([] { parse_boxes("-1;2;3;4", "f.csv"); }), "negative"));
  // Fuzzer finding (csv target): a box of 1e30 was converted to int64 (undefined); values past
  // the canvas clip as numpy's slices do, and non-finite values are refused by name.
  auto huge = rsna_seg_map(parse_boxes("4;1e30;1e300;1e30", "t"), 8, 8);
  CHECK(huge[0] == 0);
  CHECK(huge[8 + 3] == 0);
  CHECK(huge[8 + 4] == 0);  // y0 = 1e30 clips to the canvas: nothing set
  auto wide = rsna_seg_map(parse_boxes("4;2;1e300;1", "t"), 8, 8);
  CHECK(wide[2 * 8 + 3] == 0);
  CHECK(wide[2 * 8 + 4] == 1);
  CHECK(wide[2 * 8 + 7] == 1);
  CHECK(wide[3 * 8 + 4] == 0);
  for (const char* bad : {"inf;2;3;4", "1;2;3;1e999"}) {
    std::string msg = error_of([&] { parse_boxes(bad, "f.csv: row 2"); });
    CHECK_MESSAGE(contains(msg, "f.csv: row 2"), msg);
  }
  CHECK(format_boxes(parse_boxes("197.5;291.9;289.2;454.7|1;2;3;4", "t")) == "197.5;291.9;289.2;454.7|1.0;2.0;3.0;4.0");
}

TEST_CASE("data: RSNA seg maps equal the torch reference") {
  const char* cases[] = {"197.5;291.9;289.2;454.7", "197.0;291.0;289.0;454.0|683.0;265.0;247.0;524.0",
                         "0.9;1000.2;30.7;40.9|1020.5;3.3;10.0;10.0"};
  auto ref = read_npy_float(test::fixture("data/seg_refs.npy").string());
  REQUIRE(ref.shape == std::vector<int64_t>{3, 224, 224});
  for (int k = 0; k < 3; ++k) {
    std::string box_case = cases[k];
    CAPTURE(box_case);
    auto m = rsna_seg_map(parse_boxes(cases[k], "t"));
    int diff = 0, ones = 0;
    for (size_t i = 0; i < m.size(); ++i) {
      diff += m[i] != ref.data[size_t(k) * 224 * 224 + i];
      ones += m[i] > 0;
    }
    CHECK(diff == 0);
    MESSAGE("seg case " << k << ": " << ones << " positive pixels, " << diff << " differ from torch");
  }
}

TEST_CASE("data: RSNA csv reader") {
  auto dir = test::scratch_dir("rsna");
  write_file(dir / "r.csv", "ID,img_path,boxes,classes\n"
                            "p1,img/p1.dcm,197.0;291.0;289.0;454.0|683.0;265.0;247.0;524.0,1\n"
                            "n1,img/n1.dcm,,0\n"
                            "n2,img/n2.dcm,nan,0.0\n");
  RsnaDataset ds((dir / "r.csv").string());
  REQUIRE(ds.size() == 3);
  CHECK(ds.num_positive() == 1);
  CHECK(ds.item(0).boxes.size() == 2);
  CHECK(ds.item(0).boxes[1].x == 683.0);
  CHECK(ds.item(0).path == (dir / "img/p1.dcm").string());
  CHECK(ds.item(1).boxes.empty());
  CHECK(ds.item(2).label == 0);
  write_file(dir / "bad.csv", "ID,img_path,boxes,classes\np1,a.dcm,1;2;3,1\n");
  CHECK(contains(error_of([&] { RsnaDataset((dir / "bad.csv").string()); }), "bad.csv: row 1, column 'boxes'"));
  write_file(dir / "narrow.csv", "ID,img_path\np1,a.dcm\n");
  CHECK(contains(error_of([&] { RsnaDataset((dir / "narrow.csv").string()); }), "expected columns"));
}

// ---- triplets ------------------------------------------------------------------------------

TEST_CASE("data: triplet labels and index lists on a hand-made matrix (§C.2-C.3)") {
  const int A = kNumAnatomies, P = kNumPathologies;
  std::vector<float> M(size_t(A * P), -1.f);
  auto at = [&](int a, int p) -> float& { return M[size_t(a * P + p)]; };
  at(3, 8) = 1;   // effusion present at anatomy 3
  at(5, 8) = 0;   // ... and stated absent at 5: the column label is still 1
  at(7, 10) = 0;  // pneumothorax only absent: label 0
  at(3, 12) = 1;  // anatomy 3 holds two positives
  Rng rng(7, kStreamAugment);
  Triplets t = make_triplets(M, rng, "img.png");
  CHECK(t.label_pathology[8] == 1);
  CHECK(t.label_pathology[10] == 0);
  CHECK(t.label_pathology[12] == 1);
  CHECK(t.label_pathology[0] == -1);
  CHECK(t.label_anatomy[3] == 1);
  CHECK(t.label_anatomy[5] == 0);
  CHECK(t.label_anatomy[7] == 0);
  CHECK(t.label_anatomy[0] == -1);
  auto line = [](const std::vector<int64_t>& v, int k) {
    return std::vector<int64_t>(v.begin() + k * kNumCandidates, v.begin() + (k + 1) * kNumCandidates);
  };
  for (int p = 0; p < P; ++p) {
    auto l = line(t.index_pathology, p);
    bool pos = t.label_pathology[size_t(p)] == 1;
    CHECK((l[0] == -1) == pos);
    std::set<int64_t> s(l.begin() + (pos ? 1 : 0), l.end());
    CHECK(s.size() == size_t(pos ? 7 : 8));  // distinct
    for (int64_t a : s) {
      CHECK(a >= 0);
      CHECK(a < A);
      CHECK(at(int(a), p) != 1);  // never a positive partner among the negatives
    }
  }
  for (int a = 0; a < A; ++a) {
    auto l = line(t.index_anatomy, a);
    bool pos = t.label_anatomy[size_t(a)] == 1;
    CHECK((l[0] == -1) == pos);
    std::set<int64_t> s(l.begin() + (pos ? 1 : 0), l.end());
    CHECK(s.size() == size_t(pos ? 7 : 8));
    for (int64_t p : s) CHECK(at(a, int(p)) != 1);
  }
  // Same rng state -> same lists; another offset -> different lists.
  Rng r1(7, kStreamAugment), r2(7, kStreamAugment), r3(7, kStreamAugment);
  r3.set_offset(1000);
  auto t1 = make_triplets(M, r1, "x"), t2 = make_triplets(M, r2, "x"), t3 = make_triplets(M, r3, "x");
  CHECK(t1.index_pathology == t2.index_pathology);
  CHECK(t1.index_anatomy == t2.index_anatomy);
  CHECK(t1.index_pathology != t3.index_pathology);
  // Uniform without replacement: over many draws every candidate anatomy of pathology 8
  // shows up, and anatomy 3 (its positive) never does.
  std::vector<int> seen(size_t(A), 0);
  Rng rr(1, kStreamAugment);
  for (int k = 0; k < 200; ++k) {
    auto tk = make_triplets(M, rr, "x");
    for (int j = 1; j < kNumCandidates; ++j) seen[size_t(tk.index_pathology[size_t(8 * kNumCandidates + j)])]++;
  }
  CHECK(seen[3] == 0);
  int covered = 0;
  for (int a = 0; a < A; ++a) covered += seen[size_t(a)] > 0;
  CHECK(covered == A - 1);
}

TEST_CASE("data: triplet sampling errors when too few negatives exist (§H.7)") {
  const int A = kNumAnatomies, P = kNumPathologies;
  std::vector<float> M(size_t(A * P), -1.f);
  for (int a = 0; a < 45; ++a) M[size_t(a * P + 8)] = 1;  // effusion at 45 of 51 -> 6 negatives
  Rng rng(1);
  std::string e = error_of([&] { make_triplets(M, rng, "study/img1.jpg"); });
  CHECK(contains(e, "study/img1.jpg"));
  CHECK(contains(e, "pathology 8 (effusion)"));
  CHECK(contains(e, "only 6"));
  std::fill(M.begin(), M.end(), -1.f);
  for (int p = 0; p < 69; ++p) M[size_t(10 * P + p)] = 1;  // anatomy 10 with 69 positives
  e = error_of([&] { make_triplets(M, rng, "img2"); });
  CHECK(contains(e, "anatomy 10 (right_diaphragm)"));
  for (int p = 0; p < 69; ++p) M[size_t(10 * P + p)] = -1;
  for (int p = 0; p < 68; ++p) M[size_t(10 * P + p)] = 1;  // 68 leaves exactly 7: fine
  CHECK_NOTHROW(make_triplets(M, rng, "img3"));
  M[0] = 0.5f;
  CHECK(contains(error_of([&] { make_triplets(M, rng, "img4"); }), "not -1, 0 or 1"));
  CHECK(contains(error_of([&] { make_triplets(std::vector<float>(10, -1.f), rng, "img5"); }), "10 values"));
}

// ---- MeDSLIP dataset and loader ------------------------------------------------------------

namespace {

// A small pretraining set on disk: n images (no pixel files needed by the fake image fn).
fs::path make_pretrain_set(const std::string& name, int n) {
  auto dir = test::scratch_dir(name);
  const int A = kNumAnatomies, P = kNumPathologies;
  std::vector<double> m(size_t(n) * A * P, -1.0);
  nlohmann::ordered_json j;
  for (int i = 0; i < n; ++i) {
    m[size_t(i) * A * P + size_t((i % A) * P + (i * 7) % P)] = 1;
    m[size_t(i) * A * P + size_t(((i + 3) % A) * P + 8)] = 0;
    j["img/" + std::to_string(i) + ".png"] = {{"labels_id", n - 1 - i}, {"report", "unused"}};
  }
  write_npy((dir / "m.npy").string(), {n, A, P}, m.data());
  write_file(dir / "train.json", j.dump());
  return dir;
}

// Fake transform: values from the path and the sample's rng only.
std::vector<float> fake_image(const std::string& path, Rng& rng, int64_t S) {
  std::vector<float> v(size_t(3 * S * S));
  float h = float(std::hash<std::string>()(path) % 1000) / 1000.f;
  for (auto& x : v) x = h + rng.uniform();
  return v;
}

bool same_batch(const MedslipBatch& a, const MedslipBatch& b) {
  return a.image.to_vector() == b.image.to_vector() && a.matrix == b.matrix && a.label_pathology == b.label_pathology &&
         a.label_anatomy == b.label_anatomy && a.index_pathology == b.index_pathology &&
         a.index_anatomy == b.index_anatomy && a.paths == b.paths && a.items == b.items;
}

}  // namespace

TEST_CASE("data: MeDSLIP dataset reads json + npy with named errors") {
  auto dir = make_pretrain_set("medslip_ds", 6);
  MedslipDataset ds((dir / "train.json").string(), (dir / "m.npy").string());
  REQUIRE(ds.size() == 6);
  CHECK(ds.item(0).key == "img/0.png");  // file order kept
  CHECK(ds.item(0).path == (dir / "img/0.png").string());
  CHECK(ds.item(0).row == 5);
  auto m = ds.matrix(5);  // item 5 -> row 0, which has a 1 at (0, 0)
  CHECK(m[0] == 1);
  CHECK(m[size_t(3 * kNumPathologies + 8)] == 0);
  MedslipDataset rooted((dir / "train.json").string(), (dir / "m.npy").string(), "/imgs");
  CHECK(rooted.item(1).path == "/imgs/img/1.png");

  write_file(dir / "nolabel.json", R"({"a.png": {"x": 1}})");
  CHECK(contains(error_of([&] { MedslipDataset((dir / "nolabel.json").string(), (dir / "m.npy").string()); }),
                 "entry 'a.png': missing key 'labels_id'"));
  write_file(dir / "range.json", R"({"a.png": {"labels_id": 6}})");
  std::string e = error_of([&] { MedslipDataset((dir / "range.json").string(), (dir / "m.npy").string()); });
  CHECK(contains(e, "labels_id 6 is out of range"));
  CHECK(contains(e, "m.npy"));
  write_file(dir / "list.json", "[1, 2]");
  CHECK(contains(error_of([&] { MedslipDataset((dir / "list.json").string(), (dir / "m.npy").string()); }),
                 "expected a json object"));
  write_file(dir / "broken.json", "{\"a\": ");
  CHECK(contains(error_of([&] { MedslipDataset((dir / "broken.json").string(), (dir / "m.npy").string()); }),
                 "broken.json: invalid json"));
  std::vector<double> small(12);
  write_npy((dir / "shape.npy").string(), {1, 3, 4}, small.data());
  CHECK(contains(error_of([&] { MedslipDataset((dir / "train.json").string(), (dir / "shape.npy").string()); }),
                 "expected shape [N, 51, 75], got [1, 3, 4]"));
  CHECK(contains(error_of([&] { MedslipDataset((dir / "nope.json").string(), (dir / "m.npy").string()); }),
                 "nope.json: cannot open"));
}

TEST_CASE("data: loader batches are identical for 0, 1 and 2 worker threads") {
  auto dir = make_pretrain_set("loader", 11);
  MedslipDataset ds((dir / "train.json").string(), (dir / "m.npy").string());
  const int64_t S = 8;
  auto run = [&](int workers, int64_t epoch) {
    LoaderOptions o;
    o.batch_size = 3;
    o.image_size = S;
    o.seed = 42;
    o.num_workers = workers;
    PretrainLoader L(ds, [&](const std::string& p, Rng& r) { return fake_image(p, r, S); }, o);
    CHECK(L.size() == 3);  // 11 / 3 with drop_last
    std::vector<MedslipBatch> out;
    L.start_epoch(epoch);
    MedslipBatch b;
    while (L.next(b)) out.push_back(b);
    return out;
  };
  auto a = run(0, 0), b = run(1, 0), c = run(2, 0), c2 = run(2, 0), e1 = run(2, 1);
  REQUIRE(a.size() == 3);
  REQUIRE(b.size() == 3);
  REQUIRE(c.size() == 3);
  for (size_t k = 0; k < 3; ++k) {
    CHECK(a[k].index == int64_t(k));
    CHECK(same_batch(a[k], b[k]));
    CHECK(same_batch(a[k], c[k]));
    CHECK(same_batch(c[k], c2[k]));
  }
  CHECK(a[0].image.shape() == Shape{3, 3, S, S});
  CHECK(a[0].matrix.size() == size_t(3 * kNumAnatomies * kNumPathologies));
  CHECK(a[0].label_pathology.size() == size_t(3 * kNumPathologies));
  CHECK(a[0].label_anatomy.size() == size_t(3 * kNumAnatomies));
  CHECK_NOTHROW(a[0].validate());
  CHECK(a[0].index_pathology.size() == size_t(3 * kNumPathologies * kNumCandidates));
  CHECK(a[0].index_anatomy.size() == size_t(3 * kNumAnatomies * kNumCandidates));
  // A shuffled epoch: 9 distinct items; the next epoch draws another order.
  std::set<int64_t> items;
  std::vector<int64_t> order0, order1;
  for (const auto& x : a)
    for (int64_t i : x.items) { items.insert(i); order0.push_back(i); }
  for (const auto& x : e1)
    for (int64_t i : x.items) order1.push_back(i);
  CHECK(items.size() == 9);
  CHECK(order0 != order1);
  // Labels in the batch follow the item's matrix.
  const auto& m = a[0].matrix;
  std::vector<float> m0(m.begin(), m.begin() + kMatrixSize);
  CHECK(m0 == ds.matrix(a[0].items[0]));
  // A sample's randomness is keyed by (seed, epoch, item): same item, same image bytes, in
  // whichever batch it lands.
  LoaderOptions o;
  o.batch_size = 4;
  o.image_size = S;
  o.seed = 42;
  o.drop_last = false;
  o.num_workers = 2;
  PretrainLoader L4(ds, [&](const std::string& p, Rng& r) { return fake_image(p, r, S); }, o);
  CHECK(L4.size() == 3);
  MedslipBatch x = L4.make_batch(0, 0);
  int64_t item = x.items[1];
  std::vector<float> img(x.image.data() + 3 * S * S, x.image.data() + 6 * S * S);
  for (const auto& y : a)
    for (size_t k = 0; k < y.items.size(); ++k)
      if (y.items[k] == item)
        CHECK(std::vector<float>(y.image.data() + k * 3 * S * S, y.image.data() + (k + 1) * 3 * S * S) == img);
  L4.start_epoch(0);
  MedslipBatch last;
  int n = 0;
  while (L4.next(last)) ++n;
  CHECK(n == 3);
  CHECK(last.batch_size() == 3);  // 11 = 4 + 4 + 3 without drop_last
}

TEST_CASE("data: loader rethrows a worker's error and checks the image size") {
  auto dir = make_pretrain_set("loader_err", 6);
  MedslipDataset ds((dir / "train.json").string(), (dir / "m.npy").string());
  LoaderOptions o;
  o.batch_size = 2;
  o.image_size = 4;
  o.num_workers = 2;
  PretrainLoader bad(ds, [](const std::string& p, Rng& r) -> std::vector<float> {
    if (p.find("/3.png") != std::string::npos) throw std::runtime_error(p + ": cannot decode");
    return std::vector<float>(48);
  }, o);
  bad.start_epoch(0);
  MedslipBatch b;
  std::string e = error_of([&] { while (bad.next(b)) {} });
  CHECK(contains(e, "3.png: cannot decode"));
  PretrainLoader wrong(ds, [](const std::string&, Rng&) { return std::vector<float>(5); }, o);
  CHECK(contains(error_of([&] { wrong.make_batch(0, 0); }), "expected 3x4x4"));
  o.batch_size = 0;
  CHECK(contains(error_of([&] {
                   PretrainLoader(
                       ds, [](const std::string&, Rng&) { return std::vector<float>(); }, o);
                 }),
                 "batch_size"));
}

// ---- the synthetic set ---------------------------------------------------------------------

TEST_CASE("data: synthetic images are deterministic and labelled at their anatomy") {
  SynthImage a = render_synth_image(3, 5, 64), b = render_synth_image(3, 5, 64), c = render_synth_image(3, 6, 64);
  CHECK(a.pixels == b.pixels);
  CHECK(a.matrix == b.matrix);
  CHECK(a.pixels != c.pixels);
  CHECK(a.pixels.size() == 64 * 64);
  CHECK(a.matrix.size() == size_t(kMatrixSize));
  // Over a few images: values in {-1,0,1}, every drawn finding's cells are 1 and its box
  // lies inside the image, and about a quarter are normal.
  int normal = 0, n = 40;
  for (int i = 0; i < n; ++i) {
    SynthImage im = render_synth_image(11, i, 64);
    for (float v : im.matrix) CHECK((v == -1 || v == 0 || v == 1));
    normal += im.normal;
    for (const auto& f : im.findings) {
      CHECK(f.x0 >= 0);
      CHECK(f.y0 >= 0);
      CHECK(f.x1 <= 64);
      CHECK(f.y1 <= 64);
      CHECK(f.x0 < f.x1);
      for (auto [an, ob] : f.cells) CHECK(im.matrix[size_t(an * kNumPathologies + ob)] == 1);
      // A one-sided lung finding sits on its side of the film (patient's right = image left).
      if (f.side >= 0 && f.type != SynthFinding::kCardiomegaly) {
        double cx = 0.5 * (f.x0 + f.x1);
        CHECK_MESSAGE((f.side == 0 ? cx < 36 : cx > 28), synth_finding_name(f.type) << " side " << f.side);
      }
    }
    Rng r(1);
    CHECK_NOTHROW(make_triplets(im.matrix, r, "synth"));
  }
  CHECK(normal >= 4);
  CHECK(normal <= 20);
  CHECK(contains(error_of([] { render_synth_image(0, 0, 8); }), "size"));

  // finding_gain / finding_scale: the same findings and labels, drawn more conspicuously.
  int brighter = 0, with_findings = 0;
  for (int i = 0; i < 12; ++i) {
    SynthImage base = render_synth_image(11, i, 64), strong = render_synth_image(11, i, 64, 4.0, 2.0);
    CHECK(strong.matrix == base.matrix);
    REQUIRE(strong.findings.size() == base.findings.size());
    for (size_t k = 0; k < base.findings.size(); ++k) CHECK(strong.findings[k].type == base.findings[k].type);
    if (base.findings.empty()) {
      CHECK(strong.pixels == base.pixels);  // nothing to scale
      continue;
    }
    // Cardiomegaly and emphysema change the anatomy itself (no added density): not affected.
    bool dense = false;
    for (const auto& f : base.findings)
      dense = dense || (f.type != SynthFinding::kCardiomegaly && f.type != SynthFinding::kEmphysema);
    if (!dense) continue;
    ++with_findings;
    brighter += strong.pixels != base.pixels;
  }
  CHECK(with_findings >= 5);
  CHECK(brighter == with_findings);
  CHECK(contains(error_of([] { render_synth_image(0, 0, 64, 0.0); }), "finding gain"));
  CHECK(contains(error_of([] { render_synth_image(0, 0, 64, 1.0, 5.0); }), "finding scale"));
}

TEST_CASE("data: medslip synth output loads through the dataset readers") {
  auto dir = test::scratch_dir("synth");
  SynthOptions o;
  o.out_dir = (dir / "a").string();
  o.n = 30;
  o.size = 64;
  o.seed = 5;
  o.threads = 2;
  o.preview = true;
  o.test_frac = 0.5;
  SynthReport rep = write_synth_dataset(o);
  CHECK(rep.n_train + rep.n_valid + rep.n_test == 30);
  CHECK(rep.n_test == 15);
  CHECK(rep.n_valid == 3);
  MESSAGE("synth 30 x 64px: " << rep.seconds << " s, " << rep.n_normal << " normal");
  fs::path d = o.out_dir;
  for (const char* f : {"landmark_observation_adj_mtx.npy", "train.json", "valid.json", "test.json", "cxr14_test.csv",
                        "rsna_test.csv", "observations.json", "synth.json", "preview.png", "images/000029.png"})
    CHECK_MESSAGE(fs::exists(d / f), f);

  std::string npy = (d / "landmark_observation_adj_mtx.npy").string();
  CHECK(read_npy_header(npy).descr == "<f8");
  MedslipDataset train((d / "train.json").string(), npy), valid((d / "valid.json").string(), npy),
      test((d / "test.json").string(), npy);
  CHECK(train.size() == rep.n_train);
  CHECK(valid.size() == rep.n_valid);
  CHECK(test.size() == rep.n_test);
  std::set<std::string> seen;
  for (auto* ds : {&train, &valid, &test})
    for (int64_t i = 0; i < ds->size(); ++i) {
      CHECK(seen.insert(ds->item(i).key).second);  // the splits are disjoint
      CHECK(fs::exists(ds->item(i).path));
    }
  // The PNGs decode (data/image.h) to the rendered pixels, and the row is the image's matrix.
  SynthImage im = render_synth_image(5, 29, 64);
  Image png = read_image((d / "images/000029.png").string(), ReadOptions{true});
  CHECK(png.w == 64);
  CHECK(png.c == 1);
  CHECK(png.px == im.pixels);
  CHECK(test.matrix(test.size() - 1) == im.matrix);

  // CXR14 csv over the held-out images: class c is 1 iff the matrix column of its query has a 1.
  Cxr14Dataset cxr((d / "cxr14_test.csv").string());
  REQUIRE(cxr.size() == rep.n_test);
  RsnaDataset rsna((d / "rsna_test.csv").string());
  REQUIRE(rsna.size() == rep.n_test);
  int positives = 0;
  for (int64_t i = 0; i < cxr.size(); ++i) {
    const auto& it = cxr.item(i);
    CHECK(it.path == test.item(i).path);
    auto m = test.matrix(i);
    for (int c = 0; c < kNumCxr14Classes; ++c) {
      bool pos = false;
      for (int a = 0; a < kNumAnatomies; ++a)
        pos = pos || m[size_t(a * kNumPathologies + kCxr14QueryIndex[size_t(c)])] == 1;
      CHECK(it.labels[size_t(c)] == (pos ? 1.f : 0.f));
    }
    // RSNA: positive iff the matrix holds pneumonia (consolidation); boxes only then, inside
    // the 1024 canvas, and the seg map is not empty.
    const auto& r = rsna.item(i);
    bool pneu = false;
    for (int a = 0; a < kNumAnatomies; ++a) pneu = pneu || m[size_t(a * kNumPathologies + 20)] == 1;
    CHECK(r.label == (pneu ? 1.f : 0.f));
    CHECK(r.boxes.empty() == !pneu);
    CHECK(r.path == it.path);
    positives += pneu;
    for (const Box& b : r.boxes) {
      CHECK(b.x + b.w <= 1024.0 + 1e-9);
      CHECK(b.y + b.h <= 1024.0 + 1e-9);
      // The box lies on the side of a lung zone holding pneumonia (patient's right = image left).
      bool right = b.x + 0.5 * b.w < 512;
      bool side_has = false;
      for (const char* a : right ? std::vector<const char*>{"right_upper_lung", "right_mid_lung", "right_lower_lung"}
                                 : std::vector<const char*>{"left_upper_lung", "left_mid_lung", "left_lower_lung"})
        side_has = side_has || m[size_t(anatomy_index(a) * kNumPathologies + 20)] == 1;
      CHECK(side_has);
    }
    if (pneu) {
      auto seg = rsna_seg_map(r.boxes);
      double area = 0;
      for (float v : seg) area += v;
      CHECK(area > 0);
    }
  }
  MESSAGE("synth test split: " << positives << " RSNA-positive of " << rsna.size());
  CHECK(positives > 0);
  CHECK(positives == rsna.num_positive());
  auto obs = nlohmann::ordered_json::parse(read_file(d / "observations.json"));
  REQUIRE(obs.size() == 75);
  int k = 0;
  for (auto it = obs.begin(); it != obs.end(); ++it, ++k) CHECK(it.key() == kObservations[size_t(k)]);

  // The whole pipeline: image decode + test transform through the eval loader.
  LoaderOptions lo;
  lo.batch_size = 4;
  lo.image_size = 32;
  lo.num_workers = 2;
  EvalLoader ev(rsna, [](const std::string& p, Rng&) { return test_transform(read_image(p), 32); }, lo, 1024, 32);
  CHECK(ev.size() == 4);  // 15 rows in batches of 4
  ev.start();
  EvalBatch eb;
  int64_t rows = 0;
  while (ev.next(eb)) {
    CHECK(eb.image.shape()[1] == 3);
    CHECK(eb.seg_map.shape() == Shape{eb.size(), 1, 32, 32});
    for (int64_t j = 0; j < eb.size(); ++j) CHECK(eb.items[size_t(j)] == rows + j);
    rows += eb.size();
  }
  CHECK(rows == rep.n_test);
  // Training batches with the real decode + §C.4 augmentation: same for 0 and 2 workers.
  auto batches = [&](int workers) {
    LoaderOptions po;
    po.batch_size = 4;
    po.image_size = 32;
    po.seed = 9;
    po.num_workers = workers;
    PretrainLoader L(train, [](const std::string& p, Rng& r) { return train_transform(read_image(p), 32, r); }, po);
    L.start_epoch(2);
    std::vector<std::vector<float>> out;
    MedslipBatch pb;
    while (L.next(pb)) out.push_back(pb.image.to_vector());
    return out;
  };
  auto b0 = batches(0), b2 = batches(2);
  CHECK(b0.size() == 3);
  CHECK(b0 == b2);

  // Deterministic: one thread gives the same files.
  o.out_dir = (dir / "b").string();
  o.threads = 1;
  o.preview = false;
  write_synth_dataset(o);
  for (const char* f : {"landmark_observation_adj_mtx.npy", "train.json", "cxr14_test.csv", "rsna_test.csv",
                        "images/000000.png", "images/000017.png"})
    CHECK_MESSAGE(read_file(d / f) == read_file(fs::path(o.out_dir) / f), f);
  o.n = 0;
  CHECK(contains(error_of([&] { write_synth_dataset(o); }), "--n"));
}

TEST_CASE("data: eval loader over CXR14 keeps csv order and a short last batch") {
  auto dir = test::scratch_dir("cxr14_loader");
  std::string csv = "img_path,Image Index,Finding Label";
  for (const char* c : kCxr14Classes) csv += std::string(",") + c;
  csv += "\n";
  for (int i = 0; i < 5; ++i) {
    csv += "i" + std::to_string(i) + ".png,x,y";
    for (int c = 0; c < kNumCxr14Classes; ++c) csv += c == i ? ",1" : ",0";
    csv += "\n";
  }
  write_file(dir / "c.csv", csv);
  Cxr14Dataset ds((dir / "c.csv").string());
  LoaderOptions o;
  o.batch_size = 2;
  o.image_size = 2;
  for (int workers : {0, 2}) {
    o.num_workers = workers;
    EvalLoader L(ds, [](const std::string& p, Rng&) { return std::vector<float>(12, float(p.size())); }, o);
    CHECK(L.size() == 3);
    L.start();
    EvalBatch b;
    std::vector<int64_t> sizes;
    int64_t row = 0;
    while (L.next(b)) {
      sizes.push_back(b.size());
      CHECK(b.labels.shape() == Shape{b.size(), kNumCxr14Classes});
      CHECK_FALSE(b.seg_map.defined());
      for (int64_t j = 0; j < b.size(); ++j, ++row) {
        CHECK(b.paths[size_t(j)] == (dir / ("i" + std::to_string(row) + ".png")).string());
        CHECK(b.labels.data()[j * kNumCxr14Classes + row] == 1);
      }
    }
    CHECK(sizes == std::vector<int64_t>{2, 2, 1});
  }
}

TEST_CASE("data: medslip synth command line") {
  auto dir = test::scratch_dir("synth_cli");
  std::string out = (dir / "s").string();
  auto run = [](std::vector<std::string> args) {
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(&a[0]);
    return cmd_synth(int(argv.size()), argv.data());
  };
  CHECK(run({"synth", "--out", out, "--n", "5", "--size", "48", "--seed", "3", "--threads", "2"}) == 0);
  CHECK(fs::exists(fs::path(out) / "images" / "000004.png"));
  CHECK(read_npy_header((fs::path(out) / "landmark_observation_adj_mtx.npy").string()).shape ==
        std::vector<int64_t>{5, kNumAnatomies, kNumPathologies});
  auto manifest = nlohmann::json::parse(read_file(fs::path(out) / "synth.json"));
  CHECK(manifest["seed"] == 3);
  CHECK(manifest["splits"]["test"] == 1);
  CHECK(run({"synth", "--out", out, "--n", "0"}) != 0);
  CHECK(run({"synth", "--out", out, "--size", "16"}) != 0);
  CHECK(run({"synth", "--n", "3"}) != 0);  // --out is required
}
