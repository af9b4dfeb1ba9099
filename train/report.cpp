// The run report (train/report.h): reads a run folder, draws its curves with train/svg_plot.h and
// writes one HTML page with everything inlined.
#include "train/report.h"

#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <stdexcept>

#include "data/datasets.h"
#include "train/metrics.h"
#include "train/svg_plot.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace ms {

std::string base64_encode(const std::string& in) {
  static const char* A = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t v = uint32_t(uint8_t(in[i])) << 16 | uint32_t(uint8_t(in[i + 1])) << 8 | uint8_t(in[i + 2]);
    out += A[v >> 18], out += A[(v >> 12) & 63], out += A[(v >> 6) & 63], out += A[v & 63];
  }
  if (i + 1 == in.size()) {
    const uint32_t v = uint32_t(uint8_t(in[i])) << 16;
    out += A[v >> 18], out += A[(v >> 12) & 63], out += "==";
  } else if (i + 2 == in.size()) {
    const uint32_t v = uint32_t(uint8_t(in[i])) << 16 | uint32_t(uint8_t(in[i + 1])) << 8;
    out += A[v >> 18], out += A[(v >> 12) & 63], out += A[(v >> 6) & 63], out += '=';
  }
  return out;
}

namespace {

std::optional<std::string> read_file(const fs::path& p) {
  std::error_code ec;
  if (!fs::is_regular_file(p, ec)) return std::nullopt;
  std::ifstream f(p, std::ios::binary);
  if (!f) return std::nullopt;
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

std::optional<json> read_json(const fs::path& p) {
  auto t = read_file(p);
  if (!t) return std::nullopt;
  try {
    return json::parse(*t);
  } catch (const std::exception& e) {
    throw std::runtime_error(p.string() + ": not valid JSON (" + e.what() + ")");
  }
}

std::string esc(const std::string& s) { return xml_escape(s); }
std::string num(double v, int digits = 4) { return std::isfinite(v) ? fmt::format("{:.{}f}", v, digits) : "–"; }

// ---- metrics.jsonl ----------------------------------------------------------------------------

const char* kLossTerms[] = {"loss", "loss_ce_pathology", "loss_cl_pathology", "loss_ce_anatomy", "loss_cl_anatomy",
                            "loss_ap"};
const char* kLossTitles[] = {"Total loss",
                             "Pathology existence (cross-entropy)",
                             "Pathology ProtoCL (contrastive)",
                             "Anatomy existence (cross-entropy)",
                             "Anatomy ProtoCL (contrastive)",
                             "Intra-image contrast (ICL)"};

struct Curves {
  std::vector<double> step, lr, ips;
  std::map<std::string, std::vector<double>> term;  // per step
  std::vector<double> epoch, epoch_step, epoch_seconds;
  std::map<std::string, std::vector<double>> train_mean, valid_mean;  // per epoch (NaN when absent)
  size_t lines = 0;
};

Curves read_metrics(const fs::path& p, const std::string& text) {
  Curves c;
  std::istringstream in(text);
  std::string line;
  size_t ln = 0;
  auto val = [](const json& j, const char* k) {
    return j.contains(k) && j[k].is_number() ? j[k].get<double>() : std::nan("");
  };
  while (std::getline(in, line)) {
    ++ln;
    if (line.empty()) continue;
    json j;
    try {
      j = json::parse(line);
    } catch (const std::exception& e) {
      throw std::runtime_error(fmt::format("{}: line {}: not valid JSON ({})", p.string(), ln, e.what()));
    }
    ++c.lines;
    const std::string type = j.value("type", "");
    if (type == "step") {
      c.step.push_back(val(j, "step"));
      c.lr.push_back(val(j, "lr"));
      c.ips.push_back(val(j, "images_per_s"));
      for (const char* t : kLossTerms) c.term[t].push_back(val(j, t));
    } else if (type == "epoch") {
      c.epoch.push_back(val(j, "epoch"));
      c.epoch_step.push_back(val(j, "step"));
      c.epoch_seconds.push_back(val(j, "seconds"));
      for (const char* t : kLossTerms) {
        c.train_mean[t].push_back(j.contains("train") ? val(j["train"], t) : std::nan(""));
        c.valid_mean[t].push_back(j.contains("valid") ? val(j["valid"], t) : std::nan(""));
      }
    }
  }
  // A resumed run appends the steps it redid: keep the last record of each step, in step order.
  std::map<double, size_t> last;
  for (size_t i = 0; i < c.step.size(); ++i) last[c.step[i]] = i;
  if (last.size() != c.step.size()) {
    Curves d = c;
    d.step.clear(), d.lr.clear(), d.ips.clear();
    for (auto& [k, v] : d.term) v.clear();
    for (auto& [s, i] : last) {
      d.step.push_back(c.step[i]), d.lr.push_back(c.lr[i]), d.ips.push_back(c.ips[i]);
      for (const char* t : kLossTerms) d.term[t].push_back(c.term[t][i]);
    }
    c = d;
  }
  return c;
}

bool any_finite(const std::vector<double>& v) {
  return std::any_of(v.begin(), v.end(), [](double x) { return std::isfinite(x); });
}

// ---- the page --------------------------------------------------------------------------------

const char* kCss = R"(
body{font-family:"DejaVu Sans",Helvetica,Arial,sans-serif;font-size:14px;color:#1b1b1b;margin:0;background:#f4f5f7}
main{max-width:1320px;margin:0 auto;padding:18px 28px 40px}
h1{font-size:24px;margin:8px 0 2px} h2{font-size:19px;margin:30px 0 8px;border-bottom:2px solid #d5d9e0;padding-bottom:4px}
h3{font-size:15px;margin:16px 0 6px}
.sub{color:#555;margin-bottom:14px}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}
.card{background:white;border:1px solid #d5d9e0;border-radius:6px;padding:8px 14px;min-width:120px}
.card .v{font-size:21px;font-weight:bold} .card .k{color:#555;font-size:12px}
.figs{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;background:white;border:1px solid #d5d9e0;border-radius:6px;padding:6px}
figcaption{font-size:12px;color:#444;max-width:600px;padding:2px 4px}
table{border-collapse:collapse;background:white;font-size:13px}
th,td{border:1px solid #d5d9e0;padding:3px 9px;text-align:right} th{background:#eef0f4} td.l,th.l{text-align:left}
tr.mean td{font-weight:bold;background:#f7f7fa}
.track{display:inline-block;position:relative;width:100px;height:9px;background:#e8eaee;vertical-align:middle;margin-right:6px}
.track::after{content:"";position:absolute;left:50px;top:-2px;width:1px;height:13px;background:#444}
.bar{display:block;height:9px}
pre{background:white;border:1px solid #d5d9e0;padding:8px;font-size:12px;overflow:auto;max-height:420px}
.note{color:#7a4b00;background:#fff6e0;border:1px solid #f0d9a0;padding:6px 10px;border-radius:4px;margin:6px 0}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(250px,1fr));gap:10px}
.gallery img{width:100%;image-rendering:pixelated}
.att td,.att th{border:none;padding:2px 4px;text-align:center;font-size:12px} .att img{width:150px;image-rendering:pixelated}
.hit{color:#1a7f37;font-weight:bold} .miss{color:#b42318;font-weight:bold}
)";

// After loading, the page counts its decoded pictures and laid-out figures into two body attributes
// (the headless-browser test reads them from --dump-dom). Nothing else runs; nothing is fetched.
const char* kLoadCheck =
    "<script>addEventListener('load',function(){var i=0,s=0;"
    "for(var im of document.images)if(im.complete&&im.naturalWidth>0)i++;"
    "for(var g of document.querySelectorAll('svg'))if(g.getBBox().width>0)s++;"
    "document.body.setAttribute('data-images-ok',i);document.body.setAttribute('data-svgs-ok',s);});</script>\n";

class Page {
 public:
  ReportResult info;
  std::string body;
  int plot_id = 0;

  void figure(const std::vector<PlotSeries>& s, PlotOptions o, const std::string& caption = "") {
    o.id = fmt::format("fig{}", plot_id++);
    info.figures.push_back(o.title);
    body += "<figure>" + svg_line_plot(s, o);
    if (!caption.empty()) body += "<figcaption>" + caption + "</figcaption>";
    body += "</figure>\n";
  }
  // An <img> with the PNG inlined; false when the file cannot be read.
  bool image(const fs::path& p, const std::string& alt, const std::string& extra = "") {
    auto b = read_file(p);
    if (!b || b->size() < 8 || b->compare(1, 3, "PNG") != 0) return false;
    body += fmt::format("<img src=\"data:image/png;base64,{}\" alt=\"{}\"{}>", base64_encode(*b), esc(alt), extra);
    ++info.images;
    return true;
  }
  void note(const std::string& text) {
    body += "<p class=\"note\">" + esc(text) + "</p>\n";
    info.notes.push_back(text);
  }
};

// A path written by a command (relative to where it ran) or relative to the run folder.
std::optional<fs::path> find_file(const fs::path& run, const std::string& p) {
  std::error_code ec;
  if (p.empty()) return std::nullopt;
  const fs::path f(p);  // e.g. demo/heatmaps/x.png written from the repo root, read from elsewhere
  for (fs::path c : {f, run / f, run / f.filename(), run.parent_path() / f.parent_path().filename() / f.filename()})
    if (fs::is_regular_file(c, ec)) return c;
  return std::nullopt;
}

void training_section(Page& pg, const fs::path& run) {
  pg.body += "<h2 id=\"training\">Training</h2>\n";
  const fs::path mp = run / "metrics.jsonl";
  auto text = read_file(mp);
  if (!text) return pg.note("No metrics.jsonl in this folder: the loss curves come from `medslip pretrain --out RUN`.");
  Curves c = read_metrics(mp, *text);
  if (c.step.empty() && c.epoch.empty()) return pg.note("metrics.jsonl has no step or epoch records yet.");
  const double steps_per_epoch = c.epoch_step.size() >= 2 ? c.epoch_step[1] - c.epoch_step[0]
                                 : !c.epoch_step.empty()  ? c.epoch_step[0]
                                                          : 0;
  const std::string xlabel = steps_per_epoch > 0
                                 ? fmt::format("optimiser step ({:.0f} per epoch)", steps_per_epoch)
                                 : "optimiser step";
  pg.body += "<p>Per-step training losses (thin, light), their mean over each epoch (dots at the epoch's last step) "
             "and the validation loss after each epoch (dashed; eval mode, no dropout). All losses in nats.</p>\n"
             "<div class=\"figs\">\n";
  for (size_t k = 0; k < 6; ++k) {
    const std::string t = kLossTerms[k];
    std::vector<PlotSeries> s;
    const std::string col = plot_palette()[0], vcol = plot_palette()[1];
    if (any_finite(c.term[t])) s.push_back({"train, per step", c.step, c.term[t], col, false, false, 1.0, 0.45});
    if (any_finite(c.train_mean[t])) s.push_back({"train, epoch mean", c.epoch_step, c.train_mean[t], col, false, true, 2.2});
    if (any_finite(c.valid_mean[t])) s.push_back({"validation", c.epoch_step, c.valid_mean[t], vcol, true, true, 2.2});
    if (s.empty()) continue;
    PlotOptions o;
    o.title = fmt::format("{} ({})", kLossTitles[k], t);
    o.xlabel = xlabel;
    o.ylabel = "loss (nats)";
    o.x_from_zero = true;
    o.integer_x = true;
    if (k == 0) o.width = 1190, o.height = 380;  // the page's width (1224 px content at 1280)
    else o.width = 580, o.height = 320;          // two per row
    pg.figure(s, o);
  }
  if (any_finite(c.lr)) {
    PlotOptions o;
    o.title = "Learning-rate schedule (warmup, then cosine)";
    o.xlabel = xlabel;
    o.ylabel = "learning rate";
    o.x_from_zero = o.y_from_zero = true;
    o.legend = false;
    o.width = 580, o.height = 320;
    o.integer_x = true;
    pg.figure({{"lr", c.step, c.lr, plot_palette()[2], false, false, 2.0}}, o);
  }
  if (any_finite(c.ips)) {
    PlotOptions o;
    o.title = "Training throughput (running mean over the epoch)";
    o.xlabel = xlabel;
    o.ylabel = "images / second";
    o.x_from_zero = o.y_from_zero = true;
    o.legend = false;
    o.width = 580, o.height = 320;
    o.integer_x = true;
    pg.figure({{"images/s", c.step, c.ips, plot_palette()[4], false, false, 1.6}}, o);
  }
  pg.body += "</div>\n";
  double secs = 0;
  for (double s : c.epoch_seconds)
    if (std::isfinite(s)) secs += s;
  if (!c.epoch.empty()) {
    pg.body += "<h3>Per epoch</h3><table><tr><th>epoch</th><th>last step</th><th>train loss</th><th>validation loss</th><th>seconds</th></tr>\n";
    for (size_t i = 0; i < c.epoch.size(); ++i)
      pg.body += fmt::format("<tr><td>{:.0f}</td><td>{:.0f}</td><td>{}</td><td>{}</td><td>{:.1f}</td></tr>\n", c.epoch[i],
                             c.epoch_step[i], num(c.train_mean["loss"][i]), num(c.valid_mean["loss"][i]),
                             c.epoch_seconds[i]);
    pg.body += fmt::format("<tr class=\"mean\"><td class=\"l\" colspan=\"4\">wall time of the epochs</td><td>{:.1f}</td></tr></table>\n", secs);
  }
}

void attention_section(Page& pg, const fs::path& run, int max_epochs) {
  const fs::path dir = run / "attention";
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return;
  // attention/epoch{E}_{i}_{observation}.png
  std::map<int, std::map<std::string, fs::path>> by_epoch;
  std::vector<std::string> columns;
  for (auto& e : fs::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    int ep = -1;
    char rest[256] = {0};
    if (e.path().extension() != ".png" || std::sscanf(n.c_str(), "epoch%d_%255s", &ep, rest) != 2) continue;
    std::string col = fs::path(rest).stem().string();
    by_epoch[ep][col] = e.path();
    if (std::find(columns.begin(), columns.end(), col) == columns.end()) columns.push_back(col);
  }
  if (by_epoch.empty()) return;
  std::sort(columns.begin(), columns.end());
  std::vector<int> epochs;
  for (auto& [k, v] : by_epoch) epochs.push_back(k);
  std::vector<int> shown;  // evenly spaced, first and last included
  const int m = std::min<int>(max_epochs, int(epochs.size()));
  for (int i = 0; i < m; ++i) {
    int idx = m == 1 ? int(epochs.size()) - 1 : int(std::lround(double(i) * (epochs.size() - 1) / (m - 1)));
    if (shown.empty() || shown.back() != epochs[size_t(idx)]) shown.push_back(epochs[size_t(idx)]);
  }
  pg.body += "<h2 id=\"attention\">Attention during pretraining</h2>\n<p>Layer-averaged cross-attention of one "
             "pathology query on fixed validation images after each epoch (jet colours from the map's minimum, blue, "
             "to its maximum, dark red; magenta cross: the maximum). Each column is one image and the observation its "
             "labels mark present.</p>\n<table class=\"att\"><tr><th></th>";
  for (auto& col : columns) {
    std::string label = col;
    std::replace(label.begin(), label.end(), '_', ' ');
    pg.body += "<th>" + esc(label) + "</th>";
  }
  pg.body += "</tr>\n";
  for (int ep : shown) {
    pg.body += fmt::format("<tr><th>epoch {}</th>", ep);
    for (auto& col : columns) {
      pg.body += "<td>";
      auto it = by_epoch[ep].find(col);
      if (it != by_epoch[ep].end()) pg.image(it->second, fmt::format("epoch {} {}", ep, col));
      pg.body += "</td>";
    }
    pg.body += "</tr>\n";
  }
  pg.body += "</table>\n";
}

// Per-class ROC curves from a scores csv (score and label column names per class) and the AUROC /
// max-F1 / ACC table of metrics.h's to_json(ClassificationResult).
void classification_block(Page& pg, const json& m, const std::optional<fs::path>& scores,
                          const std::function<std::pair<std::string, std::string>(const std::string&)>& columns,
                          const std::string& what) {
  std::vector<PlotSeries> roc;
  if (scores) {
    CsvTable t = read_csv(scores->string());
    size_t k = 0;
    for (const auto& c : m["classes"]) {
      if (c.value("skipped", false)) continue;
      const std::string name = c["name"];
      const auto [sc, lc] = columns(name);
      const int si = t.column(sc), li = t.column(lc);
      std::vector<double> s;
      std::vector<int> l;
      for (const auto& row : t.rows) {
        s.push_back(std::stod(row[size_t(si)]));
        l.push_back(int(std::lround(std::stod(row[size_t(li)]))));
      }
      RocCurve r = roc_curve(s, l);
      roc.push_back({fmt::format("{} ({:.3f})", name, c.value("auc", 0.0)), r.fpr, r.tpr, "", k >= 10, false, 1.8});
      ++k;
    }
  }
  pg.body += "<div class=\"figs\">\n";
  if (!roc.empty()) {
    PlotOptions o;
    o.title = "ROC curves per class, " + what + " (legend: AUROC)";
    o.xlabel = "false-positive rate (1 - specificity)";
    o.ylabel = "true-positive rate (sensitivity)";
    o.xmin = o.ymin = -0.015, o.xmax = o.ymax = 1.015;  // a margin, so curves along the edges stay visible
    o.diagonal = true;
    o.width = 760, o.height = std::max(440, 60 + 17 * int(roc.size()));
    pg.figure(roc, o, "Dotted diagonal: chance (AUROC 0.5). Classes 11 and up are dashed.");
  }
  pg.body += "<div><table><tr><th class=\"l\">class</th><th>images</th><th>positives</th><th class=\"l\">AUROC</th>"
             "<th>max F1</th><th>ACC</th><th>threshold</th></tr>\n";
  for (const auto& c : m["classes"]) {
    if (c.value("skipped", false)) {
      pg.body += fmt::format("<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td class=\"l\" colspan=\"4\">left out: {}</td></tr>\n",
                             esc(c.value("name", "")), c.value("n", 0), c.value("positives", 0), esc(c.value("skip_reason", "")));
      continue;
    }
    const double auc = c.value("auc", 0.0);
    // A bar of length AUROC (100 px = 1) on a track with a tick at chance (0.5); below chance in red.
    pg.body += fmt::format("<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td class=\"l\"><span class=\"track\">"
                           "<span class=\"bar\" style=\"width:{:.0f}px;background:{}\"></span></span>{:.3f}</td>"
                           "<td>{:.3f}</td><td>{:.3f}</td><td>{:.3f}</td></tr>\n",
                           esc(c.value("name", "")), c.value("n", 0), c.value("positives", 0), std::clamp(auc, 0.0, 1.0) * 100,
                           auc < 0.5 ? "#d62728" : "#1f77b4", auc, c.value("f1", 0.0), c.value("acc", 0.0),
                           c.value("threshold", 0.0));
  }
  const json mean = m.value("mean", json::object());
  pg.body += fmt::format("<tr class=\"mean\"><td class=\"l\">mean ({} classes)</td><td></td><td></td><td class=\"l\">{:.3f}</td>"
                         "<td>{:.3f}</td><td>{:.3f}</td><td></td></tr></table>\n<p style=\"font-size:12px;color:#555\">Bars: AUROC "
                         "(full width = 1; the tick marks chance, 0.5; red = below chance). F1 and ACC at the threshold "
                         "maximising F1 (spec E.2).</p></div></div>\n",
                         mean.value("classes_used", 0), mean.value("auc", 0.0), mean.value("f1", 0.0), mean.value("acc", 0.0));
}

void zeroshot_section(Page& pg, const fs::path& run, json& summary) {
  pg.body += "<h2 id=\"zeroshot\">Zero-shot classification</h2>\n";
  auto j = read_json(run / "zeroshot.json");
  if (!j) return pg.note("No zeroshot.json in this folder: run `medslip zeroshot --checkpoint ... --books ... --csv ... --out RUN`.");
  const json& m = (*j)["metrics"];
  pg.body += fmt::format("<p>{} images of <code>{}</code> ({} set), scored by the pathology stream: p(present) of the "
                         "mapped observation query. Checkpoint sha256 <code>{}</code>.</p>\n",
                         j->value("n_images", 0), esc((*j)["csv"].value("path", "")), esc(j->value("dataset", "")),
                         esc((*j)["checkpoint"].value("sha256", "").substr(0, 16)));
  const std::string scores_name = j->value("scores_csv", "zeroshot_scores.csv");
  auto sp = find_file(run, scores_name);
  if (!sp) pg.note("No " + scores_name + " beside zeroshot.json: the ROC curves need the per-image scores.");
  classification_block(pg, m, sp, [](const std::string& n) { return std::make_pair("score:" + n, "label:" + n); },
                       "zero-shot");
  summary["mean AUROC"] = fmt::format("{:.3f}", m["mean"].value("auc", 0.0));
}

// Fine-tuning (medslip finetune): validation metric per epoch (valid.jsonl), the test of the best
// checkpoint (test/metrics.json + test/predictions.csv), predicted masks beside the truth.
void finetune_section(Page& pg, const fs::path& run, json& summary) {
  const auto test = read_json(run / "test" / "metrics.json");
  const auto valid_text = read_file(run / "valid.jsonl");
  if (!test && !valid_text) return;
  pg.body += "<h2 id=\"finetune\">Fine-tuning</h2>\n";
  if (valid_text) {
    std::vector<double> ep, val, best_ep, best_val;
    std::string metric = "validation metric";
    std::istringstream in(*valid_text);
    std::string line;
    for (size_t ln = 1; std::getline(in, line); ++ln) {
      if (line.empty()) continue;
      json v;
      try {
        v = json::parse(line);
      } catch (const std::exception& e) {
        throw std::runtime_error(fmt::format("{}: line {}: not valid JSON ({})", (run / "valid.jsonl").string(), ln, e.what()));
      }
      metric = v.value("metric", metric);
      ep.push_back(v.value("epoch", 0.0));
      val.push_back(v.value("value", std::nan("")));
      if (v.value("best", false)) best_ep.push_back(ep.back()), best_val.push_back(val.back());
    }
    const std::string label = metric == "dice" ? "Dice" : metric == "mean_auc" ? "mean AUROC" : metric;
    PlotOptions o;
    o.title = "Validation " + label + " per epoch (best checkpoint so far: red dots)";
    o.xlabel = "epoch";
    o.integer_x = true;
    o.ylabel = label + " (0-1)";
    o.width = 640, o.height = 320;
    PlotSeries a{label, ep, val, plot_palette()[0], false, true, 2.0};
    PlotSeries b{"new best", best_ep, best_val, plot_palette()[3], false, true, 0.0};
    pg.body += "<div class=\"figs\">";
    pg.figure({a, b}, o);
    pg.body += "</div>\n";
  }
  if (!test) return pg.note("No test/metrics.json yet: `medslip finetune` tests the best checkpoint when it finishes.");
  const json& t = *test;
  pg.body += fmt::format("<p>Test of the best checkpoint (epoch {}, validation {}) on {} images of <code>{}</code>; "
                         "mean loss {}.</p>\n",
                         t.value("best_epoch", -1), num(t.value("best_valid", std::nan("")), 4), t.value("images", 0),
                         esc(t.value("csv", "")), num(t.value("loss", std::nan("")), 4));
  if (t.contains("classes")) {
    auto pred = find_file(run, "test/predictions.csv");
    classification_block(pg, t, pred, [](const std::string& n) { return std::make_pair("score_" + n, n); }, "fine-tuned");
    summary["fine-tuned mean AUROC"] = fmt::format("{:.3f}", t["mean"].value("auc", 0.0));
  }
  if (t.contains("dice")) {
    pg.body += fmt::format("<table><tr><th class=\"l\">metric</th><th>value</th></tr>"
                           "<tr><td class=\"l\">Dice (all test images)</td><td>{}</td></tr>"
                           "<tr><td class=\"l\">Dice, images with a mask ({})</td><td>{}</td></tr>"
                           "<tr><td class=\"l\">Dice, images without ({})</td><td>{}</td></tr>"
                           "<tr><td class=\"l\">mean IoU</td><td>{}</td></tr></table>\n",
                           num(t.value("dice", std::nan("")), 4), t.value("num_pos", 0), num(t.value("dice_pos", std::nan("")), 4),
                           t.value("num_neg", 0), num(t.value("dice_neg", std::nan("")), 4), num(t.value("miou", std::nan("")), 4));
    summary["fine-tuned Dice"] = fmt::format("{:.3f}", t.value("dice", 0.0));
    // Predicted masks beside the truth: test/overlays (prediction red, truth outline green) and test/masks.
    std::vector<fs::path> overlays;
    std::error_code ec;
    if (fs::is_directory(run / "test" / "overlays", ec))
      for (auto& e : fs::directory_iterator(run / "test" / "overlays"))
        if (e.path().extension() == ".png") overlays.push_back(e.path());
    std::sort(overlays.begin(), overlays.end());
    if (overlays.empty()) return pg.note("No test/overlays/*.png: set sample_outputs > 0 to see predicted masks.");
    std::map<std::string, std::pair<double, double>> per_image;  // stem -> dice, iou
    if (auto pc = read_file(run / "test" / "predictions.csv")) {
      CsvTable pt = parse_csv_text(*pc, (run / "test" / "predictions.csv").string());
      const int ci = pt.column("image_path"), di = pt.column("dice"), ii = pt.column("iou");
      for (size_t r = 0; r < pt.rows.size(); ++r)
        per_image[fmt::format("{:04d}_{}", r, fs::path(pt.rows[r][size_t(ci)]).stem().string())] = {
            std::stod(pt.rows[r][size_t(di)]), std::stod(pt.rows[r][size_t(ii)])};
    }
    pg.body += "<h3>Predicted masks beside the truth (left: prediction in red, true mask outlined in green; right: the "
               "predicted mask)</h3>\n<div class=\"gallery\">\n";
    for (const auto& p : overlays) {
      const std::string stem = p.stem().string();
      pg.body += "<figure><div style=\"display:flex;gap:4px\"><div style=\"flex:1\">";
      pg.image(p, stem + " overlay");
      pg.body += "</div><div style=\"flex:1\">";
      pg.image(run / "test" / "masks" / p.filename(), stem + " predicted mask");
      pg.body += "</div></div><figcaption>" + esc(stem);
      if (auto it = per_image.find(stem); it != per_image.end())
        pg.body += fmt::format(" — Dice {:.3f}, IoU {:.3f}", it->second.first, it->second.second);
      pg.body += "</figcaption></figure>\n";
    }
    pg.body += "</div>\n";
  }
}

void ground_section(Page& pg, const fs::path& run, int max_overlays, json& summary) {
  pg.body += "<h2 id=\"grounding\">Zero-shot grounding</h2>\n";
  auto j = read_json(run / "ground.json");
  if (!j) return pg.note("No ground.json in this folder: run `medslip ground ... --save-heatmaps DIR --out RUN`.");
  const json& m = (*j)["metrics"];
  const std::string query = (*j)["query"].value("name", "");
  pg.body += fmt::format(
      "<p>Query <b>{}</b> on {} images of <code>{}</code>; {} with boxes. Pointing game: the map's maximum falls in a "
      "box.</p>\n<table><tr><th class=\"l\">metric</th><th>value</th></tr>\n"
      "<tr><td class=\"l\">pointing game (hits / positives)</td><td>{:.3f} ({} / {})</td></tr>\n"
      "<tr><td class=\"l\">chance level (box area share)</td><td>{:.3f}</td></tr>\n"
      "<tr><td class=\"l\">IoU at threshold {}</td><td>{:.3f}</td></tr>\n"
      "<tr><td class=\"l\">Dice at threshold {}</td><td>{:.3f}</td></tr></table>\n",
      esc(query), j->value("n_images", 0), esc((*j)["csv"].value("path", "")), m.value("positives", 0),
      m.value("pointing", 0.0), m.value("hits", 0), m.value("positives", 0), m.value("chance", 0.0),
      j->value("threshold", 0.0), m.value("iou", 0.0), j->value("threshold", 0.0), m.value("dice", 0.0));
  if (j->contains("threshold_note")) pg.body += "<p style=\"font-size:12px;color:#555\">" + esc((*j)["threshold_note"]) + "</p>\n";
  summary["pointing game"] = fmt::format("{:.3f}", m.value("pointing", 0.0));
  // Overlays: hits and misses alternately, csv order within each.
  std::vector<const json*> hits, misses, order;
  for (const auto& im : (*j)["images"])
    if (im.contains("heatmap")) (im.value("hit", false) ? hits : misses).push_back(&im);
  for (size_t i = 0; order.size() < size_t(max_overlays) && (i < hits.size() || i < misses.size()); ++i) {
    if (i < hits.size()) order.push_back(hits[i]);
    if (i < misses.size() && order.size() < size_t(max_overlays)) order.push_back(misses[i]);
  }
  if (order.empty())
    return pg.note("ground.json lists no heatmap overlays: run `medslip ground` with --save-heatmaps DIR to see them.");
  pg.body += fmt::format("<h3>Heatmaps of '{}' with the true boxes ({} of {} positives; white: boxes, magenta cross: "
                         "the map's maximum)</h3>\n<div class=\"gallery\">\n",
                         esc(query), order.size(), (*j)["images"].size());
  int missing = 0;
  for (const json* im : order) {
    auto p = find_file(run, im->value("heatmap", ""));
    if (!p) { ++missing; continue; }
    const bool hit = im->value("hit", false);
    pg.body += "<figure>";
    pg.image(*p, im->value("id", ""));
    pg.body += fmt::format("<figcaption>{} — <span class=\"{}\">{}</span>, IoU {:.3f}, Dice {:.3f}</figcaption></figure>\n",
                           esc(im->value("id", "")), hit ? "hit" : "miss", hit ? "hit" : "miss", im->value("iou", 0.0),
                           im->value("dice", 0.0));
  }
  pg.body += "</div>\n";
  if (missing) pg.note(fmt::format("{} overlay PNGs named in ground.json were not found (moved or deleted?).", missing));
}

void config_section(Page& pg, const fs::path& run, const std::optional<json>& record) {
  pg.body += "<h2 id=\"config\">Configuration and reproducibility</h2>\n";
  std::string cfg;
  if (auto t = read_file(run / "config.yaml")) cfg = *t;
  else if (record && record->contains("config") && (*record)["config"].is_string()) cfg = (*record)["config"];
  if (!record) pg.note("No reproducibility.json in this folder (written by `medslip pretrain`).");
  if (record) {
    const json& r = *record;
    auto row = [&](const std::string& k, const std::string& v) {
      pg.body += "<tr><td class=\"l\">" + esc(k) + "</td><td class=\"l\"><code>" + esc(v) + "</code></td></tr>\n";
    };
    auto str = [&](const json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); };
    pg.body += "<table>\n";
    for (const char* k : {"program", "build_flags", "seed", "config_sha256", "train_images", "train_images_sha256",
                          "label_matrix_sha256"})
      if (r.contains(k)) row(k, str(r[k]));
    if (r.contains("platform"))
      for (auto& [k, v] : r["platform"].items()) row("platform." + k, str(v));
    pg.body += "</table>\n";
    if (r.contains("epochs") && !r["epochs"].empty()) {
      pg.body += "<h3>Weights after each epoch</h3><table><tr><th>epoch</th><th class=\"l\">weights sha256</th></tr>\n";
      for (const auto& e : r["epochs"])
        pg.body += fmt::format("<tr><td>{}</td><td class=\"l\"><code>{}</code></td></tr>\n", e.value("epoch", -1),
                               esc(e.value("weights_sha256", "")));
      pg.body += "</table>\n";
    }
  }
  if (!cfg.empty()) pg.body += "<h3>config.yaml (as resolved)</h3><pre>" + esc(cfg) + "</pre>\n";
  if (record) pg.body += "<details><summary>reproducibility.json</summary><pre>" + esc(record->dump(2)) + "</pre></details>\n";
}

}  // namespace

std::string render_report(const ReportOptions& opt, ReportResult* info) {
  const fs::path run(opt.run_dir);
  std::error_code ec;
  if (!fs::is_directory(run, ec)) throw std::runtime_error("report: " + opt.run_dir + ": no such folder");
  Page pg;
  const auto record = read_json(run / "reproducibility.json");
  json summary = json::object();

  pg.body += "<h1>medslip run report: " + esc(fs::absolute(run).lexically_normal().filename().string()) + "</h1>\n";
  {
    std::string sub = esc(fs::absolute(run).lexically_normal().string());
    if (record && record->contains("program")) sub += " · " + esc((*record)["program"].get<std::string>());
    const std::time_t now = std::time(nullptr);
    char when[64];
    std::strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
    pg.body += "<div class=\"sub\">" + sub + " · report written " + when + "</div>\n@@CARDS@@\n";
  }
  training_section(pg, run);
  attention_section(pg, run, opt.max_attention_epochs);
  zeroshot_section(pg, run, summary);
  ground_section(pg, run, opt.max_overlays, summary);
  finetune_section(pg, run, summary);
  config_section(pg, run, record);

  // The at-a-glance cards, now that the sections have read their numbers.
  std::string cards = "<div class=\"cards\">";
  if (auto t = read_file(run / "metrics.jsonl")) {
    Curves c = read_metrics(run / "metrics.jsonl", *t);
    if (!c.step.empty()) cards += fmt::format("<div class=\"card\"><div class=\"v\">{:.0f}</div><div class=\"k\">steps</div></div>", c.step.back());
    if (!c.epoch.empty()) {
      cards += fmt::format("<div class=\"card\"><div class=\"v\">{}</div><div class=\"k\">epochs</div></div>", c.epoch.size());
      cards += fmt::format("<div class=\"card\"><div class=\"v\">{}</div><div class=\"k\">last train loss</div></div>", num(c.train_mean["loss"].back(), 3));
      if (std::isfinite(c.valid_mean["loss"].back()))
        cards += fmt::format("<div class=\"card\"><div class=\"v\">{}</div><div class=\"k\">last validation loss</div></div>", num(c.valid_mean["loss"].back(), 3));
    }
  }
  for (auto& [k, v] : summary.items())
    cards += "<div class=\"card\"><div class=\"v\">" + esc(v.get<std::string>()) + "</div><div class=\"k\">" + esc(k) + "</div></div>";
  cards += "</div>";
  pg.body.replace(pg.body.find("@@CARDS@@"), 9, cards);

  std::string html = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>medslip report: " +
                     esc(fs::absolute(run).lexically_normal().filename().string()) + "</title>\n<style>" + kCss +
                     "</style></head>\n<body><main>\n" + pg.body + "</main>\n" + kLoadCheck + "</body></html>\n";
  pg.info.bytes = html.size();
  if (info) *info = pg.info;
  return html;
}

ReportResult write_report(const ReportOptions& opt) {
  ReportResult r;
  std::string html = render_report(opt, &r);
  r.path = opt.out.empty() ? (fs::path(opt.run_dir) / "report.html").string() : opt.out;
  const std::string tmp = r.path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary);
    f << html;
    if (!f) throw std::runtime_error("report: cannot write " + tmp);
  }
  fs::rename(tmp, r.path);
  return r;
}

}  // namespace ms
