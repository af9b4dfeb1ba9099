#include "train/common.h"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <stdexcept>

#include "data/transforms.h"
#include "engine/device.h"
#include "engine/io.h"
#include "engine/ops.h"
#include "engine/nn_state.h"
#include "weights/state_dict.h"
#include "train/run.h"

namespace ms {

int parse_args(CLI::App& app, int argc, char** argv) {
  const std::string cmd = std::string("medslip ") + (argc > 0 ? argv[0] : "");
  try {
    app.parse(argc, argv);
    return -1;
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    std::string what = e.what();
    for (char& c : what)
      if (c == '\n' || c == '\r') c = ' ';
    while (!what.empty() && what.back() == ' ') what.pop_back();
    std::fprintf(stderr, "%s: %s (see %s --help)\n", cmd.c_str(), what.c_str(), cmd.c_str());
    return 2;
  }
}

// --precision is process-wide, like --tf32: one value for the one command line a process parses.
static std::string g_precision = "fp32";

void add_device_options(CLI::App& app, std::string& device, bool& tf32) {
  app.add_option("--device", device, "cpu or cuda (a `make CUDA=1` build on a machine with a GPU)")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  app.add_flag("--tf32", tf32,
               "CUDA: matrix products on TF32 tensor cores (faster; measured 1e-4 relative on the losses, 7e-3 on the gradients; off by default)");
  app.add_option("--precision", g_precision,
                 "CPU: fp32, or bf16 = every matrix product's inputs rounded to bfloat16 with FP32 sums and FP32 weights "
                 "(CPUs with AVX512-BF16; faster, less exact: docs/performance.md; never the default)")
      ->check(CLI::IsMember({"fp32", "bf16"}))
      ->capture_default_str();
}

Device select_device(const std::string& device, bool tf32) {
  const Device d = parse_device(device);
  if (g_precision != "fp32" && d != Device::CPU)
    throw std::invalid_argument("--precision " + g_precision + ": applies to --device cpu only (on a GPU see --tf32)");
  set_cpu_precision(g_precision);  // throws where the CPU has no AVX512-BF16
  if (d == Device::CUDA && !cuda_built())
    throw std::invalid_argument("--device cuda: this medslip was built without CUDA (rebuild with `make CUDA=1`)");
  if (d == Device::CUDA && !cuda_available())
    throw std::runtime_error("--device cuda: no CUDA device is available on this machine");
  if (tf32 && d != Device::CUDA) std::fprintf(stderr, "note: --tf32 applies to --device cuda only; ignored\n");
  set_tf32(tf32 && d == Device::CUDA);
  return d;
}

MedslipConfig load_config(const std::string& path) {
  MedslipConfig c = MedslipConfig::from_yaml(path);
  for (const auto& w : c.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
  return c;
}

std::pair<Tensor, Tensor> load_books(const std::string& path) {
  auto t = load_safetensors(path);
  for (const char* k : {"pathology_book", "anatomy_book"})
    if (!t.count(k)) throw std::runtime_error(path + ": no tensor '" + k + "' (expected pathology_book [75,T] and anatomy_book [51,T])");
  Tensor p = t["pathology_book"], a = t["anatomy_book"];
  if (p.dim() != 2 || p.size(0) != kNumPathologies)
    throw std::runtime_error(path + ": 'pathology_book' must be [75,T], got " + shape_str(p.shape()));
  if (a.dim() != 2 || a.size(0) != kNumAnatomies || a.size(1) != p.size(1))
    throw std::runtime_error(path + ": 'anatomy_book' must be [51," + std::to_string(p.size(1)) + "], got " + shape_str(a.shape()));
  return {p, a};
}

void load_weights(nn::Module& model, const std::string& path, bool strict) {
  std::map<std::string, Tensor> sd = load_state_dict_any(path);
  auto rep = load_module_state(model, sd, strict, path);
  for (const auto& k : rep.missing) std::fprintf(stderr, "warning: %s: missing key %s (left at its initial value)\n", path.c_str(), k.c_str());
  for (const auto& k : rep.unexpected) std::fprintf(stderr, "warning: %s: unexpected key %s (ignored)\n", path.c_str(), k.c_str());
}

MedslipBatch load_batch(const std::string& path) {
  auto raw = load_safetensors_raw(path);
  auto get = [&](const char* k) -> const FileTensor& {
    auto it = raw.find(k);
    if (it == raw.end()) throw std::runtime_error(path + ": batch has no tensor '" + std::string(k) + "'");
    return it->second;
  };
  MedslipBatch b;
  b.image = get("image").to_float();
  if (b.image.dim() != 4) throw std::runtime_error(path + ": 'image' must be [B,3,S,S], got " + shape_str(b.image.shape()));
  const int64_t B = b.image.size(0);
  auto expect = [&](const char* k, const Shape& s) {
    if (get(k).shape != s) throw std::runtime_error(path + ": '" + std::string(k) + "' must be " + shape_str(s) + ", got " + shape_str(get(k).shape));
  };
  const int64_t Qp = kNumPathologies, Qa = kNumAnatomies, K = kNumCandidates;
  expect("matrix", {B, Qa, Qp});
  expect("label_pathology", {B, Qp});
  expect("label_anatomy", {B, Qa});
  expect("index_pathology", {B, Qp, K});
  expect("index_anatomy", {B, Qa, K});
  auto m = get("matrix").to_f64();
  b.matrix.assign(m.begin(), m.end());
  b.label_pathology = get("label_pathology").to_i64();
  b.label_anatomy = get("label_anatomy").to_i64();
  b.index_pathology = get("index_pathology").to_i64();
  b.index_anatomy = get("index_anatomy").to_i64();
  try {
    b.validate();
  } catch (const std::exception& e) {
    throw std::runtime_error(path + ": " + e.what());
  }
  return b;
}

Tensor stack_layers(const std::vector<Tensor>& per_layer) {
  std::vector<Tensor> u;
  for (const auto& t : per_layer) u.push_back(t.detach().unsqueeze(0));
  return concat(u, 0);
}

ImageFn train_image_fn(int size, const AugmentOptions& aug) {
  return [size, aug](const std::string& path, Rng& rng) {
    return load_train_image(path, size, rng, DicomMode::kDisplay, aug);
  };
}

AugmentOptions augment_options(const MedslipConfig& cfg) {
  AugmentOptions a;
  a.crop_scale_min = cfg.crop_scale_min;
  a.rand_augment_n = cfg.rand_augment_n;
  a.rand_augment_m = cfg.rand_augment_m;
  return a;
}

ImageFn test_image_fn(int size, DicomMode dicom) {
  return [size, dicom](const std::string& path, Rng&) { return load_test_image(path, size, dicom); };
}

InferenceModel load_inference_model(const std::string& checkpoint, const std::string& books,
                                    const std::string& config_path, Device device, bool strict) {
  InferenceModel im;
  // Our checkpoints record the SHA-256 of their tensor data: a corrupt copy is a named error,
  // never a silent load (the released .pth and older files carry none and are read as they are).
  if (is_safetensors_file(checkpoint)) verify_checkpoint_payload(checkpoint);
  if (!config_path.empty()) {
    im.cfg = load_config(config_path);
  } else if (is_safetensors_file(checkpoint) && safetensors_metadata(checkpoint).count("config")) {
    im.cfg = MedslipConfig::from_yaml_string(safetensors_metadata(checkpoint).at("config"), checkpoint + " (metadata)");
  } else {
    // The released .pth holds no usable config: infer the trunk from the weights.
    auto sd = load_state_dict_any(checkpoint);
    im.cfg.res_base_model = sd.count("res_features.4.0.conv3.weight") ? "resnet50" : "resnet18";
    std::fprintf(stderr, "note: %s carries no config; assuming the official one with %s at %d px (pass --config to change)\n",
                 checkpoint.c_str(), im.cfg.res_base_model.c_str(), im.cfg.image_res);
  }
  auto [p, a] = load_books(books);
  auto meta = safetensors_metadata(books);
  for (const char* k : {"encoder", "vocab", "max_length"})
    if (meta.count(k)) im.books_info += (im.books_info.empty() ? "" : ", ") + std::string(k) + " " + meta[k];
  im.model = std::make_unique<Medslip>(im.cfg, p.size(1), 0);
  load_weights(*im.model, checkpoint, strict);
  im.model->set_books(p.to(device), a.to(device));
  im.model->to(device);
  im.model->eval();
  return im;
}

}  // namespace ms
