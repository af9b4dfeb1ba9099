// Report -> triplets -> [51,75] matrix, and the dataset writer (see report_triplets.h).
#include "data/report_triplets.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "data/datasets.h"
#include "data/npy.h"
#include "data/report_eval.h"
#include "engine/rng.h"

namespace fs = std::filesystem;

namespace ms {

namespace {

// Words that may stand between an anatomy phrase and its finding without breaking the link.
bool is_link_word(const ReportToken& t) {
  static const std::set<std::string> k = {"in", "at", "of", "the", "within", "along", "over", "overlying", "involving",
                                          "projecting", "to", "from", "both", "is", "are", "a", "an", "seen",
                                          "noted", "present", "there", "mild", "mildly", "minimal", "small", "large",
                                          "moderate", "focal", "patchy", "streaky", "linear", "subsegmental",
                                          "new", "old", "chronic", "stable", "xxxx", "appears", "appear", "with",
                                          "slightly", "somewhat", "again", "partially", "partly", "demonstrates",
                                          "shows", "has", "have", "likely", "residual", "persistent", "increased",
                                          "scattered", "few", "several", "multiple", "calcified", "granulomatous", "venous",
                                          "vascular", "arterial", "central", "diffuse"};
  return !t.punct && k.count(t.norm) != 0;
}

}  // namespace

ReportExtraction extract_report(const std::vector<ReportField>& fields, NegationMode mode) {
  const auto& lex = ReportLexicon::get();
  const int unspecified = anatomy_index_or_throw("unspecified");
  ReportExtraction ex;
  ex.matrix.assign(size_t(kNumAnatomies) * kNumPathologies, -1.f);
  for (int f = 0; f < int(fields.size()); ++f) {
    const std::string& text = fields[size_t(f)].text;
    for (const auto& s : split_report_sentences(text)) {
      const auto& tk = s.tokens;
      auto obs = lex.find_observations(tk, &ex.typo_fixes);
      if (obs.empty()) continue;
      auto status = mention_status(tk, obs, mode);
      auto anat = lex.find_anatomies(tk);
      // clause id of each token
      std::vector<int> clause(tk.size());
      int c = 0;
      for (size_t i = 0; i < tk.size(); ++i) {
        if (is_clause_break(tk[i])) ++c;
        clause[i] = c;
      }
      // Per token: a link word or not, inside some finding or not, as prefix counts, so that
      // "only link words between" is O(1) per anatomy and finding (walking each span and every
      // finding per token was O(n^3): 34 KB of "right lower lobe left upper lobe effusion" took
      // 1.1 s, found after the triplets fuzzer's run-on sentence, session 5).
      std::vector<int> not_link(tk.size() + 1, 0), in_finding(tk.size() + 1, 0);
      {
        std::vector<char> covered(tk.size(), 0);
        for (const auto& o : obs)
          for (int i = o.first; i < o.last; ++i) covered[size_t(i)] = 1;
        for (size_t i = 0; i < tk.size(); ++i) {
          not_link[i + 1] = not_link[i] + (is_link_word(tk[i]) ? 0 : 1);
          in_finding[i + 1] = in_finding[i] + covered[i];
        }
      }
      std::vector<std::vector<int>> owned(obs.size());
      for (const auto& a : anat) {
        int best = -1, best_dist = 1 << 30;
        bool best_strict = false;
        for (size_t m = 0; m < obs.size(); ++m) {
          const auto& o = obs[m];
          if (clause[size_t(o.first)] != clause[size_t(a.first)]) continue;
          int lo = std::min(o.last, a.last), hi = std::max(o.first, a.first);
          int dist = std::max(0, hi - lo);
          // strict: overlapping ("low lung volumes", "pleural effusion"), or only link words
          // between (no other finding, no "and"/"or"/","); the span [lo, hi) lies outside o, so
          // any finding in it is another one
          const bool strict = dist == 0 || (not_link[size_t(hi)] == not_link[size_t(lo)] &&
                                            in_finding[size_t(hi)] == in_finding[size_t(lo)]);
          // Ties go to the finding after the anatomy ("left base atelectasis", "pulmonary edema").
          bool after = o.first >= a.last;
          if ((strict && !best_strict) || (strict == best_strict && (dist < best_dist || (dist == best_dist && after)))) {
            best = int(m);
            best_dist = dist;
            best_strict = strict;
          }
        }
        if (best >= 0) owned[size_t(best)].push_back(a.anatomy);
      }
      // Findings joined by "and", adjacent, or with only the other's anatomy between share its
      // anatomy: "left base opacity and atelectasis", "calcified lingular granuloma". A list
      // (',' or "or": "rib fractures, pneumothorax") does not.
      std::vector<char> in_anatomy(tk.size(), 0);
      for (const auto& a : anat)
        for (int i = a.first; i < a.last; ++i) in_anatomy[size_t(i)] = 1;
      for (size_t m = 0; m < obs.size(); ++m) {
        if (!owned[m].empty()) continue;
        for (int dir : {1, -1}) {
          int k = int(m) + dir;
          if (k < 0 || k >= int(obs.size()) || owned[size_t(k)].empty()) continue;
          int lo = dir < 0 ? obs[size_t(k)].last : obs[m].last;
          int hi = dir < 0 ? obs[m].first : obs[size_t(k)].first;
          bool joined = hi - lo <= 4;
          for (int i = lo; i < hi && joined; ++i)
            joined = tk[size_t(i)].norm == "and" || in_anatomy[size_t(i)] || tk[size_t(i)].anon;
          if (joined) {
            owned[m] = owned[size_t(k)];
            break;
          }
        }
      }
      for (size_t m = 0; m < obs.size(); ++m) {
        std::vector<int> rows = owned[m];
        if (rows.empty()) rows.push_back(unspecified);
        std::sort(rows.begin(), rows.end());
        rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
        for (int a : rows) {
          ReportTriplet t;
          t.anatomy = a;
          t.obs = obs[m].obs;
          t.exists = int(status[m]);
          t.field = f;
          t.begin = tk[size_t(obs[m].first)].begin;
          t.end = tk[size_t(obs[m].last - 1)].end;
          t.sentence_begin = s.begin;
          t.sentence_end = s.end;
          t.source = obs[m].source;
          float& cell = ex.matrix[size_t(a) * kNumPathologies + size_t(t.obs)];
          if (t.exists == 1) cell = 1.f;
          else if (t.exists == 0) cell = std::max(cell, 0.f);
          ex.triplets.push_back(t);
        }
      }
    }
  }
  return ex;
}

std::vector<float> report_matrix(const std::string& text, NegationMode mode) {
  return extract_report({{"text", text}}, mode).matrix;
}

// ---- a report from a matrix -----------------------------------------------------------------

// Anatomy phrases that AGXNet's rules map back to their own row (unspecified: none).
static const char* const kAnatomyPhrase[kNumAnatomies] = {
    "trachea", "left hilum", "right hilum", "hila", "left pleural space", "right pleural space", "pleural space",
    "heart", "heart border", "left hemidiaphragm", "right hemidiaphragm", "diaphragm", "retrocardiac region",
    "left lower lobe", "left upper lobe", "right lower lobe", "right middle lobe", "right upper lobe",
    "left lower lung", "left mid lung", "left upper lung", "left apex", "left lung", "right lower lung",
    "right mid lung", "right upper lung", "right apex", "right lung", "apices", "lung bases",
    "left costophrenic angle", "right costophrenic angle", "costophrenic angles", "cardiophrenic sulcus",
    "mediastinum", "spine", "clavicles", "ribs", "stomach", "right atrium", "right ventricle", "aorta", "svc",
    "interstitium", "parenchymal region", "cavoatrial junction", "cardiopulmonary region", "pulmonary vasculature",
    "lung volumes", "", "chest wall"};

std::string matrix_report(const std::vector<float>& M) {
  if (M.size() != size_t(kNumAnatomies) * kNumPathologies)
    throw std::invalid_argument("matrix_report: expected a [51,75] matrix, got " + std::to_string(M.size()) +
                                " values");
  std::string out;
  for (int a = 0; a < kNumAnatomies; ++a)
    for (int o = 0; o < kNumPathologies; ++o) {
      float v = M[size_t(a) * kNumPathologies + size_t(o)];
      if (v != 1.f && v != 0.f) continue;
      std::string obs = kObservations[size_t(o)];
      if (obs == "tail_abnorm_obs") obs = "granuloma";
      else if (obs == "excluded_obs") obs = "sternotomy";
      else if (obs == "low") obs = "hypoinflation";  // "low" alone is no finding word
      if (!out.empty()) out += ' ';
      out += v == 1.f ? "There is " : "There is no ";
      out += obs;
      if (kAnatomyPhrase[a][0]) out += std::string(" in the ") + kAnatomyPhrase[a];
      out += '.';
    }
  return out;
}

// ---- dataset writer ------------------------------------------------------------------------

static void write_text_file(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(path + ": cannot open for writing");
  f << text;
  if (!f) throw std::runtime_error(path + ": write failed");
}

static std::vector<std::string> split_ids(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  auto flush = [&] {
    size_t b = cur.find_first_not_of(" \t"), e = cur.find_last_not_of(" \t");
    if (b != std::string::npos) out.push_back(cur.substr(b, e - b + 1));
    cur.clear();
  };
  for (char c : s) {
    if (c == '|') flush();
    else cur.push_back(c);
  }
  flush();
  return out;
}

TripletsSummary write_report_triplets(const TripletsOptions& o) {
  if (o.text_columns.empty()) throw std::invalid_argument("--text-columns: give at least one column");
  if (o.valid_frac < 0 || o.test_frac < 0 || o.valid_frac + o.test_frac >= 1)
    throw std::invalid_argument("--valid-frac + --test-frac must be in [0, 1)");
  if (!fs::exists(o.reports_csv)) throw std::runtime_error(o.reports_csv + ": no such file");
  CsvTable csv = read_csv(o.reports_csv);
  if (csv.header.empty() || csv.rows.empty())
    throw std::runtime_error(o.reports_csv + ": empty file (expected a header and at least one report row)");
  std::vector<int> text_cols;
  for (const auto& c : o.text_columns) text_cols.push_back(csv.column(c));
  const int id_col = csv.column(o.id_column);
  const int image_col = o.image_column.empty() ? -1 : csv.column(o.image_column);
  const int64_t N = int64_t(csv.rows.size());

  // Validate: UTF-8 in every field we read, unique non-empty ids.
  std::map<std::string, int64_t> seen;
  for (int64_t r = 0; r < N; ++r) {
    const auto& row = csv.rows[size_t(r)];
    std::vector<int> cols = text_cols;
    cols.push_back(id_col);
    if (image_col >= 0) cols.push_back(image_col);
    for (int c : cols) {
      int64_t bad = first_invalid_utf8(row[size_t(c)]);
      if (bad >= 0)
        throw std::runtime_error(o.reports_csv + ": row " + std::to_string(r + 1) + ", column '" +
                                 csv.header[size_t(c)] + "': not UTF-8 (byte " + std::to_string(bad) + ")");
    }
    const std::string& id = row[size_t(id_col)];
    if (id.empty())
      throw std::runtime_error(o.reports_csv + ": row " + std::to_string(r + 1) + ", column '" + o.id_column +
                               "': empty report id");
    auto [it, fresh] = seen.emplace(id, r);
    if (!fresh)
      throw std::runtime_error(o.reports_csv + ": row " + std::to_string(r + 1) + ", column '" + o.id_column +
                               "': report id '" + id + "' repeats row " + std::to_string(it->second + 1));
  }

  // Extract.
  TripletsSummary sum;
  sum.n_reports = N;
  std::vector<ReportExtraction> ex(static_cast<size_t>(N));
  std::vector<std::vector<ReportField>> fields(static_cast<size_t>(N));
  auto t0 = std::chrono::steady_clock::now();
  for (int64_t r = 0; r < N; ++r) {
    for (int c : text_cols) fields[size_t(r)].push_back({csv.header[size_t(c)], csv.rows[size_t(r)][size_t(c)]});
    ex[size_t(r)] = extract_report(fields[size_t(r)], o.mode);
  }
  sum.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (const auto& e : ex) {
    if (e.triplets.empty()) ++sum.n_empty;
    sum.typo_fixes += e.typo_fixes;
    for (const auto& t : e.triplets) {
      ++sum.n_triplets;
      (t.exists == 1 ? sum.n_present : t.exists == 0 ? sum.n_absent : sum.n_uncertain) += 1;
    }
  }

  // Split by report: a seeded shuffle; the first test_frac -> test, next valid_frac -> valid.
  std::vector<int64_t> order(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) order[size_t(i)] = i;
  Rng rng(o.seed, 0x7269706c);  // stream "ripl"
  order = rng.sample(order, N);
  const int64_t n_test = int64_t(double(N) * o.test_frac + 0.5), n_valid = int64_t(double(N) * o.valid_frac + 0.5);
  std::vector<int> split(static_cast<size_t>(N), 0);  // 0 train, 1 valid, 2 test
  for (int64_t k = 0; k < N; ++k) split[size_t(order[size_t(k)])] = k < n_test ? 2 : k < n_test + n_valid ? 1 : 0;

  fs::create_directories(o.out_dir);
  // Matrix.
  {
    std::vector<double> m(size_t(N) * kMatrixSize);
    for (int64_t r = 0; r < N; ++r)
      std::copy(ex[size_t(r)].matrix.begin(), ex[size_t(r)].matrix.end(), m.begin() + r * kMatrixSize);
    write_npy((fs::path(o.out_dir) / "landmark_observation_adj_mtx.npy").string(),
              {N, int64_t(kNumAnatomies), int64_t(kNumPathologies)}, m.data());
  }
  // Jsons keyed by image (or report id), in csv order.
  nlohmann::ordered_json js[3] = {nlohmann::ordered_json::object(), nlohmann::ordered_json::object(),
                                  nlohmann::ordered_json::object()};
  std::vector<std::vector<std::string>> keys(static_cast<size_t>(N));
  std::set<std::string> all_keys;
  for (int64_t r = 0; r < N; ++r) {
    const auto& row = csv.rows[size_t(r)];
    std::vector<std::string> ids =
        image_col >= 0 ? split_ids(row[size_t(image_col)]) : std::vector<std::string>{row[size_t(id_col)]};
    for (const auto& id : ids) {
      std::string key = o.image_template;
      size_t p = key.find("{}");
      if (p == std::string::npos) key = id;
      else key.replace(p, 2, id);
      if (!all_keys.insert(key).second)
        throw std::runtime_error(o.reports_csv + ": row " + std::to_string(r + 1) + ", column '" +
                                 (image_col >= 0 ? o.image_column : o.id_column) + "': image '" + key +
                                 "' already belongs to another report");
      js[split[size_t(r)]][key] = {{"labels_id", r}, {"report", row[size_t(id_col)]}};
      keys[size_t(r)].push_back(key);
      ++sum.n_images;
      (split[size_t(r)] == 0 ? sum.n_train : split[size_t(r)] == 1 ? sum.n_valid : sum.n_test) += 1;
    }
  }
  const char* names[3] = {"train.json", "valid.json", "test.json"};
  for (int s = 0; s < 3; ++s) write_text_file((fs::path(o.out_dir) / names[s]).string(), js[s].dump(1) + "\n");
  // triplets.jsonl
  {
    std::string out;
    const char* split_name[3] = {"train", "valid", "test"};
    for (int64_t r = 0; r < N; ++r) {
      nlohmann::ordered_json j;
      j["id"] = csv.rows[size_t(r)][size_t(id_col)];
      j["labels_id"] = r;
      j["split"] = split_name[split[size_t(r)]];
      j["images"] = keys[size_t(r)];
      nlohmann::ordered_json arr = nlohmann::ordered_json::array();
      for (const auto& t : ex[size_t(r)].triplets) {
        const std::string& text = fields[size_t(r)][size_t(t.field)].text;
        arr.push_back({{"anatomy", kAnatomies[size_t(t.anatomy)]},
                       {"observation", kObservations[size_t(t.obs)]},
                       {"exists", t.exists},
                       {"column", fields[size_t(r)][size_t(t.field)].name},
                       {"span", {t.begin, t.end}},
                       {"text", text.substr(size_t(t.begin), size_t(t.end - t.begin))},
                       {"sentence", text.substr(size_t(t.sentence_begin), size_t(t.sentence_end - t.sentence_begin))},
                       {"sentence_span", {t.sentence_begin, t.sentence_end}},
                       {"source", t.source}});
      }
      j["triplets"] = arr;
      out += j.dump() + "\n";
    }
    write_text_file((fs::path(o.out_dir) / "triplets.jsonl").string(), out);
  }
  // Evaluation against MeSH terms.
  if (!o.mesh_table.empty()) {
    const int mesh_col = csv.column(o.mesh_column);
    std::vector<std::string> ids, mesh;
    std::vector<std::vector<std::vector<float>>> matrices(3, std::vector<std::vector<float>>(size_t(N)));
    for (int64_t r = 0; r < N; ++r) {
      ids.push_back(csv.rows[size_t(r)][size_t(id_col)]);
      mesh.push_back(csv.rows[size_t(r)][size_t(mesh_col)]);
      matrices[2][size_t(r)] = ex[size_t(r)].matrix;
      matrices[0][size_t(r)] = extract_report(fields[size_t(r)], NegationMode::kKeyword).matrix;
      matrices[1][size_t(r)] = extract_report(fields[size_t(r)], NegationMode::kSimpleNegation).matrix;
    }
    MeshTable table = read_mesh_table(o.mesh_table);
    MeshEvaluation ev = evaluate_mesh(table, ids, mesh, matrices, o.heldout_above);
    write_text_file((fs::path(o.out_dir) / "eval.json").string(), ev.json + "\n");
    write_text_file((fs::path(o.out_dir) / "eval.md").string(), ev.markdown);
    sum.eval_text = ev.markdown;
  }
  return sum;
}

}  // namespace ms
