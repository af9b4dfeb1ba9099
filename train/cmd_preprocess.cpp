// medslip preprocess: writes the exact normalised tensor the model sees for one image (key
// `image`, [1,3,S,S] F32) so that anyone can audit the preprocessing against torchvision:
//   test (default)  Resize([S,S]) bilinear -> ToTensor -> Normalize          (spec §C.5)
//   --train         RandomResizedCrop + flip + RandAugment(2, 7) -> ...     (spec §C.4)
//   --rsna-dicom    DICOM through pydicom pixel_array + equalize_hist      (spec §C.7)
#include <CLI/CLI.hpp>
#include <cstdio>
#include <map>
#include <string>

#include "data/image.h"
#include "data/loader.h"
#include "data/transforms.h"
#include "engine/io.h"
#include "train/commands.h"
#include "train/common.h"

namespace ms {

int cmd_preprocess(int argc, char** argv) {
  CLI::App app{
      "Write the normalised [1,3,S,S] tensor the model sees for one image (PNG, JPEG, BMP or DICOM), "
      "to compare with torchvision",
      "medslip preprocess"};
  std::string image, out, png;
  int size = 224;
  bool train = false, rsna = false;
  uint64_t seed = 0;
  int64_t epoch = -1, item = -1;
  app.add_option("image", image, "input image")->required();
  app.add_option("--out", out, "output .safetensors (key `image`, F32 [1,3,S,S])")->required();
  app.add_option("--size", size, "output side S")->check(CLI::Range(1, 4096));
  app.add_flag("--train", train, "the training augmentation instead of the test transform");
  app.add_option("--seed", seed, "--train: seed; the draws are those of Rng(seed, kStreamAugment)");
  app.add_option("--epoch", epoch, "--train: with --item, the pretraining loader's draws for (seed, epoch, item)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--item", item, "--train: dataset index of the image (see --epoch)")->check(CLI::NonNegativeNumber);
  app.add_flag("--rsna-dicom", rsna, "read DICOMs as the RSNA Dataset does (raw values, equalize_hist), spec §C.7");
  app.add_option("--png", png, "also write the 8-bit image before ToTensor/Normalize");
  MS_PARSE_ARGS(app, argc, argv);
  if (!train && (app.count("--seed") || epoch >= 0 || item >= 0))
    throw UsageError("--seed/--epoch/--item only apply with --train");
  if ((epoch >= 0) != (item >= 0)) throw UsageError("--epoch and --item go together");

  ReadOptions ro;
  ro.keep_grey = true;  // exact: every transform is per channel; replicated at ToTensor
  ro.dicom = rsna ? DicomMode::kRsna : DicomMode::kDisplay;
  Image img = read_image(image, ro);

  std::map<std::string, std::string> meta = {{"source", image},
                                             {"size", std::to_string(size)},
                                             {"source_size", std::to_string(img.w) + "x" + std::to_string(img.h)},
                                             {"source_channels", img.c == 1 ? "grey" : "rgb"},
                                             {"dicom_mode", rsna ? "rsna" : "display"}};
  Image u8;
  if (train) {
    // data/loader.h keys each sample's image draws by (seed, epoch, item).
    Rng rng = epoch >= 0 ? sample_rng(seed, epoch, item, false) : Rng(seed, kStreamAugment);
    TrainDraw d;
    u8 = train_augment_u8(img, size, rng, &d);
    std::string ops;
    for (const AugStep& s : d.augs)
      ops += std::string(ops.empty() ? "" : ", ") + aug_op_name(s.op) +
             (s.applied ? "(" + std::to_string(s.arg) + ")" : " skipped");
    meta["transform"] = "train";
    meta["seed"] = std::to_string(seed);
    if (epoch >= 0) meta["loader_key"] = "epoch " + std::to_string(epoch) + ", item " + std::to_string(item);
    meta["crop_ijhw"] = std::to_string(d.crop.top) + "," + std::to_string(d.crop.left) + "," +
                        std::to_string(d.crop.height) + "," + std::to_string(d.crop.width);
    meta["flipped"] = d.flipped ? "1" : "0";
    meta["randaugment"] = ops;
    std::printf("crop (i,j,h,w) = (%s), flip %s, RandAugment: %s\n", meta["crop_ijhw"].c_str(),
                d.flipped ? "yes" : "no", ops.c_str());
  } else {
    u8 = resize(img, size, size, Resample::kBilinear);
    meta["transform"] = "test";
  }
  std::vector<float> chw = to_normalized_chw(u8);
  save_safetensors(out, {SaveItem::f32("image", Tensor::from_vector(chw, {1, 3, size, size}))}, meta);
  if (!png.empty()) write_png(png, u8);
  std::printf("%s (%dx%d %s) -> %s: image [1,3,%d,%d] (%s transform)\n", image.c_str(), img.w, img.h,
              img.c == 1 ? "grey" : "RGB", out.c_str(), size, size, train ? "train" : "test");
  return 0;
}

}  // namespace ms
