// Reports -> triplets (data/report_*.h): sentence-level cases written from real IU X-ray report
// sentences (development half, report_id <= 2000; a few shortened), the round trip of the
// synthetic phantoms' matrices through a written report, the one-line errors, and that the
// files `medslip triplets` writes load through the pretraining dataset reader.
#include <doctest/doctest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "data/datasets.h"
#include "data/report_triplets.h"
#include "data/synth.h"
#include "data/triplets.h"
#include "model/vocab.h"
#include "engine/rng.h"
#include "tests/test_util.h"

using namespace ms;
namespace fs = std::filesystem;

namespace {

// Value of one cell after extracting `text` (full mode unless told).
float cell(const std::string& text, const char* anatomy, const char* obs, NegationMode mode = NegationMode::kFull) {
  auto M = report_matrix(text, mode);
  return M[size_t(anatomy_index_or_throw(anatomy)) * kNumPathologies + size_t(observation_index_or_throw(obs))];
}

// Every cell that is not -1, as "anatomy/observation=value", in row-major order (anatomy rows
// as in spec C.1: ... pleural_unspec 6 ... lung_volumes 48, unspecified 49, other 50).
std::vector<std::string> cells(const std::string& text, NegationMode mode = NegationMode::kFull) {
  auto M = report_matrix(text, mode);
  std::vector<std::string> out;
  for (int a = 0; a < kNumAnatomies; ++a)
    for (int o = 0; o < kNumPathologies; ++o) {
      float v = M[size_t(a) * kNumPathologies + size_t(o)];
      if (v != -1.f)
        out.push_back(std::string(kAnatomies[size_t(a)]) + "/" + kObservations[size_t(o)] + "=" +
                      std::to_string(int(v)));
    }
  return out;
}

using V = std::vector<std::string>;

void write_file(const fs::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary);
  f << s;
}

