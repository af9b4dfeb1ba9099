#include "data/finetune_data.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numeric>
#include <stdexcept>

#include "data/datasets.h"

namespace ms {

// ---- OpenCV resizes -----------------------------------------------------------------------------

namespace {

constexpr int kCoefBits = 11;  // INTER_RESIZE_COEF_BITS
constexpr int kCoefScale = 1 << kCoefBits;

// One axis of the two-tap kernel: source index and the two fixed-point weights per output.
// resizeGeneric clamps (index 0 / src-1, weight 0) on the x axis only; on the y axis the raw
// index and fraction stay and the rows read are clipped to [0, src-1] (so the first and last
// rows often blend a row with itself, with weights that are not 2048/0).
struct Taps {
  std::vector<int> s0, s1;
  std::vector<int> a0, a1;
};

Taps linear_taps(int src, int dst, bool area, bool clamp) {
  const double inv = double(dst) / src, scale = 1.0 / inv;  // OpenCV: scale_x = 1 / inv_scale_x
  Taps t;
  for (int d = 0; d < dst; ++d) {
    int s;
    float f;
    if (area) {  // OpenCV's INTER_AREA when enlarging: a linear kernel with area-style weights
      s = int(std::floor(d * scale));
      f = float((d + 1) - (s + 1) * inv);
      f = f <= 0 ? 0.f : f - std::floor(f);
    } else {
      const float fx = float((d + 0.5) * scale - 0.5);
      s = int(std::floor(fx));
      f = fx - float(s);
    }
    if (clamp && s < 0) s = 0, f = 0;
    if (clamp && s >= src - 1) s = src - 1, f = 0;
    t.s0.push_back(std::clamp(s, 0, src - 1));
    t.s1.push_back(std::clamp(s + 1, 0, src - 1));
    t.a0.push_back(int(std::lrint((1.f - f) * kCoefScale)));
    t.a1.push_back(int(std::lrint(f * kCoefScale)));
  }
  return t;
}

// The vertical pass is OpenCV's SIMD one (VResizeLinearVec_32s8u), which Debian's OpenCV 4.6
// takes for every output byte (checked against cv2.resize on all widths 7..230): each
// horizontal sum (<= 255 * 2048) is shifted right by 4, multiplied by its 16-bit weight keeping
// the high 16 bits, and the two are added and rounded by a 2-bit shift. This differs by one from
// the exact (S0 b0 + S1 b1 + 2^21) >> 22 in ~10 % of pixels.
Image resize_linear(const Image& src, int W, int H, bool area) {
  Taps tx = linear_taps(src.w, W, area, true), ty = linear_taps(src.h, H, area, false);
  Image out(W, H, src.c);
  const int C = src.c;
  std::vector<int> r0(size_t(W) * C), r1(size_t(W) * C);
  auto hrow = [&](int y, std::vector<int>& r) {
    const uint8_t* s = src.row(y);
    for (int x = 0; x < W; ++x)
      for (int c = 0; c < C; ++c)
        r[size_t(x) * C + c] = s[size_t(tx.s0[x]) * C + c] * tx.a0[x] + s[size_t(tx.s1[x]) * C + c] * tx.a1[x];
  };
  for (int y = 0; y < H; ++y) {
    hrow(ty.s0[y], r0);
    hrow(ty.s1[y], r1);
    uint8_t* o = out.row(y);
    const int b0 = ty.a0[y], b1 = ty.a1[y];
    for (int i = 0; i < W * C; ++i) {
      const int v = (((r0[size_t(i)] >> 4) * b0) >> 16) + (((r1[size_t(i)] >> 4) * b1) >> 16);
      o[i] = uint8_t(std::clamp((v + 2) >> 2, 0, 255));
    }
  }
  return out;
}

// resizeAreaFast: both scales are integers. 2x2 (one or three channels) is (a+b+c+d+2) >> 2;
// other factors sum the cell in int and round float(sum) * (1.f / area) half to even (cvRound).
Image resize_area_fast(const Image& src, int W, int H) {
  const int sx = src.w / W, sy = src.h / H, C = src.c;
  Image out(W, H, C);
  const float scale = 1.f / float(sx * sy);
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x)
      for (int c = 0; c < C; ++c) {
        int sum = 0;
        for (int dy = 0; dy < sy; ++dy)
          for (int dx = 0; dx < sx; ++dx) sum += src.at(y * sy + dy, x * sx + dx, c);
        out.at(y, x, c) = sx == 2 && sy == 2 ? uint8_t((sum + 2) >> 2)
                                             : uint8_t(std::clamp<long>(std::lrint(float(sum) * scale), 0, 255));
      }
  return out;
}

// computeResizeAreaTab: (source index, weight) pairs of each output cell, weights summing to 1.
std::vector<std::vector<std::pair<int, float>>> area_tab(int src, int dst) {
  const double scale = double(src) / dst;
  std::vector<std::vector<std::pair<int, float>>> tab(static_cast<size_t>(dst));
  for (int d = 0; d < dst; ++d) {
    const double f1 = d * scale, f2 = f1 + scale;
    const int s1 = int(std::ceil(f1)), s2 = int(std::floor(f2));
    const double cell = std::min(scale, src - f1);
    auto& t = tab[size_t(d)];
    if (s1 - f1 > 1e-3) t.push_back({s1 - 1, float((s1 - f1) / cell)});
    for (int s = s1; s < s2; ++s) t.push_back({s, float(1.0 / cell)});
    if (f2 - s2 > 1e-3 && s2 < src) t.push_back({s2, float(std::min(std::min(f2 - s2, 1.0), cell) / cell)});
  }
  return tab;
}

Image resize_area_shrink(const Image& src, int W, int H) {
  auto tx = area_tab(src.w, W), ty = area_tab(src.h, H);
  Image out(W, H, src.c);
  const int C = src.c;
  std::vector<float> row(size_t(W) * C);
  for (int y = 0; y < H; ++y) {
    std::fill(row.begin(), row.end(), 0.f);
    for (auto [sy, wy] : ty[size_t(y)]) {
      const uint8_t* s = src.row(sy);
      for (int x = 0; x < W; ++x)
        for (auto [sx, wx] : tx[size_t(x)])
          for (int c = 0; c < C; ++c) row[size_t(x) * C + c] += wy * wx * float(s[size_t(sx) * C + c]);
    }
    uint8_t* o = out.row(y);
    for (int i = 0; i < W * C; ++i) o[i] = uint8_t(std::clamp<long>(std::lrint(row[size_t(i)]), 0, 255));
  }
  return out;
}

}  // namespace

