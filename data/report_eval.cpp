// Evaluation of report -> triplets against MeSH terms (see report_eval.h).
#include "data/report_eval.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "model/vocab.h"

namespace ms {

static std::string lower_trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r"), e = s.find_last_not_of(" \t\r");
  if (b == std::string::npos) return "";
  std::string out = s.substr(b, e - b + 1);
  for (char& c : out) c = char(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

static std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (c == sep) {
      out.push_back(cur);
      cur.clear();
    } else {
      cur.push_back(c);
    }
  }
  out.push_back(cur);
  return out;
}

MeshTable read_mesh_table(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error(path + ": cannot open the MeSH table");
  MeshTable t;
  std::string line;
  int ln = 0;
  auto anatomy = [&](const std::string& name) {
    if (name == "-") return -1;
    int a = anatomy_index(name);
    if (a < 0) throw std::runtime_error(path + ":" + std::to_string(ln) + ": unknown anatomy '" + name + "'");
    return a;
  };
  while (std::getline(f, line)) {
    ++ln;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    auto c = split(line, '\t');
    if (c[0] == "obs" && c.size() == 5) {
      MeshObsRow r;
      r.heading = lower_trim(c[1]);
      r.qualifier = lower_trim(c[2]);
      r.zone = lower_trim(c[4]);
      for (const auto& alt : split(c[3], '|')) {
        auto at = split(alt, '@');
        int o = observation_index(at[0]);
        if (o < 0) throw std::runtime_error(path + ":" + std::to_string(ln) + ": unknown observation '" + at[0] + "'");
        std::vector<int> rows;
        if (at.size() == 2)
          for (const auto& a : split(at[1], '+')) rows.push_back(anatomy(a));
        r.alts.push_back({o, rows});
      }
      r.concept = r.alts[0].first;
      t.obs.push_back(r);
    } else if (c[0] == "zone" && c.size() == 5) {
      t.zones.push_back({lower_trim(c[1]), anatomy(c[2]), anatomy(c[3]), anatomy(c[4])});
    } else {
      throw std::runtime_error(path + ":" + std::to_string(ln) +
                               ": expected 'obs<TAB>heading<TAB>qualifier<TAB>alternatives<TAB>zone' or "
                               "'zone<TAB>qualifier<TAB>left<TAB>right<TAB>both'");
    }
  }
  for (const auto& r : t.obs) {
    if (r.zone == "-") continue;
    bool found = false;
    for (const auto& z : t.zones) found = found || z.qualifier == r.zone;
    if (!found) throw std::runtime_error(path + ": default zone '" + r.zone + "' of '" + r.heading + "' has no zone row");
  }
  return t;
}

MeshGold mesh_gold(const MeshTable& table, const std::string& cell) {
  MeshGold g;
  std::string all = lower_trim(cell);
  if (all.empty() || all == "no indexing") {
    g.indexed = false;
    return g;
  }
  g.normal = all == "normal";
  std::map<int, std::set<int>> concepts;
  for (const auto& term : split(all, '|')) {
    auto parts = split(term, '/');
    std::string heading = lower_trim(parts[0]);
    std::vector<std::string> quals;
    for (size_t i = 1; i < parts.size(); ++i) quals.push_back(lower_trim(parts[i]));
    auto has = [&](const std::string& q) { return std::find(quals.begin(), quals.end(), q) != quals.end(); };
    for (const auto& r : table.obs) {
      if (r.heading != heading || !(r.qualifier == "*" || has(r.qualifier))) continue;
      auto& lm = concepts[r.concept];
      const MeshZoneRow* zone = nullptr;
      for (const auto& z : table.zones)
        if (!zone && has(z.qualifier)) zone = &z;
      if (!zone && r.zone != "-")
        for (const auto& z : table.zones)
          if (!zone && z.qualifier == r.zone) zone = &z;
      if (zone) {
        int a = has("left") && !has("right") ? zone->left : has("right") && !has("left") ? zone->right : zone->both;
        if (a >= 0) lm.insert(a);
      }
    }
  }
  for (const auto& [c, lm] : concepts) g.concepts.push_back({c, std::vector<int>(lm.begin(), lm.end())});
  return g;
}

