// medslip convert: a state dict from .pth/.pt/pytorch_model.bin (torch.save zip) or .safetensors
// into one .safetensors file (spec A.6: pick checkpoint["model"], strip a DDP "module." prefix).
// Floats are written as F32 (our engine's type) unless --keep-dtypes; integer tensors keep their
// dtype, so BatchNorm num_batches_tracked stays I64 and PyTorch load_state_dict(strict=True) accepts it.
#include <fmt/core.h>

#include <CLI/CLI.hpp>
#include <filesystem>

#include "engine/io.h"
#include "train/commands.h"
#include "train/common.h"
#include "weights/state_dict.h"

namespace ms {

int cmd_convert(int argc, char** argv) {
  CLI::App app{
      "Convert a PyTorch / Hugging Face checkpoint (.pth, .pt, pytorch_model.bin) or a safetensors file\n"
      "into a .safetensors state dict. Without --key, a training checkpoint's 'model' (or 'state_dict')\n"
      "entry is picked automatically (and said so). Nothing in the input is executed.",
      "medslip convert"};
  std::string in, out, key, strip;
  bool keep = false, allow_unknown = false;
  app.add_option("input", in, "input weights (.pth, .pt, .bin, .safetensors)")->required();
  app.add_option("output", out, "output .safetensors (written atomically)")->required();
  app.add_option("--key", key, "the checkpoint entry holding the state dict, e.g. model (a/b descends)");
  app.add_option("--strip-prefix", strip, "remove this prefix from tensor names, e.g. module.");
  app.add_flag("--keep-dtypes", keep, "keep F16/BF16/F64 as they are instead of converting to F32");
  app.add_flag("--allow-unknown-globals", allow_unknown,
               "skip unknown pickled objects outside the state dict instead of failing (never executed)");
  MS_PARSE_ARGS(app, argc, argv);

  const std::string ext = ".safetensors";
  if (out.size() <= ext.size() || out.compare(out.size() - ext.size(), ext.size(), ext) != 0)
    throw std::invalid_argument("output '" + out + "' must end in .safetensors");
  std::error_code ec;
  if (std::filesystem::exists(out, ec) && std::filesystem::equivalent(in, out, ec))
    throw std::invalid_argument("output '" + out + "' is the input file");

  StateDictOptions opt;
  opt.key = key;
  opt.strip_prefix = strip;
  opt.allow_unknown_globals = allow_unknown;
  StateDict sd = read_state_dict(in, opt);
  if (sd.names.empty()) throw std::runtime_error(sd.source + ": no tensors to convert");
  std::vector<SaveItem> items = sd.to_save_items(keep);
  int64_t bytes = 0;
  int converted = 0;
  for (const auto& it : items) {
    bytes += int64_t(it.value.bytes.size());
    if (it.value.dtype != sd.tensors.at(it.name).dtype) ++converted;
  }
  // "format": "pt" is what transformers' from_pretrained expects of a safetensors file.
  save_safetensors(out, items,
                   {{"format", "pt"},
                    {"source", std::filesystem::path(in).filename().string()},
                    {"converted_by", "medslip convert"}});
  fmt::print("wrote {}: {} tensors, {} parameters, {:.3f} MB from {}{}\n", out, items.size(), sd.numel(),
             double(bytes) / 1e6, sd.source,
             converted ? fmt::format(" ({} float tensors converted to F32)", converted) : std::string());
  return 0;
}

}  // namespace ms