Image cv_resize(const Image& src, int W, int H, CvInterp interp) {
  if (src.w <= 0 || src.h <= 0 || (src.c != 1 && src.c != 3)) throw std::invalid_argument("cv_resize: empty or unsupported image");
  if (W <= 0 || H <= 0) throw std::invalid_argument("cv_resize: output size must be positive");
  if (interp == CvInterp::kNearest) {
    Image out(W, H, src.c);
    const double sx = double(src.w) / W, sy = double(src.h) / H;
    for (int y = 0; y < H; ++y) {
      const int yy = std::min(int(std::floor(y * sy)), src.h - 1);
      for (int x = 0; x < W; ++x) {
        const int xx = std::min(int(std::floor(x * sx)), src.w - 1);
        for (int c = 0; c < src.c; ++c) out.at(y, x, c) = src.at(yy, xx, c);
      }
    }
    return out;
  }
  if (W == src.w && H == src.h) return src;  // cv::resize copies
  // Integer shrink factors take resizeAreaFast (INTER_LINEAR too, at exactly 2x2).
  const bool area_fast = src.w % W == 0 && src.h % H == 0;
  if (area_fast && (interp == CvInterp::kArea || (src.w == 2 * W && src.h == 2 * H))) return resize_area_fast(src, W, H);
  if (interp == CvInterp::kArea && src.w >= W && src.h >= H) return resize_area_shrink(src, W, H);
  return resize_linear(src, W, H, interp == CvInterp::kArea);
}

// ---- the csv ----------------------------------------------------------------------------------------

static std::string join_path(const std::string& root, const std::string& p, bool name_only) {
  const std::string q = name_only ? std::filesystem::path(p).filename().string() : p;
  return resolve_path(root, q);
}

