// medslip inspect: names, dtypes and shapes of the tensors in a .safetensors / torch.save
// (.pth, .pt, pytorch_model.bin) file, plain values of a training checkpoint, and totals.
// Reads only headers and the pickle unless --key is given (then the state dict is loaded).
#include <fmt/core.h>

#include <CLI/CLI.hpp>
#include <map>

#include "engine/io.h"
#include "train/commands.h"
#include "train/common.h"
#include "weights/state_dict.h"
#include "weights/torch_pickle.h"

namespace ms {

namespace {

std::string shape_text(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

// "123", "45.6 k (45623)", "23.51 M (23508032)"
std::string count(int64_t n) {
  if (n >= 1000000000) return fmt::format("{:.2f} G ({})", double(n) / 1e9, n);
  if (n >= 1000000) return fmt::format("{:.2f} M ({})", double(n) / 1e6, n);
  if (n >= 1000) return fmt::format("{:.1f} k ({})", double(n) / 1e3, n);
  return std::to_string(n);
}

std::string bytes_text(int64_t b) {
  if (b >= 1000000) return fmt::format("{:.2f} MB", double(b) / 1e6);
  if (b >= 1000) return fmt::format("{:.1f} kB", double(b) / 1e3);
  return fmt::format("{} bytes", b);
}

struct Row {
  std::string name, dtype;
  Shape shape;
};

void print_rows(const std::vector<Row>& rows, size_t limit) {
  size_t w = 4;
  for (const auto& r : rows) w = std::max(w, r.name.size());
  w = std::min<size_t>(w, 90);
  fmt::print("{:<{}}  {:<5}  {}\n", "name", w, "dtype", "shape");
  for (size_t i = 0; i < rows.size(); ++i) {
    if (limit && i == limit) {
      fmt::print("... {} more (--limit 0 lists all)\n", rows.size() - limit);
      break;
    }
    fmt::print("{:<{}}  {:<5}  {}\n", rows[i].name, w, rows[i].dtype, shape_text(rows[i].shape));
  }
}

void print_totals(const std::vector<Row>& rows) {
  int64_t n = 0, bytes = 0;
  std::map<std::string, int64_t> by_dtype;
  for (const auto& r : rows) {
    n += shape_numel(r.shape);
    bytes += shape_numel(r.shape) * safetensors_dtype_size(r.dtype);
    by_dtype[r.dtype] += shape_numel(r.shape);
  }
  std::string dt;
  for (const auto& [d, c] : by_dtype) dt += (dt.empty() ? "" : ", ") + d + " " + std::to_string(c);
  fmt::print("total: {} tensors, {} parameters, {} ({})\n", rows.size(), count(n), bytes_text(bytes), dt);
}

}  // namespace

int cmd_inspect(int argc, char** argv) {
  CLI::App app{
      "List the tensors (name, dtype, shape) of a weights file, with the total parameter count.\n"
      "Formats (by content): safetensors; torch.save zip (.pth/.pt/pytorch_model.bin). For a training\n"
      "checkpoint ({\"model\": ..., \"optimizer\": ..., \"epoch\": ...}) every tensor is listed under a dotted\n"
      "path, plain values are shown, and totals are given per top-level key. Nothing in the file is executed.",
      "medslip inspect"};
  std::string file, key, strip;
  size_t limit = 0;
  bool allow_unknown = false;
  app.add_option("file", file, "weights file (.safetensors, .pth, .pt, .bin)")->required();
  app.add_option("--key", key,
                 "list only this state dict (torch: the top-level entry, a/b descends; "
                 "safetensors: names under KEY.)");
  app.add_option("--strip-prefix", strip, "with --key: remove this prefix from names (e.g. module.)");
  app.add_option("--limit", limit, "print at most this many tensors (0: all)")->capture_default_str();
  app.add_flag("--allow-unknown-globals", allow_unknown,
               "show unknown pickled objects as placeholders instead of failing (never executed)");
  MS_PARSE_ARGS(app, argc, argv);

  WeightsFormat fmt_ = detect_weights_format(file);
  if (!key.empty() || !strip.empty() || fmt_ != WeightsFormat::TorchZip) {
    StateDictOptions opt;
    opt.key = key;
    opt.strip_prefix = strip;
    opt.allow_unknown_globals = allow_unknown;
    std::vector<Row> rows;
    if (fmt_ == WeightsFormat::Safetensors && key.empty() && strip.empty()) {
      // header only: no data read
      for (const auto& e : list_safetensors(file)) rows.push_back({e.name, e.dtype, e.shape});
      fmt::print("{}: safetensors\n", file);
      for (const auto& [k, v] : safetensors_metadata(file)) fmt::print("  metadata {} = {}\n", k, v);
    } else {
      StateDict sd = read_state_dict(file, opt);
      for (const auto& n : sd.names) rows.push_back({n, sd.tensors.at(n).dtype, sd.tensors.at(n).shape});
      fmt::print("{}: {}\n", sd.source, fmt_ == WeightsFormat::Safetensors ? "safetensors" : "torch.save zip");
    }
    print_rows(rows, limit);
    print_totals(rows);
    return 0;
  }

  TorchLoadOptions topt;
  topt.allow_unknown_globals = allow_unknown;
  TorchCheckpoint ck(file, topt);
  fmt::print("{}: torch.save zip\n", file);
  std::vector<Row> rows;
  std::vector<std::pair<std::string, std::string>> values;
  std::vector<std::string> groups;  // top-level keys in order
  std::map<std::string, std::vector<Row>> by_group;
  for (const auto& [name, leaf] : flatten_pyobj(ck.root(), file)) {
    std::string group = name.substr(0, name.find('.'));
    if (leaf->is_tensor()) {
      Row r{name, leaf->tensor.dtype, leaf->tensor.shape};
      rows.push_back(r);
      if (!by_group.count(group)) groups.push_back(group);
      by_group[group].push_back(r);
    } else {
      values.emplace_back(name, leaf->repr(80));
    }
  }
  print_rows(rows, limit);
  if (!values.empty()) {
    fmt::print("values:\n");
    for (size_t i = 0; i < values.size(); ++i) {
      if (limit && i == limit) {
        fmt::print("  ... {} more\n", values.size() - limit);
        break;
      }
      fmt::print("  {} = {}\n", values[i].first, values[i].second);
    }
  }
  bool plain_state_dict = true;  // every top-level value a tensor: no per-key totals
  for (const auto& kv : ck.root()->dict) plain_state_dict = plain_state_dict && kv.second->is_tensor();
  if (!plain_state_dict)
    for (const auto& g : groups) {
      int64_t n = 0;
      for (const auto& r : by_group[g]) n += shape_numel(r.shape);
      fmt::print("{}: {} tensors, {} parameters\n", g, by_group[g].size(), count(n));
    }
  print_totals(rows);
  return 0;
}

}  // namespace ms
