#include "data/loader.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <stdexcept>

namespace ms {

// splitmix64 finaliser: spreads (seed, epoch) over the whole 64-bit key space.
static uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

Rng sample_rng(uint64_t seed, int64_t epoch, int64_t item, bool for_triplets) {
  Rng r(mix64(seed ^ mix64(uint64_t(epoch))), kStreamAugment);
  // 2^24 Philox blocks per item (items up to 2^40): the lower half for the transform,
  // the upper half for triplet sampling.
  r.set_offset((uint64_t(item) << 24) | (for_triplets ? (uint64_t(1) << 23) : 0));
  return r;
}

std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch, bool shuffle) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t(0));
  if (shuffle) {
    Rng r(seed, kStreamData);
    r.set_offset(uint64_t(epoch) << 40);  // each epoch its own counter range
    r.shuffle(order);
  }
  return order;
}

static void check_options(const LoaderOptions& o) {
  if (o.batch_size <= 0) throw std::invalid_argument("loader: batch_size must be positive, got " +
                                                     std::to_string(o.batch_size));
  if (o.image_size <= 0) throw std::invalid_argument("loader: image_size must be positive, got " +
                                                     std::to_string(o.image_size));
  if (o.num_workers < 0) throw std::invalid_argument("loader: num_workers must be >= 0");
}

// Runs the image callback and checks it returned [3,S,S].
static void load_image_into(const ImageFn& fn, const std::string& path, Rng& rng, int64_t S, float* dst) {
  std::vector<float> img = fn(path, rng);
  if (int64_t(img.size()) != 3 * S * S)
    throw std::runtime_error(path + ": image transform returned " + std::to_string(img.size()) +
                             " values, expected 3x" + std::to_string(S) + "x" + std::to_string(S));
  std::memcpy(dst, img.data(), img.size() * sizeof(float));
}

// ---- PretrainLoader ----------------------------------------------------------------------

PretrainLoader::PretrainLoader(const MedslipDataset& dataset, ImageFn image_fn, LoaderOptions options)
    : ds_(dataset), image_fn_(std::move(image_fn)), opt_(options) {
  check_options(opt_);
  if (!image_fn_) throw std::invalid_argument("PretrainLoader: image_fn is empty");
}

int64_t PretrainLoader::size() const {
  int64_t n = ds_.size(), b = opt_.batch_size;
  return opt_.drop_last ? n / b : (n + b - 1) / b;
}

MedslipBatch PretrainLoader::make_batch(int64_t epoch, int64_t index) const {
  std::vector<int64_t> fresh;  // only when asked for another epoch than the running one
  if (epoch != epoch_ || int64_t(order_.size()) != ds_.size())
    fresh = epoch_order(ds_.size(), opt_.seed, epoch, opt_.shuffle);
  const std::vector<int64_t>& order = fresh.empty() ? order_ : fresh;
  if (index < 0 || index >= size())
    throw std::out_of_range("PretrainLoader: batch " + std::to_string(index) + " out of range (" +
                            std::to_string(size()) + " batches)");
  const int64_t lo = index * opt_.batch_size, hi = std::min(lo + opt_.batch_size, ds_.size());
  return make_batch_of(epoch, index, std::vector<int64_t>(order.begin() + lo, order.begin() + hi));
}

MedslipBatch PretrainLoader::make_batch_of(int64_t epoch, int64_t index, const std::vector<int64_t>& items) const {
  const int64_t S = opt_.image_size, A = kNumAnatomies, P = kNumPathologies, K = kNumCandidates;
  const int64_t B = int64_t(items.size());
  MedslipBatch out;
  out.epoch = epoch;
  out.index = index;
  out.image = Tensor::empty({B, 3, S, S});
  out.matrix.resize(static_cast<size_t>(B * A * P));
  out.label_pathology.resize(static_cast<size_t>(B * P));
  out.label_anatomy.resize(static_cast<size_t>(B * A));
  out.index_pathology.resize(static_cast<size_t>(B * P * K));
  out.index_anatomy.resize(static_cast<size_t>(B * A * K));
  for (int64_t b = 0; b < B; ++b) {
    const int64_t item = items[size_t(b)];
    if (item < 0 || item >= ds_.size())
      throw std::out_of_range("PretrainLoader: item " + std::to_string(item) + " outside the dataset's " +
                              std::to_string(ds_.size()));
    const MedslipItem& it = ds_.item(item);
    out.paths.push_back(it.path);
    out.items.push_back(item);
    Rng img_rng = sample_rng(opt_.seed, epoch, item, false);
    load_image_into(image_fn_, it.path, img_rng, S, out.image.data() + b * 3 * S * S);
    std::vector<float> m = ds_.matrix(item);
    Rng trip_rng = sample_rng(opt_.seed, epoch, item, true);
    Triplets t = make_triplets(m, trip_rng, it.path);
    std::copy(m.begin(), m.end(), out.matrix.begin() + b * A * P);
    std::copy(t.label_pathology.begin(), t.label_pathology.end(), out.label_pathology.begin() + b * P);
    std::copy(t.label_anatomy.begin(), t.label_anatomy.end(), out.label_anatomy.begin() + b * A);
    std::copy(t.index_pathology.begin(), t.index_pathology.end(), out.index_pathology.begin() + b * P * K);
    std::copy(t.index_anatomy.begin(), t.index_anatomy.end(), out.index_anatomy.begin() + b * A * K);
  }
  return out;
}

