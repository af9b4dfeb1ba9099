// The evaluation jobs of spec §E.1-E.4 / §H.10 (zeroshot, ground) and single-image prediction,
// on top of train/metrics.h (sklearn-exact metrics, score_cal) and data/loader.h (csv order).
#include "train/eval.h"
#include "train/common.h"

#include <CLI/CLI.hpp>

#include <fmt/core.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <stdexcept>

#include "data/loader.h"
#include "data/transforms.h"
#include "model/vocab.h"
#include "engine/autograd.h"
#include "engine/device.h"
#include "engine/io.h"
#include "engine/ops.h"
#include "engine/threads.h"
#include "train/hash.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace ms {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Restores the thread count a job changed, so a job called from a test leaves no trace.
struct ThreadsGuard {
  int prev;
  explicit ThreadsGuard(int n) : prev(num_threads()) {
    if (n < 0) throw UsageError("--threads must be >= 0 (0 = OMP_NUM_THREADS or all cores), got " +
                                           std::to_string(n));
    if (n > 0) set_num_threads(n);
  }
  ~ThreadsGuard() { set_num_threads(prev); }
};

void require_file(const std::string& path, const char* what) {
  if (path.empty()) throw std::invalid_argument(std::string(what) + ": no file given");
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) throw std::runtime_error(std::string(what) + " " + path + ": no such file");
}

// Batches done / total and images/s on stderr: one updating line on a terminal, else a line
// per ~10% so logs stay short.
class Progress {
 public:
  Progress(std::string what, int64_t batches, bool on)
      : what_(std::move(what)), batches_(batches), on_(on), tty_(isatty(2)), t0_(Clock::now()) {}
  void update(int64_t done, int64_t images) {
    if (!on_) return;
    const double s = seconds_since(t0_), rate = s > 0 ? double(images) / s : 0.0;
    const std::string line =
        fmt::format("{}: batch {}/{} ({} images, {:.1f} images/s)", what_, done, batches_, images, rate);
    if (tty_) {
      std::fprintf(stderr, "\r%s", line.c_str());
      if (done == batches_) std::fprintf(stderr, "\n");
    } else if (done == batches_ || done * 10 / batches_ != (done - 1) * 10 / batches_) {
      std::fprintf(stderr, "%s\n", line.c_str());
    }
    std::fflush(stderr);
  }

 private:
  std::string what_;
  int64_t batches_;
  bool on_, tty_;
  Clock::time_point t0_;
};

InferenceModel load_model(const EvalModelOptions& o, Device dev) {
  require_file(o.checkpoint, "--checkpoint");
  require_file(o.books, "--books");
  if (!o.config.empty()) require_file(o.config, "--config");
  InferenceModel im = load_inference_model(o.checkpoint, o.books, o.config, dev, o.strict);
  if (im.cfg.image_res % 16 != 0)
    throw std::invalid_argument(fmt::format("config image_res = {}: must be a multiple of 16 (the trunk's stride)",
                                            im.cfg.image_res));
  return im;
}

json file_entry(const std::string& path) { return {{"path", path}, {"sha256", sha256_file(path)}}; }

// Common head of zeroshot.json / ground.json: what was run on what, with fingerprints.
json run_header(const char* command, const EvalModelOptions& m, const InferenceModel& im, const std::string& csv,
                const std::string& dataset, Device dev) {
  json j;
  j["command"] = command;
  j["checkpoint"] = file_entry(m.checkpoint);
  j["csv"] = file_entry(csv);
  j["books"] = file_entry(m.books);
  if (!im.books_info.empty()) j["books"]["info"] = im.books_info;
  j["config"] = m.config.empty() ? json("checkpoint metadata (or inferred)") : file_entry(m.config);
  j["model"] = {{"backbone", im.cfg.res_base_model}, {"image_res", im.cfg.image_res}};
  j["dataset"] = dataset;
  j["device"] = device_name(dev);
  j["threads"] = num_threads();
  return j;
}

std::string out_folder(const std::string& out_dir, const std::string& checkpoint) {
  std::string d = out_dir.empty() ? parent_dir(checkpoint) : out_dir;
  std::error_code ec;
  fs::create_directories(d, ec);
  if (!fs::is_directory(d)) throw std::runtime_error("--out " + d + ": cannot create the folder");
  return d;
}