FinetuneDataset::FinetuneDataset(const std::string& csv_path, const FinetuneCsvOptions& opt) : csv_path_(csv_path) {
  CsvTable t = read_csv(csv_path);
  const std::string root = opt.image_root.empty() ? parent_dir(csv_path) : opt.image_root;
  const std::string mroot = opt.mask_root.empty() ? root : opt.mask_root;
  const int ci = t.column(opt.image_column);
  std::vector<int> lc;
  for (const auto& c : opt.label_columns) lc.push_back(t.column(c));
  label_names_ = opt.label_columns;
  const int mc = opt.mask_column.empty() ? -1 : t.column(opt.mask_column);
  has_masks_ = mc >= 0;
  const int sc = opt.split_column.empty() ? -1 : t.column(opt.split_column);
  if (lc.empty() && mc < 0)
    throw std::runtime_error(csv_path + ": fine-tuning needs label columns or a mask column (none configured)");
  for (size_t r = 0; r < t.rows.size(); ++r) {
    const auto& row = t.rows[r];
    if (sc >= 0 && std::find(opt.splits.begin(), opt.splits.end(), row[size_t(sc)]) == opt.splits.end()) continue;
    FinetuneItem it;
    it.row = int64_t(r);
    // An empty path cell (or, with file_name_only, one ending in '/') is refused by name: an
    // empty mask would otherwise load as "no mask", i.e. a segmentation sample whose target
    // stays all background (fuzz finding, csv target).
    auto path_cell = [&](int c, const std::string& column, const std::string& under) {
      const std::string& v = row[size_t(c)];
      const std::string p = v.empty() ? v : join_path(under, v, opt.file_name_only);
      if (p.empty())
        throw std::runtime_error(csv_path + ": line " + std::to_string(r + 2) + ": " +
                                 (v.empty() ? "empty '" + column + "'" : "'" + column + "' value '" + v + "' has no file name"));
      return p;
    };
    it.image = path_cell(ci, opt.image_column, root);
    if (mc >= 0) it.mask = path_cell(mc, opt.mask_column, mroot);
    for (size_t k = 0; k < lc.size(); ++k) {
      const std::string& v = row[size_t(lc[k])];
      float f;
      if (v == "0" || v == "0.0") f = 0.f;
      else if (v == "1" || v == "1.0") f = 1.f;
      else
        throw std::runtime_error(csv_path + ": line " + std::to_string(r + 2) + ", column '" + opt.label_columns[k] + "': label '" + v + "' is not 0 or 1");
      it.labels.push_back(f);
    }
    items_.push_back(std::move(it));
  }
  if (items_.empty())
    throw std::runtime_error(csv_path + ": no rows" +
                             (sc >= 0 ? " with " + opt.split_column + " in the configured splits" : std::string()));
}

FinetuneDataset::FinetuneDataset(const FinetuneDataset& from, const std::vector<int64_t>& keep)
    : csv_path_(from.csv_path_), label_names_(from.label_names_), has_masks_(from.has_masks_) {
  for (int64_t i : keep) items_.push_back(from.item(i));
}

void FinetuneDataset::check_files() const {
  for (const auto& it : items_) {
    if (!std::filesystem::exists(it.image))
      throw std::runtime_error(csv_path_ + ": line " + std::to_string(it.row + 2) + ": image '" + it.image + "' does not exist");
    if (!it.mask.empty() && !std::filesystem::exists(it.mask))
      throw std::runtime_error(csv_path_ + ": line " + std::to_string(it.row + 2) + ": mask '" + it.mask + "' does not exist");
  }
}

std::vector<int64_t> finetune_subset(int64_t n, double percentage, uint64_t split_seed) {
  if (!(percentage > 0 && percentage <= 1)) throw std::invalid_argument("percentage must be in (0, 1], got " + std::to_string(percentage));
  std::vector<int64_t> all(static_cast<size_t>(n));
  std::iota(all.begin(), all.end(), int64_t(0));
  if (percentage == 1) return all;
  const int64_t k = int64_t(percentage * double(n));  // int(percentage * len(data_info))
  if (k <= 0)
    throw std::invalid_argument("percentage " + std::to_string(percentage) + " of " + std::to_string(n) + " rows keeps none");
  Rng r(split_seed, kStreamData);
  r.set_offset(uint64_t(1) << 60);  // away from the epoch permutations
  auto pick = r.sample(all, k);
  std::sort(pick.begin(), pick.end());
  return pick;
}

