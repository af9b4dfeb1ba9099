// defines: the data side of fine-tuning (spec E.5, E.6): a csv of images with label columns
// or a mask column (FinetuneDataset), deterministic subsets (percentage + split_seed; the
// reference's np.random.choice is unseeded), the reference's transforms, and a threaded
// loader whose batches depend only on (seed, epoch, index).
//
// Transforms, as the reference's dataset_siim_acr.py:
//   classify train  torchvision RandomResizedCrop(S, scale (crop_scale_min,1), PIL bicubic) ->
//                   RandomHorizontalFlip -> RandomAugment(2,7) -> ToTensor -> Normalize
//                   (the pretraining transform, data/transforms.h)
//   classify test   Resize([S,S]) PIL bilinear -> ToTensor -> Normalize
//   segment train   albumentations RandomResizedCrop(S, scale (0.2,1), interpolation=
//                   Image.BICUBIC = 3, which OpenCV reads as INTER_AREA) on the image and
//                   INTER_NEAREST on the mask -> HorizontalFlip(0.5) on both -> Normalize
//   segment test    cv2.resize INTER_LINEAR (albumentations Resize) / INTER_NEAREST (mask)
// Masks are read as 8-bit grey and divided by 255 (the reference's /255).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/image.h"
#include "data/loader.h"
#include "data/transforms.h"
#include "engine/rng.h"
#include "engine/tensor.h"

namespace ms {

// ---- OpenCV resizes (cv2.resize on 8-bit images, what albumentations calls) -------------------
enum class CvInterp { kNearest, kLinear, kArea };
// cv2.resize(src, (w, h), interpolation): INTER_NEAREST (floor(x * src/dst)), INTER_LINEAR
// (half-pixel centres, 11-bit fixed-point weights, no antialiasing), INTER_AREA (exact area
// averaging when shrinking both axes; OpenCV's area-weighted linear kernel otherwise), with
// OpenCV 4.6's rounding as Debian builds it (its SIMD vertical pass, resizeAreaFast for integer
// factors): byte-equal to cv2.resize on real radiographs (tests/data/finetune_resize.cpp).
Image cv_resize(const Image& src, int out_w, int out_h, CvInterp interp);

// ---- the csv -----------------------------------------------------------------------------------
struct FinetuneCsvOptions {
  std::string image_root;                  // default: the csv's folder
  std::string image_column = "image_path";
  std::vector<std::string> label_columns;  // classification labels, each 0/1
  std::string mask_column;                 // segmentation masks (or classification labels from masks)
  std::string mask_root;                   // default: image_root
  bool file_name_only = false;             // join only the file name of each path (the reference's split("/")[-1])
  std::string split_column;                // keep only rows whose split_column equals one of `splits`
  std::vector<std::string> splits;
};

struct FinetuneItem {
  int64_t row = 0;          // data row in the csv (0-based, header excluded)
  std::string image, mask;  // resolved paths (mask empty without a mask column)
  std::vector<float> labels;
};

class FinetuneDataset {
 public:
  // Reads the csv; labels must be 0 or 1 (an error names the file, row and column).
  FinetuneDataset(const std::string& csv_path, const FinetuneCsvOptions& opt);
  // A dataset of the given items of another (subsets, validation carve-outs).
  FinetuneDataset(const FinetuneDataset& from, const std::vector<int64_t>& keep);
  int64_t size() const { return int64_t(items_.size()); }
  const FinetuneItem& item(int64_t i) const { return items_.at(size_t(i)); }
  const std::string& csv_path() const { return csv_path_; }
  const std::vector<std::string>& label_names() const { return label_names_; }
  bool has_masks() const { return has_masks_; }
  // Checks every image (and mask) file exists; throws naming the csv, row and file.
  void check_files() const;

 private:
  std::string csv_path_;
  std::vector<std::string> label_names_;
  bool has_masks_ = false;
  std::vector<FinetuneItem> items_;
};

// The label-efficiency subset: int(percentage * n) distinct indices (as the reference's
// int(percentage * len)), drawn by a seeded shuffle and returned in increasing order;
// percentage 1 keeps everything. Throws if it would be empty.
std::vector<int64_t> finetune_subset(int64_t n, double percentage, uint64_t split_seed);
// Splits 0..n-1 into (train, valid) with round(fraction * n) validation items drawn by a seeded
// shuffle; both in increasing order.
std::pair<std::vector<int64_t>, std::vector<int64_t>> holdout_split(int64_t n, double fraction, uint64_t split_seed);

// ---- transforms ---------------------------------------------------------------------------------
enum class FinetuneTask { kClassify, kSegment };

struct FinetuneTransformOptions {
  FinetuneTask task = FinetuneTask::kClassify;
  int size = 224;
  AugmentOptions aug;  // classification: crop scale + RandAugment; segmentation: crop scale only
  bool hflip = true;   // segmentation train: HorizontalFlip(0.5)
};

// One sample after its transform: image [3,S,S] and, with a mask, the mask [S,S] in 0..1.
struct FinetuneSample {
  std::vector<float> image;
  std::vector<float> mask;
};
// Reads the image (and mask; a mask of another size than its image is an error naming both
// files) and applies the train (rng used) or test transform.
FinetuneSample load_finetune_sample(const FinetuneItem& it, const FinetuneTransformOptions& opt, bool train, Rng& rng);
// The uint8 images before normalisation (tests, overlays): the transformed image and mask (0/255).
std::pair<Image, Image> finetune_transform_u8(const Image& img, const Image* mask, const FinetuneTransformOptions& opt,
                                              bool train, Rng& rng);

// ---- loader ---------------------------------------------------------------------------------------
struct FinetuneBatch {
  int64_t epoch = 0, index = 0;
  Tensor image;   // [B,3,S,S]
  Tensor target;  // classify: [B,K] labels; segment: [B,1,S,S] mask in 0..1
  std::vector<int64_t> items;
  int64_t size() const { return int64_t(items.size()); }
};

class FinetuneLoader {
 public:
  // train: shuffled per epoch + drop_last (the reference's train loader); else csv order, the
  // last batch short. Classification targets are the label columns, or "mask not empty" (the
  // reference's rule) when the dataset has masks and no label columns.
  FinetuneLoader(const FinetuneDataset& ds, FinetuneTransformOptions topt, LoaderOptions lopt, bool train);
  int64_t size() const;
  void start_epoch(int64_t epoch, int64_t first_batch = 0);
  // The epoch's batches given by the caller: plan[j] lists the dataset items of batch j (the
  // data-parallel sampler's micro-batches, or a rank's share of a validation set).
  void start_epoch_plan(int64_t epoch, std::vector<std::vector<int64_t>> plan);
  bool next(FinetuneBatch& out);
  FinetuneBatch make_batch(int64_t epoch, int64_t index) const;
  // Batch `index` of `epoch` made of these dataset items (what make_batch does after the order).
  FinetuneBatch make_batch_of(int64_t epoch, int64_t index, const std::vector<int64_t>& items) const;

 private:
  const FinetuneDataset& ds_;
  FinetuneTransformOptions topt_;
  LoaderOptions lopt_;
  bool train_;
  std::vector<int64_t> order_;
  std::vector<std::vector<int64_t>> plan_;
  detail::Prefetcher<FinetuneBatch> pf_;
};

}  // namespace ms
