// medslip books: run a BERT text encoder once over the 75 observation descriptions and the 51
// anatomy prompts and save the frozen books (spec A.1) as safetensors.
#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <chrono>

#include "engine/threads.h"
#include "model/books.h"
#include "train/commands.h"
#include "train/common.h"

namespace ms {

int cmd_books(int argc, char** argv) {
  CLI::App app{"Compute the frozen text books of MeDSLIP (spec A.1): the [CLS] embeddings of the 75 observation\n"
               "descriptions (pathology_book [75,T]) and of \"It is located at <anatomy>. \" for the 51 anatomies\n"
               "(anatomy_book [51,T]), with the MeDSLIP encoding ([CLS] + tokens, no [SEP], padded to\n"
               "--max-length). The encoder is a Hugging Face BERT folder (config.json, vocab.txt,\n"
               "model.safetensors or pytorch_model.bin, optional tokenizer_config.json), e.g.\n"
               "Bio_ClinicalBERT, or the demo's encoder installed by weights/install_text_encoder.sh.",
               "medslip books"};
  std::string encoder_dir, pathology_json, out;
  std::string device = "cpu";
  bool tf32 = false;
  int max_length = 128, threads = 0;
  app.add_option("--encoder", encoder_dir, "Hugging Face BERT checkpoint folder")->required()->check(CLI::ExistingDirectory);
  app.add_option("--pathology-json", pathology_json,
                 "JSON object of 75 observation descriptions in spec C.1 order (the official "
                 "'observation explanation.json'; values are used)")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("--max-length", max_length, "tokens per prompt incl. [CLS]: 128 (pretraining) or 64 (official zero-shot)")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  app.add_option("--out", out, "output books (.safetensors)")->required();
  add_device_options(app, device, tf32);
  app.add_option("--threads", threads, "threads (default: OMP_NUM_THREADS or all cores)");
  MS_PARSE_ARGS(app, argc, argv);
  if (threads > 0) set_num_threads(threads);
  if (max_length != 128 && max_length != 64)
    fmt::print(stderr, "note: --max-length {} differs from the reference's 128 (pretraining) and 64 (zero-shot)\n",
               max_length);

  auto t0 = std::chrono::steady_clock::now();
  const Device dev = select_device(device, tf32);
  TextEncoder enc = TextEncoder::load(encoder_dir);
  enc.model->to(dev);
  fmt::print("text encoder: {}\n", enc.describe());
  fmt::print("loaded in {:.2f} s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  Books books = build_books(enc, pathology_json, max_length, [](const std::string& s) { fmt::print("  {}\n", s); });
  save_books(out, books);
  fmt::print("wrote {}: pathology_book [{},{}], anatomy_book [{},{}] (max_length {}, encoder {})\n", out,
             books.pathology.size(0), books.pathology.size(1), books.anatomy.size(0), books.anatomy.size(1), max_length,
             enc.name);
  return 0;
}

}  // namespace ms