// p(class 1) = softmax over the 2 attributes (§E.2) -> [B,Q] on the host.
std::vector<float> existence_probability(const Tensor& logits) {
  std::vector<float> p = softmax(logits, 2).to_vector();  // [B,Q,2]
  std::vector<float> out(p.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) out[i] = p[2 * i + 1];
  return out;
}

// Grey radiograph for an overlay (RGB sources averaged).
Image read_grey(const std::string& path, DicomMode mode) {
  ReadOptions ro;
  ro.keep_grey = true;
  ro.dicom = mode;
  Image im = read_image(path, ro);
  if (im.c == 1) return im;
  Image g(im.w, im.h, 1);
  for (size_t i = 0; i < g.px.size(); ++i)
    g.px[i] = uint8_t((int(im.px[3 * i]) + im.px[3 * i + 1] + im.px[3 * i + 2] + 1) / 3);
  return g;
}

std::string safe_name(const std::string& s) {
  std::string o;
  for (char c : s) o += (std::isalnum(uint8_t(c)) || c == '-' || c == '_' || c == '.') ? c : '_';
  return o.substr(0, 80);
}

// Evaluation batches: every row once, in csv order.
LoaderOptions eval_loader_options(int64_t batch, int size, int workers) {
  LoaderOptions lo;
  lo.batch_size = batch;
  lo.image_size = size;
  lo.shuffle = false;
  lo.drop_last = false;
  lo.num_workers = workers;
  return lo;
}

}  // namespace

void add_model_options(CLI::App& app, EvalModelOptions& m) {
  app.add_option("--checkpoint", m.checkpoint, "weights: our .safetensors (config in its metadata) or the released .pth")
      ->required();
  app.add_option("--books", m.books, "books safetensors (pathology_book [75,T], anatomy_book [51,T])")->required();
  app.add_option("--config", m.config, "model config YAML (default: the checkpoint's metadata)");
  add_device_options(app, m.device, m.tf32);
  app.add_option("--threads", m.threads, "compute threads (default: OMP_NUM_THREADS or all cores)");
  app.add_flag_callback("--non-strict", [&m] { m.strict = false; },
                        "allow missing/unexpected weight names (warned; the reference's RSNA script loads so)");
}

std::vector<float> mean_layer_attention(const std::vector<Tensor>& attn) {
  if (attn.empty()) throw std::invalid_argument("mean_layer_attention: no decoder layers");
  std::vector<float> acc = attn[0].to_vector();
  for (size_t l = 1; l < attn.size(); ++l) {
    if (attn[l].shape() != attn[0].shape())
      throw std::invalid_argument("mean_layer_attention: layer shapes differ: " + shape_str(attn[0].shape()) +
                                  " vs " + shape_str(attn[l].shape()));
    std::vector<float> v = attn[l].to_vector();
    for (size_t i = 0; i < acc.size(); ++i) acc[i] += v[i];
  }
  const float n = float(attn.size());
  for (float& x : acc) x /= n;
  return acc;
}

int64_t patch_grid(int64_t P) {
  int64_t G = int64_t(std::llround(std::sqrt(double(P))));
  if (P <= 0 || G * G != P)
    throw std::invalid_argument(fmt::format("attention over {} patches is not a square grid", P));
  return G;
}

void jet_colour(float t, uint8_t rgb[3]) {
  t = std::isfinite(t) ? std::min(1.f, std::max(0.f, t)) : 0.f;
  // matplotlib's jet: each channel a clipped ramp 1.5 - |4t - c|.
  auto ch = [&](float c) {
    return uint8_t(std::lround(255.f * std::min(1.f, std::max(0.f, 1.5f - std::fabs(4 * t - c)))));
  };
  rgb[0] = ch(3.f);
  rgb[1] = ch(2.f);
  rgb[2] = ch(1.f);
}