void PretrainLoader::start_epoch(int64_t epoch, int64_t first_batch) {
  if (first_batch < 0 || first_batch > size())
    throw std::out_of_range("PretrainLoader: first batch " + std::to_string(first_batch) + " outside [0, " +
                            std::to_string(size()) + "]");
  pf_.stop();
  epoch_ = epoch;
  order_ = epoch_order(ds_.size(), opt_.seed, epoch, opt_.shuffle);
  pf_.start(size() - first_batch, opt_.num_workers, std::max(1, opt_.num_workers * opt_.prefetch),
            [this, epoch, first_batch](int64_t b) { return make_batch(epoch, b + first_batch); });
}

void PretrainLoader::start_epoch_plan(int64_t epoch, std::vector<std::vector<int64_t>> plan) {
  pf_.stop();
  epoch_ = epoch;
  plan_ = std::move(plan);
  order_.clear();  // make_batch() recomputes the order rather than trust a stale one
  pf_.start(int64_t(plan_.size()), opt_.num_workers, std::max(1, opt_.num_workers * opt_.prefetch),
            [this, epoch](int64_t b) { return make_batch_of(epoch, b, plan_[size_t(b)]); });
}

bool PretrainLoader::next(MedslipBatch& out) { return pf_.next(out); }

// ---- EvalLoader --------------------------------------------------------------------------

EvalLoader::EvalLoader(const Cxr14Dataset& dataset, ImageFn image_fn, LoaderOptions options)
    : cxr14_(&dataset), image_fn_(std::move(image_fn)), opt_(options) {
  check_options(opt_);
  if (!image_fn_) throw std::invalid_argument("EvalLoader: image_fn is empty");
}

EvalLoader::EvalLoader(const RsnaDataset& dataset, ImageFn image_fn, LoaderOptions options, int seg_canvas,
                       int seg_size)
    : rsna_(&dataset), image_fn_(std::move(image_fn)), opt_(options), seg_canvas_(seg_canvas), seg_size_(seg_size) {
  check_options(opt_);
  if (!image_fn_) throw std::invalid_argument("EvalLoader: image_fn is empty");
  if (seg_canvas <= 0 || seg_size <= 0) throw std::invalid_argument("EvalLoader: seg sizes must be positive");
}

int64_t EvalLoader::num_items() const { return cxr14_ ? cxr14_->size() : rsna_->size(); }

int64_t EvalLoader::size() const { return (num_items() + opt_.batch_size - 1) / opt_.batch_size; }

EvalBatch EvalLoader::make_batch(int64_t index) const {
  if (index < 0 || index >= size())
    throw std::out_of_range("EvalLoader: batch " + std::to_string(index) + " out of range (" +
                            std::to_string(size()) + " batches)");
  const int64_t S = opt_.image_size, T = seg_size_;
  int64_t lo = index * opt_.batch_size, hi = std::min(lo + opt_.batch_size, num_items());
  int64_t B = hi - lo, K = cxr14_ ? kNumCxr14Classes : 1;
  EvalBatch out;
  out.index = index;
  out.image = Tensor::empty({B, 3, S, S});
  out.labels = Tensor::empty({B, K});
  if (rsna_) out.seg_map = Tensor::empty({B, 1, T, T});
  for (int64_t b = 0; b < B; ++b) {
    int64_t item = lo + b;
    const std::string& path = cxr14_ ? cxr14_->item(item).path : rsna_->item(item).path;
    out.paths.push_back(path);
    out.items.push_back(item);
    Rng rng = sample_rng(opt_.seed, 0, item, false);  // evaluation transforms ignore it
    load_image_into(image_fn_, path, rng, S, out.image.data() + b * 3 * S * S);
    if (cxr14_) {
      const auto& l = cxr14_->item(item).labels;
      std::copy(l.begin(), l.end(), out.labels.data() + b * K);
    } else {
      const RsnaItem& it = rsna_->item(item);
      out.labels.data()[b] = it.label;
      std::vector<float> seg = rsna_seg_map(it.boxes, seg_canvas_, seg_size_);
      std::copy(seg.begin(), seg.end(), out.seg_map.data() + b * T * T);
    }
  }
  return out;
}

void EvalLoader::start() {
  pf_.stop();
  pf_.start(size(), opt_.num_workers, std::max(1, opt_.num_workers * opt_.prefetch),
            [this](int64_t b) { return make_batch(b); });
}

bool EvalLoader::next(EvalBatch& out) { return pf_.next(out); }

}  // namespace ms
