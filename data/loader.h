// defines: the threaded, prefetching batch loaders — PretrainLoader (MeDSLIP json+npy ->
// MedslipBatch: image, matrix, labels and triplet index lists) and EvalLoader (CXR14 / RSNA rows in csv
// order: image, labels, seg map, path). Batches are fixed by (seed, epoch) whatever the
// number of worker threads: the epoch permutation comes from Rng(seed, kStreamData) with
// its counter at epoch << 40, and every sample draws from its own Rng keyed by
// (seed, epoch, dataset index), so thread scheduling never changes a number.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "data/datasets.h"
#include "data/triplets.h"
#include "engine/rng.h"
#include "engine/tensor.h"
#include "model/batch.h"  // MedslipBatch, the batch PretrainLoader builds

namespace ms {

// Turns an image file into a normalised float CHW image [3,S,S] (S = LoaderOptions::
// image_size). Training transforms draw their randomness from `rng` only; evaluation
// transforms ignore it. Called concurrently from worker threads.
using ImageFn = std::function<std::vector<float>(const std::string& path, Rng& rng)>;

struct LoaderOptions {
  int64_t batch_size = 32;
  int64_t image_size = 224;  // S
  uint64_t seed = 0;
  bool shuffle = true;     // pretraining: a fresh permutation per epoch
  bool drop_last = true;   // pretraining drops the ragged tail, as the original
  int num_workers = 2;     // 0 = build batches on the calling thread
  int prefetch = 2;        // batches in flight per worker
};

struct EvalBatch {
  int64_t index = 0;
  Tensor image;             // [B,3,S,S]
  Tensor labels;            // [B,K]: K = 14 (CXR14) or 1 (RSNA)
  Tensor seg_map;           // [B,1,T,T] for RSNA (T = seg size), undefined for CXR14
  std::vector<std::string> paths;
  std::vector<int64_t> items;  // csv row indices
  int64_t size() const { return int64_t(paths.size()); }
};

// Keys of the per-sample randomness. The image transform and the triplet sampling use
// disjoint counter ranges of one stream, so neither shifts the other.
Rng sample_rng(uint64_t seed, int64_t epoch, int64_t item, bool for_triplets);
// The permutation of `n` items for `epoch` (identity when shuffle is off).
std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch, bool shuffle);

namespace detail {
// Makes batches 0..n-1 with `workers` threads, at most `depth` ahead of the consumer, and
// hands them out in order. A worker's exception is rethrown by next().
template <class B>
class Prefetcher {
 public:
  ~Prefetcher() { stop(); }
  void start(int64_t n, int workers, int depth, std::function<B(int64_t)> make) {
    stop();
    n_ = n; make_ = std::move(make); next_make_ = next_take_ = 0; stopping_ = false;
    err_ = nullptr; ready_.clear(); depth_ = std::max(1, depth); sync_ = workers <= 0;
    for (int w = 0; w < workers; ++w) threads_.emplace_back([this] { work(); });
  }
  // False once all n batches were taken.
  bool next(B& out) {
    if (next_take_ >= n_) return false;
    if (sync_) { out = make_(next_take_++); return true; }
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait(lk, [&] { return err_ || ready_.count(next_take_); });
    if (!ready_.count(next_take_)) std::rethrow_exception(err_);
    out = std::move(ready_[next_take_]);
    ready_.erase(next_take_++);
    cv_.notify_all();
    return true;
  }
  void stop() {
    { std::lock_guard<std::mutex> lk(mu_); stopping_ = true; }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

 private:
  void work() {
    for (;;) {
      int64_t b;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return stopping_ || err_ || next_make_ >= n_ || next_make_ < next_take_ + depth_; });
        if (stopping_ || err_ || next_make_ >= n_) return;
        b = next_make_++;
      }
      try {
        B batch = make_(b);
        std::lock_guard<std::mutex> lk(mu_);
        ready_.emplace(b, std::move(batch));
      } catch (...) {
        std::lock_guard<std::mutex> lk(mu_);
        if (!err_) err_ = std::current_exception();
      }
      cv_.notify_all();
    }
  }
  int64_t n_ = 0, next_make_ = 0, next_take_ = 0;
  int depth_ = 1;
  bool sync_ = true, stopping_ = false;
  std::function<B(int64_t)> make_;
  std::map<int64_t, B> ready_;
  std::exception_ptr err_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::thread> threads_;
};
}  // namespace detail

class PretrainLoader {
 public:
  PretrainLoader(const MedslipDataset& dataset, ImageFn image_fn, LoaderOptions options);
  // Batches per epoch: floor(N/B) with drop_last, else ceil(N/B).
  int64_t size() const;
  const LoaderOptions& options() const { return opt_; }
  // Starts (or restarts) an epoch at batch `first_batch` (a resumed run); batches then come
  // from next() in order. A batch depends only on (seed, epoch, index), never on where it starts.
  void start_epoch(int64_t epoch, int64_t first_batch = 0);
  // Starts an epoch whose batch j holds the dataset items plan[j] (the data-parallel
  // trainer's micro-batches, from data/sampler.h); next() then hands them out in order.
  void start_epoch_plan(int64_t epoch, std::vector<std::vector<int64_t>> plan);
  bool next(MedslipBatch& out);
  // One batch built on the calling thread (what the workers run).
  MedslipBatch make_batch(int64_t epoch, int64_t index) const;
  // The batch of these dataset items; each item's randomness is keyed by (seed, epoch, item).
  MedslipBatch make_batch_of(int64_t epoch, int64_t index, const std::vector<int64_t>& items) const;

 private:
  const MedslipDataset& ds_;
  ImageFn image_fn_;
  LoaderOptions opt_;
  std::vector<int64_t> order_;
  std::vector<std::vector<int64_t>> plan_;
  int64_t epoch_ = 0;
  detail::Prefetcher<MedslipBatch> pf_;
};

class EvalLoader {
 public:
  // In csv order, no shuffling, the last batch may be short. For RSNA the seg map is
  // rsna_seg_map(boxes, seg_canvas, seg_size).
  EvalLoader(const Cxr14Dataset& dataset, ImageFn image_fn, LoaderOptions options);
  EvalLoader(const RsnaDataset& dataset, ImageFn image_fn, LoaderOptions options, int seg_canvas = 1024,
             int seg_size = 224);
  int64_t size() const;
  int64_t num_items() const;
  void start();
  bool next(EvalBatch& out);
  EvalBatch make_batch(int64_t index) const;

 private:
  const Cxr14Dataset* cxr14_ = nullptr;
  const RsnaDataset* rsna_ = nullptr;
  ImageFn image_fn_;
  LoaderOptions opt_;
  int seg_canvas_ = 1024, seg_size_ = 224;
  detail::Prefetcher<EvalBatch> pf_;
};

}  // namespace ms