Image heatmap_overlay(const Image& radiograph, const std::vector<float>& grid_map, int64_t G,
                      const std::vector<Box>& boxes, int canvas, int D) {
  if (G <= 0 || int64_t(grid_map.size()) != G * G)
    throw std::invalid_argument(fmt::format("heatmap_overlay: {} values for a {}x{} grid", grid_map.size(), G, G));
  if (D < 32 || canvas <= 0) throw std::invalid_argument("heatmap_overlay: overlay side must be >= 32 px");
  Image grey = radiograph;
  if (grey.c == 3) {
    Image g(grey.w, grey.h, 1);
    for (size_t i = 0; i < g.px.size(); ++i)
      g.px[i] = uint8_t((int(grey.px[3 * i]) + grey.px[3 * i + 1] + grey.px[3 * i + 2] + 1) / 3);
    grey = g;
  }
  const Image base = resize(grey, D, D, Resample::kBilinear);
  const int bar = std::max(12, D / 32), gap = bar / 2, W = D + gap + bar;
  Image out(W, D, 3, 0);
  auto put = [&](int x, int y, uint8_t r, uint8_t g, uint8_t b) {
    if (x < 0 || y < 0 || x >= D || y >= D) return;
    out.at(y, x, 0) = r; out.at(y, x, 1) = g; out.at(y, x, 2) = b;
  };
  // Colours span the map's own min..max: an untrained or diffuse model's attention is nearly flat,
  // and max-normalised values would all read ~1 (uniformly red). The stretch is monotone, so the
  // hottest cells are still the scored maximum.
  const auto [lo_it, hi_it] = std::minmax_element(grid_map.begin(), grid_map.end());
  const float lo = *lo_it, span = *hi_it - *lo_it;
  // Nearest cells (the blocks the scorer sees); opacity 0.15..0.6 keeps the anatomy visible
  // under low attention and makes the peak stand out.
  for (int y = 0; y < D; ++y)
    for (int x = 0; x < D; ++x) {
      const float v = grid_map[size_t((int64_t(y) * G / D) * G + int64_t(x) * G / D)];
      const float h = span > 0 ? std::min(1.f, std::max(0.f, (v - lo) / span)) : 0.f;
      uint8_t c[3];
      jet_colour(h, c);
      const float a = 0.15f + 0.45f * h, g = base.at(y, x, 0);
      for (int k = 0; k < 3; ++k) out.at(y, x, k) = uint8_t(std::lround((1 - a) * g + a * c[k]));
    }
  // Ground-truth boxes: white, with a dark edge on both sides for contrast on any colour.
  const int t = std::max(2, D / 256);
  for (const Box& b : boxes) {
    const int x0 = int(std::floor(b.x * D / canvas)), y0 = int(std::floor(b.y * D / canvas));
    const int x1 = int(std::ceil((b.x + b.w) * D / canvas)) - 1, y1 = int(std::ceil((b.y + b.h) * D / canvas)) - 1;
    for (int k = -1; k <= t; ++k) {
      const uint8_t v = (k == -1 || k == t) ? 0 : 255;
      for (int x = x0 - k; x <= x1 + k; ++x) { put(x, y0 - k, v, v, v); put(x, y1 + k, v, v, v); }
      for (int y = y0 - k; y <= y1 + k; ++y) { put(x0 - k, y, v, v, v); put(x1 + k, y, v, v, v); }
    }
  }
  // The pointing-game point: the centre of the first maximal cell, a magenta cross.
  const int64_t m = int64_t(std::max_element(grid_map.begin(), grid_map.end()) - grid_map.begin());
  const int cx = int((double(m % G) + 0.5) * D / double(G)), cy = int((double(m / G) + 0.5) * D / double(G));
  const int arm = std::max(4, D / 40);
  for (int pass = 0; pass < 2; ++pass) {  // a black outline, then the magenta core over it
    const int len = arm + 1 - pass, half = 2 - pass;
    const uint8_t v = pass ? 255 : 0;
    for (int k = -len; k <= len; ++k)
      for (int w = -half; w <= half; ++w) {
        put(cx + k, cy + w, v, 0, v);
        put(cx + w, cy + k, v, 0, v);
      }
  }
  // Colour bar: 1 at the top, 0 at the bottom.
  for (int y = 0; y < D; ++y) {
    uint8_t c[3];
    jet_colour(1.f - float(y) / float(D - 1), c);
    for (int x = D + gap; x < W; ++x)
      for (int k = 0; k < 3; ++k) out.at(y, x, k) = c[k];
  }
  return out;
}

// ---- zeroshot --------------------------------------------------------------------------------