std::pair<std::vector<int64_t>, std::vector<int64_t>> holdout_split(int64_t n, double fraction, uint64_t split_seed) {
  if (!(fraction >= 0 && fraction < 1)) throw std::invalid_argument("valid_fraction must be in [0, 1), got " + std::to_string(fraction));
  std::vector<int64_t> all(static_cast<size_t>(n));
  std::iota(all.begin(), all.end(), int64_t(0));
  const int64_t k = int64_t(std::llround(fraction * double(n)));
  Rng r(split_seed, kStreamData);
  r.set_offset(uint64_t(1) << 61);
  auto v = r.sample(all, k);
  std::sort(v.begin(), v.end());
  std::vector<int64_t> t;
  std::set_difference(all.begin(), all.end(), v.begin(), v.end(), std::back_inserter(t));
  return {t, v};
}

// ---- transforms ----------------------------------------------------------------------------------

std::pair<Image, Image> finetune_transform_u8(const Image& img, const Image* mask, const FinetuneTransformOptions& opt,
                                              bool train, Rng& rng) {
  const int S = opt.size;
  Image im, mk;
  if (opt.task == FinetuneTask::kClassify) {
    im = train ? train_augment_u8(img, S, rng, nullptr, opt.aug) : resize(img, S, S, Resample::kBilinear);
    if (mask) mk = cv_resize(*mask, S, S, CvInterp::kNearest);  // the label's mask: torchvision Resize NEAREST
    return {im, mk};
  }
  if (!train) {
    im = cv_resize(img, S, S, CvInterp::kLinear);
    if (mask) mk = cv_resize(*mask, S, S, CvInterp::kNearest);
    return {im, mk};
  }
  CropBox b = random_resized_crop_params(img.w, img.h, rng, opt.aug.crop_scale_min, 1.0);
  auto crop = [&](const Image& s) {
    Image c(b.width, b.height, s.c);
    for (int y = 0; y < b.height; ++y)
      std::copy_n(s.row(b.top + y) + size_t(b.left) * s.c, size_t(b.width) * s.c, c.row(y));
    return c;
  };
  im = cv_resize(crop(img), S, S, CvInterp::kArea);
  if (mask) mk = cv_resize(crop(*mask), S, S, CvInterp::kNearest);
  if (opt.hflip && rng.uniform() < 0.5f) {
    hflip(im);
    if (mask) hflip(mk);
  }
  return {im, mk};
}

FinetuneSample load_finetune_sample(const FinetuneItem& it, const FinetuneTransformOptions& opt, bool train, Rng& rng) {
  ReadOptions ro;
  ro.keep_grey = true;
  Image img = read_image(it.image, ro);
  Image mask;
  if (!it.mask.empty()) {
    Image m = read_image(it.mask, ro);
    if (m.w != img.w || m.h != img.h)
      throw std::runtime_error("csv line " + std::to_string(it.row + 2) + ": mask '" + it.mask + "' is " + std::to_string(m.w) + "x" + std::to_string(m.h) +
                               ", its image '" + it.image + "' is " + std::to_string(img.w) + "x" + std::to_string(img.h));
    if (m.c == 3) {  // an RGB mask: its first channel (masks are grey in practice)
      Image g(m.w, m.h, 1);
      for (size_t i = 0; i < g.px.size(); ++i) g.px[i] = m.px[i * 3];
      m = g;
    }
    mask = std::move(m);
  }
  auto [im, mk] = finetune_transform_u8(img, it.mask.empty() ? nullptr : &mask, opt, train, rng);
  FinetuneSample s;
  s.image = to_normalized_chw(im);
  if (!it.mask.empty()) {
    s.mask.resize(mk.px.size());
    for (size_t i = 0; i < mk.px.size(); ++i) s.mask[i] = float(mk.px[i]) / 255.f;  // the reference's / 255
  }
  return s;
}

// ---- loader ------------------------------------------------------------------------------------------