namespace {

struct Counts {
  int64_t tp = 0, fp = 0, fn = 0;
  double p() const { return tp + fp ? double(tp) / double(tp + fp) : 0.0; }
  double r() const { return tp + fn ? double(tp) / double(tp + fn) : 0.0; }
  double f1() const { return 2 * tp + fp + fn ? 2.0 * double(tp) / double(2 * tp + fp + fn) : 0.0; }
};

char side_of(int a) {
  std::string n = kAnatomies[size_t(a)];
  if (n.find("left") != std::string::npos) return 'L';
  if (n.find("right") != std::string::npos) return 'R';
  return 'B';
}

struct SetResult {
  int64_t reports = 0, normal_reports = 0;
  std::map<int, int64_t> positives;       // concept -> gold positives
  Counts per[3][kNumPathologies];         // mode x concept
  int64_t normal_clean[3] = {0, 0, 0};         // no finding present (expand / aerate allowed)
  int64_t normal_clean_strict[3] = {0, 0, 0};  // no 1 in columns 8-73 at all
  Counts anat[kNumPathologies], side[kNumPathologies];
  std::vector<int> concepts;              // judged concepts, by positives desc
  double macro[3] = {0, 0, 0};
  int n_macro = 0;
};

}  // namespace

MeshEvaluation evaluate_mesh(const MeshTable& table, const std::vector<std::string>& ids,
                             const std::vector<std::string>& mesh,
                             const std::vector<std::vector<std::vector<float>>>& matrices, int64_t heldout_above) {
  const int unspecified = anatomy_index_or_throw("unspecified"), other = anatomy_index_or_throw("other");
  // "Well expanded", "well aerated": the two finding columns that reports fill with a normal
  // statement; the normal-report check does not count them as findings (also reported strict).
  const int expand = observation_index_or_throw("expand"), aerate = observation_index_or_throw("aerate");
  // Alternatives per concept (union over its rows).
  std::map<int, std::vector<std::pair<int, std::vector<int>>>> alts;
  for (const auto& r : table.obs)
    for (const auto& a : r.alts) {
      auto& v = alts[r.concept];
      if (std::find(v.begin(), v.end(), a) == v.end()) v.push_back(a);
    }
  auto predicted = [&](const std::vector<float>& M, int concept, std::set<int>* rows) {
    bool any = false;
    for (const auto& [o, allowed] : alts[concept])
      for (int a = 0; a < kNumAnatomies; ++a) {
        if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), a) == allowed.end()) continue;
        if (M[size_t(a) * kNumPathologies + size_t(o)] == 1.f) {
          any = true;
          if (rows && a != unspecified && a != other) rows->insert(a);
        }
      }
    return any;
  };
  SetResult sets[2];  // 0 development (or all), 1 held out
  const bool two = heldout_above >= 0;
  for (size_t r = 0; r < ids.size(); ++r) {
    MeshGold g = mesh_gold(table, mesh[r]);
    if (!g.indexed) continue;
    int s = 0;
    if (two) {
      char* end = nullptr;
      long long v = std::strtoll(ids[r].c_str(), &end, 10);
      if (end == ids[r].c_str() || *end)
        throw std::runtime_error("report id '" + ids[r] + "' is not a number (needed by --heldout-above)");
      s = v > heldout_above ? 1 : 0;
    }
    SetResult& S = sets[s];
    ++S.reports;
    std::map<int, std::vector<int>> gold(g.concepts.begin(), g.concepts.end());
    for (const auto& [c, lm] : gold) S.positives[c] += 1;
    for (const auto& [c, v] : alts) {
      bool gp = gold.count(c) != 0;
      for (int m = 0; m < 3; ++m) {
        bool pp = predicted(matrices[size_t(m)][r], c, nullptr);
        Counts& k = S.per[m][c];
        if (gp && pp) ++k.tp;
        else if (pp) ++k.fp;
        else if (gp) ++k.fn;
      }
      if (gp && !gold[c].empty()) {  // anatomy attachment, full mode
        std::set<int> rows;
        predicted(matrices[2][r], c, &rows);
        std::set<int> gl(gold[c].begin(), gold[c].end());
        for (int a : rows) (gl.count(a) ? S.anat[c].tp : S.anat[c].fp) += 1;
        for (int a : gl) S.anat[c].fn += rows.count(a) ? 0 : 1;
        std::set<char> ps, gs;
        for (int a : rows) ps.insert(side_of(a));
        for (int a : gl) gs.insert(side_of(a));
        for (char x : ps) (gs.count(x) ? S.side[c].tp : S.side[c].fp) += 1;
        for (char x : gs) S.side[c].fn += ps.count(x) ? 0 : 1;
      }
    }
    if (g.normal) {
      ++S.normal_reports;
      for (int m = 0; m < 3; ++m) {
        const auto& M = matrices[size_t(m)][r];
        bool clean = true, strict = true;
        for (int a = 0; a < kNumAnatomies; ++a)
          for (int o = 8; o <= 73; ++o)
            if (M[size_t(a) * kNumPathologies + size_t(o)] == 1.f) {
              strict = false;
              if (o != expand && o != aerate) clean = false;
            }
        S.normal_clean[m] += clean;
        S.normal_clean_strict[m] += strict;
      }
    }
  }
  const int ref = two ? 1 : 0;
  for (auto& S : sets) {
    for (const auto& [c, v] : alts) S.concepts.push_back(c);
    std::stable_sort(S.concepts.begin(), S.concepts.end(), [&](int a, int b) {
      return sets[ref].positives[a] > sets[ref].positives[b];
    });
    for (int c : S.concepts)
      if (S.positives[c] >= 20) {
        ++S.n_macro;
        for (int m = 0; m < 3; ++m) S.macro[m] += S.per[m][c].f1();
      }
    for (int m = 0; m < 3; ++m) S.macro[m] = S.n_macro ? S.macro[m] / S.n_macro : 0.0;
  }
  // Concepts no row names first: MeSH cannot judge them.
  std::vector<std::string> not_judged;
  for (int o = 0; o < kNumPathologies; ++o)
    if (!alts.count(o)) not_judged.push_back(kObservations[size_t(o)]);

  const char* mode_names[3] = {"keyword", "negation_1line", "full"};
  nlohmann::ordered_json j;
  auto set_json = [&](const SetResult& S) {
    nlohmann::ordered_json s;
    s["reports"] = S.reports;
    s["normal_reports"] = S.normal_reports;
    s["macro_f1_concepts"] = S.n_macro;
    for (int m = 0; m < 3; ++m) {
      nlohmann::ordered_json mj;
      mj["macro_f1"] = S.macro[m];
      mj["normal_clean"] = S.normal_clean[m];
      mj["normal_clean_share"] = S.normal_reports ? double(S.normal_clean[m]) / double(S.normal_reports) : 0.0;
      mj["normal_clean_strict"] = S.normal_clean_strict[m];
      nlohmann::ordered_json pc = nlohmann::ordered_json::object();
      for (int c : S.concepts) {
        const Counts& k = S.per[m][c];
        pc[kObservations[size_t(c)]] = {{"positives", S.positives.count(c) ? S.positives.at(c) : 0},
                                        {"tp", k.tp}, {"fp", k.fp}, {"fn", k.fn},
                                        {"precision", k.p()}, {"recall", k.r()}, {"f1", k.f1()}};
      }
      mj["per_concept"] = pc;
      s[mode_names[m]] = mj;
    }
    nlohmann::ordered_json an = nlohmann::ordered_json::object();
    for (int c : S.concepts) {
      const Counts &k = S.anat[c], &sd = S.side[c];
      if (k.tp + k.fp + k.fn == 0) continue;
      an[kObservations[size_t(c)]] = {{"tp", k.tp}, {"fp", k.fp}, {"fn", k.fn}, {"f1", k.f1()},
                                      {"side_tp", sd.tp}, {"side_fp", sd.fp}, {"side_fn", sd.fn}, {"side_f1", sd.f1()}};
    }
    s["anatomy"] = an;
    return s;
  };
  if (two) {
    j["heldout_above"] = heldout_above;
    j["development"] = set_json(sets[0]);
    j["heldout"] = set_json(sets[1]);
  } else {
    j["all"] = set_json(sets[0]);
  }
  j["not_judged"] = not_judged;

  // Markdown.
  const SetResult& H = sets[ref];
  std::ostringstream md;
  char buf[512];
  md << "Held-out set: " << (two ? "report_id > " + std::to_string(heldout_above) : std::string("all reports"))
     << ", " << H.reports << " indexed reports (" << H.normal_reports << " MeSH \"normal\").\n\n";
  md << "| concept | pos | keyword P / R / F1 | + 1-line negation P / R / F1 | full P / R / F1 | anatomy n, F1 "
        "(side F1) |\n|---|---:|---|---|---|---|\n";
  for (int c : H.concepts) {
    int64_t pos = H.positives.count(c) ? H.positives.at(c) : 0;
    if (pos == 0 && H.per[2][c].fp == 0) continue;
    std::string cells[3];
    for (int m = 0; m < 3; ++m) {
      const Counts& k = H.per[m][c];
      std::snprintf(buf, sizeof buf, "%.2f / %.2f / %.2f", k.p(), k.r(), k.f1());
      cells[m] = buf;
    }
    const Counts &a = H.anat[c], &sd = H.side[c];
    std::string an = "";
    if (a.tp + a.fn > 0) {
      std::snprintf(buf, sizeof buf, "%lld, %.2f (%.2f)", static_cast<long long>(a.tp + a.fn), a.f1(), sd.f1());
      an = buf;
    }
    std::snprintf(buf, sizeof buf, "| %s%s | %lld | %s | %s | %s | %s |\n", kObservations[size_t(c)],
                  pos >= 20 ? "" : " *", static_cast<long long>(pos), cells[0].c_str(), cells[1].c_str(),
                  cells[2].c_str(), an.c_str());
    md << buf;
  }
  std::snprintf(buf, sizeof buf,
                "\nMacro-F1 over the %d concepts with >= 20 positives (* marks the others): keyword %.3f, "
                "1-line negation %.3f, full %.3f.\n",
                H.n_macro, H.macro[0], H.macro[1], H.macro[2]);
  md << buf;
  auto share = [&](const SetResult& S, int m) {
    return S.normal_reports ? double(S.normal_clean[m]) / double(S.normal_reports) : 0.0;
  };
  std::snprintf(buf, sizeof buf,
                "MeSH-\"normal\" reports with no finding present: keyword %.3f, 1-line negation %.3f, full %.3f "
                "(%lld of %lld).\n",
                share(H, 0), share(H, 1), share(H, 2), static_cast<long long>(H.normal_clean[2]),
                static_cast<long long>(H.normal_reports));
  md << buf;
  std::snprintf(buf, sizeof buf,
                "(\"Well expanded\" / \"well aerated\" fill the expand / aerate columns, which the check above "
                "does not count; counting them too, full: %.3f.)\n",
                H.normal_reports ? double(H.normal_clean_strict[2]) / double(H.normal_reports) : 0.0);
  md << buf;
  if (two) {
    const SetResult& D = sets[0];
    std::snprintf(buf, sizeof buf,
                  "Development set (report_id <= %lld, %lld reports): macro-F1 keyword %.3f, 1-line negation %.3f, "
                  "full %.3f; normal clean %.3f / %.3f / %.3f.\n",
                  static_cast<long long>(heldout_above), static_cast<long long>(D.reports), D.macro[0], D.macro[1],
                  D.macro[2], share(D, 0), share(D, 1), share(D, 2));
    md << buf;
  }
  md << "MeSH cannot judge: ";
  for (size_t i = 0; i < not_judged.size(); ++i) md << (i ? ", " : "") << not_judged[i];
  md << ".\n";
  return {j.dump(1), md.str()};
}

}  // namespace ms