namespace {

// The classes a zeroshot csv is scored on and the pathology query each reads: RSNA's pneumonia
// (§E.3), else the 14 CXR14 classes through the §C.6 map (the synthetic csv too).
void zeroshot_classes(bool rsna, ZeroshotReport& r) {
  if (rsna) {
    r.class_names = {"pneumonia"};
    r.query_index = {kPneumoniaQuery};  // §E.3
  } else {
    for (int c = 0; c < kNumCxr14Classes; ++c) {  // §C.6 (the synthetic csv uses the same columns and map)
      r.class_names.push_back(kCxr14Classes[size_t(c)]);
      r.query_index.push_back(kCxr14QueryIndex[size_t(c)]);
    }
  }
}

// §E.1: the pathology stream over the loader in csv order; per image and class, p(class 1) of
// the class's query and the label.
void score_zeroshot(Medslip& model, EvalLoader& loader, Device dev, bool show_progress, ZeroshotReport& r) {
  const size_t C = r.class_names.size();
  NoGradGuard no_grad;
  Progress progress("zeroshot", loader.size(), show_progress);
  loader.start();
  EvalBatch b;
  int64_t done = 0;
  while (loader.next(b)) {
    MedslipOutput out = model.forward(b.image.to(dev), Streams::Pathology);
    std::vector<float> p = existence_probability(out.logits_pathology);  // [B,75]
    std::vector<float> lab = b.labels.to_vector();                         // [B,C]
    for (int64_t i = 0; i < b.size(); ++i) {
      for (size_t c = 0; c < C; ++c) {
        r.scores.push_back(p[size_t(i) * kNumPathologies + size_t(r.query_index[c])]);
        r.labels.push_back(int(lab[size_t(i) * C + c]));
      }
      r.paths.push_back(b.paths[size_t(i)]);
    }
    progress.update(b.index + 1, done += b.size());
  }
}

// zeroshot_scores.csv: row, path, then score and label per class.
void write_zeroshot_scores(const ZeroshotReport& r, int64_t N) {
  const size_t C = r.class_names.size();
  std::ostringstream f;
  f << "row,img_path";
  for (const auto& n : r.class_names) f << "," << csv_field("score:" + n) << "," << csv_field("label:" + n);
  f << "\n";
  for (int64_t i = 0; i < N; ++i) {
    f << i << "," << csv_field(r.paths[size_t(i)]);
    for (size_t c = 0; c < C; ++c)  // %.9g round-trips a float32 and keeps its order and ties
      f << "," << fmt::format("{:.9g}", r.scores[size_t(i) * C + c]) << "," << r.labels[size_t(i) * C + c];
    f << "\n";
  }
  write_file_atomic(r.scores_path, f.str());  // no partial csv when a write fails
}

// zeroshot.json: the run header, the scoring rule, the metrics with each class's query.
json zeroshot_json(const ZeroshotOptions& o, const InferenceModel& im, Device dev, int64_t N, ZeroshotReport& r) {
  const size_t C = r.class_names.size();
  json j = run_header("zeroshot", o.model, im, o.csv, o.dataset, dev);
  r.checkpoint_sha256 = j["checkpoint"]["sha256"];
  r.csv_sha256 = j["csv"]["sha256"];
  r.books_sha256 = j["books"]["sha256"];
  j["streams"] = "pathology (spec E.1)";
  j["score"] = "softmax over the 2 attributes, p(class 1) of the mapped pathology query";
  j["n_images"] = N;
  j["batch"] = o.batch;
  json metrics = to_json(r.result);
  for (size_t c = 0; c < C; ++c) {
    metrics["classes"][c]["query_index"] = r.query_index[c];
    metrics["classes"][c]["query_name"] = kObservations[size_t(r.query_index[c])];
  }
  j["metrics"] = metrics;
  j["scores_csv"] = fs::path(r.scores_path).filename().string();
  j["seconds"] = r.seconds;
  j["images_per_second"] = r.seconds > 0 ? double(N) / r.seconds : 0.0;
  return j;
}

void print_zeroshot(const ZeroshotReport& r, const std::string& csv, int64_t N) {
  std::printf("zero-shot classification (spec E.2/E.3): %lld images, %s\n", static_cast<long long>(N),
              csv.c_str());
  std::printf("%s", format_table(r.result).c_str());
  for (const auto& row : r.result.rows)
    if (row.skipped)
      std::printf("note: '%s' is left out of the means: %s\n", row.name.c_str(), row.skip_reason.c_str());
  std::printf("checkpoint sha256 %s\ncsv sha256        %s\nwrote %s and %s (%.1f s)\n", r.checkpoint_sha256.c_str(),
              r.csv_sha256.c_str(), r.json_path.c_str(), r.scores_path.c_str(), r.seconds);
  std::fflush(stdout);
}

}  // namespace

