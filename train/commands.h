// defines: the subcommands of build/medslip. Each lives in its own train/cmd_*.cpp,
// parses its own flags with CLI11 and returns the process exit code.
#pragma once

namespace ms {
using CommandFn = int (*)(int argc, char** argv);
struct Command {
  const char* name;
  CommandFn run;
  const char* help;  // one line for `medslip --help`
};

int cmd_inspect(int argc, char** argv);
int cmd_convert(int argc, char** argv);
int cmd_synth(int argc, char** argv);
int cmd_preprocess(int argc, char** argv);
int cmd_books(int argc, char** argv);
int cmd_step(int argc, char** argv);
int cmd_pretrain(int argc, char** argv);
int cmd_zeroshot(int argc, char** argv);
int cmd_ground(int argc, char** argv);
int cmd_predict(int argc, char** argv);
int cmd_bench(int argc, char** argv);
int cmd_verify(int argc, char** argv);
int cmd_finetune(int argc, char** argv);
int cmd_finetune_eval(int argc, char** argv);
int cmd_triplets(int argc, char** argv);
int cmd_report(int argc, char** argv);
}  // namespace ms
