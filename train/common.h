// defines: helpers shared by the subcommands: config with warnings printed, books,
// weights in any supported format, a MeDSLIP batch from safetensors, run folders.
#pragma once
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "data/image.h"
#include "data/loader.h"
#include "data/transforms.h"
#include "model/config.h"
#include "model/medslip.h"

namespace CLI {
class App;
}

namespace ms {

// A command-line argument that is missing, unknown or malformed, found after parsing (e.g. a
// value CLI11 cannot check): main prints it on one line and exits with code 2.
struct UsageError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// Parses a subcommand's arguments (argv[0] is the command name). Returns -1 to go on, else
// the exit code: 0 after --help, 2 after a usage error, printed as one line
// "medslip CMD: WHAT (see medslip CMD --help)" on stderr.
int parse_args(CLI::App& app, int argc, char** argv);
#define MS_PARSE_ARGS(app, argc, argv) \
  if (int ms_rc_ = ::ms::parse_args(app, argc, argv); ms_rc_ >= 0) return ms_rc_

// --device cpu|cuda and --tf32, the same on every job.
void add_device_options(CLI::App& app, std::string& device, bool& tf32);
// Parses the --device value and checks that this build and machine have it (a CUDA request on
// a CPU build, or without a GPU, throws naming the flag and the fix); applies --tf32 (cuBLAS
// matrix products on TF32 tensor cores; ignored on the CPU, which has none).
Device select_device(const std::string& device, bool tf32 = false);

// Loads YAML and prints its warnings (unknown keys) to stderr.
MedslipConfig load_config(const std::string& path);
// {pathology_book [75,T], anatomy_book [51,T]} from a books safetensors file.
std::pair<Tensor, Tensor> load_books(const std::string& path);
// Weights by official names from .safetensors (or .pth/.bin through weights/), a leading
// "module." stripped; strict by default; prints missing/unexpected keys when non-strict.
void load_weights(nn::Module& model, const std::string& path, bool strict);
// The batch layout of `medslip step` (README): F32/F64/I64 accepted for labels and indices.
MedslipBatch load_batch(const std::string& path);
// N x [B,Q,P] -> [N,B,Q,P]
Tensor stack_layers(const std::vector<Tensor>& per_layer);

// Image file -> normalised [3,S,S]: the pretraining augmentation (spec C.4) or the test
// transform (spec C.5). DICOMs are read with `dicom` (the RSNA path for RSNA csvs).
ImageFn train_image_fn(int size, const AugmentOptions& aug = {});
// The augmentation knobs of a config.
AugmentOptions augment_options(const MedslipConfig& cfg);
ImageFn test_image_fn(int size, DicomMode dicom = DicomMode::kDisplay);

// A model ready for zero-shot use: weights from a checkpoint (our safetensors with the
// config in its metadata, or the released .pth with official names; `config_path`
// overrides or supplies the config), books set, eval mode, on `device`.
struct InferenceModel {
  MedslipConfig cfg;
  std::unique_ptr<Medslip> model;
  std::string books_info;  // encoder / vocab / max_length recorded in the books file
};
InferenceModel load_inference_model(const std::string& checkpoint, const std::string& books,
                                    const std::string& config_path, Device device, bool strict = true);

}  // namespace ms
