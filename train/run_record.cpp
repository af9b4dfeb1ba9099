#include "train/run_record.h"

#include "engine/io.h"

#include <fmt/core.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <unistd.h>

#include "train/hash.h"
#include "train/platform.h"
#include "train/pretrain.h"

namespace fs = std::filesystem;

namespace ms {

std::string weights_sha256(const nn::Module& m) {
  Sha256 h;
  for (const auto& e : m.state_entries()) {
    h.update(e.name);
    h.update(shape_str(e.tensor->shape()));
    auto v = e.tensor->to_vector();
    h.update(v.data(), v.size() * sizeof(float));
  }
  return h.hex_digest();
}

RunRecord::RunRecord(const std::string& dir, bool resume) : path_(dir + "/" + kRecordFile) {
  if (resume && fs::exists(path_)) j_ = load(dir);
  else j_ = {{"format", "medslip reproducibility record v1"}};
}

nlohmann::json RunRecord::load(const std::string& dir) {
  const std::string p = dir + "/" + kRecordFile;
  std::ifstream f(p);
  if (!f) throw std::runtime_error("no reproducibility record at '" + p + "'");
  try {
    return nlohmann::json::parse(f);
  } catch (const std::exception& e) {
    throw std::runtime_error(p + ": not valid JSON: " + e.what());
  }
}

void RunRecord::add_epoch(int epoch, const std::string& hash, const nlohmann::json& losses) {
  auto& eps = j_["epochs"];
  // A resumed run re-records an epoch it redid: keep one entry per epoch.
  nlohmann::json keep = nlohmann::json::array();
  for (auto& e : eps)
    if (e.value("epoch", -1) != epoch) keep.push_back(e);
  nlohmann::json e = losses;
  e["epoch"] = epoch;
  e["weights_sha256"] = hash;
  keep.push_back(e);
  eps = keep;
}

void RunRecord::save() const {
  write_file_atomic(path_, j_.dump(1) + "\n");
}

int verify_run(const std::string& run_dir, int epochs) {
  nlohmann::json rec = RunRecord::load(run_dir);
  if (!rec.contains("config") || !rec.contains("epochs"))
    throw std::runtime_error(run_dir + "/" + kRecordFile + ": missing 'config' or 'epochs'");
  const auto& recorded = rec["epochs"];
  if (int(recorded.size()) < epochs)
    throw std::runtime_error(fmt::format("{}: the record holds {} epochs, {} were asked for", run_dir, recorded.size(), epochs));
  PretrainOptions o;
  o.cfg = MedslipConfig::from_yaml_string(rec["config"].get<std::string>(), run_dir + " record config");
  if (rec.contains("books") && !o.cfg.books.empty() && !fs::exists(o.cfg.books))
    throw std::runtime_error("the run's books file '" + o.cfg.books + "' is gone");
  o.out_dir = (fs::temp_directory_path() / fmt::format("medslip_verify_run_{}", ::getpid())).string();
  fs::remove_all(o.out_dir);
  if (o.cfg.books.empty() && fs::exists(run_dir + "/books.safetensors")) o.cfg.books = run_dir + "/books.safetensors";
  o.max_epochs = epochs;
  o.quiet = true;
  fmt::print("re-running {} epoch(s) of {} (config sha256 {}) on {}\n", epochs, run_dir,
             rec.value("config_sha256", std::string("?")).substr(0, 12), cpu_model());
  run_pretrain(o);
  nlohmann::json again = RunRecord::load(o.out_dir);
  bool ok = true;
  if (again.value("train_images_sha256", "") != rec.value("train_images_sha256", "")) {
    fmt::print("training image list differs from the record\n");
    ok = false;
  }
  if (again.value("label_matrix_sha256", "") != rec.value("label_matrix_sha256", "")) {
    fmt::print("label matrix differs from the record\n");
    ok = false;
  }
  for (int e = 0; e < epochs; ++e) {
    const auto& a = recorded[size_t(e)];
    const auto& b = again["epochs"][size_t(e)];
    const bool same = a["weights_sha256"] == b["weights_sha256"];
    double la = a["train"]["loss"].get<double>(), lb = b["train"]["loss"].get<double>();
    double rel = std::fabs(la - lb) / std::max(std::fabs(la), 1e-12);
    // Bitwise on the same platform; elsewhere (other BLAS kernels, ISA) within tolerance.
    const bool close = rel <= 1e-3;
    fmt::print("epoch {}: weights {} (recorded {}…, now {}…), mean train loss {:.6f} vs {:.6f} (rel {:.1e})\n", e,
               same ? "match bit for bit" : "differ", a["weights_sha256"].get<std::string>().substr(0, 12),
               b["weights_sha256"].get<std::string>().substr(0, 12), la, lb, rel);
    ok &= same || close;
  }
  fs::remove_all(o.out_dir);
  fmt::print("{}\n", ok ? "PASS: the run reproduces" : "FAIL: the run does not reproduce");
  return ok ? 0 : 1;
}

}  // namespace ms
