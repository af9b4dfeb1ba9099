// defines: the image transforms of spec §C.4 (train: RandomResizedCrop + flip + ALBEF
// RandAugment) and §C.5 (test: Resize), reproducing the reference's pixel arithmetic:
//   resize / resized_crop   PIL's ImagingResample, 8-bit (separable, horizontal pass then
//                           vertical, 22-bit fixed-point coefficients, each pass rounded and
//                           clipped to uint8; antialiasing support = filter support x scale
//                           when downscaling). Bit-exact with Pillow 9.4.
//   to_normalized_chw       ToTensor (/255) + Normalize(ImageNet mean, std), float32, via a
//                           256-entry table per channel (bit-exact with torchvision).
//   random_resized_crop_params  torchvision's sampling (10 tries, then the central crop).
//   RandAugment ops         ALBEF dataset/randaugment.py (numpy/OpenCV), see §H.6.
// Every transform accepts c = 1 (grey; all ops are per channel, so this equals running on
// three equal channels) or c = 3. All randomness comes from the Rng passed in.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/image.h"
#include "engine/rng.h"

namespace ms {

enum class Resample { kBilinear, kBicubic };  // PIL BILINEAR (support 1), BICUBIC (a = -0.5, support 2)

// PIL Image.resize((out_w, out_h), filter).
Image resize(const Image& src, int out_w, int out_h, Resample filter);
// PIL img.crop((left, top, left + w, top + h)).resize((out_w, out_h), filter): the filter
// support is clamped to the crop, not to the whole image (as crop-then-resize does).
Image resized_crop(const Image& src, int left, int top, int w, int h, int out_w, int out_h, Resample filter);
void hflip(Image& img);

// ImageNet statistics (torchvision Normalize in dataset.py).
constexpr float kImageNetMean[3] = {0.485f, 0.456f, 0.406f};
constexpr float kImageNetStd[3] = {0.229f, 0.224f, 0.225f};

// ToTensor + Normalize: out[3*H*W], CHW; a grey image fills all three channels.
void to_normalized_chw(const Image& img, float* out);
std::vector<float> to_normalized_chw(const Image& img);

// §C.5 test transform: Resize([S,S]) bilinear -> ToTensor -> Normalize. Returns [3,S,S].
std::vector<float> test_transform(const Image& img, int size = 224);

// ---- train transform (§C.4) ---------------------------------------------------------

struct CropBox {
  int top = 0, left = 0, height = 0, width = 0;  // torchvision's (i, j, h, w)
};
// torchvision RandomResizedCrop.get_params: up to 10 draws of (area fraction in `scale`,
// log-uniform aspect ratio in `ratio`), then the central-crop fallback.
CropBox random_resized_crop_params(int width, int height, Rng& rng, double scale_lo = 0.2, double scale_hi = 1.0,
                                   double ratio_lo = 3.0 / 4.0, double ratio_hi = 4.0 / 3.0);

// The ten ops of ALBEF's RandomAugment as MeDSLIP lists them (dataset.py l.155-160).
enum class AugOp {
  kIdentity,
  kAutoContrast,
  kEqualize,
  kBrightness,
  kSharpness,
  kShearX,
  kShearY,
  kTranslateX,
  kTranslateY,
  kRotate
};
constexpr int kNumAugOps = 10;
const char* aug_op_name(AugOp op);

// In place, per channel.
void autocontrast(Image& img);              // PIL ImageOps.autocontrast(cutoff=0), see transforms.cpp
void equalize(Image& img);                  // PIL ImageOps.equalize
void brightness(Image& img, float factor);  // LUT[v] = trunc(min(255, float32(v) * factor))
void sharpness(Image& img, float factor);   // 3x3 [[1,1,1],[1,5,1],[1,1,1]]/13 blend, interior only
// cv2.warpAffine(img, M, (W, H), flags=INTER_LINEAR, borderMode=BORDER_CONSTANT,
// borderValue=fill) for the forward 2x3 matrix M (OpenCV's 10-bit coordinate / 5-bit
// fraction / 15-bit weight fixed point, bit-exact with OpenCV 4.6).
Image warp_affine(const Image& src, const double M[6], uint8_t fill);
Image shear_x(const Image& src, float factor, uint8_t fill = 128);      // dst(x,y) = src(x - f*y, y)
Image shear_y(const Image& src, float factor, uint8_t fill = 128);      // dst(x,y) = src(x, y - f*x)
Image translate_x(const Image& src, float offset, uint8_t fill = 128);  // dst(x,y) = src(x + o, y)
Image translate_y(const Image& src, float offset, uint8_t fill = 128);  // dst(x,y) = src(x, y + o)
Image rotate(const Image& src, double degrees, uint8_t fill = 128);     // about (W/2, H/2), counter-clockwise

// One drawn op: whether its p = 0.5 coin applied it and the argument it got.
struct AugStep {
  AugOp op = AugOp::kIdentity;
  bool applied = false;
  double arg = 0;  // factor, shear, offset (px) or angle (deg); 0 for the argument-free ops
};
// Applies `op` at magnitude level m of 10 (ALBEF's level_to_args; the sign is `negative`).
Image apply_aug(const Image& img, AugOp op, int m, bool negative, double* arg = nullptr);
// RandomAugment(N=n, M=m): n ops drawn with replacement, each applied with probability 0.5,
// signed ops get a random sign. `log` (optional) receives what was drawn.
Image rand_augment(const Image& img, Rng& rng, int n = 2, int m = 7, std::vector<AugStep>* log = nullptr);

// What train_transform drew, for logging and tests.
struct TrainDraw {
  CropBox crop;
  bool flipped = false;
  std::vector<AugStep> augs;
};
// The knobs of the training augmentation; the defaults are the reference's (§C.4).
struct AugmentOptions {
  double crop_scale_min = 0.2;  // RandomResizedCrop scale (crop_scale_min, 1)
  int rand_augment_n = 2;       // RandomAugment(N, M); N = 0: none (draws no random numbers)
  int rand_augment_m = 7;
};
// §C.4: RandomResizedCrop(S, scale (0.2,1), bicubic) -> RandomHorizontalFlip(0.5) ->
// RandomAugment(2, 7) -> ToTensor -> Normalize. Returns [3,S,S].
std::vector<float> train_transform(const Image& img, int size, Rng& rng, TrainDraw* draw = nullptr,
                                   const AugmentOptions& aug = {});
// The same up to the uint8 image before ToTensor.
Image train_augment_u8(const Image& img, int size, Rng& rng, TrainDraw* draw = nullptr, const AugmentOptions& aug = {});

// File -> [3,S,S] in one call, shaped for data/loader.h's ImageFn. Grey sources stay one
// channel until ToTensor (exact, and 2-3x cheaper than replicating first).
std::vector<float> load_test_image(const std::string& path, int size = 224, DicomMode dicom = DicomMode::kDisplay);
std::vector<float> load_train_image(const std::string& path, int size, Rng& rng, DicomMode dicom = DicomMode::kDisplay,
                                    const AugmentOptions& aug = {});

}  // namespace ms