ZeroshotReport run_zeroshot(const ZeroshotOptions& o) {
  const auto t0 = Clock::now();
  if (o.dataset != "cxr14" && o.dataset != "rsna" && o.dataset != "synthetic")
    throw UsageError("--dataset " + o.dataset + ": expected cxr14, rsna or synthetic");
  if (o.batch <= 0) throw UsageError("--batch must be positive, got " + std::to_string(o.batch));
  require_file(o.csv, "--csv");
  ThreadsGuard threads(o.model.threads);
  const Device dev = select_device(o.model.device, o.model.tf32);
  const bool rsna = o.dataset == "rsna";

  // Read the csv before the (slower) model so a bad row fails fast.
  std::unique_ptr<Cxr14Dataset> cxr;
  std::unique_ptr<RsnaDataset> rs;
  if (rsna) rs = std::make_unique<RsnaDataset>(o.csv, o.image_root);
  else cxr = std::make_unique<Cxr14Dataset>(o.csv, o.image_root);
  const int64_t N = rsna ? rs->size() : cxr->size();
  if (N == 0) throw std::runtime_error(o.csv + ": no data rows");

  InferenceModel im = load_model(o.model, dev);
  const int S = im.cfg.image_res;
  ZeroshotReport r;
  zeroshot_classes(rsna, r);
  const LoaderOptions lo = eval_loader_options(o.batch, S, o.workers);
  // RSNA DICOMs take the §C.7 read path; seg maps are not used here (smallest size).
  std::unique_ptr<EvalLoader> loader =
      rsna ? std::make_unique<EvalLoader>(*rs, test_image_fn(S, DicomMode::kRsna), lo, 1024, 16)
           : std::make_unique<EvalLoader>(*cxr, test_image_fn(S, DicomMode::kDisplay), lo);

  std::fprintf(stderr, "zeroshot: %lld images from %s, %s %d px on %s, pathology stream only (spec E.1)\n",
               static_cast<long long>(N), o.csv.c_str(), im.cfg.res_base_model.c_str(), S, device_name(dev));
  score_zeroshot(*im.model, *loader, dev, o.progress, r);
  // float32 scores widened exactly (metrics.h): ties and comparisons as in the reference.
  r.result = evaluate_classes(r.class_names, std::vector<double>(r.scores.begin(), r.scores.end()), r.labels);
  r.seconds = seconds_since(t0);

  const std::string dir = out_folder(o.out_dir, o.model.checkpoint);
  r.scores_path = (fs::path(dir) / "zeroshot_scores.csv").string();
  write_zeroshot_scores(r, N);
  json j = zeroshot_json(o, im, dev, N, r);
  r.json_path = (fs::path(dir) / "zeroshot.json").string();
  save_json(r.json_path, j);

  print_zeroshot(r, o.csv, N);
  return r;
}

// ---- ground -------------------------------------------------------------------------------

