// medslip pretrain: MeDSLIP pretraining (spec D) on any dataset in the pretraining format.
#include <CLI/CLI.hpp>

#include "train/commands.h"
#include "train/common.h"
#include "train/pretrain.h"

namespace ms {

int cmd_pretrain(int argc, char** argv) {
  CLI::App app{"Pretrain MeDSLIP (spec D): AdamW (wd on >=2-D weights), the reference's warmup + cosine schedule,\n"
               "drop_last batches, validation loss each epoch. Writes to --out: config.yaml, metrics.jsonl,\n"
               "checkpoint_last.safetensors (+ optimizer_step*.safetensors) every epoch and reproducibility.json,\n"
               "TensorBoard events (tensorboard --logdir RUN) and attention/ overlays of fixed validation images\n"
               "per epoch; `medslip report RUN` makes one HTML page of it.\n"
               "Ctrl-C saves a checkpoint and stops; --resume continues with bit-identical losses.",
               "medslip pretrain"};
  RunCli f;
  add_run_flags(app, f, "config YAML (official keys + ours, see README)");
  MS_PARSE_ARGS(app, argc, argv);
  PretrainOptions o;
  std::unique_ptr<Communicator> comm = start_run(f, o);
  o.config_path = f.config;
  o.cfg = load_config(f.config);
  if (f.seed >= 0) o.cfg.seed = f.seed;
  run_pretrain(o);
  return 0;
}

}  // namespace ms