FinetuneLoader::FinetuneLoader(const FinetuneDataset& ds, FinetuneTransformOptions topt, LoaderOptions lopt, bool train)
    : ds_(ds), topt_(topt), lopt_(lopt), train_(train) {
  lopt_.shuffle = train;
  lopt_.drop_last = train;
  lopt_.image_size = topt.size;
  if (lopt_.batch_size <= 0) throw std::invalid_argument("fine-tuning: batch_size must be positive");
  if (topt_.task == FinetuneTask::kSegment && !ds.has_masks())
    throw std::runtime_error(ds.csv_path() + ": segmentation needs a mask column (config key mask_column)");
}

int64_t FinetuneLoader::size() const {
  const int64_t n = ds_.size(), b = lopt_.batch_size;
  return lopt_.drop_last ? n / b : (n + b - 1) / b;
}

FinetuneBatch FinetuneLoader::make_batch(int64_t epoch, int64_t index) const {
  std::vector<int64_t> fresh;
  if (order_.empty()) fresh = epoch_order(ds_.size(), lopt_.seed, epoch, lopt_.shuffle);
  const auto& order = fresh.empty() ? order_ : fresh;
  const int64_t lo = index * lopt_.batch_size, hi = std::min(lo + lopt_.batch_size, ds_.size());
  return make_batch_of(epoch, index, std::vector<int64_t>(order.begin() + lo, order.begin() + hi));
}

FinetuneBatch FinetuneLoader::make_batch_of(int64_t epoch, int64_t index, const std::vector<int64_t>& items) const {
  const int64_t S = topt_.size, B = int64_t(items.size());
  const bool seg = topt_.task == FinetuneTask::kSegment;
  const int64_t K = seg ? 1 : (ds_.label_names().empty() ? 1 : int64_t(ds_.label_names().size()));
  FinetuneBatch out;
  out.epoch = epoch;
  out.index = index;
  out.image = Tensor::empty({B, 3, S, S});
  out.target = seg ? Tensor::empty({B, 1, S, S}) : Tensor::empty({B, K});
  float* im = out.image.data();
  float* tg = out.target.data();
  for (int64_t b = 0; b < B; ++b) {
    const int64_t item = items[size_t(b)];
    if (item < 0 || item >= ds_.size())
      throw std::out_of_range("FinetuneLoader: item " + std::to_string(item) + " outside the dataset's " +
                              std::to_string(ds_.size()));
    const FinetuneItem& it = ds_.item(item);
    Rng rng = sample_rng(lopt_.seed, epoch, item, false);
    FinetuneSample s = load_finetune_sample(it, topt_, train_, rng);
    std::copy(s.image.begin(), s.image.end(), im + b * 3 * S * S);
    if (seg) {
      std::copy(s.mask.begin(), s.mask.end(), tg + b * S * S);
    } else if (!it.labels.empty()) {
      std::copy(it.labels.begin(), it.labels.end(), tg + b * K);
    } else {  // label = any positive pixel of the resized mask (dataset_siim_acr.py)
      tg[b] = std::any_of(s.mask.begin(), s.mask.end(), [](float v) { return v > 0.f; }) ? 1.f : 0.f;
    }
    out.items.push_back(item);
  }
  return out;
}

void FinetuneLoader::start_epoch(int64_t epoch, int64_t first_batch) {
  pf_.stop();
  order_ = epoch_order(ds_.size(), lopt_.seed, epoch, lopt_.shuffle);
  pf_.start(size() - first_batch, lopt_.num_workers, std::max(1, lopt_.num_workers * lopt_.prefetch),
            [this, epoch, first_batch](int64_t b) { return make_batch(epoch, b + first_batch); });
}

void FinetuneLoader::start_epoch_plan(int64_t epoch, std::vector<std::vector<int64_t>> plan) {
  pf_.stop();
  plan_ = std::move(plan);
  pf_.start(int64_t(plan_.size()), lopt_.num_workers, std::max(1, lopt_.num_workers * lopt_.prefetch),
            [this, epoch](int64_t b) { return make_batch_of(epoch, b, plan_[size_t(b)]); });
}

bool FinetuneLoader::next(FinetuneBatch& out) { return pf_.next(out); }

}  // namespace ms