namespace {

// Every positive row needs boxes, and there must be a positive row.
void check_ground_rows(const RsnaDataset& ds, const std::string& csv) {
  if (ds.size() == 0) throw std::runtime_error(csv + ": no data rows");
  for (int64_t i = 0; i < ds.size(); ++i)
    if (ds.item(i).label == 1 && ds.item(i).boxes.empty())
      throw std::runtime_error(fmt::format("{}: row {} (ID {}): positive but has no boxes (grounding needs them)",
                                           csv, i + 1, ds.item(i).id));
  if (ds.num_positive() == 0) throw std::runtime_error(csv + ": no positive rows: nothing to ground");
}

// §E.4 steps 1-3: A_p = layer mean [B,75,P]; pred = A_p[:,q,:]; optionally pred * mean_a A_a.
// Returns [B,P].
std::vector<float> ground_heatmaps(const MedslipOutput& out, int query, bool anatomy_product, int64_t B, int64_t P) {
  const std::vector<float> Ap = mean_layer_attention(out.attn_pathology);
  std::vector<float> heat(size_t(B * P));
  for (int64_t i = 0; i < B; ++i)
    std::copy_n(Ap.begin() + (i * kNumPathologies + query) * P, P, heat.begin() + i * P);
  if (anatomy_product) {
    const std::vector<float> Aa = mean_layer_attention(out.attn_anatomy);  // [B,51,P]
    for (int64_t i = 0; i < B; ++i)
      for (int64_t p = 0; p < P; ++p) {
        float s = 0;
        for (int64_t a = 0; a < kNumAnatomies; ++a)
          s += heat[size_t(i * P + p)] * Aa[size_t((i * kNumAnatomies + a) * P + p)];
        heat[size_t(i * P + p)] = s / float(kNumAnatomies);
      }
  }
  return heat;
}

// The batch's positive images, in csv order, appended to r.images.
void add_positives(const RsnaDataset& ds, const EvalBatch& b, const std::vector<int>& labels, GroundReport& r) {
  const int64_t B = b.size();
  for (int64_t i = 0; i < B; ++i) {
    if (labels[size_t(i)] != 1) continue;
    const RsnaItem& it = ds.item(b.items[size_t(i)]);
    GroundImage gi;
    gi.row = b.items[size_t(i)];
    gi.id = it.id;
    gi.path = it.path;
    r.images.push_back(gi);
  }
}

// One overlay PNG per positive image of the batch (the last positives of r.images), showing
// the normalised map that is scored.
void write_overlays(const GroundOptions& o, const RsnaDataset& ds, DicomMode dicom, const std::vector<float>& heat,
                    const std::vector<int>& labels, const std::vector<uint8_t>& masks, int64_t B, int64_t P, int64_t G,
                    int S, GroundReport& r) {
  std::vector<float> shown = heat;
  normalise_heatmaps(shown, B, o.norm);  // the scored values (the scorer does the same)
  size_t k = r.images.size() - size_t(std::count(labels.begin(), labels.end(), 1));
  for (int64_t i = 0; i < B; ++i) {
    if (labels[size_t(i)] != 1) continue;
    GroundImage& gi = r.images[k++];
    std::vector<float> grid(shown.begin() + i * P, shown.begin() + (i + 1) * P);
    std::vector<float> up = upsample_nearest(grid.data(), G, S);
    const bool hit = pointing_game_hit(up.data(), masks.data() + i * S * S, int64_t(S) * S);
    Image ov = heatmap_overlay(read_grey(gi.path, dicom), grid, G, ds.item(gi.row).boxes, 1024);
    gi.heatmap = (fs::path(o.heatmap_dir) /
                  fmt::format("{:05d}_{}_{}.png", gi.row, safe_name(gi.id), hit ? "hit" : "miss"))
                     .string();
    write_png(gi.heatmap, ov);
  }
}

// §E.4: every batch through the model, its heatmaps scored (score_cal) and, with --save-heatmaps,
// drawn. Returns the patch grid side G.
int64_t score_ground(const GroundOptions& o, Medslip& model, const RsnaDataset& ds, EvalLoader& loader, Device dev,
                     DicomMode dicom, int S, double thr, GroundReport& r) {
  NoGradGuard no_grad;
  std::optional<GroundingScorer> scorer;
  Progress progress("ground", loader.size(), o.progress);
  loader.start();
  EvalBatch b;
  int64_t done = 0, G = 0;
  while (loader.next(b)) {
    const int64_t B = b.size();
    MedslipOutput out = model.forward(b.image.to(dev), o.anatomy_product ? Streams::Both : Streams::Pathology);
    const int64_t P = out.attn_pathology.at(0).size(2);
    if (!scorer) {
      G = patch_grid(P);
      scorer.emplace(G, S, float(thr), o.norm);
    }
    std::vector<float> heat = ground_heatmaps(out, r.query, o.anatomy_product, B, P);
    std::vector<float> lab = b.labels.to_vector(), seg = b.seg_map.to_vector();
    std::vector<int> labels(static_cast<size_t>(B));
    std::vector<uint8_t> masks(seg.size());
    for (int64_t i = 0; i < B; ++i) labels[size_t(i)] = int(lab[size_t(i)]);
    for (size_t k = 0; k < seg.size(); ++k) masks[k] = seg[k] != 0;
    add_positives(ds, b, labels, r);
    if (!o.heatmap_dir.empty()) write_overlays(o, ds, dicom, heat, labels, masks, B, P, G, S, r);
    scorer->add_batch(std::move(heat), labels, masks);
    progress.update(b.index + 1, done += B);
  }
  r.result = scorer->result();
  for (size_t k = 0; k < r.images.size(); ++k) {
    r.images[k].hit = r.result.hit_per_image[k];
    r.images[k].iou = r.result.iou_per_image[k];
    r.images[k].dice = r.result.dice_per_image[k];
    r.images[k].chance = r.result.chance_per_image[k];
  }
  return G;
}

// ground.json: the run header, the query, threshold and normalisation, the metrics and every
// positive image with its scores (and overlay).
json ground_json(const GroundOptions& o, const InferenceModel& im, Device dev, double thr, int64_t G, int S,
                 GroundReport& r) {
  const int query = r.query;
  json j = run_header("ground", o.model, im, o.csv, o.dataset, dev);
  r.checkpoint_sha256 = j["checkpoint"]["sha256"];
  r.csv_sha256 = j["csv"]["sha256"];
  r.books_sha256 = j["books"]["sha256"];
  j["query"] = {{"index", query}, {"name", kObservations[size_t(query)]}};
  j["anatomy_product"] = o.anatomy_product;
  j["threshold"] = thr;
  if (thr == 0 && !o.anatomy_product)
    j["threshold_note"] = "threshold 0: every pixel is predicted; IoU/Dice degenerate";
  j["normalize"] = o.norm == HeatmapNorm::per_image ? "image" : "batch";
  j["batch"] = o.batch;
  j["n_images"] = r.n_images;
  j["patch_grid"] = G;
  j["map_size"] = S;
  json metrics = to_json(r.result);
  metrics.erase("iou_per_image");  // per image below, with names
  metrics.erase("dice_per_image");
  metrics.erase("hit_per_image");
  j["metrics"] = metrics;
  j["images"] = json::array();
  for (const auto& gi : r.images) {
    json e = {{"row", gi.row}, {"id", gi.id}, {"path", gi.path}, {"hit", gi.hit},
              {"iou", gi.iou}, {"dice", gi.dice}, {"chance", gi.chance}};
    if (!gi.heatmap.empty()) e["heatmap"] = gi.heatmap;
    j["images"].push_back(e);
  }
  j["seconds"] = r.seconds;
  return j;
}

void print_ground(const GroundOptions& o, double thr, const GroundReport& r) {
  const int query = r.query;
  std::printf("zero-shot grounding (spec E.4): query %d '%s', threshold %g, %s normalisation%s\n", query,
              kObservations[size_t(query)], thr, o.norm == HeatmapNorm::per_image ? "per-image" : "per-batch",
              o.anatomy_product ? ", x mean anatomy attention" : "");
  std::printf("%s", format_table(r.result).c_str());
  std::printf("(chance level: a random pixel lands in the boxes with probability %.5f on average)\n", r.result.chance);
  std::printf("checkpoint sha256 %s\ncsv sha256        %s\nwrote %s (%.1f s)\n", r.checkpoint_sha256.c_str(),
              r.csv_sha256.c_str(), r.json_path.c_str(), r.seconds);
  if (!o.heatmap_dir.empty())
    std::printf("heatmaps: %zu overlays in %s\n", r.images.size(), o.heatmap_dir.c_str());
  std::fflush(stdout);
}

}  // namespace