std::string error_of(const TripletsOptions& o) {
  try {
    write_report_triplets(o);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("data: report sentences split at ends, list numbers and glued sentences, not at decimals") {
  const std::string t =
      "1. Bullous emphysema and interstitial fibrosis. 2. Probably scarring in the left apex.There are streaky "
      "opacities, 2.5 cm nodule e.g. in the lingula.\nNo pneumothorax";
  auto s = split_report_sentences(t);
  REQUIRE(s.size() == 4);
  CHECK(t.substr(size_t(s[0].begin), size_t(s[0].end - s[0].begin)) == "Bullous emphysema and interstitial fibrosis.");
  CHECK(t.substr(size_t(s[1].begin), size_t(s[1].end - s[1].begin)) == "Probably scarring in the left apex.");
  CHECK(t.substr(size_t(s[2].begin), size_t(s[2].end - s[2].begin)) ==
        "There are streaky opacities, 2.5 cm nodule e.g. in the lingula.");
  CHECK(t.substr(size_t(s[3].begin), size_t(s[3].end - s[3].begin)) == "No pneumothorax");
  // XXXX tokens and plural folding
  auto tk = tokenize_report("No XXXX of pleural effusions or pneumothoraces.", 0, 47);
  REQUIRE(tk.size() == 7);
  CHECK(tk[1].anon);
  CHECK(tk[4].norm == "effusion");
  CHECK(tk[6].norm == "pneumothorax");
  CHECK(report_normalize_word("opacities") == "opacity");
  CHECK(report_normalize_word("atelectasis") == "atelectasis");
  CHECK(report_normalize_word("processes") == "process");
  CHECK(first_invalid_utf8("caf\xc3\xa9 ok") == -1);
  CHECK(first_invalid_utf8("bad \xe9 byte") == 4);
  CHECK(first_invalid_utf8("cut \xc3") == 4);
}

TEST_CASE("data: report triplets — negation (NegBio-style cues, lists)") {
  // report 1
  CHECK(cells("There is no pulmonary edema.") == V{"pulmonary/edema=0"});
  CHECK(cells("There are no XXXX of a pleural effusion.") == V{"pleural_unspec/effusion=0"});
  CHECK(cells("There is no evidence of pneumothorax.") == V{"unspecified/pneumothorax=0"});
  // report 3: a list under one "No"
  CHECK(cells("No displaced rib fractures, pneumothorax, or pleural effusion identified.") ==
        V{"pleural_unspec/effusion=0", "rib/fracture=0", "unspecified/pneumothorax=0"});
  CHECK(cells("No pneumothorax or pleural effusion.") ==
        V{"pleural_unspec/effusion=0", "unspecified/pneumothorax=0"});
  // report 10: "without" over a list, positives before it stay positive
  CHECK(cells("The lungs are clear without evidence of focal airspace disease, pleural effusion, or "
              "pneumothorax.") == V{"pleural_unspec/effusion=0", "lung_volumes/clear=1", "unspecified/pneumothorax=0",
                                    "other/disease=0"});
  CHECK(cell("Lungs are free of focal airspace disease.", "other", "disease") == 0.f);
  CHECK(cell("Lungs are free of focal airspace disease.", "lung_volumes", "free") == -1.f);
  CHECK(cell("Negative for pneumothorax.", "unspecified", "pneumothorax") == 0.f);
  // "not" before an adjective finding
  CHECK(cells("The cardiac silhouette is not enlarged.") == V{"heart_size/enlarge=0"});
  // post-negation
  CHECK(cell("The previously seen left pleural effusion has resolved.", "left_pleural", "effusion") == 0.f);
  CHECK(cell("Pneumothorax is not seen.", "unspecified", "pneumothorax") == 0.f);
  CHECK(cell("In the interval, bibasilar interstitial infiltrates and pulmonary venous engorgement have resolved.",
             "pulmonary", "engorgement") == 0.f);
  // a scope breaker: "but"
  CHECK(cells("No focal consolidation, but there is mild left basilar atelectasis.") ==
        V{"left_lower_lung/atelectasis=1", "unspecified/consolidation=0"});
  // the one-line rule negates everything after any "no" in the sentence; the cue engine does not
  CHECK(cell("No focal consolidation, but there is mild left basilar atelectasis.", "left_lower_lung", "atelectasis",
             NegationMode::kSimpleNegation) == 0.f);
  CHECK(cell("No focal consolidation, but there is mild left basilar atelectasis.", "left_lower_lung", "atelectasis",
             NegationMode::kKeyword) == 1.f);
}

TEST_CASE("data: report triplets — uncertainty is left out of the matrix (spec C.1: OBS-U ignored)") {
  // report 4
  auto m = report_matrix("Opacities in the bilateral upper lobes could represent scarring.");
  CHECK(m[size_t(anatomy_index("unspecified")) * kNumPathologies + size_t(observation_index("scar"))] == -1.f);
  CHECK(cells("Opacities in the bilateral upper lobes could represent scarring.").size() == 1);  // the opacity
  CHECK(cells("Probably scarring in the left apex, although difficult to exclude a cavitary lesion.").empty());
  CHECK(cells("Cannot exclude early pulmonary edema.").empty());
  CHECK(cells("Possible small left pleural effusion.").empty());
  CHECK(cells("Left basilar opacity which may represent atelectasis or infiltrate.") ==
        V{"left_lower_lung/opacity=1"});
  CHECK(cells("Pneumonia cannot be excluded.").empty());
  // the triplet is still listed (exists -1) for triplets.jsonl
  auto ex = extract_report({{"impression", "Possible small left pleural effusion."}});
  REQUIRE(ex.triplets.size() == 1);
  CHECK(ex.triplets[0].exists == -1);
  CHECK(ex.triplets[0].anatomy == anatomy_index("left_pleural"));
}

// triplets fuzzer finding (session 5): negation scopes were checked by walking every cue-to-
// mention span, O(n^3) in a sentence's tokens: a 9 KB run-on sentence took 5.9 s (75 s under
// ASan), 63 KB would take half an hour. Now prefix counts make each check O(1). The same
// findings whatever the length, and a long sentence in well under the old time (a generous
// bound: it takes ~35 ms here, the old code ~2,000 s).
TEST_CASE("data: report triplets — a run-on sentence is not cubic in its length") {
  std::string one = "no effusion or catheter tip opacity seen and ";
  std::string short_text, long_text;
  for (int i = 0; i < 20; ++i) short_text += one;
  for (int i = 0; i < 1400; ++i) long_text += one;  // 63 KB, no full stop
  const auto start = std::chrono::steady_clock::now();
  const std::vector<float> m = report_matrix(long_text);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CHECK(m == report_matrix(short_text));
  int absent = 0, present = 0;
  for (float v : m) {
    absent += v == 0.f;
    present += v == 1.f;
  }
  CHECK(absent > 0);    // "no effusion ...": the negation scope reached its findings
  CHECK(present == 0);
  CHECK_MESSAGE(s < 20.0, "report_matrix on a 63 KB sentence took " << s << " s");
  // The anatomy attachment had the same shape (every anatomy, finding and token between them):
  // 34 KB of anatomies and findings took 1.1 s, 63 KB 7.3 s; now prefix counts.
  std::string two = "right lower lobe left upper lobe effusion ", short2, long2;
  for (int i = 0; i < 20; ++i) short2 += two;
  for (int i = 0; i < 1500; ++i) long2 += two;
  const auto start2 = std::chrono::steady_clock::now();
  const std::vector<float> m2 = report_matrix(long2);
  const double s2 = std::chrono::duration<double>(std::chrono::steady_clock::now() - start2).count();
  CHECK(m2 == report_matrix(short2));
  int present2 = 0;
  for (float v : m2) present2 += v == 1.f;
  CHECK(present2 == 1);  // effusion attached to the lobe next to it
  CHECK_MESSAGE(s2 < 20.0, "report_matrix on 63 KB of anatomies and findings took " << s2 << " s");
}

TEST_CASE("data: report triplets — anatomy, laterality, lobes (AGXNet's landmark rules)") {
  CHECK(cells("Left lower lobe atelectasis.") == V{"lower_left_lobe/atelectasis=1"});
  CHECK(cells("Elevated right hemidiaphragm.") == V{"right_diaphragm/elevation=1"});
  CHECK(cells("Blunting of the left costophrenic angle.") == V{"left_costophrenic/blunt=1"});
  CHECK(cells("Small bilateral pleural effusions.") == V{"pleural_unspec/effusion=1"});
  CHECK(cells("Calcified granuloma is again seen in the right upper lobe.") ==
        V{"upper_right_lobe/calcification=1", "upper_right_lobe/tail_abnorm_obs=1"});
  CHECK(cells("Calcified lingular granuloma.") == V{"upper_left_lobe/calcification=1", "upper_left_lobe/tail_abnorm_obs=1"});
  CHECK(cells("Low lung volumes.") == V{"lung_volumes/low=1"});
  CHECK(cells("Mild degenerative change of the thoracic spine.") == V{"spine/degenerative=1"});
  CHECK(cells("Tortuosity of the thoracic aorta noted.") == V{"aorta/tortuous=1"});
  CHECK(cells("Heart size and mediastinal contour are within normal limits.") ==
        V{"heart_size/normal=1", "mediastinal/normal=1"});
  // two findings, each with its own place
  CHECK(cells("Opacity in the right upper lobe and nodule in the left base.") ==
        V{"upper_right_lobe/opacity=1", "left_lower_lung/nodule=1"});
  // coordinated findings share the place
  CHECK(cells("Left base opacity and atelectasis.") ==
        V{"left_lower_lung/opacity=1", "left_lower_lung/atelectasis=1"});
  // no anatomy: unspecified (what AGXNet gives an observation without located_at)
  CHECK(cells("Mild cardiomegaly.") == V{"unspecified/cardiomegaly=1"});
}

TEST_CASE("data: report triplets — 'no change in', stable findings, XXXX and typos") {
  CHECK(cells("No interval change in the left basilar atelectasis.") == V{"left_lower_lung/atelectasis=1"});
  CHECK(cells("Stable cardiomegaly.") == V{"unspecified/stable=1", "unspecified/cardiomegaly=1"});
  CHECK(cell("No significant change in the moderate right pleural effusion.", "right_pleural", "effusion") == 1.f);
  CHECK(cell("Stable XXXX basilar atelectasis.", "lung_bases", "atelectasis") == 1.f);
  CHECK(cell("Mild cardiomegally.", "unspecified", "cardiomegaly") == 1.f);   // one insertion
  CHECK(cell("Bibasilar atelectsis.", "lung_bases", "atelectasis") == 1.f);   // one deletion
  CHECK(cell("Small pleural effsuion.", "pleural_unspec", "effusion") == 1.f);  // one swap
  CHECK(ReportLexicon::get().typo_candidate("bilateral") == "");  // real words are not "fixed"
  // a report that yields nothing is not an error
  CHECK(cells("Comparison: none. Frontal and lateral views of the chest.").empty());
}

TEST_CASE("data: report triplets — the synthetic phantoms' matrices round-trip through a written report") {
  // Every single cell, present and absent...
  int bad = 0;
  std::vector<float> M(size_t(kNumAnatomies) * kNumPathologies, -1.f);
  for (int a = 0; a < kNumAnatomies; ++a)
    for (int o = 0; o < kNumPathologies; ++o)
      for (float v : {1.f, 0.f}) {
        M[size_t(a) * kNumPathologies + size_t(o)] = v;
        if (report_matrix(matrix_report(M)) != M) {
          if (++bad <= 5) MESSAGE("cell " << kAnatomies[size_t(a)] << "/" << kObservations[size_t(o)] << "=" << v
                                          << ": " << matrix_report(M));
        }
        M[size_t(a) * kNumPathologies + size_t(o)] = -1.f;
      }
  CHECK(bad == 0);
  // ...and whole phantoms of medslip synth (findings, normals and stated absences).
  int n_nonempty = 0;
  for (int64_t i = 0; i < 40; ++i) {
    SynthImage img = render_synth_image(7, i, 64);
    std::string report = matrix_report(img.matrix);
    n_nonempty += !report.empty();
    CHECK_MESSAGE(report_matrix(report) == img.matrix, "phantom " << i << ": " << report);
  }
  CHECK(n_nonempty == 40);
}

TEST_CASE("data: medslip triplets writes files the pretraining reader loads; one-line errors") {
  auto dir = test::scratch_dir("report_triplets");
  write_file(dir / "r.csv",
             "id,findings,impression,images\n"
             "10,\"Heart size normal. No pleural effusion, pneumothorax.\",No acute disease.,a1|a2\n"
             "11,Left lower lobe atelectasis.,\"Mild cardiomegaly, stable.\",b1\n"
             "12,Comparison: none.,,c1|c2|c3\n"
             "13,Possible small left pleural effusion.,Clear lungs.,d1\n");
  TripletsOptions o;
  o.reports_csv = (dir / "r.csv").string();
  o.text_columns = {"findings", "impression"};
  o.id_column = "id";
  o.image_column = "images";
  o.image_template = "img/{}.png";
  o.out_dir = (dir / "out").string();
  o.valid_frac = 0.25;
  o.test_frac = 0.25;
  TripletsSummary s = write_report_triplets(o);
  CHECK(s.n_reports == 4);
  CHECK(s.n_images == 7);
  CHECK(s.n_empty == 1);
  CHECK(s.n_uncertain == 1);
  // The reader of `pretrain` (spec C.1) on every split; rows are the reports, images share them.
  int64_t seen = 0;
  for (const char* split : {"train.json", "valid.json", "test.json"}) {
    MedslipDataset ds((dir / "out" / split).string(), (dir / "out" / "landmark_observation_adj_mtx.npy").string());
    for (int64_t i = 0; i < ds.size(); ++i, ++seen) {
      const auto& it = ds.item(i);
      CHECK(it.key.rfind("img/", 0) == 0);
      std::vector<float> m = ds.matrix(i);
      const int64_t row = it.row;
      REQUIRE((row >= 0 && row < 4));
      std::vector<ReportField> f;
      const char* findings[] = {"Heart size normal. No pleural effusion, pneumothorax.", "Left lower lobe atelectasis.",
                                "Comparison: none.", "Possible small left pleural effusion."};
      const char* impressions[] = {"No acute disease.", "Mild cardiomegaly, stable.", "", "Clear lungs."};
      f.push_back({"findings", findings[row]});
      f.push_back({"impression", impressions[row]});
      CHECK(m == extract_report(f).matrix);
      Rng rng(1);
      Triplets t = make_triplets(m, rng, it.key);  // the sampler pretraining runs on each image
      CHECK(t.label_pathology.size() == size_t(kNumPathologies));
    }
  }
  CHECK(seen == 7);
  auto npy = read_npy_header((dir / "out" / "landmark_observation_adj_mtx.npy").string());
  CHECK(npy.descr == "<f8");
  CHECK(npy.shape == std::vector<int64_t>{4, 51, 75});
  // triplets.jsonl: one line per report, with spans into the column text
  std::ifstream jl(dir / "out" / "triplets.jsonl");
  std::string line;
  int lines = 0;
  while (std::getline(jl, line)) ++lines;
  CHECK(lines == 4);
  // Same seed, same files.
  std::string a = [&] { std::ifstream f(dir / "out" / "train.json"); return std::string(std::istreambuf_iterator<char>(f), {}); }();
  write_report_triplets(o);
  std::string b = [&] { std::ifstream f(dir / "out" / "train.json"); return std::string(std::istreambuf_iterator<char>(f), {}); }();
  CHECK(a == b);

  // Errors name the file, row and column.
  TripletsOptions e = o;
  e.text_columns = {"findings", "impresion"};
  std::string msg = error_of(e);
  CHECK(msg.find("r.csv") != std::string::npos);
  CHECK(msg.find("impresion") != std::string::npos);
  write_file(dir / "empty.csv", "");
  e = o;
  e.reports_csv = (dir / "empty.csv").string();
  msg = error_of(e);
  CHECK_MESSAGE((msg.find("empty.csv: empty") != std::string::npos), msg);  // the csv reader's own words
  write_file(dir / "header_only.csv", "id,findings,impression,images\n");
  e.reports_csv = (dir / "header_only.csv").string();
  msg = error_of(e);
  CHECK_MESSAGE(msg.find("header_only.csv: empty file") != std::string::npos, msg);
  write_file(dir / "bad.csv", "id,findings,impression,images\n1,ok.,ok.,x\n2,caf\xe9 au lait.,ok.,y\n");
  e = o;
  e.reports_csv = (dir / "bad.csv").string();
  msg = error_of(e);
  CHECK(msg == (dir / "bad.csv").string() + ": row 2, column 'findings': not UTF-8 (byte 3)");
  write_file(dir / "dup.csv", "id,findings,impression,images\n1,ok.,ok.,x\n1,ok.,ok.,y\n");
  e = o;
  e.reports_csv = (dir / "dup.csv").string();
  CHECK(error_of(e).find("row 2, column 'id': report id '1' repeats row 1") != std::string::npos);
}
