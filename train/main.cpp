// medslip — MeDSLIP in C++: the command-line entry point. Every subcommand has --help.
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "engine/threads.h"
#include "train/commands.h"
#include "train/common.h"

namespace ms {
// Subcommands, in the order `medslip --help` lists them. Add a line per new command.
static const std::vector<Command> kCommands = {
    {"inspect", cmd_inspect, "list names, dtypes and shapes (+ parameter count) of .safetensors/.pth/.bin files"},
    {"convert", cmd_convert, "convert a .pth/.bin (torch.save) or .safetensors state dict to .safetensors"},
    {"books", cmd_books, "encode the 75 observation descriptions and 51 anatomy prompts with a BERT (the books)"},
    {"pretrain", cmd_pretrain, "pretrain MeDSLIP (spec D) with checkpoints, resume and a reproducibility record"},
    {"verify", cmd_verify, "check this build against the official MeDSLIP (recorded losses), gradients, determinism"},
    {"finetune", cmd_finetune, "fine-tune the trunk on a labelled csv: classification or segmentation (spec E.5/E.6)"},
    {"finetune-eval", cmd_finetune_eval, "evaluate a fine-tuned checkpoint on a csv: AUROC/max-F1/ACC or Dice/mIoU"},
    {"zeroshot", cmd_zeroshot, "zero-shot classification of a CXR14 / RSNA / synthetic csv: AUROC, max-F1, ACC"},
    {"ground", cmd_ground, "zero-shot grounding on an RSNA-style csv: pointing game, IoU, Dice, heatmap overlays"},
    {"report", cmd_report, "one self-contained HTML page of a run: loss curves, lr, ROC/AUROC, heatmaps, config"},
    {"predict", cmd_predict, "75 observation probabilities of images, where the top findings look, heatmap"},
    {"synth", cmd_synth, "write the synthetic chest X-ray set (PNG phantoms, labels, CXR14/RSNA-style test csvs)"},
    {"triplets", cmd_triplets, "free-text reports (csv) -> the [N,51,75] pretraining matrix, jsons and triplets.jsonl"},
    {"step", cmd_step, "one forward + backward pass on a batch; writes losses, outputs, gradients"},
    {"preprocess", cmd_preprocess, "write the [1,3,S,S] tensor the model sees for one image (audit vs torchvision)"},
    {"bench", cmd_bench, "time training steps and forward passes (one table; --official runs the original beside)"},
};
}  // namespace ms

static void usage() {
  std::printf("medslip — MeDSLIP (Medical Dual-Stream Language-Image Pre-training) in C++\n\n"
              "usage: medslip <command> [options]   (medslip <command> --help for its options)\n\ncommands:\n");
  for (const auto& c : ms::kCommands) std::printf("  %-13s %s\n", c.name, c.help);
  std::printf("\nThreads: OMP_NUM_THREADS (default: all cores), or --threads N where a command takes it.\n");
}

int main(int argc, char** argv) {
  ms::init_threads();
  if (argc < 2) {
    std::fprintf(stderr, "medslip: no command given (see medslip --help)\n");
    return 2;
  }
  if (!std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "help")) {
    usage();
    return 0;
  }
  for (const auto& c : ms::kCommands) {
    if (std::string(argv[1]) != c.name) continue;
    try {
      return c.run(argc - 1, argv + 1);
    } catch (const ms::UsageError& e) {
      std::fprintf(stderr, "medslip %s: %s (see medslip %s --help)\n", c.name, e.what(), c.name);
      return 2;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "medslip %s: error: %s\n", c.name, e.what());
      return 1;
    }
  }
  std::fprintf(stderr, "medslip: unknown command '%s' (see medslip --help)\n", argv[1]);
  return 2;
}