GroundReport run_ground(const GroundOptions& o) {
  const auto t0 = Clock::now();
  if (o.dataset != "rsna" && o.dataset != "synthetic")
    throw UsageError("--dataset " + o.dataset + ": expected rsna or synthetic");
  if (o.batch <= 0) throw UsageError("--batch must be positive, got " + std::to_string(o.batch));
  const int query = o.query < 0 ? kPneumoniaQuery : o.query;
  if (query >= kNumPathologies)
    throw UsageError(fmt::format("--query {}: expected 0..{}", query, kNumPathologies - 1));
  const double thr = std::isnan(o.threshold) ? (o.anatomy_product ? 0.01 : 0.0) : o.threshold;
  if (!std::isfinite(thr)) throw UsageError("--threshold must be finite");
  require_file(o.csv, "--csv");
  ThreadsGuard threads(o.model.threads);
  const Device dev = select_device(o.model.device, o.model.tf32);
  const DicomMode dicom = o.dataset == "rsna" ? DicomMode::kRsna : DicomMode::kDisplay;

  RsnaDataset ds(o.csv, o.image_root);
  check_ground_rows(ds, o.csv);

  InferenceModel im = load_model(o.model, dev);
  const int S = im.cfg.image_res;
  const LoaderOptions lo = eval_loader_options(o.batch, S, o.workers);
  // §C.7: the seg map is drawn on the 1024 canvas and nearest-resized to the input size.
  EvalLoader loader(ds, test_image_fn(S, dicom), lo, 1024, S);
  if (!o.heatmap_dir.empty()) {
    std::error_code ec;
    fs::create_directories(o.heatmap_dir, ec);
    if (!fs::is_directory(o.heatmap_dir))
      throw std::runtime_error("--save-heatmaps " + o.heatmap_dir + ": cannot create the folder");
  }

  GroundReport r;
  r.query = query;
  r.threshold = float(thr);
  r.n_images = ds.size();
  std::fprintf(stderr, "ground: %lld images (%lld positive) from %s, query %d '%s', %s normalisation%s\n",
               static_cast<long long>(ds.size()), static_cast<long long>(ds.num_positive()), o.csv.c_str(), query,
               kObservations[size_t(query)], o.norm == HeatmapNorm::per_image ? "per-image" : "per-batch",
               o.anatomy_product ? ", anatomy product" : "");
  if (thr == 0 && !o.anatomy_product)
    std::fprintf(stderr, "note: threshold 0 marks every pixel (attention weights are positive), so IoU ~ box area "
                         "and Dice are degenerate (spec E.4); the pointing game is unaffected\n");
  const int64_t G = score_ground(o, *im.model, ds, loader, dev, dicom, S, thr, r);
  r.seconds = seconds_since(t0);

  const std::string dir = out_folder(o.out_dir, o.model.checkpoint);
  json j = ground_json(o, im, dev, thr, G, S, r);
  r.json_path = (fs::path(dir) / "ground.json").string();
  save_json(r.json_path, j);
  print_ground(o, thr, r);
  return r;
}

