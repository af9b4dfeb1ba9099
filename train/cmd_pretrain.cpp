// medslip pretrain: MeDSLIP pretraining (spec D) on any dataset in the pretraining format.
#include <CLI/CLI.hpp>

#include "engine/threads.h"
#include "train/commands.h"
#include "train/distributed.h"
#include "train/common.h"
#include "train/pretrain.h"

namespace ms {

int cmd_pretrain(int argc, char** argv) {
  CLI::App app{"Pretrain MeDSLIP (spec D): AdamW (wd on >=2-D weights), the reference's warmup + cosine schedule,\n"
               "drop_last batches, validation loss each epoch. Writes to --out: config.yaml, metrics.jsonl,\n"
               "checkpoint_last.safetensors (+ optimizer_step*.safetensors) every epoch and reproducibility.json.\n"
               "Ctrl-C saves a checkpoint and stops; --resume continues with bit-identical losses.",
               "medslip pretrain"};
  std::string config, resume, out, device = "cpu";
  bool tf32 = false;
  int threads = 0, seed = -1, epochs = -1;
  int64_t max_steps = -1;
  DistOptions dist;
  app.add_option("--config", config, "config YAML (official keys + ours, see README)")->required()->check(CLI::ExistingFile);
  app.add_option("--resume", resume, "a run folder (or its checkpoint_last.safetensors) to continue");
  app.add_option("--out", out, "run folder (default runs/<config name>)");
  add_device_options(app, device, tf32);
  app.add_option("--threads", threads, "threads (default: OMP_NUM_THREADS or all cores)");
  app.add_option("--seed", seed, "override the config's seed");
  app.add_option("--epochs", epochs, "stop after this many epochs (the schedule keeps the config's length)");
  app.add_option("--max-steps", max_steps, "stop (with a checkpoint) after this many steps");
  app.add_option("--dist-timeout", dist.timeout_s,
                 "data-parallel (mpirun): seconds a rank waits for the others in one collective before it stops "
                 "the job naming the silent ranks (default 300)");
  app.add_option("--dist-backend", dist.backend, "data-parallel gradient all-reduce of CUDA tensors: auto | nccl | mpi (host)");
  app.footer("Data-parallel: mpirun -np N medslip pretrain ... (a build with make MPI=1) trains one model on N ranks;\n"
             "accum_steps: K in the config runs K micro-batches per update. See docs/distributed.md.");
  MS_PARSE_ARGS(app, argc, argv);
  if (threads > 0) set_num_threads(threads);
  // Before select_device: under mpirun the local rank picks the GPU.
  std::unique_ptr<Communicator> comm = make_communicator(dist, parse_device(device));
  PretrainOptions o;
  o.comm = comm.get();
  o.config_path = config;
  o.cfg = load_config(config);
  if (seed >= 0) o.cfg.seed = seed;
  o.resume = resume;
  o.out_dir = !out.empty() ? out : !resume.empty() ? resume : "runs/" + std::filesystem::path(config).stem().string();
  o.device = select_device(device, tf32);
  o.max_epochs = epochs;
  o.stop_after_steps = max_steps;
  run_pretrain(o);
  return 0;
}

}  // namespace ms