// ---- predict ------------------------------------------------------------------------------

Prediction predict_image(Medslip& model, const std::vector<float>& chw, int64_t S, int top, Device device) {
  if (int64_t(chw.size()) != 3 * S * S)
    throw std::invalid_argument(fmt::format("predict_image: {} values, expected [3,{},{}]", chw.size(), S, S));
  NoGradGuard no_grad;
  MedslipOutput out = model.forward(Tensor::from_vector(chw, {1, 3, S, S}).to(device), Streams::Both);
  const std::vector<float> p = existence_probability(out.logits_pathology);  // [1,75]
  const std::vector<float> Ap = mean_layer_attention(out.attn_pathology);     // [1,75,P]
  const std::vector<float> Aa = mean_layer_attention(out.attn_anatomy);      // [1,51,P]
  const int64_t P = out.attn_pathology[0].size(2);
  std::vector<int> order(kNumPathologies);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return p[size_t(a)] > p[size_t(b)]; });
  Prediction r;
  r.grid = patch_grid(P);
  for (int k = 0; k < kNumPathologies; ++k) {
    PredictFinding f;
    f.query = order[size_t(k)];
    f.probability = p[size_t(f.query)];
    if (k < top) {  // where does this finding look? argmax_a <A_p[q], A_a[a]>
      double best = -1;
      for (int a = 0; a < kNumAnatomies; ++a) {
        double s = 0;
        for (int64_t j = 0; j < P; ++j) s += double(Ap[size_t(f.query * P + j)]) * Aa[size_t(a * P + j)];
        if (s > best) { best = s; f.anatomy = a; }
      }
      f.overlap = float(best);
    }
    r.findings.push_back(f);
  }
  r.top_map.assign(Ap.begin() + order[0] * P, Ap.begin() + (order[0] + 1) * P);
  return r;
}

}  // namespace ms
